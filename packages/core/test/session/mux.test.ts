import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deriveSubkey } from '../../src/crypto/subkeys.js';
import type { FerryError } from '../../src/errors.js';
import { LANES, type Lane } from '../../src/network/types.js';
import { nodeChaChaPoly } from '../../src/node.js';
import { performHandshake } from '../../src/session/handshake.js';
import { Multiplexer, type MultiplexerOptions } from '../../src/session/mux.js';
import { createMemoryTransportPair, type MemoryTransportOptions } from '../../src/transport/memory.js';

const psk = deriveSubkey(new Uint8Array(32).fill(3), 'handshakePsk');
const base = { psk, roomId: 'mux', aead: nodeChaChaPoly };

/** Two multiplexers over a handshaken memory pair, plus the far side's channel to forge frames with. */
async function muxPair(options: MultiplexerOptions = {}, transport: MemoryTransportOptions = {}) {
  const [ta, tb] = createMemoryTransportPair(transport);
  const [ca, cb] = await Promise.all([
    performHandshake(ta, { ...base, initiator: true, localClientId: 'a' }),
    performHandshake(tb, { ...base, initiator: false, localClientId: 'b' }),
  ]);
  const a = new Multiplexer(ta, ca, options);
  const b = new Multiplexer(tb, cb, options);
  ta.on('message', (frame) => a.receive(frame));
  tb.on('message', (frame) => b.receive(frame));
  return { a, b, ta, tb, ca, cb };
}

const collect = (mux: Multiplexer, count: number) =>
  new Promise<[Lane, Uint8Array][]>((resolve) => {
    const got: [Lane, Uint8Array][] = [];
    if (count === 0) resolve(got);
    mux.on('message', (lane, data) => {
      got.push([lane, data]);
      if (got.length === count) resolve(got);
    });
  });

/** A record as the wire format defines it (see mux.ts). */
function record(lane: number, flags: number, data: Uint8Array, total?: number): Uint8Array {
  const out = new Uint8Array(6 + (total === undefined ? 0 : 4) + data.length);
  const view = new DataView(out.buffer);
  out[0] = lane;
  out[1] = flags;
  view.setUint32(2, data.length);
  if (total !== undefined) view.setUint32(6, total);
  out.set(data, out.length - data.length);
  return out;
}

