import { FerryError } from '../errors.js';

/** Accepts each message id once, and only with a timestamp inside the window; throws REPLAY or STALE. */
export interface ReplayCheck {
  check(id: string, timestampMs: number): void;
}

/**
 * Timestamp window plus the set of ids seen recently. A timestamp is accepted up to `windowMs` either
 * side of this clock, so an id must be remembered until its timestamp leaves the window: at most two
 * windows after it arrived. After that the timestamp alone rejects it, and memory stays bounded.
 */
export class ReplayWindow implements ReplayCheck {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  check(id: string, timestampMs: number): void {
    const now = this.now();
    if (Math.abs(now - timestampMs) > this.windowMs) {
      throw new FerryError(
        'STALE',
        `message timestamp is more than ${this.windowMs} ms away from this clock`,
      );
    }
    for (const [seenId, at] of this.seen) {
      if (now - at <= 2 * this.windowMs) break; // insertion order is arrival order
      this.seen.delete(seenId);
    }
    if (this.seen.has(id)) throw new FerryError('REPLAY', 'message id was already received');
    this.seen.set(id, now);
  }
}
