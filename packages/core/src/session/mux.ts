import { EventEmitter } from 'eventemitter3';
import { FerryError } from '../errors.js';
import { LANES, type Lane } from '../network/types.js';
import type { Transport } from '../transport/types.js';
import { SECURE_FRAME_OVERHEAD, type SecureChannel } from './secure-channel.js';

/**
 * Chunk layout inside each encrypted frame:
 *   lane (1 byte) | flags (1 byte: FIRST, LAST) | [FIRST only: total length, u32 big-endian] | data
 * A lane carries one message at a time, so chunks need no message id; lanes interleave chunk by chunk,
 * highest priority first, which bounds how long a control or AI frame waits behind sync data.
 */
const FIRST = 1;
const LAST = 2;
const HEADER_BYTES = 2;
const LENGTH_BYTES = 4;

export interface MultiplexerOptions {
  /** Largest message accepted in either direction. Default 64 MiB. */
  maxMessageBytes?: number;
  /** Stop writing while the transport buffers more than this. Default 1 MiB. */
  highWaterMark?: number;
}

export interface MultiplexerStats {
  messagesSent: number;
  messagesReceived: number;
  /** Frames the secure channel refused (replayed, reordered, tampered, foreign). */
  framesRejected: number;
}

interface MultiplexerEvents {
  message: (lane: Lane, data: Uint8Array) => void;
  /** The authenticated peer broke the framing rules: the session must end. */
  violation: (error: FerryError) => void;
  /** A frame was refused by the secure channel and dropped. */
  rejected: (error: FerryError) => void;
}

interface Outgoing {
  data: Uint8Array;
  offset: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

interface Incoming {
  buffer: Uint8Array;
  filled: number;
}

const laneIndex = (lane: Lane): number => LANES.indexOf(lane);

export class Multiplexer extends EventEmitter<MultiplexerEvents> {
  readonly stats: MultiplexerStats = { messagesSent: 0, messagesReceived: 0, framesRejected: 0 };
  private readonly maxMessageBytes: number;
  private readonly highWaterMark: number;
  private readonly chunkBytes: number;
  private readonly outgoing: Outgoing[][] = LANES.map(() => []);
  private readonly incoming: (Incoming | undefined)[] = LANES.map(() => undefined);
  private stopped: FerryError | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly channel: SecureChannel,
    options: MultiplexerOptions = {},
  ) {
    super();
    this.maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    this.highWaterMark = options.highWaterMark ?? 1024 * 1024;
    this.chunkBytes = transport.maxMessageSize - SECURE_FRAME_OVERHEAD - HEADER_BYTES - LENGTH_BYTES;
    if (this.chunkBytes < 64)
      throw new FerryError('INTERNAL', 'transport messages are too small to carry chunks');
    transport.on('drain', this.pump);
  }

  /** Resolves when the last chunk is handed to the transport; waits (never buffers unboundedly) while it is full. */
  send(lane: Lane, data: Uint8Array): Promise<void> {
    if (this.stopped) return Promise.reject(this.stopped);
    if (data.length > this.maxMessageBytes) {
      return Promise.reject(
        new FerryError(
          'TOO_LARGE',
          `message of ${data.length} bytes exceeds the session limit of ${this.maxMessageBytes}`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.outgoing[laneIndex(lane)]!.push({ data, offset: 0, resolve, reject });
      this.pump();
    });
  }

  /** Feed one frame from the transport. */
  receive(frame: Uint8Array): void {
    if (this.stopped) return;
    let chunk: Uint8Array;
    try {
      chunk = this.channel.decrypt(frame);
    } catch (error) {
      this.stats.framesRejected++;
      this.emit('rejected', error as FerryError);
      return;
    }
    const problem = this.reassemble(chunk);
    if (problem) this.emit('violation', new FerryError('BAD_ENCODING', problem));
  }

  /** Fail every pending send; later sends reject with `reason`. */
  stop(reason: FerryError): void {
    if (this.stopped) return;
    this.stopped = reason;
    this.transport.off('drain', this.pump);
    for (const queue of this.outgoing) for (const item of queue.splice(0)) item.reject(reason);
  }

  private readonly pump = (): void => {
    while (!this.stopped && this.transport.bufferedAmount < this.highWaterMark) {
      const queue = this.outgoing.find((q) => q.length > 0);
      if (!queue) return;
      const item = queue[0]!;
      const lane = this.outgoing.indexOf(queue);
      const first = item.offset === 0;
      const end = Math.min(item.data.length, item.offset + this.chunkBytes);
      const last = end === item.data.length;
      const header = HEADER_BYTES + (first ? LENGTH_BYTES : 0);
      const chunk = new Uint8Array(header + end - item.offset);
      chunk[0] = lane;
      chunk[1] = (first ? FIRST : 0) | (last ? LAST : 0);
      if (first) new DataView(chunk.buffer).setUint32(HEADER_BYTES, item.data.length);
      chunk.set(item.data.subarray(item.offset, end), header);
      try {
        this.transport.send(this.channel.encrypt(chunk));
      } catch (error) {
        this.stop(
          error instanceof FerryError ? error : new FerryError('TRANSPORT', String(error), { cause: error }),
        );
        return;
      }
      item.offset = end;
      if (last) {
        queue.shift();
        this.stats.messagesSent++;
        item.resolve();
      }
    }
  };

  /** Returns a description of the violation, or undefined when the chunk was fine. */
  private reassemble(chunk: Uint8Array): string | undefined {
    if (chunk.length < HEADER_BYTES) return 'chunk shorter than its header';
    const lane = chunk[0]!;
    const flags = chunk[1]!;
    if (lane >= LANES.length) return `unknown lane ${lane}`;
    let current = this.incoming[lane];
    let body: Uint8Array;
    if (flags & FIRST) {
      if (current) return 'a new message started before the previous one ended';
      if (chunk.length < HEADER_BYTES + LENGTH_BYTES) return 'first chunk without a length';
      const total = new DataView(chunk.buffer, chunk.byteOffset).getUint32(HEADER_BYTES);
      if (total > this.maxMessageBytes)
        return `announced message of ${total} bytes exceeds ${this.maxMessageBytes}`;
      current = { buffer: new Uint8Array(total), filled: 0 };
      this.incoming[lane] = current;
      body = chunk.subarray(HEADER_BYTES + LENGTH_BYTES);
    } else {
      if (!current) return 'continuation chunk without a message';
      body = chunk.subarray(HEADER_BYTES);
    }
    if (current.filled + body.length > current.buffer.length) return 'message longer than announced';
    current.buffer.set(body, current.filled);
    current.filled += body.length;
    if (flags & LAST) {
      if (current.filled !== current.buffer.length) return 'message shorter than announced';
      this.incoming[lane] = undefined;
      this.stats.messagesReceived++;
      this.emit('message', LANES[lane]!, current.buffer);
    }
    return undefined;
  }
}
