import { Command, InvalidArgumentError } from 'commander';
import { runDemo } from './commands/demo.js';
import { init } from './commands/init.js';
import { runServer } from './commands/server.js';
import { defaultConfigPath } from './config.js';

const readStdin = async (): Promise<string> => {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
};

export const parsePort = (value: string): number => {
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
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  program
    .command('init')
    .description('create this device: a new account (passphrase generated and shown once) or join one')
    .option('--passphrase-stdin', 'read your own or an existing passphrase from standard input')
    .option('--server <url>', 'Ferry server URL (diff server and signaling)', 'http://127.0.0.1:8787')
    .option('--force', 'replace an existing config')
    .action(async (options: { passphraseStdin?: boolean; server: string; force?: boolean }) => {
      await init({
        config: program.opts<{ config: string }>().config,
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
      await runDemo({ out, write: (text) => process.stdout.write(text), ai: options.ai });
    });

  program
    .command('server')
    .description('run the signaling server and the diff server in one process')
    .option('--port <port>', 'port to listen on (0 picks a free one)', parsePort, 8787)
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--data <dir>', 'SQLite directory (ignored when FERRY_DATABASE_URL is set)', '.ferry-data')
    .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info')
    .action(async (options: { port: number; host: string; data: string; logLevel: string }) => {
      await runServer({ ...options, out });
    });

  return program;
}
