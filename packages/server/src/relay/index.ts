export type {
  DiffServer,
  DiffServerEvents,
  DiffServerOptions,
  DiffsStoredEvent,
  RelayLimits,
} from './app.js';
export { createDiffServer, DEFAULT_RELAY_LIMITS } from './app.js';
export { RelayRejection } from './errors.js';
export type { PostgresStorageOptions } from './storage/postgres.js';
export { createPostgresStorage } from './storage/postgres.js';
export type { SqliteStorageOptions } from './storage/sqlite.js';
export { createSqliteStorage } from './storage/sqlite.js';
export type * from './storage/types.js';
