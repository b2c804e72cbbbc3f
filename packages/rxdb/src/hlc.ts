/**
 * Hybrid logical clock (Kulkarni et al.): a wall-clock millisecond plus a counter, advanced past
 * every stamp this device has seen, so a write made after seeing another always sorts after it even
 * when the two devices' clocks disagree. A stamp is a fixed-width string `time.counter.clientId`:
 * plain string comparison orders stamps, and the client id breaks ties deterministically.
 */
const TIME_WIDTH = 10; // base36 milliseconds: good until the year 5188
const COUNTER_WIDTH = 5; // base36: 60 million stamps in one millisecond before time is bumped
const COUNTER_MAX = 36 ** COUNTER_WIDTH - 1;
/** The last millisecond a stamp can hold (in the year 5188). */
const TIME_MAX = 36 ** TIME_WIDTH - 1;
/** `time.counter`: the part of a stamp the clock advances past. */
const CLOCK_PART = TIME_WIDTH + 1 + COUNTER_WIDTH;

/**
 * Tells of other devices whose stamps run more than `maxAheadMs` ahead of this device's wall
 * clock, once per device: of writes made apart, theirs win last-writer-wins conflicts, and every
 * clock that sees their stamps moves forward to them. Only a stamp whose counter is 0 tells of its
 * device's wall clock: a device that saw a later stamp makes its own at that stamp's time with a
 * counter above 0, so a device whose clock was carried forward is not taken for the one that runs
 * ahead.
 */
export interface ClockAheadWatch {
  maxAheadMs: number;
  onAhead(clientId: string, aheadMs: number): void;
}

export class HybridClock {
  private time = 0;
  private counter = 0;
  /** `time.counter` of the clock as a string: a stamp whose own is not greater needs no decoding. */
  private reached = '';
  private readonly toldAhead = new Set<string>();
  /** A stamp just observed was not followed (see advanceTo): the clock is not past it. */
  private passedOver = false;

  constructor(
    readonly clientId: string,
    private readonly wallClock: () => number = Date.now,
    private readonly aheadWatch?: ClockAheadWatch,
  ) {}

  /** A new stamp, greater than every stamp issued or observed before. */
  now(): string {
    const wall = Math.floor(this.wallClock());
    if (wall > this.time) {
      this.time = wall;
      this.counter = 0;
    } else if (this.counter >= COUNTER_MAX) {
      this.time += 1;
      this.counter = 0;
    } else {
      this.counter += 1;
    }
    const stamp = encodeStamp(this.time, this.counter, this.clientId);
    this.reached = stamp.slice(0, CLOCK_PART);
    return stamp;
  }

  /**
   * A stamp for a write made at wall time `time` that this clock learns of only now (RxDB's
   * `_meta.lwt` of a document written before Ferry watched): its own time, so copies of a document
   * are ordered by when they were written. Later stamps sort after it. A time that is not a
   * millisecond count a stamp can hold gets `now()`.
   */
  stampAt(time: number | undefined): string {
    if (time === undefined || !(time >= 0 && time < TIME_MAX)) return this.now();
    const stamp = encodeStamp(Math.floor(time), 0, this.clientId);
    this.observe(stamp);
    return stamp;
  }

  /** Move past a stamp seen on another device (or persisted before a restart). */
  observe(stamp: string): void {
    // Fixed-width parts compare as strings: most stamps a device receives are behind its clock.
    if (stamp.slice(0, CLOCK_PART) > this.reached) this.advanceTo(stamp);
    if (this.aheadWatch) this.watchAhead([stamp], this.aheadWatch);
  }

  /**
   * Move past all of `stamps` (a received batch): only the greatest is decoded, since a batch from
   * a device that wrote in order is ahead of this clock stamp after stamp. A malformed or unfollowed
   * stamp can sort greatest; then each is observed in turn.
   */
  observeAll(stamps: readonly string[]): void {
    let greatest: string | undefined;
    for (const stamp of stamps)
      if (stamp > this.reached && (greatest === undefined || stamp > greatest)) greatest = stamp;
    if (greatest !== undefined && !this.advanceTo(greatest))
      for (const stamp of stamps) if (stamp.slice(0, CLOCK_PART) > this.reached) this.advanceTo(stamp);
    if (this.aheadWatch) this.watchAhead(stamps, this.aheadWatch);
  }

  /**
   * False if `stamp` is malformed or not followed. One in the format's last millisecond (a forged or
   * broken clock's) is not: the clock could not go past it, and stamps made after it would not fit
   * the format, nor sort after it.
   */
  private advanceTo(stamp: string): boolean {
    const parsed = decodeStamp(stamp);
    if (!parsed) return false;
    if (parsed.time >= TIME_MAX) {
      this.passedOver = true;
      return false;
    }
    if (parsed.time > this.time || (parsed.time === this.time && parsed.counter > this.counter)) {
      this.time = parsed.time;
      this.counter = parsed.counter;
      this.reached = stamp.slice(0, CLOCK_PART);
    }
    return true;
  }

  /**
   * Tells of the devices whose own stamps among `stamps` (just observed) run too far ahead. None
   * can while this clock, which has moved past them all (unless one was passed over), is within the
   * limit: the usual case costs one reading of the wall clock. Checked whether or not a stamp moved
   * the clock, so a device is told of also when another ran further ahead before it.
   */
  private watchAhead(stamps: readonly string[], watch: ClockAheadWatch): void {
    const wall = this.wallClock();
    if (this.time - wall <= watch.maxAheadMs && !this.passedOver) return;
    this.passedOver = false;
    const limit = encodeTime(Math.floor(wall + watch.maxAheadMs));
    for (const stamp of stamps) {
      if (stamp.slice(0, TIME_WIDTH) <= limit || stamp.slice(TIME_WIDTH + 1, CLOCK_PART) !== OWN_CLOCK)
        continue;
      const parsed = decodeStamp(stamp);
      if (!parsed || parsed.clientId === this.clientId || this.toldAhead.has(parsed.clientId)) continue;
      this.toldAhead.add(parsed.clientId);
      watch.onAhead(parsed.clientId, parsed.time - wall);
    }
  }
}

const encodeTime = (time: number) => time.toString(36).padStart(TIME_WIDTH, '0');
/** The counter part of a stamp made at its device's own wall-clock time. */
const OWN_CLOCK = '0'.repeat(COUNTER_WIDTH);

export const encodeStamp = (time: number, counter: number, clientId: string): string =>
  `${encodeTime(time)}.${counter.toString(36).padStart(COUNTER_WIDTH, '0')}.${clientId}`;

const STAMP = /^([0-9a-z]{10})\.([0-9a-z]{5})\.(.+)$/s;

export function decodeStamp(stamp: string): { time: number; counter: number; clientId: string } | undefined {
  const match = STAMP.exec(stamp);
  if (!match) return undefined;
  return {
    time: Number.parseInt(match[1]!, 36),
    counter: Number.parseInt(match[2]!, 36),
    clientId: match[3]!,
  };
}

export const maxStamp = (a: string, b: string): string => (a >= b ? a : b);

/** Orders stamps as they were made (for `Array.prototype.sort`). */
export const compareStamps = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
