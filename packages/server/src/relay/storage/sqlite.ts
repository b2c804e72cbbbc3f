import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { type SqlDriver, SqlRelayStorage, type SqlTx, type SqlValue } from './sql-storage.js';
import type { RelayStorage } from './types.js';

export interface SqliteStorageOptions {
  /** Directory of the database file `relay.sqlite` (created if missing). */
  dataDir: string;
  /** File name inside dataDir. Default `relay.sqlite`. */
  fileName?: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS accounts (
  account_id TEXT PRIMARY KEY,
  bytes INTEGER NOT NULL,
  diffs INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
  account_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  public_key TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (account_id, client_id)
);
CREATE TABLE IF NOT EXISTS diffs (
  account_id TEXT NOT NULL,
  diff_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  body BLOB,
  size INTEGER NOT NULL,
  digest BLOB NOT NULL,
  refs INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (account_id, diff_id)
);
CREATE INDEX IF NOT EXISTS diffs_expiry ON diffs (expires_at);
CREATE TABLE IF NOT EXISTS mailbox (
  position INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  diff_id TEXT NOT NULL,
  acked INTEGER NOT NULL,
  UNIQUE (account_id, client_id, diff_id)
);
CREATE INDEX IF NOT EXISTS mailbox_pending ON mailbox (account_id, client_id, position) WHERE acked = 0;
CREATE INDEX IF NOT EXISTS mailbox_diff ON mailbox (account_id, diff_id);
CREATE TABLE IF NOT EXISTS nonces (
  key_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
`;

interface Pending {
  fn: (tx: SqlTx) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** better-sqlite3 binds Buffers, not plain Uint8Arrays. */
const bindable = (params: SqlValue[]): unknown[] =>
  params.map((value) =>
    value instanceof Uint8Array && !Buffer.isBuffer(value)
      ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
      : value,
  );

/**
 * SQLite in WAL mode with synchronous=FULL: a commit returns only after the WAL is fsynced, so a 2xx
 * answered after commit survives a crash or power loss. Group commit keeps that affordable: every
 * transaction requested in one event-loop turn runs in one SQLite transaction (each in its own
 * savepoint, so a refused request undoes only itself) and one fsync, and each caller is answered
 * only after that commit.
 */
class SqliteDriver implements SqlDriver {
  readonly kind = 'sqlite' as const;
  readonly forUpdate = '';
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private readonly tx: SqlTx;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.tx = {
      get: async <T>(sql: string, params: SqlValue[] = []) =>
        this.statement(sql).get(...bindable(params)) as T,
      all: async <T>(sql: string, params: SqlValue[] = []) =>
        this.statement(sql).all(...bindable(params)) as T[],
      run: async (sql: string, params: SqlValue[] = []) =>
        this.statement(sql).run(...bindable(params)).changes,
    };
  }

  transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
    if (!this.db.open) return Promise.reject(new Error('relay storage is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, resolve: resolve as (value: unknown) => void, reject });
      this.flushing ??= new Promise<void>((done) => setImmediate(() => this.flush().finally(done)));
    });
  }

  /** Synchronous under the hood: runs between batches, never inside one, so it sees only committed data. */
  read<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
    return fn(this.tx);
  }

  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.db.open) this.db.close();
  }

  /**
   * Runs the queued transactions as one. Each `fn` only awaits this driver's already-resolved
   * statement promises, so the batch completes in one macrotask: no request handler runs in between.
   */
  private async flush(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    this.flushing = undefined;
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      this.db.exec('BEGIN IMMEDIATE');
      for (const item of batch) {
        this.db.exec('SAVEPOINT request');
        try {
          const value = await item.fn(this.tx);
          this.db.exec('RELEASE request');
          outcomes.push({ ok: true, value });
        } catch (error) {
          this.db.exec('ROLLBACK TO request');
          this.db.exec('RELEASE request');
          outcomes.push({ ok: false, error });
        }
      }
      this.db.exec('COMMIT');
    } catch (error) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      for (const item of batch) item.reject(error);
      return;
    }
    batch.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(outcome.error);
    });
  }

  private statement(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }
}

export function createSqliteStorage(options: SqliteStorageOptions): RelayStorage {
  mkdirSync(options.dataDir, { recursive: true });
  return new SqlRelayStorage(new SqliteDriver(join(options.dataDir, options.fileName ?? 'relay.sqlite')));
}
