import { EventEmitter } from 'eventemitter3';
import { compressionThreshold, compressMessage, decompressMessage } from '../compression/deflate.js';
import { FerryError, isFerryError } from '../errors.js';
import { LANES, type Lane } from '../network/types.js';
import type { Transport } from '../transport/types.js';
import { requirePositive } from '../util/options.js';
import { SECURE_FRAME_OVERHEAD, type SecureChannel } from './secure-channel.js';

/**
 * Each encrypted transport frame carries one or more records:
 *
 *   lane (1 byte) | flags (1 byte: FIRST, LAST, DEFLATED) | data length (u32 BE) | [FIRST: message length, u32 BE] | data
 * A lane carries one message at a time, so records need no message id. A large message is split over
 * many frames; small messages queued together share one frame (one encryption, one data-channel
 * message), which is what makes many small messages cheap.
 *
 * A message of `compressMinBytes` or more is sent compressed when that saves at least an eighth of it:
 * its first record has DEFLATED set, and the message is its inflated length (u32 BE) followed by raw
 * DEFLATE. Compression comes before encryption, so the peer's limit (`maxMessageBytes`) bounds the
 * inflated size, and nothing is inflated before it has been authenticated.
 *
 * Priority has two parts. Here, frames are filled highest lane first, so a waiting control or AI
 * message goes out before the next sync chunk. In the transport's own buffer nothing can overtake,
 * so while a higher lane is active (it sent within `busyHoldMs`) a lower lane may only fill that
 * buffer up to `busyWindow` bytes, in frames no larger than that: a token then waits behind at most
 * that much sync data, not a whole `highWaterMark`. Idle, sync uses the full window and frames as large
 * as the transport takes (each data-channel message costs a native call on both sides, so a bulk
 * transfer in 256 KiB frames uses much less CPU than in 16 KiB ones).
 */
const FIRST = 1;
const LAST = 2;
const DEFLATED = 4;
const RECORD_HEADER_BYTES = 6;
const TOTAL_BYTES = 4;
/** A frame with less room than this left is sent as it is rather than carrying a sliver of a message. */
const MIN_SPLIT_BYTES = 256;
/** Default `busyWindow`: the message size every browser's data channel accepts. */
const BUSY_WINDOW_BYTES = 16 * 1024;

export interface MultiplexerOptions {
  /** Largest message accepted in either direction. Default 64 MiB. */
  maxMessageBytes?: number;
  /**
   * Stop writing while the transport buffers more than this. Default 512 KiB: enough to keep a data
   * channel busy through event-loop stalls of ~10 ms, and the most a first AI token can wait behind.
   */
  highWaterMark?: number;
  /**
   * Transport bytes a lower lane may have queued while a higher lane is active, and the largest frame
   * that carries it then. Default 16 KiB (or the transport's limit, if smaller).
   */
  busyWindow?: number;
  /** A lane counts as active this long after it last sent. Default 100 ms. */
  busyHoldMs?: number;
  /**
   * Messages of at least this many bytes are sent DEFLATE-compressed, when that makes them at least
   * an eighth smaller. Default 8 KiB; `false` sends everything as it is. Every session reads
   * compressed messages whatever this says. Compression before encryption lets the size of what is
   * sent depend on its content: see the README's security model.
   */
  compressMinBytes?: number | false;
}

/** Refuses (FerryError 'BAD_ARGUMENT', naming the option) values that would stall or spin the multiplexer. */
export function checkMultiplexerOptions(options: MultiplexerOptions): void {
  const { maxMessageBytes, highWaterMark, busyWindow, busyHoldMs, compressMinBytes } = options;
  requirePositive('session', { maxMessageBytes, highWaterMark, busyWindow }, { integer: true });
  compressionThreshold('session', compressMinBytes);
  requirePositive('session', { busyHoldMs }, { zeroAllowed: true });
}

export interface MultiplexerStats {
  messagesSent: number;
  messagesReceived: number;
  /** Frames the secure channel refused (replayed, reordered, tampered, foreign). */
  framesRejected: number;
  /** Messages sent compressed, and the bytes that saved. */
  messagesCompressed: number;
  bytesSavedByCompression: number;
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
  deflated: boolean;
  offset: number;
  resolve: () => void;
  reject: (error: Error) => void;
  /** Set for the last message (see send): once it is handed over, sending stops with this reason. */
  last?: FerryError;
}

