import type { AddressInfo } from 'node:net';
import { FerryError } from '@ferry/core';
import type { FastifyInstance } from 'fastify';
import { type BaseLogger, type Logger, pino } from 'pino';
import { createDiffServer, type DiffServer, type RelayLimits } from './relay/app.js';
import { createPostgresStorage } from './relay/storage/postgres.js';
import { createSqliteStorage } from './relay/storage/sqlite.js';
import type { RelayStorage } from './relay/storage/types.js';
import {
  createSignalingServer,
  type SignalingServer,
  type SignalingServerOptions,
} from './signaling/index.js';

export interface FerryServerOptions {
  /** Default 8787; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Directory of the SQLite store; used unless a PostgreSQL URL is given. */
  dataDir?: string;
  /** `postgres://...` switches storage to PostgreSQL. Default: env FERRY_DATABASE_URL. */
  databaseUrl?: string;
  /** PostgreSQL schema of the relay tables. Default `ferry_relay`. */
  databaseSchema?: string;
  /** Shares signaling rooms across instances. Default: env FERRY_REDIS_URL. */
  redisUrl?: string;
  logger?: Logger;
  /** Log a line per HTTP request (never bodies). Default true. */
  logRequests?: boolean;
  relayLimits?: Partial<RelayLimits>;
  signaling?: Omit<SignalingServerOptions, 'server' | 'host' | 'port' | 'redisUrl' | 'logger'>;
  trustProxy?: boolean;
  /** Diff server CORS origins (default `*`, see DiffServerOptions). */
  corsOrigins?: string[] | '*' | false;
  /** Called before listening, to add routes or plugins (e.g. the web app) to the shared Fastify app. */
  configure?: (app: FastifyInstance) => Promise<void> | void;
}

export interface FerryServer {
  /** `http://host:port` of the diff server. */
  readonly url: string;
  /** `ws://host:port/signal` of the signaling server (same port). */
  readonly signalingUrl: string;
  readonly port: number;
  readonly diff: DiffServer;
  readonly signaling: SignalingServer;
  /** Graceful: signaling sockets closed first, then in-flight HTTP requests finish, then the store closes. */
  close(): Promise<void>;
}

/**
 * The whole Ferry server in one process and one port: the diff server (HTTP, Fastify) and the
 * signaling server (WebSocket upgrade on the same HTTP server).
 */
export async function startFerryServer(options: FerryServerOptions = {}): Promise<FerryServer> {
  const logger = options.logger ?? pino({ name: 'ferry-server' });
  const databaseUrl = options.databaseUrl ?? process.env.FERRY_DATABASE_URL;
  const redisUrl = options.redisUrl ?? process.env.FERRY_REDIS_URL;
  const storage = await openStorage(databaseUrl, options, logger);
  const diff = await createDiffServer({
    storage,
    logger: logger.child({ component: 'relay' }),
    logRequests: options.logRequests ?? true,
    trustProxy: options.trustProxy ?? false,
    ...(options.relayLimits ? { limits: options.relayLimits } : {}),
    ...(options.corsOrigins === undefined ? {} : { corsOrigins: options.corsOrigins }),
  });
  let signaling: SignalingServer | undefined;
  try {
    signaling = await createSignalingServer({
      ...options.signaling,
      server: diff.app.server,
      logger: logger.child({ component: 'signaling' }) as BaseLogger,
      ...(redisUrl ? { redisUrl } : {}),
      // Mailbox hints: a watcher must hold the registered device key of the mailbox it names.
      mailboxes: async ({ accountId, clientId, publicKey }) => {
        const device = await storage.findDeviceByKey(publicKey);
        return device?.accountId === accountId && device.clientId === clientId;
      },
    });
    const hints = signaling;
    diff.events.on('diffs', ({ accountId, clientIds }) => hints.notifyMailboxes(accountId, clientIds));
    await options.configure?.(diff.app);
    await diff.app.listen({ port: options.port ?? 8787, host: options.host ?? '127.0.0.1' });
  } catch (error) {
    await signaling?.close();
    await diff.close();
    throw error;
  }
  const address = diff.app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  logger.info(
    { port: address.port, storage: storage.kind, redis: Boolean(redisUrl) },
    'ferry server listening',
  );
  const openSignaling = signaling;
  let closed: Promise<void> | undefined;
  return {
    url: `http://${host}:${address.port}`,
    signalingUrl: openSignaling.url,
    port: address.port,
    diff,
    signaling: openSignaling,
    close() {
      closed ??= (async () => {
        await openSignaling.close();
        await diff.close();
        logger.info('ferry server closed');
      })();
      return closed;
    },
  };
}

function openStorage(
  databaseUrl: string | undefined,
  options: FerryServerOptions,
  logger: Logger,
): Promise<RelayStorage> {
  if (databaseUrl) {
    if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
      throw new FerryError(
        'SCHEMA_MISMATCH',
        'the database URL must start with postgres:// or postgresql://',
      );
    }
    return createPostgresStorage({
      url: databaseUrl,
      ...(options.databaseSchema ? { schema: options.databaseSchema } : {}),
      onIdleError: (error) => logger.warn({ err: error }, 'an idle PostgreSQL connection failed'),
    });
  }
  if (!options.dataDir) {
    throw new FerryError(
      'SCHEMA_MISMATCH',
      'give dataDir (SQLite) or databaseUrl / FERRY_DATABASE_URL (PostgreSQL)',
    );
  }
  return Promise.resolve(createSqliteStorage({ dataDir: options.dataDir }));
}
