import {
  ClientFrameSchema,
  compileCheck,
  type JoinFrame,
  JoinFrameSchema,
  LeaveFrameSchema,
  PingFrameSchema,
  type SchemaCheck,
  type ServerFrame,
  SIGNALING_CLOSE_CODES,
  SIGNALING_PROTOCOL_VERSION,
  type SignalFrame,
  SignalFrameSchema,
  type SignalingErrorCode,
  type WatchMailboxFrame,
  WatchMailboxFrameSchema,
} from '@ferry/core';
import type { BaseLogger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import type { LocalMembership, RoomDirectory } from './directory.js';
import { verifyJoinProofNative, verifyMailboxWatch } from './join-proof.js';
import { TokenBucket } from './token-bucket.js';

export interface SignalingLimits {
  /** Largest accepted frame, in bytes of JSON text. */
  maxFrameBytes: number;
  /** Sustained frames per second per socket (token bucket refill rate). */
  messagesPerSecond: number;
  /** Frames a socket may send in a burst before the rate applies. */
  burst: number;
  /** Members per room, the joiner included. */
  maxPeersPerRoom: number;
  maxRoomsPerSocket: number;
  /** Open sockets per process; further upgrades get HTTP 503. */
  maxConnections: number;
  /** A socket that has not joined a room by then is closed. */
  joinTimeoutMs: number;
  /** A socket that leaves this much unread in its send buffer is a slow consumer and is closed. */
  maxBufferedBytes: number;
}

/** A device's diff-server mailbox. */
export interface MailboxId {
  accountId: string;
  clientId: string;
}

/**
 * Decides whether `publicKey` is the registered diff-server key of the mailbox's device (the
 * signature over the watch statement is checked before). Set when a diff server runs beside.
 */
export type MailboxAuthorizer = (mailbox: MailboxId & { publicKey: string }) => Promise<boolean>;

/** Mailboxes one socket may watch (a device watches its own; a few spare for several accounts). */
const MAX_WATCHES_PER_SOCKET = 4;

export const DEFAULT_LIMITS: SignalingLimits = {
  maxFrameBytes: 64 * 1024,
  messagesPerSecond: 20,
  burst: 60,
  maxPeersPerRoom: 32,
  maxRoomsPerSocket: 4,
  maxConnections: 10_000,
  joinTimeoutMs: 10_000,
  maxBufferedBytes: 1024 * 1024,
};

export interface SignalingStats {
  connections: number;
  /** Rooms with at least one member connected to this process. */
  rooms: number;
  memberships: number;
  framesReceived: number;
  signalsRelayed: number;
  /** Frames refused with an error frame, by code. */
  rejected: Partial<Record<SignalingErrorCode, number>>;
  rejectedTotal: number;
}

/** Sees every frame as text after WebSocket unmasking; for audits and debugging (and the no-plaintext test). */
export type FrameTap = (direction: 'in' | 'out', connectionId: string, frame: string) => void;

export interface HubOptions {
  limits: SignalingLimits;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  directory: RoomDirectory;
  logger: BaseLogger;
  instanceId: string;
  tap?: FrameTap | undefined;
  challenge: () => string;
  mailboxes?: MailboxAuthorizer | undefined;
}

interface Membership extends LocalMembership {
  readonly connection: Connection;
  /** Frames for a member whose `joined` answer is not sent yet; flushed right after it. */
  pending: ServerFrame[] | undefined;
}

interface Connection {
  readonly id: string;
  readonly socket: WebSocket;
  readonly challenge: string;
  readonly bucket: TokenBucket;
  readonly openedAt: number;
  readonly memberships: Map<string, Membership>;
  /** Keys (mailboxKey) of the mailboxes this socket watches. */
  readonly watches: Set<string>;
  lastPong: number;
  everJoined: boolean;
  dropped: boolean;
  /** Frames are handled one after another, so a join is complete before the next frame is looked at. */
  queue: Promise<void>;
}

const checkClientFrame = compileCheck(ClientFrameSchema);
/** Per-type checkers, only to name the offending field when a frame of a known type is malformed. */
const checkByType: Record<string, SchemaCheck> = {
  join: compileCheck(JoinFrameSchema),
  leave: compileCheck(LeaveFrameSchema),
  signal: compileCheck(SignalFrameSchema),
  'watch-mailbox': compileCheck(WatchMailboxFrameSchema),
  ping: compileCheck(PingFrameSchema),
};

const mailboxKey = ({ accountId, clientId }: MailboxId): string => `${accountId}\u0000${clientId}`;

function describeMismatch(value: unknown): string {
  const type = (value as { type?: unknown } | null)?.type;
  const variant =
    typeof type === 'string' && Object.hasOwn(checkByType, type) ? checkByType[type] : undefined;
  if (!variant) return 'expected an object whose type is join, leave, signal, watch-mailbox or ping';
  const first = variant.Errors(value).First();
  return first ? `${type} frame: ${first.path || '/'}: ${first.message}` : `malformed ${type} frame`;
}

const CLOSE_CODE: Record<SignalingErrorCode, number> = {
  BAD_JSON: SIGNALING_CLOSE_CODES.invalidData,
  SCHEMA_MISMATCH: SIGNALING_CLOSE_CODES.invalidData,
  TOO_LARGE: SIGNALING_CLOSE_CODES.tooLarge,
  RATE_LIMITED: SIGNALING_CLOSE_CODES.policy,
  ROOM_FULL: SIGNALING_CLOSE_CODES.policy,
  TOO_MANY_ROOMS: SIGNALING_CLOSE_CODES.policy,
  BAD_PROOF: SIGNALING_CLOSE_CODES.policy,
  NOT_JOINED: SIGNALING_CLOSE_CODES.policy,
  ALREADY_JOINED: SIGNALING_CLOSE_CODES.policy,
  PEER_UNKNOWN: SIGNALING_CLOSE_CODES.policy,
  JOIN_TIMEOUT: SIGNALING_CLOSE_CODES.policy,
  REPLACED: SIGNALING_CLOSE_CODES.policy,
  SHUTTING_DOWN: SIGNALING_CLOSE_CODES.goingAway,
  SERVER_BUSY: SIGNALING_CLOSE_CODES.tryAgainLater,
  NO_MAILBOXES: SIGNALING_CLOSE_CODES.policy,
  TOO_MANY_WATCHES: SIGNALING_CLOSE_CODES.policy,
  INTERNAL: SIGNALING_CLOSE_CODES.internal,
};

/**
 * The per-process half of the signaling server: owns this process's sockets, enforces limits, checks
 * join proofs, and turns directory events into frames for its local members.
 */
export class SignalingHub {
  private readonly connections = new Set<Connection>();
  private readonly rooms = new Map<string, Set<Membership>>();
  /** Sockets watching each mailbox (mailboxKey). */
  private readonly watchers = new Map<string, Set<Connection>>();
  private readonly heartbeat: ReturnType<typeof setInterval>;
  private maintaining = false;
  private shuttingDown = false;
  private nextConnection = 0;
  private framesReceived = 0;
  private signalsRelayed = 0;
  private readonly rejected: Partial<Record<SignalingErrorCode, number>> = {};
  /** Directory leaves still in flight; shutdown waits for them so other instances hear every departure. */
  private readonly pendingLeaves = new Set<Promise<void>>();

  constructor(private readonly options: HubOptions) {
    const { directory } = options;
    directory.on('peer-joined', (room, clientId, connectionId) =>
      this.onPeerJoined(room, clientId, connectionId),
    );
    directory.on('peer-left', (room, clientId) => this.onPeerLeft(room, clientId));
    directory.on('signal', (room, from, to, body) => this.onSignal(room, from, to, body));
    this.heartbeat = setInterval(() => this.tick(), options.heartbeatIntervalMs);
    this.heartbeat.unref?.();
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  accept(socket: WebSocket): void {
    const now = Date.now();
    const connection: Connection = {
      id: `${this.options.instanceId}.${(this.nextConnection++).toString(36)}`,
      socket,
      challenge: this.options.challenge(),
      bucket: new TokenBucket(this.options.limits.messagesPerSecond, this.options.limits.burst),
      openedAt: now,
      memberships: new Map(),
      watches: new Set(),
      lastPong: now,
      everJoined: false,
      dropped: false,
      queue: Promise.resolve(),
    };
    this.connections.add(connection);
    socket.on('pong', () => {
      connection.lastPong = Date.now();
    });
    socket.on('message', (data, isBinary) => this.onMessage(connection, data, isBinary));
    socket.on('close', () => this.drop(connection));
    socket.on('error', (error) => {
      // ws reports protocol violations (bad UTF-8, frames over the hard cap) here and closes the socket itself.
      this.options.logger.debug({ connection: connection.id, err: error }, 'signaling socket error');
      this.drop(connection);
    });
    this.send(connection, {
      type: 'hello',
      version: SIGNALING_PROTOCOL_VERSION,
      connectionId: connection.id,
      challenge: connection.challenge,
    });
  }

  stats(): SignalingStats {
    let memberships = 0;
    for (const members of this.rooms.values()) memberships += members.size;
    const rejectedTotal = Object.values(this.rejected).reduce((sum, n) => sum + n, 0);
    return {
      connections: this.connections.size,
      rooms: this.rooms.size,
      memberships,
      framesReceived: this.framesReceived,
      signalsRelayed: this.signalsRelayed,
      rejected: { ...this.rejected },
      rejectedTotal,
    };
  }

  /**
   * Tell every socket we are going away (error frame + close 1001), announce their departures to
   * other instances, then wait up to `drainMs` for the close handshakes before cutting the rest.
   */
  async close(drainMs: number): Promise<void> {
    this.shuttingDown = true;
    clearInterval(this.heartbeat);
    const sockets = [...this.connections].map((connection) => {
      const closed = new Promise<void>((resolve) => {
        if (connection.socket.readyState === connection.socket.CLOSED) resolve();
        else connection.socket.once('close', () => resolve());
      });
      this.fail(connection, 'SHUTTING_DOWN', 'the signaling server is shutting down; reconnect elsewhere');
      return { connection, closed };
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drained = Promise.all(sockets.map((s) => s.closed));
    await Promise.race([drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)))]);
    clearTimeout(timer);
    for (const { connection } of sockets) connection.socket.terminate();
    await Promise.all([...this.pendingLeaves]);
  }

  private onMessage(connection: Connection, data: RawData, isBinary: boolean): void {
    if (connection.dropped) return;
    this.framesReceived++;
    const { limits } = this.options;
    if (!connection.bucket.take()) {
      this.fail(connection, 'RATE_LIMITED', `more than ${limits.messagesPerSecond} frames per second`);
      return;
    }
    // The server never changes ws's default binaryType ('nodebuffer'), so every message is one Buffer.
    const buffer = data as Buffer;
    const bytes = buffer.byteLength;
    if (bytes > limits.maxFrameBytes) {
      this.fail(
        connection,
        'TOO_LARGE',
        `frame of ${bytes} bytes exceeds the ${limits.maxFrameBytes}-byte limit`,
      );
      return;
    }
    if (isBinary) {
      this.fail(connection, 'BAD_JSON', 'signaling frames are JSON text, not binary');
      return;
    }
    const text = buffer.toString('utf8');
    this.options.tap?.('in', connection.id, text);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.fail(connection, 'BAD_JSON', 'frame is not valid JSON');
      return;
    }
    if (!checkClientFrame.Check(value)) {
      this.fail(
        connection,
        'SCHEMA_MISMATCH',
        `frame does not match the signaling schema (${describeMismatch(value)})`,
      );
      return;
    }
    const frame = value;
    connection.queue = connection.queue
      .then(async () => {
        if (connection.dropped) return;
        switch (frame.type) {
          case 'join':
            return this.join(connection, frame);
          case 'leave':
            return this.leave(connection, frame.room);
          case 'signal':
            return this.relay(connection, frame);
          case 'watch-mailbox':
            return this.watch(connection, frame);
          case 'ping':
            return this.send(connection, { type: 'pong' });
        }
      })
      .catch((error: unknown) => {
        this.options.logger.error(
          { connection: connection.id, err: error },
          'signaling frame handling failed',
        );
        this.fail(connection, 'INTERNAL', 'the server failed to handle this frame');
      });
  }

  private async join(connection: Connection, frame: JoinFrame): Promise<void> {
    const { room, clientId } = frame;
    if (connection.memberships.has(room)) {
      return this.fail(connection, 'ALREADY_JOINED', 'this socket is already in that room');
    }
    if (connection.memberships.size >= this.options.limits.maxRoomsPerSocket) {
      return this.fail(
        connection,
        'TOO_MANY_ROOMS',
        `at most ${this.options.limits.maxRoomsPerSocket} rooms per socket`,
      );
    }
    const proofInput = { challenge: connection.challenge, room, clientId, connectionId: connection.id };
    if (!verifyJoinProofNative(proofInput, frame.proof)) {
      return this.fail(connection, 'BAD_PROOF', 'the join proof does not verify with the room key');
    }
    const membership: Membership = { room, clientId, connectionId: connection.id, connection, pending: [] };
    connection.memberships.set(room, membership);
    connection.everJoined = true;
    const members = this.rooms.get(room) ?? new Set<Membership>();
    members.add(membership);
    this.rooms.set(room, members);

    const result = await this.options.directory.join(membership, this.options.limits.maxPeersPerRoom);
    if (connection.dropped) return;
    if (!result.ok) {
      this.forget(membership);
      return this.fail(
        connection,
        'ROOM_FULL',
        `the room already has ${this.options.limits.maxPeersPerRoom} members`,
      );
    }
    this.send(connection, { type: 'joined', room, peers: result.peers });
    const pending = membership.pending ?? [];
    membership.pending = undefined;
    for (const queued of pending) this.send(connection, queued);
    this.options.logger.debug({ connection: connection.id, room: room.slice(0, 8), clientId }, 'joined');
  }

  /**
   * Mailbox hints: a refused watch is answered with a non-fatal error frame (signaling goes on
   * without hints), an accepted one with `watching`.
   */
  private async watch(connection: Connection, frame: WatchMailboxFrame): Promise<void> {
    const { accountId, clientId, publicKey, proof } = frame;
    const refuse = (code: SignalingErrorCode, message: string) => {
      this.count(code);
      this.send(connection, { type: 'error', code, message, fatal: false });
    };
    const authorize = this.options.mailboxes;
    if (!authorize) return refuse('NO_MAILBOXES', 'this signaling server has no diff server beside it');
    const key = mailboxKey(frame);
    if (connection.watches.has(key)) return this.send(connection, { type: 'watching', accountId, clientId });
    if (connection.watches.size >= MAX_WATCHES_PER_SOCKET) {
      return refuse('TOO_MANY_WATCHES', `at most ${MAX_WATCHES_PER_SOCKET} mailboxes per socket`);
    }
    const statement = {
      challenge: connection.challenge,
      connectionId: connection.id,
      accountId,
      clientId,
      publicKey,
    };
    if (!verifyMailboxWatch(statement, proof) || !(await authorize({ accountId, clientId, publicKey }))) {
      return refuse('BAD_PROOF', "the watch proof does not verify with this mailbox's registered device key");
    }
    if (connection.dropped) return;
    connection.watches.add(key);
    const sockets = this.watchers.get(key) ?? new Set<Connection>();
    sockets.add(connection);
    this.watchers.set(key, sockets);
    this.send(connection, { type: 'watching', accountId, clientId });
  }

  /** New diffs were stored for these mailboxes: tell the sockets watching them on this process. */
  notifyMailboxes(accountId: string, clientIds: readonly string[]): void {
    if (this.shuttingDown) return;
    for (const clientId of clientIds) {
      for (const connection of this.watchers.get(mailboxKey({ accountId, clientId })) ?? []) {
        this.send(connection, { type: 'mailbox', accountId, clientId });
      }
    }
  }

  private async leave(connection: Connection, room: string): Promise<void> {
    const membership = connection.memberships.get(room);
    if (!membership) return this.fail(connection, 'NOT_JOINED', 'this socket is not in that room');
    connection.memberships.delete(room);
    await this.removeMembership(membership);
  }

  private async relay(connection: Connection, frame: SignalFrame): Promise<void> {
    const membership = connection.memberships.get(frame.room);
    if (!membership || membership.pending) {
      return this.fail(connection, 'NOT_JOINED', 'join the room before signaling in it');
    }
    const delivered = await this.options.directory.relay(
      frame.room,
      membership.clientId,
      frame.to,
      frame.body,
    );
    if (delivered) {
      this.signalsRelayed++;
      return;
    }
    this.count('PEER_UNKNOWN');
    this.send(connection, {
      type: 'error',
      code: 'PEER_UNKNOWN',
      message: `no client ${frame.to} in this room`,
      fatal: false,
      room: frame.room,
    });
  }

  private onPeerJoined(room: string, clientId: string, connectionId: string): void {
    for (const member of this.rooms.get(room) ?? []) {
      if (member.clientId !== clientId) {
        this.deliver(member, { type: 'peer-joined', room, clientId });
      } else if (member.connectionId !== connectionId) {
        // The same device joined over a newer socket: this one is stale (it would be a ghost).
        this.fail(member.connection, 'REPLACED', 'this client id joined the room over another connection');
      }
    }
  }

  private onPeerLeft(room: string, clientId: string): void {
    for (const member of this.rooms.get(room) ?? []) {
      if (member.clientId !== clientId) this.deliver(member, { type: 'peer-left', room, clientId });
    }
  }

  private onSignal(room: string, from: string, to: string, body: string): void {
    for (const member of this.rooms.get(room) ?? []) {
      if (member.clientId === to) this.deliver(member, { type: 'signal', room, from, body });
    }
  }

  private deliver(member: Membership, frame: ServerFrame): void {
    if (this.shuttingDown) return;
    if (member.pending) member.pending.push(frame);
    else this.send(member.connection, frame);
  }

  private send(connection: Connection, frame: ServerFrame): void {
    if (connection.dropped || connection.socket.readyState !== connection.socket.OPEN) return;
    if (connection.socket.bufferedAmount > this.options.limits.maxBufferedBytes) {
      this.options.logger.warn({ connection: connection.id }, 'slow consumer: closing signaling socket');
      this.drop(connection);
      connection.socket.terminate();
      return;
    }
    const text = JSON.stringify(frame);
    this.options.tap?.('out', connection.id, text);
    connection.socket.send(text);
  }

  private count(code: SignalingErrorCode): void {
    this.rejected[code] = (this.rejected[code] ?? 0) + 1;
  }

  /** Error frame, then close: the socket's memberships are dropped at once, not when the close completes. */
  private fail(connection: Connection, code: SignalingErrorCode, message: string): void {
    if (connection.dropped) return;
    this.count(code);
    this.options.logger.info({ connection: connection.id, code }, 'closing signaling socket');
    this.send(connection, { type: 'error', code, message, fatal: true });
    this.drop(connection);
    connection.socket.close(CLOSE_CODE[code], code);
  }

  private drop(connection: Connection): void {
    if (connection.dropped) return;
    connection.dropped = true;
    this.connections.delete(connection);
    for (const membership of connection.memberships.values()) {
      const leaving = this.removeMembership(membership).catch((error: unknown) => {
        this.options.logger.error({ err: error }, 'signaling directory leave failed');
      });
      this.pendingLeaves.add(leaving);
      void leaving.finally(() => this.pendingLeaves.delete(leaving));
    }
    connection.memberships.clear();
    for (const key of connection.watches) {
      const sockets = this.watchers.get(key);
      sockets?.delete(connection);
      if (sockets?.size === 0) this.watchers.delete(key);
    }
    connection.watches.clear();
  }

  private forget(membership: Membership): void {
    membership.connection.memberships.delete(membership.room);
    const members = this.rooms.get(membership.room);
    members?.delete(membership);
    if (members?.size === 0) this.rooms.delete(membership.room);
  }

  private async removeMembership(membership: Membership): Promise<void> {
    this.forget(membership);
    await this.options.directory.leave(membership);
  }

  private tick(): void {
    const now = Date.now();
    const { heartbeatTimeoutMs, limits } = this.options;
    for (const connection of this.connections) {
      const { socket } = connection;
      if (now - connection.lastPong > heartbeatTimeoutMs) {
        this.options.logger.info(
          { connection: connection.id },
          'heartbeat timeout: dropping signaling socket',
        );
        this.drop(connection);
        socket.terminate();
      } else if (!connection.everJoined && now - connection.openedAt > limits.joinTimeoutMs) {
        this.fail(connection, 'JOIN_TIMEOUT', `no join within ${limits.joinTimeoutMs} ms`);
      } else if (socket.readyState === socket.OPEN) {
        socket.ping();
      }
    }
    if (this.maintaining || this.shuttingDown) return;
    this.maintaining = true;
    const memberships: LocalMembership[] = [];
    for (const members of this.rooms.values()) {
      for (const { room, clientId, connectionId, pending } of members) {
        if (!pending) memberships.push({ room, clientId, connectionId });
      }
    }
    this.options.directory
      .maintain(memberships)
      .catch((error: unknown) =>
        this.options.logger.error({ err: error }, 'signaling presence upkeep failed'),
      )
      .finally(() => {
        this.maintaining = false;
      });
  }
}
