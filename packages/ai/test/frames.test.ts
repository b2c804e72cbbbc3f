import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bucketSize, splitText, TextDigest, TokenBatcher, withPadding } from '../src/frames.js';

const isHighSurrogate = (text: string) => {
  const code = text.charCodeAt(text.length - 1);
  return code >= 0xd800 && code <= 0xdbff;
};
const utf8Length = (text: string) => new TextEncoder().encode(text).length;

describe('frame helpers', () => {
  it('bucketSize is the smallest bucket that fits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), (n) => {
        const bucket = bucketSize(n);
        expect(bucket).toBeGreaterThanOrEqual(n);
        expect(bucketSize(bucket)).toBe(bucket);
        expect(bucketSize(n + 1)).toBeGreaterThanOrEqual(bucket);
      }),
    );
  });

  it('withPadding makes the serialized frame exactly a bucket long, whatever the token', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 3000 }), fc.nat(), (token, seq) => {
        const frame = withPadding<{ token: string; seq: number; pad: string }>({ token, seq });
        const size = utf8Length(JSON.stringify(frame));
        expect(size).toBe(bucketSize(size));
        expect(frame.token).toBe(token);
      }),
    );
  });

  it('splitText refuses frames too small for a surrogate pair (it would never end)', () => {
    for (const max of [1, 0, -3, Number.NaN]) {
      expect(() => splitText('😀😀', max)).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    }
  });

  it('splitText keeps the text and never cuts a surrogate pair', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 400 }),
        fc.integer({ min: 2, max: 50 }),
        (text, max) => {
          const pieces = splitText(text, max);
          expect(pieces.join('')).toBe(text);
          for (const piece of pieces) expect(piece.length).toBeLessThanOrEqual(max);
          for (const piece of pieces.slice(0, -1)) expect(isHighSurrogate(piece)).toBe(false);
        },
      ),
    );
  });

  it('TokenBatcher keeps order and text, batches, and holds half characters back', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: 'grapheme', maxLength: 6 }), { maxLength: 60 }),
        async (words) => {
          // Split every token between UTF-16 units, so surrogate pairs arrive in halves.
          const units = words.join('').split('');
          const frames: string[] = [];
          const batcher = new TokenBatcher(
            async (text) => {
              frames.push(text);
            },
            1,
            7,
          );
          for (const [i, unit] of units.entries()) {
            batcher.push(unit, i);
            if (i % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
          }
          await batcher.flush();
          expect(frames.join('')).toBe(units.join(''));
          expect(frames.length).toBeLessThanOrEqual(Math.max(units.length, 0));
          for (const frame of frames) {
            expect(frame.length).toBeGreaterThan(0);
            expect(isHighSurrogate(frame)).toBe(false);
          }
          // The digest of the frames equals the digest of the whole text.
          const byFrames = new TextDigest();
          for (const frame of frames) byFrames.update(frame);
          const whole = new TextDigest();
          whole.update(units.join(''));
          expect(byFrames.hex()).toBe(whole.hex());
        },
      ),
      { numRuns: 40 },
    );
  });

  it('TokenBatcher reports a failed send and drops what follows', async () => {
    let calls = 0;
    const batcher = new TokenBatcher(
      async () => {
        calls++;
        throw new Error('session closed');
      },
      0,
      100,
    );
    batcher.push('a', 0);
    await expect(batcher.flush()).rejects.toThrow('session closed');
    batcher.push('b', 1);
    await expect(batcher.flush()).rejects.toThrow('session closed');
    expect(calls).toBe(1);
  });
});
