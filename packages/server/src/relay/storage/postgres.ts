import pg from 'pg';
import { type SqlDriver, SqlRelayStorage, type SqlTx, type SqlValue } from './sql-storage.js';
import type { RelayStorage } from './types.js';

export interface PostgresStorageOptions {
  /** `postgres://user@host:port/db` (FERRY_DATABASE_URL). */
  url: string;
  /** Schema holding the relay's tables (created if missing). Default `ferry_relay`. */
  schema?: string;
  /** Pool size. Default 10. */
  maxConnections?: number;
  /** An idle pooled connection failed (the pool replaces it); default: ignored. */
  onIdleError?: (error: Error) => void;
}

/** One channel for every Ferry deployment on the server; the payload names the schema. */
const CHANNEL = 'ferry_relay_mailbox';
const LISTEN_RETRY_MS = 1_000;

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

const ddl = (schema: string) => `
CREATE SCHEMA IF NOT EXISTS ${schema};
CREATE TABLE IF NOT EXISTS ${schema}.accounts (
  account_id TEXT PRIMARY KEY,
  bytes BIGINT NOT NULL,
  diffs BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS ${schema}.devices (
  account_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  public_key TEXT NOT NULL UNIQUE,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (account_id, client_id)
);
CREATE TABLE IF NOT EXISTS ${schema}.diffs (
  account_id TEXT NOT NULL,
  diff_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  body BYTEA,
  size BIGINT NOT NULL,
  digest BYTEA NOT NULL,
  refs INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (account_id, diff_id)
);
CREATE INDEX IF NOT EXISTS diffs_expiry ON ${schema}.diffs (expires_at);
CREATE TABLE IF NOT EXISTS ${schema}.mailbox (
  position BIGSERIAL PRIMARY KEY,
  account_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  diff_id TEXT NOT NULL,
  acked SMALLINT NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_pending ON ${schema}.mailbox (account_id, client_id, position) WHERE acked = 0;
CREATE INDEX IF NOT EXISTS mailbox_diff ON ${schema}.mailbox (account_id, diff_id, client_id);
CREATE TABLE IF NOT EXISTS ${schema}.nonces (
  key_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (key_id, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON ${schema}.nonces (expires_at);
`;

/** int8 (counts, sizes, ms timestamps, positions) as JS numbers: every value stays below 2^53. */
const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/** Deadlocks and serialization failures are retried; the account-row lock makes them rare. */
const RETRYABLE = new Set(['40001', '40P01']);

class PostgresDriver implements SqlDriver {
  readonly kind = 'postgres' as const;
  readonly forUpdate = ' FOR UPDATE';
  private readonly texts = new Map<string, string>();
  private readonly listeners: Array<(stored: { accountId: string; clientIds: string[] }) => void> = [];
  private listener: pg.Client | undefined;
  private listenRetry: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
    private readonly options: PostgresStorageOptions,
  ) {}

  /** NOTIFY is delivered when (and only if) the push transaction commits. */
  async announce(tx: SqlTx, accountId: string, clientId: string): Promise<void> {
    await tx.get('SELECT pg_notify(?, ?)', [CHANNEL, JSON.stringify([this.schema, accountId, clientId])]);
  }

  private listening: Promise<void> | undefined;

  onAnnounced(listener: (stored: { accountId: string; clientIds: string[] }) => void): Promise<void> {
    this.listeners.push(listener);
    this.listening ??= this.listen();
    return this.listening;
  }

  /**
   * One dedicated connection LISTENs (a pooled one would be handed out to queries). When it drops,
   * hints pause until it is back: devices still pull at start and when a peer connects.
   */
  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.options.url });
    client.on('error', (error) => {
      this.options.onIdleError?.(error);
      if (this.listener === client) this.relisten();
    });
    client.on('notification', ({ channel, payload }) => {
      if (channel !== CHANNEL || !payload) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(payload);
      } catch {
        return; // not ours
      }
      if (!Array.isArray(parsed) || parsed[0] !== this.schema) return;
      const [, accountId, clientId] = parsed as [string, unknown, unknown];
      if (typeof accountId !== 'string' || typeof clientId !== 'string') return;
      for (const listener of this.listeners) listener({ accountId, clientIds: [clientId] });
    });
    this.listener = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (error) {
      this.options.onIdleError?.(error as Error);
      this.relisten();
    }
  }

  private relisten(): void {
    const broken = this.listener;
    this.listener = undefined;
    void broken?.end().catch(() => undefined);
    if (this.closed) return;
    clearTimeout(this.listenRetry);
    this.listenRetry = setTimeout(() => void this.listen(), LISTEN_RETRY_MS);
  }

  async transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      try {
        await client.query('BEGIN');
        const value = await fn(this.txOn(client));
        await client.query('COMMIT');
        return value;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        if (attempt < 3 && RETRYABLE.has((error as { code?: string }).code ?? '')) continue;
        throw error;
      } finally {
        client.release();
      }
    }
  }

  read<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
    return fn(this.txOn(this.pool));
  }

  private closed: Promise<void> | undefined;

  close(): Promise<void> {
    this.closed ??= (async () => {
      clearTimeout(this.listenRetry);
      const listener = this.listener;
      this.listener = undefined;
      await listener?.end().catch(() => undefined);
      await this.pool.end();
    })();
    return this.closed;
  }

  private txOn(queryable: pg.Pool | pg.PoolClient): SqlTx {
    const query = (sql: string, params: SqlValue[]) =>
      queryable.query({ text: this.numbered(sql), values: params });
    return {
      get: async <T>(sql: string, params: SqlValue[] = []) =>
        (await query(sql, params)).rows[0] as T | undefined,
      all: async <T>(sql: string, params: SqlValue[] = []) => (await query(sql, params)).rows as T[],
      run: async (sql: string, params: SqlValue[] = []) => (await query(sql, params)).rowCount ?? 0,
    };
  }

  /** `?` -> `$1, $2, ...` (the shared statements contain no literal question marks). */
  private numbered(sql: string): string {
    let text = this.texts.get(sql);
    if (text === undefined) {
      let n = 0;
      text = sql.replace(/\?/g, () => `$${++n}`);
      this.texts.set(sql, text);
    }
    return text;
  }
}

/** Creates the schema if needed (under an advisory lock, so instances starting together do not race). */
export async function createPostgresStorage(options: PostgresStorageOptions): Promise<RelayStorage> {
  const schema = options.schema ?? 'ferry_relay';
  if (!SCHEMA_NAME.test(schema)) throw new Error(`invalid PostgreSQL schema name: ${schema}`);
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.maxConnections ?? 10,
    options: `-c search_path=${schema}`,
    types,
  });
  // An idle client's broken connection is replaced on next use; without a listener it would crash the process.
  pool.on('error', (error) => options.onIdleError?.(error));
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query("SELECT pg_advisory_xact_lock(hashtext('ferry-relay-schema'))");
    await client.query(ddl(schema));
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release();
    await pool.end();
    throw error;
  }
  client.release();
  return new SqlRelayStorage(new PostgresDriver(pool, schema, options));
}
