import type { IncomingMessage } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import {
  randomBytes,
  roomCredentials,
  type ServerFrame,
  SignalingClient,
  type SignalingClientEvents,
  type SignalingClientOptions,
  signJoinProof,
} from '@ferry/core';
import { pino } from 'pino';
import { WebSocket } from 'ws';
import {
  createSignalingServer,
  type SignalingServer,
  type SignalingServerOptions,
} from '../../src/signaling/index.js';

export const silentLogger = pino({ level: 'silent' });

/** Short heartbeats so presence tests finish quickly; the timings themselves are never asserted. */
export const FAST: Pick<SignalingServerOptions, 'heartbeatIntervalMs' | 'heartbeatTimeoutMs' | 'drainMs'> = {
  heartbeatIntervalMs: 100,
  heartbeatTimeoutMs: 400,
  drainMs: 500,
};

export class Cleanup {
  private readonly tasks: Array<() => Promise<unknown> | unknown> = [];
  add<T>(task: () => Promise<unknown> | unknown, value: T): T {
    this.tasks.push(task);
    return value;
  }
  async run(): Promise<void> {
    for (const task of this.tasks.splice(0).reverse()) await task();
  }
}

export async function startServer(
  cleanup: Cleanup,
  options: SignalingServerOptions = {},
): Promise<SignalingServer> {
  const server = await createSignalingServer({ logger: silentLogger, ...FAST, ...options });
  return cleanup.add(() => server.close(), server);
}

export const newAccountKey = (): Uint8Array => randomBytes(32);

export function startClient(
  cleanup: Cleanup,
  options: Omit<SignalingClientOptions, 'WebSocket'> & Partial<Pick<SignalingClientOptions, 'WebSocket'>>,
): SignalingClient {
  const client = new SignalingClient({
    WebSocket,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    connectTimeoutMs: 5_000,
    ...options,
  });
  return cleanup.add(() => client.close(), client);
}

/** Resolves with the arguments of the next `event` for which `accept` holds. */
export function next<E extends keyof SignalingClientEvents>(
  client: SignalingClient,
  event: E,
  accept: (...args: Parameters<SignalingClientEvents[E]>) => boolean = () => true,
): Promise<Parameters<SignalingClientEvents[E]>> {
  return new Promise((resolve) => {
    const listener = (...args: Parameters<SignalingClientEvents[E]>) => {
      if (!accept(...args)) return;
      client.off(event, listener as never);
      resolve(args);
    };
    client.on(event, listener as never);
  });
}

/** Waits until `client.peers()` equals `expected` (as sets), re-checking on every presence event. */
export function peersBecome(client: SignalingClient, expected: string[]): Promise<void> {
  const matches = () => {
    const peers = client.peers().sort();
    return peers.length === expected.length && [...expected].sort().every((id, i) => peers[i] === id);
  };
  return new Promise((resolve) => {
    if (client.connected && matches()) return resolve();
    const check = () => {
      if (!client.connected || !matches()) return;
      for (const event of ['peer-joined', 'peer-left', 'connected'] as const) client.off(event, check);
      resolve();
    };
    for (const event of ['peer-joined', 'peer-left', 'connected'] as const) client.on(event, check);
  });
}

/** A port nothing listens on (bound once, then released). */
export async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A hand-driven protocol client: records every frame and close, sends arbitrary bytes. Used where the
 * real client would refuse to misbehave (bad input, floods) or to freeze a socket without closing it.
 */
export class RawSocket {
  readonly frames: ServerFrame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  tcp: Socket | undefined;
  hello!: Extract<ServerFrame, { type: 'hello' }>;
  private waiters: Array<{ accept: (frame: ServerFrame) => boolean; resolve: (frame: ServerFrame) => void }> =
    [];

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    ws.on('upgrade', (response: IncomingMessage) => {
      this.tcp = response.socket as Socket;
    });
    ws.on('error', () => {});
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as ServerFrame;
      this.frames.push(frame);
      for (const waiter of [...this.waiters]) {
        if (!waiter.accept(frame)) continue;
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve(frame);
      }
    });
  }

  static async open(cleanup: Cleanup, url: string): Promise<RawSocket> {
    const ws = new WebSocket(url);
    const raw = new RawSocket(ws);
    cleanup.add(() => ws.terminate(), raw);
    raw.hello = await raw.next((frame) => frame.type === 'hello');
    return raw;
  }

  /** Next frame (including already received ones not yet consumed by a predicate) matching `accept`. */
  next<T extends ServerFrame = ServerFrame>(accept: (frame: ServerFrame) => boolean): Promise<T> {
    const seen = this.frames.find(accept);
    if (seen) {
      this.frames.splice(this.frames.indexOf(seen), 1);
      return Promise.resolve(seen as T);
    }
    return new Promise((resolve) =>
      this.waiters.push({ accept, resolve: resolve as (frame: ServerFrame) => void }),
    );
  }

  send(data: string | Uint8Array): void {
    this.ws.send(data);
  }

  sendJson(frame: unknown): void {
    this.ws.send(JSON.stringify(frame));
  }

  /** Join with a correct proof for `accountKey`. */
  join(accountKey: Uint8Array, clientId: string): void {
    const credentials = roomCredentials(accountKey);
    const { challenge, connectionId } = this.hello;
    this.sendJson({
      type: 'join',
      room: credentials.room,
      clientId,
      proof: signJoinProof(credentials, { challenge, clientId, connectionId }),
    });
  }

  async joinAndWait(accountKey: Uint8Array, clientId: string): Promise<string[]> {
    this.join(accountKey, clientId);
    const joined = await this.next<Extract<ServerFrame, { type: 'joined' }>>(
      (frame) => frame.type === 'joined',
    );
    return joined.peers;
  }

  async error(): Promise<Extract<ServerFrame, { type: 'error' }>> {
    return this.next((frame) => frame.type === 'error');
  }
}

/**
 * A TCP relay in front of a server. `freeze()` turns its current connections into black holes (they
 * stay open, nothing is forwarded either way); connections made afterwards are forwarded normally.
 */
export class TcpProxy {
  private readonly pairs = new Set<[Socket, Socket]>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(target: URL): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((client) => {
      const upstream = connect(Number(target.port), target.hostname);
      const pair: [Socket, Socket] = [client, upstream];
      proxy?.pairs.add(pair);
      client.pipe(upstream);
      upstream.pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
        proxy?.pairs.delete(pair);
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    proxy = new TcpProxy(server, `ws://127.0.0.1:${port}${target.pathname}`);
    return proxy;
  }

  freeze(): void {
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  async close(): Promise<void> {
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
