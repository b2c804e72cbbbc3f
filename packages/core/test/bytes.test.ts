import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FerryError, fromBase64, fromHex, fromUtf8, toBase64, toHex } from '../src/index.js';

describe('byte helpers', () => {
  it('base64 round-trips any bytes, standard and URL-safe', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        expect(fromBase64(toBase64(bytes))).toEqual(bytes);
        expect(fromBase64(toBase64(bytes, { url: true }))).toEqual(bytes);
      }),
    );
  });

  it('matches known base64 vectors (RFC 4648 section 10)', () => {
    const vectors: [string, string][] = [
      ['', ''],
      ['f', 'Zg=='],
      ['fo', 'Zm8='],
      ['foo', 'Zm9v'],
      ['foob', 'Zm9vYg=='],
      ['fooba', 'Zm9vYmE='],
      ['foobar', 'Zm9vYmFy'],
    ];
    for (const [plain, encoded] of vectors) {
      expect(toBase64(new TextEncoder().encode(plain))).toBe(encoded);
      expect(fromUtf8(fromBase64(encoded))).toBe(plain);
    }
  });

  it('rejects malformed base64, hex and UTF-8 with typed errors', () => {
    for (const bad of ['a', 'ab$d', 'Zm9v\n', 'é===']) {
      expect(() => fromBase64(bad)).toThrowError(expect.objectContaining({ code: 'BAD_BASE64' }));
    }
    expect(() => fromHex('abc')).toThrow(FerryError);
    expect(() => fromHex('zz')).toThrow(FerryError);
    expect(() => fromUtf8(new Uint8Array([0xff, 0xfe]))).toThrowError(
      expect.objectContaining({ code: 'BAD_ENCODING' }),
    );
    expect(toHex(fromHex('00ff10'))).toBe('00ff10');
  });
});
