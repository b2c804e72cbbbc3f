import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  deriveSigningKeyPair,
  RelayClient,
  type RelayClientOptions,
  randomBytes,
  relayAccountId,
  type SigningKeyPair,
  signingKeyFromSeed,
  signRequest,
  toBase64,
  toHex,
  utf8,
} from '@ferry/core';
import Database from 'better-sqlite3';
import pg from 'pg';
import { type Logger, pino } from 'pino';
import { afterEach } from 'vitest';
import { TEST_DATABASE_URL } from '../../../../testing/services.js';
import {
  createDiffServer,
  createPostgresStorage,
  createSqliteStorage,
  type DiffServer,
  type RelayLimits,
  type RelayStorage,
} from '../../src/index.js';

export type Backend = 'sqlite' | 'postgres';

/** Runs registered cleanups after each test, last first. */
export function useCleanup(): (fn: () => unknown) => void {
  const tasks: Array<() => unknown> = [];
  afterEach(async () => {
    while (tasks.length > 0) await tasks.pop()!();
  });
  return (fn) => tasks.push(fn);
}

export const uniqueSchema = () => `ferry_test_${toHex(randomBytes(6))}`;

export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** Where a backend keeps its data, so tests can look at the raw rows and files. */
export type Location = { backend: 'sqlite'; dataDir: string } | { backend: 'postgres'; schema: string };

export interface OpenedStorage {
  storage: RelayStorage;
  location: Location;
}

export async function openStorage(
  backend: Backend,
  defer: (fn: () => unknown) => void,
): Promise<OpenedStorage> {
  if (backend === 'sqlite') {
    const dataDir = mkdtempSync(join(tmpdir(), 'ferry-relay-'));
    defer(() => rmSync(dataDir, { recursive: true, force: true }));
    const storage = createSqliteStorage({ dataDir });
    defer(() => storage.close());
    return { storage, location: { backend, dataDir } };
  }
  const schema = uniqueSchema();
  defer(() => dropSchema(schema));
  const storage = await createPostgresStorage({ url: TEST_DATABASE_URL, schema, maxConnections: 4 });
  defer(() => storage.close());
  return { storage, location: { backend, schema } };
}

const TABLES = ['accounts', 'devices', 'diffs', 'mailbox', 'nonces'] as const;
export type RowCounts = Record<(typeof TABLES)[number], number>;

/** Row counts of every relay table, read through a separate connection. */
export async function countRows(location: Location): Promise<RowCounts> {
  const counts = {} as RowCounts;
  if (location.backend === 'sqlite') {
    const db = new Database(join(location.dataDir, 'relay.sqlite'), { readonly: true });
    try {
      for (const table of TABLES) {
        counts[table] = (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
      }
    } finally {
      db.close();
    }
    return counts;
  }
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    for (const table of TABLES) {
      const { rows } = await client.query(`SELECT COUNT(*)::int AS n FROM ${location.schema}.${table}`);
      counts[table] = rows[0].n;
    }
  } finally {
    await client.end();
  }
  return counts;
}

/** Rate limits out of the way unless a test is about them. */
export const GENEROUS_LIMITS: Partial<RelayLimits> = {
  ipRequestsPerSecond: 1e6,
  ipBurst: 1e6,
  accountRequestsPerSecond: 1e6,
  accountBurst: 1e6,
};

export interface RunningRelay extends OpenedStorage {
  url: string;
  diff: DiffServer;
}

export async function startRelay(
  backend: Backend,
  defer: (fn: () => unknown) => void,
  options: { limits?: Partial<RelayLimits>; logger?: Logger } = {},
): Promise<RunningRelay> {
  const opened = await openStorage(backend, defer);
  const diff = await createDiffServer({
    storage: opened.storage,
    limits: { ...GENEROUS_LIMITS, ...options.limits },
    logger: options.logger ?? pino({ level: 'silent' }),
  });
  await diff.app.listen({ port: 0, host: '127.0.0.1' });
  defer(() => diff.close());
  const { port } = diff.app.server.address() as { port: number };
  return { ...opened, url: `http://127.0.0.1:${port}`, diff };
}

/** What a test needs to speak for an account by hand (without RelayClient). */
export interface TestAccount {
  key: Uint8Array;
  signer: SigningKeyPair;
  accountId: string;
}

export function newAccount(): TestAccount {
  const key = randomBytes(32);
  const signer = deriveSigningKeyPair(key, 'relaySigning');
  return { key, signer, accountId: relayAccountId(signer.publicKey) };
}

export const newDeviceKey = (): SigningKeyPair => signingKeyFromSeed(randomBytes(32));
export const publicKeyOf = (key: SigningKeyPair) => toBase64(key.publicKey, { url: true });

export interface PostOptions {
  /** Unix seconds for the signature's created parameter. */
  created?: number;
  nonce?: string;
  /** Sign these bytes but send `body` (a tampered body). */
  signedBody?: Uint8Array;
  headers?: Record<string, string>;
  unsigned?: boolean;
}

export interface Answer {
  status: number;
  json: Record<string, unknown>;
}

/** One signed POST with full control over what is signed and sent. */
export async function signedPost(
  url: string,
  path: string,
  body: unknown,
  signer: SigningKeyPair,
  options: PostOptions = {},
): Promise<Answer> {
  const bytes =
    typeof body === 'string' ? utf8(body) : body instanceof Uint8Array ? body : utf8(JSON.stringify(body));
  const signature = options.unsigned
    ? {}
    : signRequest(signer, {
        method: 'POST',
        path,
        body: options.signedBody ?? bytes,
        ...(options.created === undefined ? {} : { created: options.created }),
        ...(options.nonce === undefined ? {} : { nonce: options.nonce }),
      });
  const response = await fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...signature, ...options.headers },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

/** Registers a device by hand (account-signed) and returns its key. */
export async function registerDevice(
  url: string,
  account: TestAccount,
  clientId: string,
): Promise<SigningKeyPair> {
  const device = newDeviceKey();
  const answer = await signedPost(
    url,
    '/registerDevice',
    { accountId: account.accountId, clientId, publicKey: publicKeyOf(device) },
    account.signer,
  );
  if (answer.status !== 200) throw new Error(`registration failed: ${JSON.stringify(answer)}`);
  return device;
}

export function relayClient(
  url: string,
  accountKey: Uint8Array,
  clientId: string,
  options: Partial<RelayClientOptions> = {},
): RelayClient {
  return new RelayClient({
    url,
    accountKey,
    clientId,
    retry: { attempts: 3, initialDelayMs: 10 },
    ...options,
  });
}
