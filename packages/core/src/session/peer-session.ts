import { EventEmitter } from 'eventemitter3';
import { FerryError } from '../errors.js';
import type { Lane, PeerMessage } from '../network/types.js';
import { DEFAULT_MAX_MESSAGE_BYTES, newMessageId } from '../protocol/message.js';
// Registers the SESSION_* operations this file sends and checks.
import '../protocol/ops/session.js';
import { getOp, hasOp, type KnownOp, type OpData } from '../protocol/registry.js';
import type { Transport } from '../transport/types.js';
import { requirePositive } from '../util/options.js';
import { type HandshakeOptions, performHandshake } from './handshake.js';
import {
  checkMultiplexerOptions,
  Multiplexer,
  type MultiplexerOptions,
  type MultiplexerStats,
} from './mux.js';
import type { SecureChannel, SecureChannelStats } from './secure-channel.js';
import { decodeWireMessage, encodeWireMessage } from './wire.js';

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
  /** Refused frames, undecodable messages, and the peer refusing ours; the session goes on. */
  error: (error: FerryError) => void;
}

export interface PeerSessionStats extends SecureChannelStats, MultiplexerStats {
  /** Round trip of the last keepalive ping, if one was answered. */
  rttMs: number | undefined;
}

/** Lane of an operation: its registered lane, else by prefix (AI_ -> 'ai', DB_ -> 'sync', else control). */
export const laneForOp = (op: string): Lane =>
  hasOp(op) ? getOp(op).lane : op.startsWith('AI_') ? 'ai' : op.startsWith('DB_') ? 'sync' : 'control';

/**
 * How long a closing session waits for the peer to hang up (it does once it read the close
 * message) before it tears the transport down itself: a dead peer, or a close message stuck behind
 * a full buffer, does not hold it open longer.
 */
const CLOSE_TIMEOUT_MS = 1_000;

/** Refuses (FerryError 'BAD_ARGUMENT', naming the option) values that would stall or spin a session. */
export function checkPeerSessionOptions(options: Partial<PeerSessionOptions>): void {
  const { keepaliveIntervalMs, keepaliveTimeoutMs, timeoutMs } = options;
  requirePositive('session', { keepaliveIntervalMs, keepaliveTimeoutMs, timeoutMs });
  checkMultiplexerOptions(options);
}

/**
 * An authenticated, encrypted, multiplexed session with one device over one transport: the Noise
 * handshake first, then PeerMessages of any size on prioritised lanes, with keepalive. SESSION_*
 * messages (ping, pong, close, error) are the session's own and never reach the application.
 */
export class PeerSession extends EventEmitter<PeerSessionEvents> {
  readonly remoteClientId: string;
  readonly sessionId: string;
  private readonly mux: Multiplexer;
  private readonly maxMessageBytes: number;
  private readonly keepaliveIntervalMs: number;
  private readonly keepaliveTimeoutMs: number;
  private lastHeard = Date.now();
  private lastSent = Date.now();
  private pendingPing: { pingId: string; sentAt: number } | undefined;
  private rttMs: number | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private closeTimer: ReturnType<typeof setTimeout> | undefined;
  private closing: FerryError | undefined;
  /** Why this side closed (see close): the reason the session ends with when the peer hangs up. */
  private closedBecause: string | undefined;
  private ended = false;

  private constructor(
    private readonly transport: Transport,
    private readonly channel: SecureChannel,
    options: PeerSessionOptions,
  ) {
    super();
    this.remoteClientId = channel.remoteClientId;
    this.sessionId = channel.sessionId;
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
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
    checkPeerSessionOptions(options);
    const channel = await performHandshake(transport, options);
    if (transport.closed) throw new FerryError('CLOSED', 'transport closed right after the handshake');
    return new PeerSession(transport, channel, options);
  }

  /** True from the moment `close` is called or the session ends. */
  get closed(): boolean {
    return this.ended || this.closing !== undefined;
  }

  get stats(): PeerSessionStats {
    return { ...this.channel.stats, ...this.mux.stats, rttMs: this.rttMs };
  }

