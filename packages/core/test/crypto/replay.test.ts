import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_MESSAGE_ID_LENGTH, ReplayGuard } from '../../src/crypto/replay.js';

const WINDOW = 1_000;

function outcome(guard: ReplayGuard, id: string, timestamp: number): 'ok' | string {
  try {
    guard.check(id, timestamp);
    return 'ok';
  } catch (error) {
    return (error as { code: string }).code;
  }
}

function clockAt(start: number) {
  const clock = { now: start, read: () => clock.now };
  return clock;
}

describe('ReplayGuard', () => {
  it('accepts a fresh message once, then REPLAY', () => {
    const clock = clockAt(10_000);
    const guard = new ReplayGuard({ windowMs: WINDOW, now: clock.read });
    expect(outcome(guard, 'a', 10_000)).toBe('ok');
    expect(outcome(guard, 'a', 10_000)).toBe('REPLAY');
    expect(outcome(guard, 'b', 10_000)).toBe('ok');
  });

  it('STALE outside the window, either side, inclusive bounds accepted', () => {
    const clock = clockAt(10_000);
    const guard = new ReplayGuard({ windowMs: WINDOW, now: clock.read });
    expect(outcome(guard, 'past', 10_000 - WINDOW - 1)).toBe('STALE');
    expect(outcome(guard, 'future', 10_000 + WINDOW + 1)).toBe('STALE');
    expect(outcome(guard, 'edge-past', 10_000 - WINDOW)).toBe('ok');
    expect(outcome(guard, 'edge-future', 10_000 + WINDOW)).toBe('ok');
  });

  it('forgets ids once their timestamp leaves the window; a replay after that is STALE', () => {
    const clock = clockAt(10_000);
    const guard = new ReplayGuard({ windowMs: WINDOW, now: clock.read });
    for (let i = 0; i < 100; i++) guard.check(`m${i}`, 10_000);
    expect(guard.size).toBe(100);
    clock.now += WINDOW + 1;
    expect(outcome(guard, 'm0', 10_000)).toBe('STALE');
    expect(guard.size).toBe(0);
  });

  it('still rejects a forgotten id if the local clock steps back', () => {
    const clock = clockAt(10_000);
    const guard = new ReplayGuard({ windowMs: WINDOW, now: clock.read });
    guard.check('old', 9_500);
    clock.now = 11_000; // 'old' leaves the window and is forgotten
    guard.check('new', 11_000);
    clock.now = 10_000; // NTP step backwards: 'old' is inside the window again
    expect(outcome(guard, 'old', 9_500)).toBe('STALE');
  });

  it('at the hard cap, forgets the oldest timestamp and refuses anything at or below it', () => {
    const clock = clockAt(10_000);
    const guard = new ReplayGuard({ windowMs: WINDOW, maxEntries: 3, now: clock.read });
    guard.check('t3', 9_003);
    guard.check('t1', 9_001);
    guard.check('t2', 9_002);
    guard.check('t4', 9_004); // evicts t1, floor = 9001
    expect(guard.size).toBe(3);
    expect(outcome(guard, 't1', 9_001)).toBe('STALE');
    expect(outcome(guard, 'fresh-at-floor', 9_001)).toBe('STALE');
    expect(outcome(guard, 't2', 9_002)).toBe('REPLAY');
    expect(outcome(guard, 'fresh-above-floor', 9_001.5)).toBe('ok');
  });

  it('rejects malformed ids and timestamps with a typed error', () => {
    const guard = new ReplayGuard({ windowMs: WINDOW });
    expect(outcome(guard, '', Date.now())).toBe('SCHEMA_MISMATCH');
    expect(outcome(guard, 'x'.repeat(MAX_MESSAGE_ID_LENGTH + 1), Date.now())).toBe('SCHEMA_MISMATCH');
    expect(outcome(guard, 42 as unknown as string, Date.now())).toBe('SCHEMA_MISMATCH');
    expect(outcome(guard, 'nan', Number.NaN)).toBe('STALE');
    expect(outcome(guard, 'inf', Number.POSITIVE_INFINITY)).toBe('STALE');
    expect(outcome(guard, 'str', '5' as unknown as number)).toBe('STALE');
    expect(() => new ReplayGuard({ windowMs: 0 })).toThrow();
    expect(() => new ReplayGuard({ windowMs: 1, maxEntries: 0 })).toThrow();
  });

  // A random schedule of fresh messages (timestamps anywhere in or beyond the window), replays of
  // earlier messages and clock advances, checked against the rules directly.
  type Step =
    | { kind: 'fresh'; offset: number }
    | { kind: 'replay'; pick: number }
    | { kind: 'tick'; ms: number };
  const step: fc.Arbitrary<Step> = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        kind: fc.constant('fresh' as const),
        offset: fc.integer({ min: -2 * WINDOW, max: 2 * WINDOW }),
      }),
    },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('replay' as const), pick: fc.nat() }) },
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: WINDOW }) }),
    },
  );

  function runSchedule(steps: Step[], maxEntries: number) {
    const clock = clockAt(1_000_000);
    const guard = new ReplayGuard({ windowMs: WINDOW, maxEntries, now: clock.read });
    const sent: Array<{ id: string; timestamp: number }> = [];
    const accepted = new Set<string>();
    let freshRejectedInWindow = 0;
    for (const s of steps) {
      if (s.kind === 'tick') {
        clock.now += s.ms;
      } else if (s.kind === 'fresh') {
        const message = { id: `m${sent.length}`, timestamp: clock.now + s.offset };
        sent.push(message);
        const result = outcome(guard, message.id, message.timestamp);
        const inWindow = Math.abs(s.offset) <= WINDOW;
        if (!inWindow) expect(result).toBe('STALE');
        if (inWindow && result !== 'ok') {
          expect(result).toBe('STALE'); // only the cap's floor may refuse a fresh in-window message
          freshRejectedInWindow++;
        }
        if (result === 'ok') accepted.add(message.id);
      } else if (sent.length > 0) {
        const message = sent[s.pick % sent.length]!;
        const result = outcome(guard, message.id, message.timestamp);
        if (accepted.has(message.id)) expect(['REPLAY', 'STALE']).toContain(result);
        if (result === 'ok') accepted.add(message.id); // an earlier attempt was refused; this is its first acceptance
      }
      expect(guard.size).toBeLessThanOrEqual(maxEntries);
    }
    return { freshRejectedInWindow };
  }

  it('property: never accepts a replay, accepts every fresh in-window message while under the cap', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 300 }), (steps) => {
        expect(runSchedule(steps, 10_000).freshRejectedInWindow).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('property: with a tiny cap, memory stays within it and no replay is ever accepted', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 300 }), fc.integer({ min: 1, max: 8 }), (steps, cap) => {
        runSchedule(steps, cap);
      }),
      { numRuns: 300 },
    );
  });
});
