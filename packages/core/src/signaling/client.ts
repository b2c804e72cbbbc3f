import { Value } from '@sinclair/typebox/value';
import { EventEmitter } from 'eventemitter3';
import { ReplayGuard } from '../crypto/replay.js';
import { FerryError } from '../errors.js';
import {
  type ClientFrame,
  ClientIdSchema,
  type ServerFrame,
  ServerFrameSchema,
  type SignalingErrorCode,
} from '../protocol/signaling.js';
import { toBase64, utf8 } from '../util/bytes.js';
import { requirePositive } from '../util/options.js';
import {
  mailboxWatchMessage,
  openSignal,
  type RoomCredentials,
  roomCredentials,
  sealSignal,
  signJoinProof,
} from './credentials.js';
import { globalWebSocket, type WebSocketConstructor, type WebSocketLike } from './websocket.js';

export interface SignalingClientEvents {
  /** Joined the room on `url` (first time or after a reconnect); `peers()` is current. */
  connected: (url: string) => void;
  /** Lost the signaling server; the client is already reconnecting. Peer sessions may well still be up. */
  disconnected: (reason: string) => void;
  /** A device entered the room. Emitted once per arrival (a quick reconnect of that device is not an arrival). */
  'peer-joined': (clientId: string) => void;
  'peer-left': (clientId: string) => void;
  /** A signal addressed to us, already opened, authenticated and replay-checked. */
  signal: (from: string, data: unknown) => void;
  /** The server accepted the mailbox watch (after every (re)connect). */
  watching: (mailbox: { accountId: string; clientId: string }) => void;
  /**
   * Diffs wait in a watched mailbox on the diff server: pull it. Also emitted when a watch starts
   * (after every (re)connect): hints for diffs stored while no socket watched were never sent.
   */
  mailbox: (mailbox: { accountId: string; clientId: string }) => void;
  /**
   * Unreachable servers, server error frames, signals that fail to open or replay. The client keeps
   * going, except after REPLACED (another connection joined with this client id): it then closes.
   */
  error: (error: FerryError) => void;
}

export interface SignalingClientOptions {
  /** Signaling servers in order of preference (`ws://host:port/signal`); the next is tried when one fails. */
  urls: readonly string[];
  accountKey: Uint8Array;
  clientId: string;
  /** WebSocket implementation; default the global one. Node 20: pass `WebSocket` from the `ws` package. */
  WebSocket?: WebSocketConstructor;
  /** One URL gets this long to answer the join. Default 10,000 ms. */
  connectTimeoutMs?: number;
  /** Backoff after every URL failed once: doubling from `initialDelayMs` to `maxDelayMs`, with jitter. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Application ping period (browsers cannot see WebSocket pings). Default 5,000 ms. */
  heartbeatIntervalMs?: number;
  /** No frame from the server for this long: the connection is dead, reconnect. Default 15,000 ms. */
  heartbeatTimeoutMs?: number;
  /** Refuse to send frames larger than the server accepts. Default 64 KiB (the server's default). */
  maxFrameBytes?: number;
  /**
   * After a reconnect, a peer missing from the new peer list is reported as left only if it has not
   * rejoined within this time (after a server restart every device races back). Default 5,000 ms.
   */
  rejoinGraceMs?: number;
  /** Signals whose timestamp is further than this from our clock are refused. Default 120,000 ms. */
  replayWindowMs?: number;
  /** Replace the default replay guard (timestamp window + seen message ids). */
  replayGuard?: Pick<ReplayGuard, 'check'>;
}

/** An error frame from the signaling server; `serverCode` is the wire code (ROOM_FULL, RATE_LIMITED...). */
export class SignalingServerError extends FerryError {
  constructor(
    readonly serverCode: SignalingErrorCode,
    message: string,
    readonly fatal: boolean,
  ) {
    super('SERVER', `signaling server: ${serverCode}: ${message}`);
  }
}

