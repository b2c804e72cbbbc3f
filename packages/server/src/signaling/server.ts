import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { DEFAULT_SIGNALING_PATH, randomBytes, toBase64, toHex } from '@ferry/core';
import { type BaseLogger, pino } from 'pino';
import { WebSocketServer } from 'ws';
import { MemoryDirectory, type RoomDirectory } from './directory.js';
import {
  DEFAULT_LIMITS,
  type FrameTap,
  type MailboxAuthorizer,
  SignalingHub,
  type SignalingLimits,
  type SignalingStats,
} from './hub.js';
import { createRedisDirectory } from './redis-directory.js';

export interface SignalingServerOptions {
  /**
   * Attach to this HTTP server's `upgrade` event (e.g. the diff server's Fastify `app.server`), so one
   * process and one port serve both. Without it a standalone HTTP server is started, with `GET /health`.
   */
  server?: Server;
  /** Standalone only. Default 127.0.0.1 and a random free port. */
  host?: string;
  port?: number;
  /** WebSocket path. Default `/signal`. */
  path?: string;
  /** Share rooms with other instances through Redis pub/sub (the composition reads FERRY_REDIS_URL). */
  redisUrl?: string;
  /** Prefix of every Redis key and channel. Default `ferry:signal:`. */
  redisKeyPrefix?: string;
  /** Redis presence entries expire this long after the last refresh. Default 3 heartbeats. */
  presenceTtlMs?: number;
  limits?: Partial<SignalingLimits>;
  /** WebSocket ping period. Default 2,000 ms. */
  heartbeatIntervalMs?: number;
  /** A socket without a pong for this long is dropped and its peers told. Default 5,000 ms. */
  heartbeatTimeoutMs?: number;
  /** On close, how long sockets get to finish their close handshake. Default 2,000 ms. */
  drainMs?: number;
  logger?: BaseLogger;
  tap?: FrameTap;
  /**
   * Turns on mailbox hints (`watch-mailbox`): decides whether a key is a mailbox's registered device
   * key. startFerryServer sets it from the diff server's storage.
   */
  mailboxes?: MailboxAuthorizer;
}

export interface SignalingServer {
  /** `ws://host:port/path` once the HTTP server listens. */
  readonly url: string;
  readonly path: string;
  /** Unique per process; prefixes connection ids and owns this process's Redis presence entries. */
  readonly instanceId: string;
  stats(): SignalingStats;
  /** New diffs wait in these mailboxes: sockets of this process that watch one get a `mailbox` frame. */
  notifyMailboxes(accountId: string, clientIds: readonly string[]): void;
  /** Graceful: refuse new sockets, close frames to all, drain, leave rooms, unsubscribe, stop listening. */
  close(): Promise<void>;
}

/** Frames above the configured limit are read up to this many times the limit, so we can answer with an error frame. */
const HARD_CAP_FACTOR = 4;

export async function createSignalingServer(options: SignalingServerOptions = {}): Promise<SignalingServer> {
  const path = options.path ?? DEFAULT_SIGNALING_PATH;
  const limits: SignalingLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 2_000;
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 5_000;
  const logger = options.logger ?? pino({ name: 'ferry-signaling' });
  const instanceId = toHex(randomBytes(6));

  const directory: RoomDirectory = options.redisUrl
    ? await createRedisDirectory({
        url: options.redisUrl,
        keyPrefix: options.redisKeyPrefix ?? 'ferry:signal:',
        presenceTtlMs: options.presenceTtlMs ?? 3 * heartbeatIntervalMs,
        logger,
      })
    : new MemoryDirectory();

  const hub = new SignalingHub({
    limits,
    heartbeatIntervalMs,
    heartbeatTimeoutMs,
    directory,
    logger,
    instanceId,
    tap: options.tap,
    challenge: () => toBase64(randomBytes(32), { url: true }),
    mailboxes: options.mailboxes,
  });
  // ws rejects frames above maxPayload by itself with close code 1009; below that cap the hub answers
  // oversize frames with a TOO_LARGE error frame first.
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: limits.maxFrameBytes * HARD_CAP_FACTOR,
    perMessageDeflate: false,
    clientTracking: false,
  });

  let closing = false;
  const standalone = options.server === undefined;
  const http = options.server ?? createServer((req, res) => answerHttp(req, res, hub, closing));

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (pathname !== path) {
      // Another upgrade handler of the host server may own this path; refuse it only if we are alone.
      if (standalone || http.listenerCount('upgrade') === 1) refuseUpgrade(socket, 404, 'Not Found');
      return;
    }
    if (closing) return refuseUpgrade(socket, 503, 'Service Unavailable');
    if (hub.connectionCount >= limits.maxConnections) {
      logger.warn({ limit: limits.maxConnections }, 'signaling connection limit reached');
      return refuseUpgrade(socket, 503, 'Service Unavailable');
    }
    wss.handleUpgrade(req, socket, head, (ws) => hub.accept(ws));
  };
  http.on('upgrade', onUpgrade);

  if (standalone) {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
        http.off('error', reject);
        resolve();
      });
    });
  }

  const drainMs = options.drainMs ?? 2_000;
  let url: string | undefined;
  return {
    path,
    instanceId,
    get url() {
      // Remembered once known, so it still names this server after close (clients keep retrying it).
      if (url) return url;
      const address = http.address() as AddressInfo | null;
      if (!address) throw new Error('the HTTP server hosting signaling is not listening yet');
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      url = `ws://${host}:${address.port}${path}`;
      return url;
    },
    stats: () => hub.stats(),
    notifyMailboxes: (accountId, clientIds) => hub.notifyMailboxes(accountId, clientIds),
    async close() {
      if (closing) return;
      closing = true;
      http.off('upgrade', onUpgrade);
      await hub.close(drainMs);
      await directory.close();
      wss.close();
      if (standalone) {
        await new Promise<void>((resolve) => {
          http.close(() => resolve());
          http.closeAllConnections();
        });
      }
      logger.info({ instanceId }, 'signaling server closed');
    },
  };
}

function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

function answerHttp(req: IncomingMessage, res: ServerResponse, hub: SignalingHub, closing: boolean): void {
  const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
  const reply = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.method !== 'GET' || pathname !== '/health') {
    reply(404, { error: 'NOT_FOUND', message: `no route ${req.method} ${pathname}` });
  } else if (closing) {
    reply(503, { status: 'shutting-down' });
  } else {
    reply(200, { status: 'ok', signaling: hub.stats() });
  }
}
