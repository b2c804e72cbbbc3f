import { FerryError } from '../errors.js';

export interface ReplayGuardOptions {
  /** A message is fresh if its timestamp is at most this far from the local clock, either side. */
  windowMs: number;
  /** Hard cap on remembered ids; when full, the oldest is forgotten and becomes the acceptance floor. */
  maxEntries?: number;
  now?: () => number;
}

/** Ids are message nonces (a few dozen characters); the cap bounds memory even for hostile senders. */
export const MAX_MESSAGE_ID_LENGTH = 128;
const DEFAULT_MAX_ENTRIES = 100_000;

interface Entry {
  readonly id: string;
  readonly timestamp: number;
}

/**
 * Accepts each message id once, and only while its timestamp is inside the window: REPLAY for an id
 * already seen, STALE for a timestamp too far in the past or future. Check only after the message's
 * AEAD has opened, so id and timestamp are authentic and a replay carries the original timestamp.
 *
 * Memory stays bounded two ways. An entry is forgotten once its timestamp leaves the window, because
 * the window alone then rejects a replay of it. And at most `maxEntries` ids are kept: when full, the
 * entry with the oldest timestamp is dropped. Each forgotten timestamp raises a floor at or below which
 * nothing is accepted any more, so a flood can make fresh-but-old messages STALE, never let a replay in.
 */
export class ReplayGuard {
  private readonly seen = new Map<string, number>();
  /** Min-heap on timestamp over exactly the entries of `seen`. */
  private readonly heap: Entry[] = [];
  private floor = Number.NEGATIVE_INFINITY;
  private readonly windowMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(options: ReplayGuardOptions) {
    if (!(options.windowMs > 0)) throw new FerryError('BAD_ARGUMENT', 'replay window must be positive');
    const maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new FerryError('BAD_ARGUMENT', 'replay guard maxEntries must be a positive integer');
    }
    this.windowMs = options.windowMs;
    this.maxEntries = maxEntries;
    this.now = options.now ?? Date.now;
  }

  /** Number of ids currently remembered (never more than maxEntries). */
  get size(): number {
    return this.seen.size;
  }

  check(id: string, timestampMs: number): void {
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_MESSAGE_ID_LENGTH) {
      throw new FerryError(
        'SCHEMA_MISMATCH',
        `message id must be a string of 1..${MAX_MESSAGE_ID_LENGTH} characters`,
      );
    }
    if (typeof timestampMs !== 'number' || !Number.isFinite(timestampMs)) {
      throw new FerryError('STALE', 'message timestamp is not a finite number');
    }
    const now = this.now();
    this.evictOlderThan(now - this.windowMs);
    if (Math.abs(now - timestampMs) > this.windowMs) {
      throw new FerryError(
        'STALE',
        `message timestamp is more than ${this.windowMs} ms away from this clock`,
      );
    }
    if (timestampMs <= this.floor) {
      throw new FerryError(
        'STALE',
        'message is older than the oldest id the full replay guard still remembers',
      );
    }
    if (this.seen.has(id)) throw new FerryError('REPLAY', 'message id was already received');
    this.seen.set(id, timestampMs);
    this.push({ id, timestamp: timestampMs });
    if (this.seen.size > this.maxEntries) this.forgetOldest();
  }

  private evictOlderThan(limit: number): void {
    while (this.heap.length > 0 && this.heap[0]!.timestamp < limit) this.forgetOldest();
  }

  /** Every forgotten id raises the floor, so it stays rejected even if the local clock later steps back. */
  private forgetOldest(): void {
    const oldest = this.pop();
    this.seen.delete(oldest.id);
    this.floor = Math.max(this.floor, oldest.timestamp);
  }

  private push(entry: Entry): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.timestamp <= entry.timestamp) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
  }

  private pop(): Entry {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.timestamp < heap[left]!.timestamp ? right : left;
      if (heap[child]!.timestamp >= last.timestamp) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}
