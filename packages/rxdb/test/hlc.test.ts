import { describe, expect, it } from 'vitest';
import { decodeStamp, encodeStamp, HybridClock } from '../src/hlc.js';

describe('HybridClock', () => {
  it('issues increasing stamps, also within one millisecond and when the wall clock goes back', () => {
    let wall = 1_000;
    const clock = new HybridClock('a', () => wall);
    const first = clock.now();
    const second = clock.now();
    wall = 500;
    const third = clock.now();
    expect(first < second && second < third).toBe(true);
    expect(decodeStamp(third)).toEqual({ time: 1_000, counter: 2, clientId: 'a' });
  });

  it('moves past a later stamp it observes and ignores earlier, equal and malformed ones', () => {
    const clock = new HybridClock('a', () => 1_000);
    clock.observe(encodeStamp(5_000, 7, 'b'));
    expect(decodeStamp(clock.now())).toEqual({ time: 5_000, counter: 8, clientId: 'a' });
    for (const stamp of [
      encodeStamp(4_999, 99, 'c'),
      encodeStamp(5_000, 8, 'c'),
      'zzzzzzzzzz.zzzzz',
      '~',
      '',
    ]) {
      clock.observe(stamp);
    }
    expect(decodeStamp(clock.now())).toEqual({ time: 5_000, counter: 9, clientId: 'a' });
    // A stamp ahead of the clock, with a client id that sorts before ours.
    clock.observe(encodeStamp(5_000, 20, '0'));
    expect(clock.now() > encodeStamp(5_000, 20, 'zzz')).toBe(true);
  });

  it("does not follow a stamp in the format's last millisecond, but tells of its device: its own stamps stay well-formed and increasing", () => {
    const told: string[] = [];
    const clock = new HybridClock('a', () => 1_000, { maxAheadMs: 300_000, onAhead: (id) => told.push(id) });
    const before = clock.now();
    const last = encodeStamp(36 ** 10 - 1, 36 ** 5 - 1, 'b');
    clock.observe(last);
    // In a batch, the other stamps are still followed.
    clock.observeAll([encodeStamp(36 ** 10 - 1, 0, 'c'), encodeStamp(2_000, 3, 'c'), last]);
    const after = [clock.now(), clock.now()];
    expect(after.map(decodeStamp)).toEqual([
      { time: 2_000, counter: 4, clientId: 'a' },
      { time: 2_000, counter: 5, clientId: 'a' },
    ]);
    expect(before < after[0]! && after[0]! < after[1]!).toBe(true);
    // Only the stamp made at its device's own clock time (counter 0) names it.
    expect(told).toEqual(['c']);
    // The millisecond before the last is followed: the counter still has room after it.
    clock.observe(encodeStamp(36 ** 10 - 2, 36 ** 5 - 1, 'b'));
    expect(decodeStamp(clock.now())).toEqual({ time: 36 ** 10 - 1, counter: 0, clientId: 'a' });
  });

  it('stamps a write it learns of late at the time it was made; later stamps still sort after it', () => {
    let wall = 10_000;
    const clock = new HybridClock('a', () => wall);
    const now = clock.now();
    // A write made before: stamped at its time, and the clock does not go back.
    expect(decodeStamp(clock.stampAt(4_000.37))).toEqual({ time: 4_000, counter: 0, clientId: 'a' });
    expect(clock.now() > now).toBe(true);
    // A write stamped ahead of the wall clock (it was set back since): what follows sorts after it.
    const ahead = clock.stampAt(20_000);
    expect(decodeStamp(ahead)).toEqual({ time: 20_000, counter: 0, clientId: 'a' });
    wall = 11_000;
    expect(clock.now() > ahead).toBe(true);
    // Bad input: no time, or one a stamp cannot hold, is stamped now.
    for (const time of [undefined, Number.NaN, -1, Number.POSITIVE_INFINITY, 36 ** 10]) {
      const before = clock.now();
      expect(clock.stampAt(time) > before).toBe(true);
    }
  });

  it('tells once per device of stamps far ahead of its wall clock, not of its own nor of ones within the limit', () => {
    const wall = 1_000_000;
    const told: Array<[string, number]> = [];
    const clock = new HybridClock('a', () => wall, {
      maxAheadMs: 60_000,
      onAhead: (clientId, aheadMs) => told.push([clientId, aheadMs]),
    });
    clock.observe(encodeStamp(wall + 60_000, 0, 'b')); // at the limit
    // b's stamp does not move the clock past c's, and still tells of b (until the eighteenth round
    // only stamps that moved the clock were checked).
    clock.observeAll([encodeStamp(wall + 90_000, 0, 'c'), encodeStamp(wall + 80_000, 0, 'b')]);
    clock.observe(encodeStamp(wall + 100_000, 0, 'c')); // told of already
    clock.stampAt(wall + 500_000); // its own write, stamped at the time the storage gave it
    clock.observe(encodeStamp(wall + 600_000, 0, 'b')); // told of already
    clock.observe(encodeStamp(wall + 400_000, 0, 'd')); // behind the clock, and far ahead
    expect(told).toEqual([
      ['c', 90_000],
      ['b', 80_000],
      ['d', 400_000],
    ]);
    // Far-ahead stamps still move the clock: a write made after seeing them sorts after them.
    expect(decodeStamp(clock.now())).toMatchObject({ time: wall + 600_000, counter: 1 });
  });

  it('does not tell of a device whose clock a far-ahead stamp carried forward: its own stamps have a counter above 0', () => {
    const wall = 1_000_000;
    const told: string[] = [];
    const watch = { maxAheadMs: 60_000, onAhead: (clientId: string) => told.push(clientId) };
    // b saw c's stamp, ten minutes ahead, and wrote after it: b's stamp carries c's time.
    const b = new HybridClock('b', () => wall, watch);
    b.observe(encodeStamp(wall + 600_000, 0, 'c'));
    const carried = b.now();
    expect(decodeStamp(carried)).toEqual({ time: wall + 600_000, counter: 1, clientId: 'b' });
    // a hears of b's write first, then of c's, which does not move its clock.
    const a = new HybridClock('a', () => wall, watch);
    a.observeAll([carried]);
    a.observe(encodeStamp(wall + 600_000, 0, 'c'));
    expect(told).toEqual(['c', 'c']); // b's clock told of c; a's too, and of c alone
  });

  it('moves past the greatest stamp of a batch, also when a malformed one sorts above it', () => {
    const clock = new HybridClock('a', () => 1_000);
    clock.observeAll([encodeStamp(3_000, 1, 'b'), encodeStamp(7_000, 4, 'c'), encodeStamp(6_000, 9, 'b')]);
    expect(decodeStamp(clock.now())).toEqual({ time: 7_000, counter: 5, clientId: 'a' });
    // '~' sorts after every well-formed stamp and cannot be decoded: the others still count.
    clock.observeAll(['~', encodeStamp(8_000, 2, 'b'), encodeStamp(7_500, 0, 'c')]);
    expect(decodeStamp(clock.now())).toEqual({ time: 8_000, counter: 3, clientId: 'a' });
    // A batch entirely behind the clock leaves it where it is.
    clock.observeAll([encodeStamp(2_000, 0, 'b'), '']);
    expect(decodeStamp(clock.now())).toEqual({ time: 8_000, counter: 4, clientId: 'a' });
  });
});
