import type { EventEmitter } from 'eventemitter3';
import { FerryError } from '../errors.js';

/**
 * A raw, ordered, reliable message pipe to one remote device: a WebRTC data channel, or an in-memory
 * pair in tests. It moves bytes only; authentication and encryption are the session layer's job.
 * Every adapter passes the transport conformance suite (packages/core/test/transport-conformance.ts).
 */
export interface TransportEvents {
  /** One whole message, in the order it was sent. */
  message: (data: Uint8Array) => void;
  /** `bufferedAmount` fell to or below `lowWaterMark`: the sender may write again. */
  drain: () => void;
  /** The pipe is gone (either side closed, or the network dropped it). Emitted once. */
  close: () => void;
  error: (error: Error) => void;
}

export interface Transport extends EventEmitter<TransportEvents> {
  /** Queue one message. Throws FerryError('CLOSED') after close. Callers watch `bufferedAmount`. */
  send(data: Uint8Array): void;
  /** Bytes queued but not yet handed to the network. */
  readonly bufferedAmount: number;
  /** `drain` fires when `bufferedAmount` falls to this many bytes. */
  readonly lowWaterMark: number;
  /** Largest message `send` accepts (16 KiB works in every browser). */
  readonly maxMessageSize: number;
  readonly closed: boolean;
  /**
   * DTLS certificate fingerprints ("sha-256 AB:CD:..."), bound into the handshake so a signaling
   * server that rewrites SDP cannot sit in the middle. In-memory transports report fixed strings.
   */
  readonly localFingerprint: string;
  readonly remoteFingerprint: string;
  close(): void;
}

/** What every adapter's `send` refuses, alike: anything once closed, and a message over the size limit. */
export function assertSendable(transport: Transport, data: Uint8Array): void {
  if (transport.closed) throw new FerryError('CLOSED', 'transport is closed');
  if (data.length > transport.maxMessageSize) {
    throw new FerryError('TOO_LARGE', `message of ${data.length} bytes exceeds ${transport.maxMessageSize}`);
  }
}
