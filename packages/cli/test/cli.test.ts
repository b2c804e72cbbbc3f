import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// The CLI is exercised as a user runs it: the built bin (npm test builds first) in a child process.
const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function ferry(args: string[], input?: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

const tempConfig = async () => join(await mkdtemp(join(tmpdir(), 'ferry-cli-')), 'config.json');

describe('ferry init', () => {
  it('creates an account with a generated 12-word passphrase, shown once, in a 0600 config', async () => {
    const config = await tempConfig();
    const run = await ferry(['--config', config, 'init']);
    expect(run.code).toBe(0);
    const words = run.stdout
      .split('\n')
      .find((line) => line.startsWith('    '))
      ?.trim()
      .split(' ');
    expect(words).toHaveLength(12);
    expect((await stat(config)).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(await readFile(config, 'utf8'));
    expect(saved.accountId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(saved)).not.toContain(words!.join(' ')); // the passphrase itself is not stored

    // The same passphrase on a second device joins the same account.
    const second = await tempConfig();
    const join = await ferry(['--config', second, 'init', '--passphrase-stdin'], words!.join(' '));
    expect(join.code).toBe(0);
    expect(join.stdout).not.toContain(words!.join(' '));
    const other = JSON.parse(await readFile(second, 'utf8'));
    expect(other.accountId).toBe(saved.accountId);
    expect(other.clientId).not.toBe(saved.clientId);
  });

  it('refuses bad input with one line saying what to do', async () => {
    const config = await tempConfig();
    const short = await ferry(['--config', config, 'init', '--passphrase-stdin'], 'too short');
    expect(short.code).toBe(1);
    expect(short.stderr.trim().split('\n')).toHaveLength(1);
    expect(short.stderr).toMatch(/^ferry: passphrase has 9 characters/);

    const badUrl = await ferry(['--config', config, 'init', '--server', 'not a url']);
    expect(badUrl.code).toBe(1);
    expect(badUrl.stderr).toContain('is not a URL');

    expect((await ferry(['--config', config, 'init'])).code).toBe(0);
    const again = await ferry(['--config', config, 'init']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('pass --force');

    const unknown = await ferry(['frobnicate']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");

    // A WebRTC implementation Ferry does not run on is refused before anything starts, from the
    // option and from the environment alike.
    const allowed = 'Allowed choices are @roamhq/wrtc, node-datachannel.';
    const webrtc = await ferry(['--webrtc', 'node-webrtc', 'demo']);
    expect(webrtc.code).not.toBe(0);
    expect(webrtc.stderr).toContain(`argument 'node-webrtc' is invalid. ${allowed}`);
    expect(webrtc.stdout).toBe('');
    const fromEnv = await ferry(['--config', config, 'status'], '', { FERRY_WEBRTC: 'wrtc' });
    expect(fromEnv.code).not.toBe(0);
    expect(fromEnv.stderr).toContain(`value 'wrtc' from env 'FERRY_WEBRTC' is invalid. ${allowed}`);
  });
});

describe('ferry server', () => {
  it('prints where it listens, answers health, and shuts down cleanly on SIGTERM', async () => {
    const data = await mkdtemp(join(tmpdir(), 'ferry-cli-data-'));
    const child: ChildProcess = spawn(process.execPath, [
      BIN,
      'server',
      '--port',
      '0',
      '--data',
      data,
      '--log-level',
      'warn',
    ]);
    let stdout = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (chunk) => {
        stdout += chunk;
        const match = /listening on (http:\/\/\S+)/.exec(stdout);
        if (match && stdout.includes('health')) resolve(match[1]!);
      });
      child.on('exit', (code) => reject(new Error(`server exited early with ${code}: ${stdout}`)));
    });
    expect(stdout).toContain('/signal');
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(200);
    const exit = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
  });

  it('rejects a bad port before starting', async () => {
    const run = await ferry(['server', '--port', '70000']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('a port is a whole number');
  });
});

describe('ferry demo', () => {
  it('runs the whole system in one process and exits 0 with a summary', async () => {
    const run = await ferry(['demo']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('3 devices, 3 encrypted WebRTC sessions');
    expect(run.stdout).toMatch(/phone caught up from the diff server alone/);
    expect(run.stdout).toContain('mailbox empty');
    expect(run.stdout).toMatch(/\d+ tokens streamed over the encrypted session/);
    expect(run.stdout).toContain('Summary');
  }, 120_000);

  it('runs its devices on node-datachannel when asked (--webrtc)', async () => {
    const run = await ferry(['--webrtc', 'node-datachannel', 'demo', '--no-ai']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/3 encrypted WebRTC sessions \(Noise handshake, node-datachannel\)/);
    expect(run.stdout).toContain('mailbox empty');
  }, 120_000);
});

describe('ferry share-model, chat and status between two devices of one account', () => {
  it('streams an answer from the device sharing a GGUF model, and reports status', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-cli-share-'));
    const server = spawn(process.execPath, [
      BIN,
      'server',
      '--port',
      '0',
      '--data',
      join(dir, 'data'),
      '--log-level',
      'warn',
    ]);
    const children: ChildProcess[] = [server];
    try {
      const url = await new Promise<string>((resolve) => {
        let text = '';
        server.stdout.on('data', (chunk) => {
          text += chunk;
          const match = /listening on (http:\/\/\S+)/.exec(text);
          if (match) resolve(match[1]!);
        });
      });
      const desktop = join(dir, 'desktop.json');
      const phone = join(dir, 'phone.json');
      const created = await ferry(['--config', desktop, 'init', '--server', url]);
      const passphrase = created.stdout
        .split('\n')
        .find((line) => line.startsWith('    '))!
        .trim();
      expect(
        (await ferry(['--config', phone, 'init', '--server', url, '--passphrase-stdin'], passphrase)).code,
      ).toBe(0);

      const { writeTinyLlamaGguf } = await import('@ferry/ai/node');
      const model = join(dir, 'tiny.gguf');
      await writeTinyLlamaGguf(model, { seed: 5 });
      const share = spawn(process.execPath, [
        BIN,
        '--config',
        desktop,
        'share-model',
        '--gguf',
        model,
        '--model',
        'tiny',
      ]);
      children.push(share);
      await new Promise<void>((resolve) => {
        share.stdout.on('data', (chunk) => String(chunk).includes('Serving model') && resolve());
      });

      // The phone runs on node-datachannel (chosen through the environment), the desktop on the default.
      const answer = await ferry(
        ['--config', phone, 'chat', '--model', 'tiny', '--max-tokens', '16', 'hello'],
        '',
        { FERRY_WEBRTC: 'node-datachannel' },
      );
      expect(answer.stderr).toBe('');
      expect(answer.code).toBe(0);
      expect(answer.stdout).toMatch(/\(16 tokens from [0-9a-f-]+ in \d+ ms\)/);

      const missing = await ferry([
        '--config',
        phone,
        'chat',
        '--model',
        'no-such-model',
        '--wait',
        '2',
        'hello',
      ]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('no device of this account serves "no-such-model"');

      const state = await ferry(['--config', phone, 'status', '--wait', '5']);
      expect(state.code).toBe(0);
      expect(state.stdout).toContain(`${url}: reachable`);
      expect(state.stdout).toMatch(/connected \(encrypted session\)/);
      expect(state.stdout).toMatch(/mailbox +0 diff\(s\) waiting/);

      const bad = await ferry(['--config', phone, 'share-model', '--openai-url', 'http://127.0.0.1:1/v1']);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('--openai-url needs --model NAME');
    } finally {
      for (const child of children) child.kill('SIGTERM');
    }
  }, 120_000);
});
