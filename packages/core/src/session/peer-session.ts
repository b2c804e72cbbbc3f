import { EventEmitter } from 'eventemitter3';
import { FerryError } from '../errors.js';
import type { Lane, PeerMessage } from '../network/types.js';
import type { Transport } from '../transport/types.js';
import { fromUtf8, utf8 } from '../util/bytes.js';
import { type HandshakeOptions, performHandshake } from './handshake.js';
import { Multiplexer, type MultiplexerOptions, type MultiplexerStats } from './mux.js';
import type { SecureChannelStats } from './secure-channel.js';

/** Session-internal control messages; never surfaced to the application. */
const PING = 'SESSION_PING';
const PONG = 'SESSION_PONG';
const CLOSE = 'SESSION_CLOSE';

export interface PeerSessionOptions extends HandshakeOptions, MultiplexerOptions {
  /** Send a ping after this long without sending anything. Default 5,000 ms. */
  keepaliveIntervalMs?: number;
  /** Close the session after this long without hearing anything. Default 15,000 ms. */
  keepaliveTimeoutMs?: number;
}

export interface PeerSessionEvents {
  message: (message: PeerMessage) => void;
  /** Emitted once, with why the session ended. */
  close: (reason: string) => void;
  /** Refused frames and undecodable messages; the session goes on. */
  error: (error: FerryError) => void;
}

export interface PeerSessionStats extends SecureChannelStats, MultiplexerStats {}

/** Default lane of an operation: AI traffic on 'ai', sync on 'sync', everything else is control. */
export const laneForOp = (op: string): Lane =>
  op.startsWith('AI_') ? 'ai' : op.startsWith('DB_') ? 'sync' : 'control';

/**
 * An authenticated, encrypted, multiplexed session with one device over one transport: the Noise
 * handshake first, then PeerMessages of any size on prioritised lanes, with keepalive.
 */
export class PeerSession extends EventEmitter<PeerSessionEvents> {
  readonly remoteClientId: string;
  readonly sessionId: string;
  private readonly mux: Multiplexer;
  private readonly keepaliveIntervalMs: number;
  private readonly keepaliveTimeoutMs: number;
  private lastHeard = Date.now();
  private lastSent = Date.now();
  private timer: ReturnType<typeof setInterval> | undefined;
  private ended = false;

  private constructor(
    private readonly transport: Transport,
    private readonly channel: Awaited<ReturnType<typeof performHandshake>>,
    options: PeerSessionOptions,
  ) {
    super();
    this.remoteClientId = channel.remoteClientId;
    this.sessionId = channel.sessionId;
    this.keepaliveIntervalMs = options.keepaliveIntervalMs ?? 5_000;
    this.keepaliveTimeoutMs = options.keepaliveTimeoutMs ?? 15_000;
    this.mux = new Multiplexer(transport, channel, options);
    this.mux.on('message', this.onMessage);
    this.mux.on('rejected', (error) => this.emit('error', error));
    this.mux.on('violation', (error) => this.end(`protocol violation: ${error.message}`));
    transport.on('message', this.onFrame);
    transport.on('close', this.onTransportClose);
    for (const frame of channel.takeEarlyFrames()) this.onFrame(frame);
    const tick = Math.max(50, Math.min(this.keepaliveIntervalMs, this.keepaliveTimeoutMs) / 2);
    this.timer = setInterval(this.keepalive, tick);
  }

  /** Runs the handshake over a fresh transport; rejects with HANDSHAKE_FAILED and closes it on failure. */
  static async open(transport: Transport, options: PeerSessionOptions): Promise<PeerSession> {
    const channel = await performHandshake(transport, options);
    if (transport.closed) throw new FerryError('CLOSED', 'transport closed right after the handshake');
    return new PeerSession(transport, channel, options);
  }

  get closed(): boolean {
    return this.ended;
  }

  get stats(): PeerSessionStats {
    return { ...this.channel.stats, ...this.mux.stats };
  }

  /** Resolves once the message is handed to the transport (flow control may make it wait). */
  async send(message: PeerMessage, lane: Lane = laneForOp(message.op)): Promise<void> {
    if (this.ended) throw new FerryError('CLOSED', `session with ${this.remoteClientId} is closed`);
    this.lastSent = Date.now();
    await this.mux.send(lane, utf8(JSON.stringify(message)));
  }

  /** Tells the peer why, then closes the transport. */
  close(reason = 'closed by peer'): void {
    if (this.ended) return;
    const bye: PeerMessage = { op: CLOSE, data: { reason }, timestamp: Date.now(), id: 'close' };
    void this.mux.send('control', utf8(JSON.stringify(bye))).catch(() => {});
    // Let the close message leave before the channel goes away.
    setTimeout(() => this.end(`closed: ${reason}`, false), 20);
  }

  private readonly onFrame = (frame: Uint8Array): void => {
    this.lastHeard = Date.now();
    this.mux.receive(frame);
  };

  private readonly onMessage = (_lane: Lane, bytes: Uint8Array): void => {
    let message: PeerMessage;
    try {
      message = JSON.parse(fromUtf8(bytes)) as PeerMessage;
    } catch (cause) {
      this.emit('error', new FerryError('BAD_JSON', 'peer sent a message that is not JSON', { cause }));
      return;
    }
    if (
      typeof message?.op !== 'string' ||
      typeof message.timestamp !== 'number' ||
      typeof message.id !== 'string'
    ) {
      this.emit('error', new FerryError('SCHEMA_MISMATCH', 'peer message lacks op, timestamp or id'));
      return;
    }
    if (message.op === PING) {
      void this.mux
        .send(
          'control',
          utf8(JSON.stringify({ op: PONG, data: null, timestamp: Date.now(), id: message.id })),
        )
        .catch(() => {});
      return;
    }
    if (message.op === PONG) return;
    if (message.op === CLOSE) {
      const reason = (message.data as { reason?: unknown } | null)?.reason;
      this.end(`closed by ${this.remoteClientId}: ${typeof reason === 'string' ? reason : 'no reason'}`);
      return;
    }
    this.emit('message', message);
  };

  private readonly keepalive = (): void => {
    const now = Date.now();
    if (now - this.lastHeard > this.keepaliveTimeoutMs) {
      this.end(`no frame from ${this.remoteClientId} for ${this.keepaliveTimeoutMs} ms`);
      return;
    }
    if (now - this.lastSent >= this.keepaliveIntervalMs) {
      this.lastSent = now;
      const ping = { op: PING, data: null, timestamp: now, id: `ping-${now}` };
      void this.mux.send('control', utf8(JSON.stringify(ping))).catch(() => {});
    }
  };

  private readonly onTransportClose = (): void => this.end('transport closed');

  private end(reason: string, emitNow = true): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.timer);
    this.mux.stop(new FerryError('CLOSED', `session with ${this.remoteClientId} ended: ${reason}`));
    this.transport.off('message', this.onFrame);
    this.transport.off('close', this.onTransportClose);
    this.transport.close();
    if (emitNow) this.emit('close', reason);
    else queueMicrotask(() => this.emit('close', reason));
  }
}
