import { EventEmitter } from 'eventemitter3';
import { assertSendable, type Transport, type TransportEvents } from './types.js';

export interface MemoryTransportOptions {
  /** Default 16 KiB, like a WebRTC data channel that works in every browser. */
  maxMessageSize?: number;
  /** Default 256 KiB. */
  lowWaterMark?: number;
  /** Messages delivered per event-loop turn; a lower number makes `bufferedAmount` build up like a slow link. */
  messagesPerTurn?: number;
  /** DTLS-like fingerprints reported by the two ends, `[a's, b's]`: tests rewrite them to play a hostile signaling server. */
  fingerprints?: { a: { local: string; remote: string }; b: { local: string; remote: string } };
}

const defer: (fn: () => void) => void =
  typeof globalThis.setImmediate === 'function'
    ? (fn) => globalThis.setImmediate(fn)
    : (fn) => setTimeout(fn, 0);

/**
 * Two connected in-process transports. Delivery is asynchronous, ordered and copied, and
 * `bufferedAmount` counts bytes not yet delivered, so flow control is exercised as on a real channel.
 */
export function createMemoryTransportPair(
  options: MemoryTransportOptions = {},
): [MemoryTransport, MemoryTransport] {
  const fingerprints = options.fingerprints ?? {
    a: { local: 'memory A', remote: 'memory B' },
    b: { local: 'memory B', remote: 'memory A' },
  };
  const a = new MemoryTransport(options, fingerprints.a.local, fingerprints.a.remote);
  const b = new MemoryTransport(options, fingerprints.b.local, fingerprints.b.remote);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

export class MemoryTransport extends EventEmitter<TransportEvents> implements Transport {
  readonly maxMessageSize: number;
  readonly lowWaterMark: number;
  /** @internal */
  peer: MemoryTransport | undefined;
  private readonly messagesPerTurn: number;
  private readonly queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private flushing = false;
  private isClosed = false;

  constructor(
    options: MemoryTransportOptions,
    readonly localFingerprint: string,
    readonly remoteFingerprint: string,
  ) {
    super();
    this.maxMessageSize = options.maxMessageSize ?? 16 * 1024;
    this.lowWaterMark = options.lowWaterMark ?? 256 * 1024;
    this.messagesPerTurn = options.messagesPerTurn ?? 256;
  }

  get bufferedAmount(): number {
    return this.queuedBytes;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  send(data: Uint8Array): void {
    assertSendable(this, data);
    this.queue.push(data.slice());
    this.queuedBytes += data.length;
    if (!this.flushing) {
      this.flushing = true;
      defer(() => this.flush());
    }
  }

  close(): void {
    if (this.isClosed) return;
    this.markClosed();
    this.peer?.markClosed();
  }

  private flush(): void {
    const wasAbove = this.queuedBytes > this.lowWaterMark;
    for (let i = 0; i < this.messagesPerTurn && this.queue.length > 0 && !this.isClosed; i++) {
      const message = this.queue.shift()!;
      this.queuedBytes -= message.length;
      this.peer?.emit('message', message);
    }
    if (this.queue.length > 0 && !this.isClosed) {
      defer(() => this.flush());
    } else {
      this.flushing = false;
    }
    if (wasAbove && this.queuedBytes <= this.lowWaterMark && !this.isClosed) this.emit('drain');
  }

  private markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.queue.length = 0;
    this.queuedBytes = 0;
    defer(() => this.emit('close'));
  }
}
