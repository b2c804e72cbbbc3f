import { spawn } from 'node:child_process';
import { createHash, createPrivateKey, sign as nodeSign } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  deriveSigningKeyPair,
  type SigningKeyPair,
  signingKeyFromSeed,
} from '../../packages/core/src/crypto/sign.js';
import { relayAccountId, SIGNATURE_WINDOW_MS, signRequest } from '../../packages/core/src/relay/signature.js';
import { randomBytes, toBase64, toHex, utf8 } from '../../packages/core/src/util/bytes.js';
import { TEST_DATABASE_URL } from '../../testing/services.js';
import { ratio, round } from '../lib/measure.js';
import type { BenchMetric, BenchReport } from '../lib/types.js';

/**
 * Diff server throughput and latency under concurrent clients. The server runs in a child process
 * (this file, with FERRY_RELAY_BENCH_ROLE=server); autocannon drives it from this process over
 * loopback. Each request is a real signed request (unique nonce, Ed25519 signature, body digest),
 * prepared before the clock starts. The ceiling is a plain Fastify route in the same child process
 * that parses the same push body and answers `{}`, measured in the same run.
 */

const CONNECTIONS = 32;
const DIFF_BYTES = 1024;
const ACCOUNTS = 32;
const PULL_LIMIT = 10;
const SIZES = {
  sqlite: { push: 24_000, pull: 8_000, empty: 60_000 },
  postgres: { push: 8_000, pull: 4_000, empty: 60_000 },
} as const;
type Backend = keyof typeof SIZES;

// ---- the server process ----