interface Incoming {
  buffer: Uint8Array;
  filled: number;
  deflated: boolean;
}

const laneIndex = (lane: Lane): number => LANES.indexOf(lane);

export class Multiplexer extends EventEmitter<MultiplexerEvents> {
  readonly stats: MultiplexerStats = {
    messagesSent: 0,
    messagesReceived: 0,
    framesRejected: 0,
    messagesCompressed: 0,
    bytesSavedByCompression: 0,
  };
  private readonly maxMessageBytes: number;
  private readonly highWaterMark: number;
  private readonly busyWindow: number;
  private readonly busyHoldMs: number;
  private readonly compressMinBytes: number;
  /** Plaintext bytes that fit one transport message once encrypted. */
  private readonly frameCapacity: number;
  /** Plaintext bytes of a frame that carries a lower lane's data while a higher lane is active. */
  private readonly busyFrameCapacity: number;
  /** performance.now() of each lane's last send. */
  private readonly lastActive: number[] = LANES.map(() => Number.NEGATIVE_INFINITY);
  private readonly outgoing: Outgoing[][] = LANES.map(() => []);
  private readonly incoming: (Incoming | undefined)[] = LANES.map(() => undefined);
  private pumpScheduled = false;
  /** Every frame's plaintext is filled here: it is encrypted into a new frame before the next fill. */
  private readonly scratch: Uint8Array;
  private readonly scratchView: DataView;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set by stopSending (or stop): nothing more is handed to the transport. */
  private sendingStopped: FerryError | undefined;
  /** Set by stop: nothing more is read either. */
  private stopped: FerryError | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly channel: SecureChannel,
    options: MultiplexerOptions = {},
  ) {
    super();
    checkMultiplexerOptions(options);
    this.maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    this.highWaterMark = options.highWaterMark ?? 512 * 1024;
    this.busyWindow = Math.min(options.busyWindow ?? BUSY_WINDOW_BYTES, transport.maxMessageSize);
    this.busyHoldMs = options.busyHoldMs ?? 100;
    this.compressMinBytes = compressionThreshold('session', options.compressMinBytes);
    this.frameCapacity = transport.maxMessageSize - SECURE_FRAME_OVERHEAD;
    this.busyFrameCapacity = this.busyWindow - SECURE_FRAME_OVERHEAD;
    this.scratch = new Uint8Array(this.frameCapacity);
    this.scratchView = new DataView(this.scratch.buffer);
    if (this.busyFrameCapacity < RECORD_HEADER_BYTES + TOTAL_BYTES + MIN_SPLIT_BYTES) {
      throw new FerryError('BAD_ARGUMENT', 'transport messages are too small to carry frames');
    }
    transport.on('drain', this.pump);
  }

  /**
   * Resolves when the last byte is handed to the transport; waits (never buffers unboundedly) while
   * it is full. With `last`, this is the last message: once it is handed over, nothing more is sent
   * and every other pending send fails with `last` (see stopSending).
   */
  send(lane: Lane, data: Uint8Array, last?: FerryError): Promise<void> {
    if (this.sendingStopped) return Promise.reject(this.sendingStopped);
    if (data.length > this.maxMessageBytes) {
      return Promise.reject(
        new FerryError(
          'TOO_LARGE',
          `message of ${data.length} bytes exceeds the session limit of ${this.maxMessageBytes}`,
        ),
      );
    }
    const compressed = data.length >= this.compressMinBytes ? this.compress(data) : undefined;
    return new Promise((resolve, reject) => {
      const index = laneIndex(lane);
      this.lastActive[index] = performance.now();
      this.outgoing[index]!.push({
        data: compressed ?? data,
        deflated: !!compressed,
        offset: 0,
        resolve,
        reject,
        ...(last ? { last } : {}),
      });
      // Sends made in the same turn are gathered, so small messages share frames.
      if (!this.pumpScheduled) {
        this.pumpScheduled = true;
        queueMicrotask(this.pump);
      }
    });
  }

  /** Feed one frame from the transport. */
  receive(frame: Uint8Array): void {
    if (this.stopped) return;
    let plaintext: Uint8Array;
    try {
      plaintext = this.channel.decrypt(frame);
    } catch (error) {
      this.stats.framesRejected++;
      this.emit('rejected', error as FerryError);
      return;
    }
    const problem = this.readRecords(plaintext);
    if (problem) this.emit('violation', new FerryError('BAD_ENCODING', problem));
  }

  /** Fail every pending send; later sends reject with `reason`, and received frames are dropped. */
  stop(reason: FerryError): void {
    this.stopSending(reason);
    this.stopped ??= reason;
  }

  /** Fail every pending send and hand nothing more to the transport; frames are still received. */
  private stopSending(reason: FerryError): void {
    if (this.sendingStopped) return;
    this.sendingStopped = reason;
    this.transport.off('drain', this.pump);
    clearTimeout(this.retryTimer);
    for (const queue of this.outgoing) for (const item of queue.splice(0)) item.reject(reason);
  }

  /** The message as DEFLATED records carry it, or undefined when compressing would not save enough. */
  private compress(data: Uint8Array): Uint8Array | undefined {
    const message = compressMessage(data);
    if (message) {
      this.stats.messagesCompressed++;
      this.stats.bytesSavedByCompression += data.length - message.length;
    }
    return message;
  }

  /** A received DEFLATED message's own bytes, or what is wrong with it. */
  private inflate(message: Uint8Array): Uint8Array | string {
    try {
      return decompressMessage(message, this.maxMessageBytes);
    } catch (error) {
      return isFerryError(error) ? error.message : `inflating failed: ${String(error)}`;
    }
  }

  /** Hands a whole message to the listeners, inflated if need be; returns what is wrong with it, if anything. */
  private deliver(lane: number, message: Uint8Array, deflated: boolean): string | undefined {
    const data = deflated ? this.inflate(message) : message;
    if (typeof data === 'string') return data;
    this.stats.messagesReceived++;
    this.emit('message', LANES[lane]!, data);
    return undefined;
  }

  /** Bytes lane `lane` may have in the transport buffer now. */
  private windowFor(lane: number): number {
    const now = performance.now();
    for (let higher = 0; higher < lane; higher++) {
      if (now - this.lastActive[higher]! < this.busyHoldMs) return this.busyWindow;
    }
    return this.highWaterMark;
  }

  private readonly pump = (): void => {
    this.pumpScheduled = false;
    while (!this.sendingStopped) {
      const lane = this.outgoing.findIndex((queue) => queue.length > 0);
      if (lane < 0) return;
      const window = this.windowFor(lane);
      if (this.transport.bufferedAmount >= window) {
        // `drain` wakes us when the buffer falls from above the transport's low-water mark to it.
        // Otherwise only time does: a busy lane's window (the buffer empties, or the higher lane goes
        // quiet), or a high-water mark at or below that low-water mark (no `drain` ever comes).
        if (window < this.highWaterMark || window <= this.transport.lowWaterMark)
          this.retryTimer ??= setTimeout(this.retry, 1);
        return;
      }
      const { plaintext, completed } = this.fillFrame(this.capacityNow());
      try {
        this.transport.send(this.channel.encrypt(plaintext));
      } catch (error) {
        const reason =
          error instanceof FerryError ? error : new FerryError('TRANSPORT', String(error), { cause: error });
        this.stop(reason);
        // Out of the queues already, so stop() does not see them: left alone they would never settle.
        for (const item of completed) item.reject(reason);
        return;
      }
      this.stats.messagesSent += completed.length;
      for (const item of completed) item.resolve();
      const last = completed.find((item) => item.last)?.last;
      if (last) this.stopSending(last);
    }
  };

  private readonly retry = (): void => {
    this.retryTimer = undefined;
    this.pump();
  };

  /**
   * Plaintext bytes the next frame may carry: small while the lowest queued lane has a more urgent
   * one active (so that lane's next message waits behind little), else as much as is queued, up to
   * what the transport takes.
   */
  private capacityNow(): number {
    let lowest = this.outgoing.length - 1;
    while (lowest > 0 && this.outgoing[lowest]!.length === 0) lowest--;
    const limit = this.windowFor(lowest) < this.highWaterMark ? this.busyFrameCapacity : this.frameCapacity;
    let queued = 0;
    for (const queue of this.outgoing) {
      for (const item of queue) {
        queued += RECORD_HEADER_BYTES + TOTAL_BYTES + item.data.length - item.offset;
        if (queued >= limit) return limit;
      }
    }
    return queued;
  }

  /** Takes records from the queues, highest lane first, until the frame is full or nothing is left. */
  private fillFrame(capacity: number): { plaintext: Uint8Array; completed: Outgoing[] } {
    const frame = this.scratch.subarray(0, capacity);
    const view = this.scratchView;
    const completed: Outgoing[] = [];
    let used = 0;
    for (const [lane, queue] of this.outgoing.entries()) {
      while (queue.length > 0) {
        const item = queue[0]!;
        const first = item.offset === 0;
        const header = RECORD_HEADER_BYTES + (first ? TOTAL_BYTES : 0);
        const left = item.data.length - item.offset;
        const room = capacity - used - header;
        if (room < Math.min(left, MIN_SPLIT_BYTES)) return { plaintext: frame.subarray(0, used), completed };
        const take = Math.min(left, room);
        const last = take === left;
        frame[used] = lane;
        frame[used + 1] = (first ? FIRST | (item.deflated ? DEFLATED : 0) : 0) | (last ? LAST : 0);
        view.setUint32(used + 2, take);
        if (first) view.setUint32(used + RECORD_HEADER_BYTES, item.data.length);
        used += header;
        frame.set(item.data.subarray(item.offset, item.offset + take), used);
        used += take;
        item.offset += take;
        if (!last) return { plaintext: frame.subarray(0, used), completed };
        queue.shift();
        completed.push(item);
      }
    }
    return { plaintext: frame.subarray(0, used), completed };
  }

  /** Returns a description of the first violation, or undefined when every record was fine. */
  private readRecords(plaintext: Uint8Array): string | undefined {
    if (plaintext.length === 0) return 'empty frame';
    const view = new DataView(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength);
    let at = 0;
    while (at < plaintext.length && !this.stopped) {
      if (plaintext.length - at < RECORD_HEADER_BYTES) return 'record shorter than its header';
      const lane = plaintext[at]!;
      const flags = plaintext[at + 1]!;
      const length = view.getUint32(at + 2);
      at += RECORD_HEADER_BYTES;
      if (lane >= LANES.length) return `unknown lane ${lane}`;
      let current = this.incoming[lane];
      if (flags & FIRST) {
        if (current) return 'a new message started before the previous one ended';
        if (plaintext.length - at < TOTAL_BYTES) return 'first record without a message length';
        const total = view.getUint32(at);
        at += TOTAL_BYTES;
        if (total > this.maxMessageBytes) {
          return `announced message of ${total} bytes exceeds ${this.maxMessageBytes}`;
        }
        const deflated = (flags & DEFLATED) !== 0;
        if (flags & LAST && length === total && length <= plaintext.length - at) {
          // A whole message in one record: hand out a view of the frame (it is never reused).
          at += length;
          const problem = this.deliver(lane, plaintext.subarray(at - length, at), deflated);
          if (problem) return problem;
          continue;
        }
        current = { buffer: new Uint8Array(total), filled: 0, deflated };
        this.incoming[lane] = current;
      } else if (!current) {
        return 'continuation record without a message';
      }
      if (length > plaintext.length - at) return 'record longer than its frame';
      if (current.filled + length > current.buffer.length) return 'message longer than announced';
      current.buffer.set(plaintext.subarray(at, at + length), current.filled);
      current.filled += length;
      at += length;
      if (flags & LAST) {
        if (current.filled !== current.buffer.length) return 'message shorter than announced';
        this.incoming[lane] = undefined;
        const problem = this.deliver(lane, current.buffer, current.deflated);
        if (problem) return problem;
      }
    }
    return undefined;
  }
}