describe('Multiplexer', () => {
  it('delivers any mix of sizes and lanes intact, in order within each lane', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            lane: fc.constantFrom(...LANES),
            size: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 16_000, max: 36_000 })),
          }),
          { minLength: 1, maxLength: 20 },
        ),
        async (plan) => {
          // No busy window here: lanes mixing is the point, not how fast sync yields to them.
          const { a, b } = await muxPair({ busyHoldMs: 0 });
          const sent = plan.map(({ lane, size }, i) => {
            const data = new Uint8Array(size);
            for (let j = 0; j < size; j++) data[j] = (i * 31 + j) & 0xff;
            return [lane, data] as const;
          });
          const arrived = collect(b, sent.length);
          await Promise.all(sent.map(([lane, data]) => a.send(lane, data)));
          const got = await arrived;
          for (const lane of LANES) {
            expect(got.filter(([l]) => l === lane).map(([, d]) => d)).toEqual(
              sent.filter(([l]) => l === lane).map(([, d]) => d),
            );
          }
        },
      ),
      { numRuns: 15 },
    );
  });

  it('keeps sending with a highWaterMark at or below the transport lowWaterMark (whose drain never comes)', async () => {
    // A slow link: the buffer passes 32 KiB but never 256 KiB, so the transport never drains.
    const { a, b, ta } = await muxPair({ highWaterMark: 32 * 1024 }, { messagesPerTurn: 1 });
    let peak = 0;
    const send = ta.send.bind(ta);
    ta.send = (frame) => {
      send(frame);
      peak = Math.max(peak, ta.bufferedAmount);
    };
    const messages = Array.from({ length: 8 }, (_, i) => new Uint8Array(100_000).fill(i));
    const arrived = collect(b, messages.length);
    await Promise.all(messages.map((data) => a.send('sync', data)));
    const got = await arrived;
    expect(got.every(([, data], i) => Buffer.from(data).equals(messages[i]!))).toBe(true);
    expect(peak).toBeGreaterThanOrEqual(32 * 1024);
    expect(peak).toBeLessThan(ta.lowWaterMark);
  });

  it('refuses windows and limits that would stall or spin, naming the option', async () => {
    const { ta, ca } = await muxPair();
    for (const options of [
      { highWaterMark: 0 },
      { highWaterMark: -1 },
      { highWaterMark: Number.NaN },
      { busyWindow: 1.5 },
      { maxMessageBytes: 0 },
      { busyHoldMs: -5 },
    ]) {
      const [name] = Object.keys(options);
      expect(() => new Multiplexer(ta, ca, options)).toThrow(
        expect.objectContaining({
          code: 'BAD_ARGUMENT',
          message: expect.stringContaining(`session: ${name} must be`),
        }),
      );
    }
    expect(() => new Multiplexer(ta, ca, { busyHoldMs: 0 })).not.toThrow();
  });

  it('packs small messages sent together into shared frames', async () => {
    const { a, b, ca } = await muxPair();
    const arrived = collect(b, 200);
    await Promise.all(Array.from({ length: 200 }, (_, i) => a.send('ai', new Uint8Array(50).fill(i))));
    expect((await arrived).map(([, d]) => d[0])).toEqual([...Array(200).keys()]);
    // 200 records of 56 bytes fit a 16 KiB frame: one frame (handshake frames are not counted here).
    expect(ca.stats.framesSent).toBe(1);
  });

  it('sends bulk data in frames as large as the transport takes, and small ones while a higher lane is active', async () => {
    // A long busyHoldMs: the AI lane below stays active however slowly this machine runs the test.
    const { a, b, ta } = await muxPair(
      { busyWindow: 16 * 1024, busyHoldMs: 60_000 },
      { maxMessageSize: 64 * 1024 },
    );
    const sizes: number[] = [];
    const send = ta.send.bind(ta);
    ta.send = (frame) => {
      sizes.push(frame.length);
      send(frame);
    };
    let arrived = collect(b, 1);
    await a.send('sync', new Uint8Array(1024 * 1024));
    await arrived;
    // 1 MiB in frames of at most 64 KiB: 17 of them (the last one partly filled), none larger.
    expect(sizes.length).toBe(17);
    expect(Math.max(...sizes)).toBe(64 * 1024);
    sizes.length = 0;
    arrived = collect(b, 2);
    await a.send('ai', new Uint8Array(10));
    await a.send('sync', new Uint8Array(1024 * 1024));
    await arrived;
    // The AI lane sent within busyHoldMs: sync goes in frames of at most busyWindow.
    expect(Math.max(...sizes)).toBe(16 * 1024);
    expect(sizes.length).toBeGreaterThanOrEqual(65);
    // A small message alone takes a frame of its own size, not a whole frame's worth.
    sizes.length = 0;
    arrived = collect(b, 1);
    await a.send('control', new Uint8Array(10));
    await arrived;
    expect(sizes).toEqual([10 + 10 + 24]);
  });

  it('puts queued control and AI messages before the rest of a sync message', async () => {
    const { a, b } = await muxPair();
    const arrived = collect(b, 3);
    const bulk = a.send('sync', new Uint8Array(2 * 1024 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 1));
    await Promise.all([a.send('ai', new Uint8Array([1])), a.send('control', new Uint8Array([2]))]);
    await bulk;
    expect((await arrived).map(([lane]) => lane)).toEqual(['control', 'ai', 'sync']);
  });

  it('refuses sends above the limit with TOO_LARGE and after stop with the stop reason', async () => {
    const { a } = await muxPair({ maxMessageBytes: 1000 });
    await expect(a.send('sync', new Uint8Array(1001))).rejects.toMatchObject({ code: 'TOO_LARGE' });
    const pending = a.send('sync', new Uint8Array(1000));
    const reason = { code: 'CLOSED' } as FerryError;
    a.stop(reason);
    await expect(pending).rejects.toBe(reason);
    await expect(a.send('sync', new Uint8Array(1))).rejects.toBe(reason);
  });

  const FIRST = 1;
  const LAST = 2;
  const violations: [string, Uint8Array, RegExp][] = [
    ['an empty frame', new Uint8Array(0), /empty frame/],
    ['a truncated record header', new Uint8Array([0, 3, 0]), /shorter than its header/],
    ['an unknown lane', record(7, FIRST | LAST, new Uint8Array(1), 1), /unknown lane 7/],
    [
      'a first record without its message length',
      record(0, FIRST | LAST, new Uint8Array(0)),
      /without a message length/,
    ],
    ['a continuation with no message', record(0, LAST, new Uint8Array(4)), /continuation record/],
    [
      'a record longer than its frame',
      record(0, FIRST | LAST, new Uint8Array(8), 8).subarray(0, 14),
      /longer than its frame/,
    ],
    ['more data than announced', record(1, FIRST | LAST, new Uint8Array(8), 4), /longer than announced/],
    ['less data than announced', record(1, FIRST | LAST, new Uint8Array(4), 8), /shorter than announced/],
    ['an announced size above the limit', record(2, FIRST, new Uint8Array(4), 2 ** 31), /exceeds/],
    [
      'a new message before the previous one ended',
      new Uint8Array([...record(2, FIRST, new Uint8Array(4), 8), ...record(2, FIRST, new Uint8Array(4), 8)]),
      /started before the previous one ended/,
    ],
  ];
  for (const [what, plaintext, reason] of violations) {
    it(`reports ${what} from the authenticated peer as a violation`, async () => {
      const { a, cb } = await muxPair({ maxMessageBytes: 1024 * 1024 });
      const seen: FerryError[] = [];
      a.on('violation', (error) => seen.push(error));
      a.on('message', () => expect.unreachable('no message may come out of a bad frame'));
      a.receive(cb.encrypt(plaintext));
      expect(seen).toHaveLength(1);
      expect(seen[0]!.code).toBe('BAD_ENCODING');
      expect(seen[0]!.message).toMatch(reason);
    });
  }

  it('drops and counts frames the secure channel refuses, and keeps going', async () => {
    const { a, b, ta } = await muxPair();
    const frames: Uint8Array[] = [];
    ta.on('message', (frame) => frames.push(frame));
    const rejected: string[] = [];
    a.on('rejected', (error) => rejected.push(error.code));
    const first = collect(a, 1);
    await b.send('sync', new Uint8Array([1]));
    await first;
    a.receive(frames[0]!); // replayed
    a.receive(new Uint8Array(40)); // forged
    expect(rejected).toEqual(['REPLAY', 'DECRYPT_FAILED']);
    expect(a.stats.framesRejected).toBe(2);
    const next = collect(a, 1);
    await b.send('sync', new Uint8Array([2]));
    expect((await next)[0]![1]).toEqual(new Uint8Array([2]));
  });
});