async function serve(): Promise<void> {
  const { createDiffServer, createPostgresStorage, createSqliteStorage } = await import(
    '../../packages/server/src/index.js'
  );
  const { default: Fastify } = await import('fastify');
  const { pino } = await import('pino');
  const storage =
    process.env.FERRY_BENCH_BACKEND === 'postgres'
      ? await createPostgresStorage({ url: TEST_DATABASE_URL, schema: process.env.FERRY_BENCH_SCHEMA! })
      : createSqliteStorage({ dataDir: process.env.FERRY_BENCH_DATA_DIR! });
  const unlimited = 1e9;
  const diff = await createDiffServer({
    storage,
    logger: pino({ level: 'silent' }),
    logRequests: false,
    limits: {
      maxAccountBytes: unlimited,
      maxAccountDiffs: unlimited,
      ipRequestsPerSecond: unlimited,
      ipBurst: unlimited,
      accountRequestsPerSecond: unlimited,
      accountBurst: unlimited,
    },
  });
  await diff.app.listen({ port: 0, host: '127.0.0.1' });
  const empty = Fastify({ logger: false });
  empty.post('/empty', async () => ({}));
  await empty.listen({ port: 0, host: '127.0.0.1' });
  const url = (server: typeof empty.server) =>
    `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  process.once('SIGTERM', async () => {
    await Promise.all([diff.close(), empty.close()]);
    process.exit(0);
  });
  process.stdout.write(`${JSON.stringify({ relay: url(diff.app.server), empty: url(empty.server) })}\n`);
}

// ---- the load ----

interface Prepared {
  path: string;
  headers: Record<string, string>;
  body: string;
}

interface LoadResult {
  requestsPerSecond: number;
  p50: number;
  p99: number;
}

/** Minimal typing of the autocannon API used here (it ships no types). */
interface AutocannonResult {
  '2xx': number;
  non2xx: number;
  errors: number;
  timeouts: number;
  latency: { p50: number; p99: number };
}
type Autocannon = (
  options: Record<string, unknown>,
  done: (error: Error | null, result: AutocannonResult) => void,
) => { on(event: 'response', listener: () => void): void };
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

async function load(url: string, requests: Prepared[], connections = CONNECTIONS): Promise<LoadResult> {
  let next = 0;
  const started = performance.now();
  let finished = started;
  const result = await new Promise<AutocannonResult>((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections,
        amount: requests.length,
        requests: [
          {
            setupRequest: (request: Record<string, unknown>) => {
              const prepared = requests[next++]!;
              return {
                ...request,
                method: 'POST',
                path: prepared.path,
                headers: prepared.headers,
                body: prepared.body,
              };
            },
          },
        ],
      },
      (error, done) => (error ? reject(error) : resolve(done)),
    );
    // autocannon notices the end only on its next 1 s tick: time the run to its last response instead.
    instance.on('response', () => {
      finished = performance.now();
    });
  });
  const seconds = (finished - started) / 1000;
  const failed = result.non2xx + result.errors + result.timeouts;
  if (failed > 0) throw new Error(`${failed} of ${requests.length} requests to ${url} failed`);
  return {
    requestsPerSecond: result['2xx'] / seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
  };
}

/** Ed25519 through OpenSSL: preparing tens of thousands of signed requests with noble would take minutes. */
function nativeSigner(key: SigningKeyPair): (secretKey: Uint8Array, message: Uint8Array) => Uint8Array {
  const privateKey = createPrivateKey({
    key: {
      kty: 'OKP',
      crv: 'Ed25519',
      d: toBase64(key.secretKey, { url: true }),
      x: toBase64(key.publicKey, { url: true }),
    },
    format: 'jwk',
  });
  return (_secret, message) => nodeSign(null, message, privateKey);
}

interface Party {
  key: SigningKeyPair;
  signWith: ReturnType<typeof nativeSigner>;
}

const party = (key: SigningKeyPair): Party => ({ key, signWith: nativeSigner(key) });

function prepare(path: string, body: unknown, signer: Party): Prepared {
  const text = JSON.stringify(body);
  const headers = signRequest(signer.key, { method: 'POST', path, body: utf8(text) }, signer.signWith);
  return { path, body: text, headers: { 'content-type': 'application/json', ...headers } };
}

interface Account {
  accountId: string;
  sender: Party;
  target: Party;
}

async function registerAccounts(url: string): Promise<Account[]> {
  const accounts: Account[] = [];
  for (let i = 0; i < ACCOUNTS; i++) {
    const owner = party(deriveSigningKeyPair(randomBytes(32), 'relaySigning'));
    const accountId = relayAccountId(owner.key.publicKey);
    const account = {
      accountId,
      sender: party(signingKeyFromSeed(randomBytes(32))),
      target: party(signingKeyFromSeed(randomBytes(32))),
    };
    for (const [clientId, device] of [
      ['sender', account.sender],
      ['target', account.target],
    ] as const) {
      const request = prepare(
        '/registerDevice',
        { accountId, clientId, publicKey: toBase64(device.key.publicKey, { url: true }) },
        owner,
      );
      const response = await fetch(url + request.path, {
        method: 'POST',
        headers: request.headers,
        body: request.body,
      });
      if (!response.ok) throw new Error(`registration failed: ${await response.text()}`);
    }
    accounts.push(account);
  }
  return accounts;
}

function pushes(accounts: Account[], count: number): { requests: Prepared[]; ids: Array<[Account, string]> } {
  const requests: Prepared[] = [];
  const ids: Array<[Account, string]> = [];
  for (let i = 0; i < count; i++) {
    const account = accounts[i % accounts.length]!;
    const diffId = toBase64(randomBytes(16), { url: true });
    ids.push([account, diffId]);
    const encryptedDiff = toBase64(randomBytes(DIFF_BYTES), { url: true });
    requests.push(
      prepare(
        '/pushDiff',
        { accountId: account.accountId, targetClientId: 'target', diffId, encryptedDiff },
        account.sender,
      ),
    );
  }
  return { requests, ids };
}

/**
 * The server's request authentication alone (parse the signature headers, check the body digest,
 * verify Ed25519 on libuv's thread pool), with nothing else running: every core verifies. No signed
 * route can answer more requests per second than this on this machine, whatever its storage.
 */
async function verificationCeiling(requests: Prepared[]): Promise<number> {
  const { RequestVerifier } = await import('../../packages/server/src/relay/auth.js');
  const verifier = new RequestVerifier(SIGNATURE_WINDOW_MS, Date.now);
  const bodies = requests.map((request) => ({ ...request, bytes: utf8(request.body) }));
  let next = 0;
  const worker = async () => {
    while (next < bodies.length) {
      const { path, headers, bytes } = bodies[next++]!;
      await verifier.verify({ method: 'POST', path, headers, body: bytes });
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  return bodies.length / ((performance.now() - started) / 1000);
}

/**
 * The SQLite store alone, in this process: the same pushes (1 KiB, 32 at a time, group-committed and
 * fsynced) straight into createSqliteStorage, no HTTP and no signatures. Its statements run on the
 * event loop, so this is what one server process's storage allows.
 */
async function storageCeiling(count: number): Promise<number> {
  const { createSqliteStorage } = await import('../../packages/server/src/index.js');
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-relay-bench-storage-'));
  const storage = createSqliteStorage({ dataDir });
  try {
    const at = Date.now();
    let nonce = 0;
    const claim = () => ({ keyId: 'bench', nonce: `n${nonce++}`, expiresAt: at + SIGNATURE_WINDOW_MS });
    const senders: Array<{ accountId: string; clientId: string; publicKey: string }> = [];
    for (let i = 0; i < ACCOUNTS; i++) {
      const accountId = `account${i}`;
      for (const clientId of ['sender', 'target']) {
        const publicKey = `${accountId}-${clientId}`;
        await storage.registerDevice(claim(), {
          accountId,
          clientId,
          publicKey,
          replace: false,
          maxDevices: 8,
          now: at,
        });
      }
      senders.push({ accountId, clientId: 'sender', publicKey: `${accountId}-sender` });
    }
    const body = randomBytes(DIFF_BYTES);
    const digest = createHash('sha256').update(body).digest();
    const quota = { maxAccountBytes: 1e12, maxAccountDiffs: 1e9 };
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        await storage.push(claim(), {
          sender: senders[i % senders.length]!,
          diffId: `diff${i}`,
          targets: ['target'],
          body,
          digest,
          expiresAt: at + 3_600_000,
          now: at,
          quota,
        });
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: CONNECTIONS }, worker));
    return count / ((performance.now() - started) / 1000);
  } finally {
    await storage.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function startServer(
  backend: Backend,
): Promise<{ relay: string; empty: string; stop: () => Promise<void> }> {
  const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-relay-bench-'));
  const schema = `ferry_bench_${toHex(randomBytes(6))}`;
  const child = spawn(process.execPath, ['--import', 'tsx', here('./relay.ts')], {
    env: {
      ...process.env,
      FERRY_RELAY_BENCH_ROLE: 'server',
      FERRY_BENCH_BACKEND: backend,
      FERRY_BENCH_DATA_DIR: dataDir,
      FERRY_BENCH_SCHEMA: schema,
      TSX_TSCONFIG_PATH: here('../../packages/server/test/relay/fixtures/tsconfig.json'),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const urls = JSON.parse(line) as { relay: string; empty: string };
  return {
    ...urls,
    async stop() {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
      if (backend === 'postgres') {
        const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
        await client.connect();
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await client.end();
      }
    },
  };
}

async function measureBackend(backend: Backend): Promise<BenchMetric[]> {
  const sizes = SIZES[backend];
  const server = await startServer(backend);
  try {
    const accounts = await registerAccounts(server.relay);
    // Warm both servers' JIT with a little of each kind of request before the clock starts.
    const warm = pushes(accounts, 2_000);
    const emptyBody = warm.requests.map((request) => ({ ...request, path: '/empty' }));
    await load(server.empty, emptyBody);
    await load(server.relay, warm.requests);

    const emptyLoad = Array.from({ length: sizes.empty }, (_, i) => emptyBody[i % emptyBody.length]!);
    const ceiling = await load(server.empty, emptyLoad);

    const pushed = pushes(accounts, sizes.push);
    // Measured once (it does not depend on the backend), before the pushes, with the server idle.
    const verified = backend === 'sqlite' ? await verificationCeiling(pushed.requests) : undefined;
    const stored = backend === 'sqlite' ? await storageCeiling(sizes.push) : undefined;
    const push = await load(server.relay, pushed.requests);

    const pullRequests = Array.from({ length: sizes.pull }, (_, i) => {
      const account = accounts[i % accounts.length]!;
      return prepare(
        '/pullDiff',
        { accountId: account.accountId, clientId: 'target', limit: PULL_LIMIT },
        account.target,
      );
    });
    const pull = await load(server.relay, pullRequests);

    const ackRequests = [...warm.ids, ...pushed.ids].map(([account, diffId]) =>
      prepare('/ackDiff', { accountId: account.accountId, clientId: 'target', diffId }, account.target),
    );
    const ack = await load(server.relay, ackRequests);

    const name = backend === 'sqlite' ? 'SQLite' : 'PostgreSQL';
    const metric = (label: string, result: LoadResult, target?: string): BenchMetric[] => [
      {
        name: `${name} ${label} throughput`,
        value: round(result.requestsPerSecond, 0),
        unit: 'req/s',
        baseline: round(ceiling.requestsPerSecond, 0),
        ...(ratio(result.requestsPerSecond, ceiling.requestsPerSecond) === undefined
          ? {}
          : { ratio: ratio(result.requestsPerSecond, ceiling.requestsPerSecond)! }),
        ...(target ? { target } : {}),
      },
      { name: `${name} ${label} latency p50`, value: result.p50, unit: 'ms', baseline: ceiling.p50 },
      { name: `${name} ${label} latency p99`, value: result.p99, unit: 'ms', baseline: ceiling.p99 },
    ];
    /** One part of a push measured alone, against the empty route (absent for the other backend). */
    const part = (label: string, perSecond: number | undefined, unit: string): BenchMetric[] =>
      perSecond === undefined
        ? []
        : [
            {
              name: label,
              value: round(perSecond, 0),
              unit,
              baseline: round(ceiling.requestsPerSecond, 0),
              ratio: ratio(perSecond, ceiling.requestsPerSecond)!,
            },
          ];
    return [
      {
        name: `${name} run: empty Fastify route (ceiling)`,
        value: round(ceiling.requestsPerSecond, 0),
        unit: 'req/s',
      },
      ...part('request authentication alone, all cores (no HTTP, no storage)', verified, 'req/s'),
      ...part('SQLite store alone, one process (no HTTP, no signatures)', stored, 'push/s'),
      ...metric(
        'push (durable, 1 KiB)',
        push,
        backend === 'sqlite' ? '>= 0.5x of the empty route' : undefined,
      ),
      ...metric(`pull (${PULL_LIMIT} x 1 KiB per page)`, pull),
      ...metric('ack (1 diff)', ack),
    ];
  } finally {
    await server.stop();
  }
}

async function run(): Promise<BenchReport> {
  // FERRY_RELAY_BACKENDS=sqlite measures one backend only (quicker while tuning).
  const only = process.env.FERRY_RELAY_BACKENDS?.split(',');
  const metrics = await measureBackend('sqlite');
  let notes = '';
  const { hasPostgres } = await import('../../testing/services.js');
  if (only && !only.includes('postgres')) notes = 'PostgreSQL not measured (FERRY_RELAY_BACKENDS). ';
  else if (await hasPostgres()) metrics.push(...(await measureBackend('postgres')));
  else notes = 'PostgreSQL not reachable: its figures are missing. ';
  return {
    name: 'relay',
    description: `Diff server: signed push/pull/ack requests from ${CONNECTIONS} concurrent autocannon connections over loopback, server in a second process`,
    baseline:
      'a plain Fastify POST route in the same server process that parses the same 1 KiB push body and answers {}, measured in the same run',
    metrics,
    notes:
      `${notes}Each request is signed (Ed25519 verified with OpenSSL on the server) and consumes a nonce; ` +
      'SQLite pushes are group-committed and fsynced before any 2xx. Request logging is off in both servers. ' +
      'Two rows take the push apart: "request authentication alone" verifies the same signed pushes with every core ' +
      'and nothing else running, and "SQLite store alone" stores them with no HTTP and no signatures; a push pays ' +
      'for both, and for HTTP, on the same cores.',
  };
}

if (process.env.FERRY_RELAY_BENCH_ROLE === 'server') await serve();

export default { name: 'relay', run };
