import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Deflate } from '../src/compression/deflate.js';
import { utf8 } from '../src/util/bytes.js';

/**
 * What every Deflate adapter must do. Each adapter runs it; `others` are the implementations it must
 * interoperate with (a browser device inflates what a Node device deflated, and the reverse).
 */
export function runDeflateConformance(name: string, deflate: Deflate, others: Record<string, Deflate>): void {
  const text = utf8('Ferry ferries bytes; Ferry ferries bytes; Ferry ferries bytes.');
  const fromHex = (hex: string) => Uint8Array.from(hex.match(/../g)!, (byte) => Number.parseInt(byte, 16));
  const errorOf = (run: () => unknown) => {
    try {
      run();
    } catch (error) {
      return error;
    }
    return expect.unreachable('expected a FerryError');
  };

  describe(`Deflate conformance: ${name}`, () => {
    it('round-trips any bytes, as plain Uint8Arrays', () => {
      fc.assert(
        fc.property(
          fc.oneof(fc.uint8Array({ maxLength: 5000 }), fc.string({ maxLength: 3000 }).map(utf8)),
          (data) => {
            const packed = deflate.compress(data);
            const out = deflate.decompress(packed, data.length);
            expect(Object.getPrototypeOf(out)).toBe(Uint8Array.prototype);
            expect(out).toEqual(data);
          },
        ),
        { numRuns: 200 },
      );
    });

    it('shrinks repetitive data', () => {
      const json = utf8(
        JSON.stringify(Array.from({ length: 500 }, (_, i) => ({ id: `doc-${i}`, done: i % 2 === 0 }))),
      );
      expect(deflate.compress(json).length).toBeLessThan(json.length / 4);
    });

    it('reads raw DEFLATE from other encoders: a stored block, and zlib level 9 (Python)', () => {
      // RFC 1951 3.2.4: BFINAL=1, BTYPE=00, LEN=5, NLEN=~5, then the bytes.
      expect(deflate.decompress(fromHex('010500faff68656c6c6f'), 5)).toEqual(utf8('hello'));
      expect(
        deflate.decompress(fromHex('734b2d2aaa5448039299a9c50a499525a9c5d60a6e440aea0100'), text.length),
      ).toEqual(text);
    });

    for (const [otherName, other] of Object.entries(others)) {
      it(`inflates what ${otherName} deflates, and ${otherName} inflates what it deflates`, () => {
        fc.assert(
          fc.property(fc.string({ maxLength: 20_000 }).map(utf8), (data) => {
            expect(deflate.decompress(other.compress(data), data.length)).toEqual(data);
            expect(other.decompress(deflate.compress(data), data.length)).toEqual(data);
          }),
          { numRuns: 100 },
        );
      });
    }

    it('refuses, with BAD_ENCODING, data that is not DEFLATE or is cut short', () => {
      const packed = deflate.compress(text);
      for (const bad of [new Uint8Array([0xff, 0xff, 0xff, 0xff]), packed.subarray(0, packed.length - 3)]) {
        expect(errorOf(() => deflate.decompress(bad, text.length))).toMatchObject({
          code: 'BAD_ENCODING',
          message: expect.stringMatching(/not valid DEFLATE|does not inflate to its announced/),
        });
      }
    });

    it('refuses, with BAD_ENCODING, a stream that inflates to more or fewer bytes than announced', () => {
      const packed = deflate.compress(text);
      expect(errorOf(() => deflate.decompress(packed, text.length - 1))).toMatchObject({
        code: 'BAD_ENCODING',
        message: expect.stringContaining('it is longer'),
      });
      expect(errorOf(() => deflate.decompress(packed, text.length + 1))).toMatchObject({
        code: 'BAD_ENCODING',
        message: expect.stringContaining(`it holds ${text.length}`),
      });
    });

    it('stops a decompression bomb at the announced length without inflating it', () => {
      // 64 MiB of zeros deflate to 64-300 KiB; announced as 1 KiB, about that much is allocated.
      const bomb = deflate.compress(new Uint8Array(64 * 1024 * 1024));
      expect(bomb.length).toBeLessThan(512 * 1024);
      const before = process.memoryUsage().arrayBuffers;
      expect(errorOf(() => deflate.decompress(bomb, 1024))).toMatchObject({ code: 'BAD_ENCODING' });
      expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * 1024 * 1024);
    });
  });
}
