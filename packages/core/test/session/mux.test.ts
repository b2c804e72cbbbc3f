import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fflateDeflate } from '../../src/compression/deflate.js';
import { deriveSubkey } from '../../src/crypto/subkeys.js';
import type { FerryError } from '../../src/errors.js';
import { LANES, type Lane } from '../../src/network/types.js';
import { nodeChaChaPoly } from '../../src/node.js';
import { performHandshake } from '../../src/session/handshake.js';
import { Multiplexer, type MultiplexerOptions } from '../../src/session/mux.js';
import { createMemoryTransportPair, type MemoryTransportOptions } from '../../src/transport/memory.js';
import { utf8 } from '../../src/util/bytes.js';

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

/** Bytes DEFLATE cannot shrink, for tests about sizes and frames rather than compression. */
function noise(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

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
    const messages = Array.from({ length: 8 }, (_, i) => noise(100_000, i + 1));
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
      { compressMinBytes: 0 },
      { compressMinBytes: 1.5 },
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
    expect(() => new Multiplexer(ta, ca, { compressMinBytes: false })).not.toThrow();
  });

  it('packs small messages sent together into shared frames', async () => {
    const { a, b, ca } = await muxPair();
    const arrived = collect(b, 200);
    await Promise.all(Array.from({ length: 200 }, (_, i) => a.send('ai', new Uint8Array(50).fill(i))));
    expect((await arrived).map(([, d]) => d[0])).toEqual([...Array(200).keys()]);
    // 200 records of 56 bytes fit a 16 KiB frame: one frame (handshake frames are not counted here).
    expect(ca.stats.framesSent).toBe(1);
  });

  it('compresses large compressible messages, and sends small or incompressible ones as they are', async () => {
    const docs = (count: number) =>
      utf8(
        JSON.stringify(
          Array.from({ length: count }, (_, i) => ({ id: `doc-${i}`, title: `Task ${i}`, done: false })),
        ),
      );
    const cases: [string, MultiplexerOptions, Uint8Array, boolean][] = [
      ['JSON of 2,000 documents', {}, docs(2000), true],
      ['JSON below the default 8 KiB', {}, docs(100), false],
      ['bytes DEFLATE cannot shrink by an eighth', {}, noise(100_000), false],
      ['JSON of 2,000 documents, compression off', { compressMinBytes: false }, docs(2000), false],
      ['JSON of 20 documents, compressMinBytes 100', { compressMinBytes: 100 }, docs(20), true],
    ];
    for (const [what, options, data, compressed] of cases) {
      const { a, b, ta } = await muxPair(options);
      let wire = 0;
      const send = ta.send.bind(ta);
      ta.send = (frame) => {
        wire += frame.length;
        send(frame);
      };
      const arrived = collect(b, 1);
      await a.send('sync', data);
      expect((await arrived)[0]![1], what).toEqual(data);
      expect(a.stats.messagesCompressed, what).toBe(compressed ? 1 : 0);
      if (compressed) {
        expect(a.stats.bytesSavedByCompression, what).toBeGreaterThan(data.length / 2);
        expect(wire, what).toBe(data.length - a.stats.bytesSavedByCompression + 10 + 24);
      } else {
        expect(a.stats.bytesSavedByCompression, what).toBe(0);
        expect(wire, what).toBeGreaterThan(data.length);
      }
    }
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
    await a.send('sync', noise(1024 * 1024));
    await arrived;
    // 1 MiB in frames of at most 64 KiB: 17 of them (the last one partly filled), none larger.
    expect(sizes.length).toBe(17);
    expect(Math.max(...sizes)).toBe(64 * 1024);
    sizes.length = 0;
    arrived = collect(b, 2);
    await a.send('ai', new Uint8Array(10));
    await a.send('sync', noise(1024 * 1024));
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
    const bulk = a.send('sync', noise(2 * 1024 * 1024));
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

  it('rejects the sends of a frame the transport refuses, and every later one, with its error', async () => {
    const { a, ta } = await muxPair();
    // Closed under the multiplexer (the peer went): the next frame's send throws.
    ta.close();
    const inFrame = [a.send('sync', utf8('ack')), a.send('control', utf8('close'))];
    for (const sent of inFrame) await expect(sent).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(a.send('sync', utf8('later'))).rejects.toMatchObject({ code: 'CLOSED' });
  });

  const FIRST = 1;
  const LAST = 2;
  const DEFLATED = 4;
  /** A whole DEFLATED message in one record: its inflated length, then the DEFLATE bytes. */
  const compressed = (lane: number, inflatedLength: number, deflate: Uint8Array) => {
    const message = new Uint8Array(4 + deflate.length);
    new DataView(message.buffer).setUint32(0, inflatedLength);
    message.set(deflate, 4);
    return record(lane, FIRST | LAST | DEFLATED, message, message.length);
  };
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
      'a compressed message without its length',
      record(1, FIRST | LAST | DEFLATED, new Uint8Array(3), 3),
      /without its length/,
    ],
    [
      'a compressed message that is not DEFLATE',
      compressed(1, 100, new Uint8Array([0xff, 0xff, 0xff, 0xff])),
      /not valid DEFLATE|does not inflate/,
    ],
    [
      'a compressed message that inflates to more than announced',
      compressed(1, 4000, fflateDeflate.compress(new Uint8Array(100_000))),
      /announced 4000 bytes: it is longer/,
    ],
    [
      'a compressed message that inflates to less than announced',
      compressed(1, 4000, fflateDeflate.compress(new Uint8Array(3000))),
      /announced 4000 bytes: it holds 3000/,
    ],
    [
      'a compressed message announcing an inflated size above the limit',
      compressed(1, 2 ** 30, fflateDeflate.compress(new Uint8Array(10))),
      /compressed message of 1073741824 bytes exceeds/,
    ],
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