  /**
   * Resolves once the message is handed to the transport (flow control may make it wait). Rejects
   * with CLOSED, TOO_LARGE, SCHEMA_MISMATCH (malformed message) or BAD_ENCODING (not JSON-able data).
   */
  async send(message: PeerMessage, lane: Lane = laneForOp(message.op)): Promise<void> {
    if (this.closed) {
      throw this.closing ?? new FerryError('CLOSED', `session with ${this.remoteClientId} is closed`);
    }
    const bytes = encodeWireMessage(message);
    this.lastSent = Date.now();
    await this.mux.send(lane, bytes);
  }

  /**
   * Tells the peer why, and ends once the peer hung up (or after CLOSE_TIMEOUT_MS). Later sends, and
   * sends still queued then, reject with CLOSED.
   */
  close(reason = 'closed'): void {
    if (this.closed) return;
    const closing = new FerryError('CLOSED', `session with ${this.remoteClientId} is closing: ${reason}`);
    this.closing = closing;
    this.closedBecause = `closed: ${reason}`;
    this.closeTimer = setTimeout(() => this.end(this.closedBecause!), CLOSE_TIMEOUT_MS);
    // Nothing leaves after the close message, and the peer, having read it, closes the connection:
    // a data channel closing under a send can crash @roamhq/wrtc (a race in its native send), so
    // neither side sends while it closes. Tearing the transport down here would race the peer's
    // sends, and could drop the close message itself.
    void this.sendControl('SESSION_CLOSE', { reason: reason.slice(0, 1024) }, closing);
  }

  /** `last`: see Multiplexer.send. */
  private sendControl<Op extends KnownOp & `SESSION_${string}`>(
    op: Op,
    data: OpData<Op>,
    last?: FerryError,
  ): Promise<void> {
    const message: PeerMessage = { op, data, timestamp: Date.now(), id: newMessageId() };
    return this.mux.send('control', encodeWireMessage(message), last).catch(() => {});
  }

  private readonly onFrame = (frame: Uint8Array): void => {
    this.lastHeard = Date.now();
    this.mux.receive(frame);
  };

  private readonly onMessage = (_lane: Lane, bytes: Uint8Array): void => {
    let message: PeerMessage;
    try {
      message = decodeWireMessage(bytes, this.maxMessageBytes);
    } catch (error) {
      const refused = error as FerryError;
      this.emit('error', refused);
      void this.sendControl('SESSION_ERROR', {
        code: refused.code,
        message: refused.message.slice(0, 4096),
      });
      return;
    }
    switch (message.op) {
      case 'SESSION_PING': {
        const { pingId } = message.data as OpData<'SESSION_PING'>;
        void this.sendControl('SESSION_PONG', { pingId });
        return;
      }
      case 'SESSION_PONG': {
        const { pingId } = message.data as OpData<'SESSION_PONG'>;
        if (this.pendingPing?.pingId === pingId) {
          this.rttMs = Date.now() - this.pendingPing.sentAt;
          this.pendingPing = undefined;
        }
        return;
      }
      case 'SESSION_CLOSE': {
        const { reason } = message.data as OpData<'SESSION_CLOSE'>;
        this.end(`closed by ${this.remoteClientId}: ${reason}`);
        return;
      }
      case 'SESSION_ERROR': {
        const { code, message: text, inReplyTo } = message.data as OpData<'SESSION_ERROR'>;
        const which = inReplyTo ? ` ${inReplyTo}` : '';
        this.emit(
          'error',
          new FerryError('REJECTED', `${this.remoteClientId} refused message${which}: ${code}: ${text}`),
        );
        return;
      }
      default:
        this.emit('message', message);
    }
  };

  private readonly keepalive = (): void => {
    const now = Date.now();
    if (now - this.lastHeard > this.keepaliveTimeoutMs) {
      this.end(`no frame from ${this.remoteClientId} for ${this.keepaliveTimeoutMs} ms`);
      return;
    }
    if (now - this.lastSent >= this.keepaliveIntervalMs && !this.closed) {
      this.lastSent = now;
      this.pendingPing = { pingId: newMessageId(), sentAt: now };
      void this.sendControl('SESSION_PING', { pingId: this.pendingPing.pingId });
    }
  };

  private readonly onTransportClose = (): void => this.end(this.closedBecause ?? 'transport closed');

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.timer);
    clearTimeout(this.closeTimer);
    this.mux.stop(new FerryError('CLOSED', `session with ${this.remoteClientId} ended: ${reason}`));
    this.transport.off('message', this.onFrame);
    this.transport.off('close', this.onTransportClose);
    this.transport.close();
    this.emit('close', reason);
  }
}