type State = 'connecting' | 'joined' | 'waiting' | 'closed';

/** A diff-server mailbox to get hints for, with the device key that proves it is ours (RelayClient.mailboxWatch()). */
export interface MailboxWatch {
  accountId: string;
  clientId: string;
  /** base64url Ed25519 public key registered for the device on the diff server. */
  publicKey: string;
  sign(message: Uint8Array): Uint8Array;
}

/**
 * Finds this account's other devices through a signaling server and carries sealed signals to them.
 *
 * Connects to the first reachable URL, fails over to the next one, reconnects with exponential
 * backoff and jitter, and rejoins the room after every reconnect. The room id and the join proof come
 * from the account key; signal bodies are sealed with a subkey and bound to room, sender and
 * recipient, so the server relays ciphertext it can neither read nor re-address.
 */
export class SignalingClient extends EventEmitter<SignalingClientEvents> {
  readonly clientId: string;
  /** The room id the server sees (public key of the room signing key). */
  readonly room: string;

  private readonly credentials: RoomCredentials;
  private readonly urls: readonly string[];
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly replay: Pick<ReplayGuard, 'check'>;
  private readonly settings: {
    connectTimeoutMs: number;
    initialDelayMs: number;
    maxDelayMs: number;
    heartbeatIntervalMs: number;
    heartbeatTimeoutMs: number;
    maxFrameBytes: number;
    rejoinGraceMs: number;
  };
  private state: State = 'connecting';
  private socket: WebSocketLike | undefined;
  private socketUrl: string | undefined;
  private readonly knownPeers = new Set<string>();
  /** Known peers absent from the last peer list, each with the timer that will report it gone. */
  private readonly unconfirmed = new Map<string, ReturnType<typeof setTimeout>>();
  private urlIndex = 0;
  private failuresInCycle = 0;
  private failedCycles = 0;
  private lastInbound = 0;
  /** Code of the fatal error frame the current socket received, if any: it decides how we reconnect. */
  private refusedWith: SignalingErrorCode | undefined;
  /** The current socket's `hello`: a mailbox watch proof is bound to it. */
  private greeting: { challenge: string; connectionId: string } | undefined;
  private readonly watches: MailboxWatch[] = [];
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: SignalingClientOptions) {
    super();
    if (options.urls.length === 0)
      throw new FerryError('BAD_ARGUMENT', 'SignalingClient needs at least one URL');
    const { connectTimeoutMs, heartbeatIntervalMs, heartbeatTimeoutMs, replayWindowMs, reconnect } = options;
    requirePositive('SignalingClient', {
      connectTimeoutMs,
      heartbeatIntervalMs,
      heartbeatTimeoutMs,
      replayWindowMs,
      ...reconnect,
    });
    requirePositive('SignalingClient', { maxFrameBytes: options.maxFrameBytes }, { integer: true });
    requirePositive('SignalingClient', { rejoinGraceMs: options.rejoinGraceMs }, { zeroAllowed: true });
    if (!Value.Check(ClientIdSchema, options.clientId)) {
      throw new FerryError('SCHEMA_MISMATCH', 'clientId must be 1-128 characters of A-Z a-z 0-9 . _ : @ -');
    }
    const WebSocketImpl = options.WebSocket ?? globalWebSocket();
    if (!WebSocketImpl) {
      throw new FerryError(
        'BAD_ARGUMENT',
        'no global WebSocket: pass the WebSocket option (in Node 20, from the ws package)',
      );
    }
    this.WebSocketImpl = WebSocketImpl;
    this.urls = [...options.urls];
    this.clientId = options.clientId;
    this.credentials = roomCredentials(options.accountKey);
    this.room = this.credentials.room;
    this.replay = options.replayGuard ?? new ReplayGuard({ windowMs: options.replayWindowMs ?? 120_000 });
    this.settings = {
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      initialDelayMs: options.reconnect?.initialDelayMs ?? 250,
      maxDelayMs: options.reconnect?.maxDelayMs ?? 30_000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 5_000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 15_000,
      maxFrameBytes: options.maxFrameBytes ?? 64 * 1024,
      rejoinGraceMs: options.rejoinGraceMs ?? 5_000,
    };
    this.connect();
  }

  /** True while joined to the room on some server. */
  get connected(): boolean {
    return this.state === 'joined';
  }

  /** The server URL we are joined through, if any. */
  get url(): string | undefined {
    return this.state === 'joined' ? this.socketUrl : undefined;
  }

  /** Client ids of the other devices in the room (the last known list while reconnecting). */
  peers(): string[] {
    return [...this.knownPeers];
  }

  /**
   * Seal `data` (any JSON value: an offer, answer or ICE candidate) for `to` and send it. Throws
   * FerryError CLOSED when not joined right now, TOO_LARGE above the frame limit.
   */
  signal(to: string, data: unknown): void {
    const socket = this.socket;
    if (this.state !== 'joined' || !socket) {
      throw new FerryError('CLOSED', 'not connected to a signaling server (wait for the connected event)');
    }
    const body = sealSignal(this.credentials, this.clientId, to, data);
    const text = JSON.stringify({ type: 'signal', room: this.room, to, body } satisfies ClientFrame);
    const size = utf8(text).length;
    if (size > this.settings.maxFrameBytes) {
      throw new FerryError(
        'TOO_LARGE',
        `signal frame of ${size} bytes exceeds ${this.settings.maxFrameBytes} bytes`,
      );
    }
    socket.send(text);
  }

  /**
   * Ask the server for mailbox hints (`mailbox` events) for a diff-server mailbox, now and after
   * every reconnect. A server without a diff server beside it refuses with a non-fatal error event.
   */
  watchMailbox(watch: MailboxWatch): void {
    const same = this.watches.findIndex(
      (w) => w.accountId === watch.accountId && w.clientId === watch.clientId,
    );
    if (same >= 0) this.watches.splice(same, 1);
    this.watches.push(watch);
    if (this.state === 'joined' && this.socket) this.sendWatch(this.socket, watch);
  }

  private sendWatch(socket: WebSocketLike, watch: MailboxWatch): void {
    if (!this.greeting) return;
    const { accountId, clientId, publicKey } = watch;
    const proof = watch.sign(mailboxWatchMessage({ ...this.greeting, accountId, clientId, publicKey }));
    this.send(socket, {
      type: 'watch-mailbox',
      accountId,
      clientId,
      publicKey,
      proof: toBase64(proof, { url: true }),
    });
  }

  /** Leave the room and stop reconnecting. Resolves once the socket is closed. */
  close(): Promise<void> {
    if (this.state === 'closed') return Promise.resolve();
    const wasJoined = this.state === 'joined';
    this.state = 'closed';
    clearTimeout(this.retryTimer);
    for (const timer of this.unconfirmed.values()) clearTimeout(timer);
    this.unconfirmed.clear();
    const socket = this.detach();
    if (wasJoined) this.emit('disconnected', 'closed by this client');
    if (!socket || socket.readyState >= 2) return Promise.resolve();
    return new Promise<void>((resolve) => {
      // A dead server never answers the close handshake; don't wait for it forever.
      const fallback = setTimeout(resolve, 1_000);
      socket.onclose = () => {
        clearTimeout(fallback);
        resolve();
      };
      socket.close(1000, 'client closed');
    });
  }

  /** A method, not a property read, so TypeScript does not assume an event listener left `state` alone. */
  private stopped(): boolean {
    return this.state === 'closed';
  }

  private connect(): void {
    const url = this.urls[this.urlIndex]!;
    this.state = 'connecting';
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketImpl(url);
    } catch (cause) {
      this.attemptFailed(url, `cannot open ${url}: ${String(cause)}`);
      return;
    }
    this.socket = socket;
    this.socketUrl = url;
    this.refusedWith = undefined;
    this.lastInbound = Date.now();
    socket.onmessage = (event) => this.onFrame(socket, event.data);
    socket.onclose = (event) =>
      this.onSocketClosed(socket, `connection closed (${event.code} ${event.reason})`);
    // The close event always follows and carries the reason; ws would throw on an unhandled error.
    socket.onerror = () => {};
    this.connectTimer = setTimeout(
      () => this.abandon(socket, `no answer to join within ${this.settings.connectTimeoutMs} ms`),
      this.settings.connectTimeoutMs,
    );
  }

  /** Stop using the current socket at once: forget its handlers and timers, close it in the background. */
  private detach(): WebSocketLike | undefined {
    const socket = this.socket;
    this.socket = undefined;
    clearTimeout(this.connectTimer);
    clearInterval(this.heartbeatTimer);
    if (socket) {
      socket.onmessage = null;
      socket.onclose = null;
      socket.onopen = null;
    }
    return socket;
  }

  private abandon(socket: WebSocketLike, reason: string): void {
    if (socket !== this.socket) return;
    this.onSocketClosed(socket, reason);
    try {
      socket.close();
    } catch {
      // Already closing; nothing else to release.
    }
  }

  private onSocketClosed(socket: WebSocketLike, reason: string): void {
    if (socket !== this.socket || this.state === 'closed') return;
    const url = this.socketUrl ?? '';
    const wasJoined = this.state === 'joined';
    // A server that refused us (rate limit, full room...) is retried with backoff like an unreachable
    // one; a server that is merely going away or vanished gets a quick rejoin.
    const refused = this.refusedWith !== undefined && this.refusedWith !== 'SHUTTING_DOWN';
    this.detach();
    if (wasJoined) {
      this.emit('disconnected', reason);
      if (this.stopped()) return; // a listener closed us
      if (!refused) {
        // Same URL first: it worked a moment ago. A jittered pause spreads a restarted server's clients.
        this.failuresInCycle = 0;
        this.scheduleConnect(Math.random() * this.settings.initialDelayMs);
        return;
      }
    }
    this.attemptFailed(url, reason);
  }

  private attemptFailed(url: string, reason: string): void {
    this.emit('error', new FerryError('TRANSPORT', `signaling server ${url}: ${reason}`));
    if (this.stopped()) return; // a listener closed us
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    this.failuresInCycle++;
    if (this.failuresInCycle < this.urls.length) {
      this.connect();
      return;
    }
    this.failuresInCycle = 0;
    this.failedCycles++;
    const { initialDelayMs, maxDelayMs } = this.settings;
    const delay = Math.min(maxDelayMs, initialDelayMs * 2 ** (this.failedCycles - 1));
    this.scheduleConnect(delay / 2 + (Math.random() * delay) / 2);
  }

  private scheduleConnect(delayMs: number): void {
    this.state = 'waiting';
    this.retryTimer = setTimeout(() => {
      if (this.state === 'waiting') this.connect();
    }, delayMs);
  }

  private send(socket: WebSocketLike, frame: ClientFrame): void {
    socket.send(JSON.stringify(frame));
  }

  private onFrame(socket: WebSocketLike, raw: unknown): void {
    if (socket !== this.socket) return;
    this.lastInbound = Date.now();
    let frame: unknown;
    try {
      if (typeof raw !== 'string') throw new Error('binary frame');
      frame = JSON.parse(raw);
    } catch {
      this.emit('error', new FerryError('BAD_JSON', 'signaling server sent a frame that is not JSON text'));
      return;
    }
    if (!Value.Check(ServerFrameSchema, frame)) {
      this.emit('error', new FerryError('SCHEMA_MISMATCH', 'signaling server sent a frame of unknown shape'));
      return;
    }
    this.handle(socket, frame);
  }

  private handle(socket: WebSocketLike, frame: ServerFrame): void {
    if ('room' in frame && frame.room !== undefined && frame.room !== this.room) return;
    switch (frame.type) {
      case 'hello':
        if (this.state !== 'connecting') return;
        this.greeting = { challenge: frame.challenge, connectionId: frame.connectionId };
        this.send(socket, {
          type: 'join',
          room: this.room,
          clientId: this.clientId,
          proof: signJoinProof(this.credentials, {
            challenge: frame.challenge,
            clientId: this.clientId,
            connectionId: frame.connectionId,
          }),
        });
        return;
      case 'joined':
        this.onJoined(socket, frame.peers);
        return;
      case 'peer-joined':
        this.confirm(frame.clientId);
        return;
      case 'peer-left':
        this.forget(frame.clientId);
        return;
      case 'signal':
        this.onSignal(frame.from, frame.body);
        return;
      case 'pong':
        return;
      case 'watching':
        this.emit('watching', { accountId: frame.accountId, clientId: frame.clientId });
        this.emit('mailbox', { accountId: frame.accountId, clientId: frame.clientId });
        return;
      case 'mailbox':
        this.emit('mailbox', { accountId: frame.accountId, clientId: frame.clientId });
        return;
      case 'error':
        if (frame.fatal) this.refusedWith = frame.code;
        this.emit('error', new SignalingServerError(frame.code, frame.message, frame.fatal));
        // Another live connection joined with our client id (a second device or tab configured with
        // the same id): the newest wins, and rejoining would only start a tug of war.
        if (frame.code === 'REPLACED') void this.close();
        return;
    }
  }

  private onJoined(socket: WebSocketLike, peers: string[]): void {
    if (this.state !== 'connecting') return;
    clearTimeout(this.connectTimer);
    this.state = 'joined';
    this.failuresInCycle = 0;
    this.failedCycles = 0;
    this.heartbeatTimer = setInterval(() => {
      if (Date.now() - this.lastInbound > this.settings.heartbeatTimeoutMs) {
        this.abandon(socket, `no frame from the server for ${this.settings.heartbeatTimeoutMs} ms`);
      } else {
        this.send(socket, { type: 'ping' });
      }
    }, this.settings.heartbeatIntervalMs);
    for (const watch of this.watches) this.sendWatch(socket, watch);
    this.emit('connected', this.socketUrl ?? '');
    if (this.stopped()) return; // a listener closed us
    // Reconcile with what we knew before a reconnect: only real arrivals and departures are events.
    const current = new Set(peers.filter((id) => id !== this.clientId));
    for (const id of current) this.confirm(id);
    for (const id of this.knownPeers) {
      if (current.has(id) || this.unconfirmed.has(id)) continue;
      const timer = setTimeout(() => this.forget(id), this.settings.rejoinGraceMs);
      this.unconfirmed.set(id, timer);
    }
  }

  /** The server says `id` is in the room: an arrival unless we already knew it. */
  private confirm(id: string): void {
    if (id === this.clientId) return;
    clearTimeout(this.unconfirmed.get(id));
    this.unconfirmed.delete(id);
    if (this.knownPeers.has(id)) return;
    this.knownPeers.add(id);
    this.emit('peer-joined', id);
  }

  private forget(id: string): void {
    clearTimeout(this.unconfirmed.get(id));
    this.unconfirmed.delete(id);
    if (this.knownPeers.delete(id)) this.emit('peer-left', id);
  }

  private onSignal(from: string, body: string): void {
    let data: unknown;
    try {
      const plaintext = openSignal(this.credentials, from, this.clientId, body);
      this.replay.check(plaintext.id, plaintext.ts);
      data = plaintext.data;
    } catch (error) {
      this.emit(
        'error',
        error instanceof FerryError
          ? error
          : new FerryError('INTERNAL', 'failed to open a signal', { cause: error }),
      );
      return;
    }
    this.emit('signal', from, data);
  }
}
