import { NODE_WEBRTC_NAMES, type NodeWebRTCName } from '@ferry/core/node';
import { Command, InvalidArgumentError, Option } from 'commander';
import { runDemo } from './commands/demo.js';
import { init } from './commands/init.js';
import { chat, shareModel } from './commands/models.js';
import { runServer } from './commands/server.js';
import { status } from './commands/status.js';
import { defaultConfigPath } from './config.js';

const readStdin = async (): Promise<string> => {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
};

const parsePort = (value: string): number => {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new InvalidArgumentError('a port is a whole number from 0 to 65535');
  }
  return port;
};

/** The `ferry` command line. `out` receives every line meant for the user (tests capture it). */
export function createProgram(out: (line: string) => void = console.log): Command {
  const program = new Command('ferry')
    .description('Peer-to-peer, end-to-end encrypted device sync and AI streaming')
    .option('--config <path>', 'device config file', defaultConfigPath())
    .addOption(
      new Option('--webrtc <name>', "this device's WebRTC implementation")
        .choices(NODE_WEBRTC_NAMES)
        .default(NODE_WEBRTC_NAMES[0])
        .env('FERRY_WEBRTC'),
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const config = () => program.opts<{ config: string }>().config;
  const webrtc = () => program.opts<{ webrtc: NodeWebRTCName }>().webrtc;

  program
    .command('init')
    .description('create this device: a new account (passphrase generated and shown once) or join one')
    .option('--passphrase-stdin', 'read your own or an existing passphrase from standard input')
    .option('--server <url>', 'Ferry server URL (diff server and signaling)', 'http://127.0.0.1:8787')
    .option('--force', 'replace an existing config')
    .action(async (options: { passphraseStdin?: boolean; server: string; force?: boolean }) => {
      await init({
        config: config(),
        server: options.server,
        force: options.force ?? false,
        ...(options.passphraseStdin ? { passphrase: await readStdin() } : {}),
        out,
      });
    });

  program
    .command('demo')
    .description(
      'run the whole system in one process: server, three devices, live and offline sync, AI streaming',
    )
    .option('--no-ai', 'skip the AI streaming step')
    .action(async (options: { ai: boolean }) => {
      await runDemo({
        out,
        write: (text) => process.stdout.write(text),
        ai: options.ai,
        webrtc: webrtc(),
      });
    });

  program
    .command('server')
    .description('run the signaling server and the diff server in one process')
    .option('--port <port>', 'port to listen on (0 picks a free one)', parsePort, 8787)
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--data <dir>', 'SQLite directory (ignored when FERRY_DATABASE_URL is set)', '.ferry-data')
    .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info')
    .option('--web', 'also serve the web demo (build it first: npm run build -w @ferry/web)')
    .action(
      async (options: { port: number; host: string; data: string; logLevel: string; web?: boolean }) => {
        await runServer({ ...options, web: options.web ?? false, out });
      },
    );

  program
    .command('share-model')
    .description("serve a local model to this account's other devices (until Ctrl-C)")
    .option('--gguf <path>', 'a GGUF model file, run with node-llama-cpp')
    .option('--openai-url <url>', 'an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1 (Ollama)')
    .option('--model <name>', 'model name (required with --openai-url; the id peers ask for)')
    .action(async (options: { gguf?: string; openaiUrl?: string; model?: string }) => {
      await shareModel({ config: config(), webrtc: webrtc(), ...options, out });
    });

  program
    .command('chat')
    .description("ask a model that one of this account's devices serves; tokens print as they arrive")
    .requiredOption('--model <name>', 'the model id (see `ferry share-model`)')
    .option('--wait <seconds>', 'how long to look for a device serving it', parseSeconds, 10)
    .option('--max-tokens <n>', 'longest answer, in tokens', parseCount, 256)
    .argument('[prompt...]', 'the question (default: standard input)')
    .action(async (words: string[], options: { model: string; wait: number; maxTokens: number }) => {
      const prompt = words.length > 0 ? words.join(' ') : await readStdin();
      await chat({
        config: config(),
        webrtc: webrtc(),
        model: options.model,
        prompt,
        waitMs: options.wait * 1000,
        maxTokens: options.maxTokens,
        write: (text) => process.stdout.write(text),
        out,
      });
    });

  program
    .command('status')
    .description("this device, the server, the account's devices and the diffs waiting for this device")
    .option('--wait <seconds>', 'how long to listen for devices coming online', parseSeconds, 3)
    .action(async (options: { wait: number }) => {
      await status({ config: config(), webrtc: webrtc(), waitMs: options.wait * 1000, out });
    });

  return program;
}

const parseCount = (value: string): number => {
  const count = Number(value);
  if (!Number.isInteger(count) || count < 1 || count > 1_000_000) {
    throw new InvalidArgumentError('a whole number from 1 to 1000000');
  }
  return count;
};

const parseSeconds = (value: string): number => {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 3600) {
    throw new InvalidArgumentError('a number of seconds from 0 to 3600');
  }
  return seconds;
};
