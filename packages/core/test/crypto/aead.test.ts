import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NONCE_BYTES, open, seal, TAG_BYTES, xchachaDecrypt } from '../../src/crypto/aead.js';
import { isFerryError } from '../../src/errors.js';
import { equalBytes, randomBytes } from '../../src/util/bytes.js';

const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 });
const data = fc.uint8Array({ maxLength: 512 });

function failsWith(code: string, fn: () => unknown): boolean {
  try {
    fn();
  } catch (error) {
    return isFerryError(error) && error.code === code;
  }
  return false;
}

describe('seal / open', () => {
  it('round-trips any plaintext and associated data, with a fresh nonce each time', () => {
    fc.assert(
      fc.property(key32, data, data, (key, plaintext, ad) => {
        const sealed = seal(key, plaintext, ad);
        expect(sealed.length).toBe(NONCE_BYTES + plaintext.length + TAG_BYTES);
        expect(open(key, sealed, ad)).toEqual(plaintext);
        expect(seal(key, plaintext, ad).subarray(0, NONCE_BYTES)).not.toEqual(
          sealed.subarray(0, NONCE_BYTES),
        );
      }),
    );
  });

  it('DECRYPT_FAILED when any byte of the sealed message (nonce, ciphertext or tag) is changed', () => {
    fc.assert(
      fc.property(
        key32,
        data,
        data,
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (key, plaintext, ad, at, mask) => {
          const sealed = seal(key, plaintext, ad);
          sealed[at % sealed.length]! ^= mask;
          return failsWith('DECRYPT_FAILED', () => open(key, sealed, ad));
        },
      ),
    );
  });

  it('DECRYPT_FAILED when the associated data differs in any way', () => {
    fc.assert(
      fc.property(key32, data, data, data, (key, plaintext, ad, otherAd) => {
        fc.pre(!equalBytes(ad, otherAd));
        return failsWith('DECRYPT_FAILED', () => open(key, seal(key, plaintext, ad), otherAd));
      }),
    );
  });

  it('DECRYPT_FAILED under any other key', () => {
    fc.assert(
      fc.property(key32, key32, data, data, (key, otherKey, plaintext, ad) => {
        fc.pre(!equalBytes(key, otherKey));
        return failsWith('DECRYPT_FAILED', () => open(otherKey, seal(key, plaintext, ad), ad));
      }),
    );
  });

  it('DECRYPT_FAILED for truncated or empty input, never an untyped error', () => {
    const key = randomBytes(32);
    const sealed = seal(key, new Uint8Array(10));
    for (let length = 0; length < sealed.length; length++) {
      expect(failsWith('DECRYPT_FAILED', () => open(key, sealed.subarray(0, length)))).toBe(true);
    }
    expect(
      failsWith('DECRYPT_FAILED', () => xchachaDecrypt(key, new Uint8Array(24), new Uint8Array(15))),
    ).toBe(true);
  });

  it('refuses keys and nonces of the wrong size as bad arguments (BAD_ARGUMENT)', () => {
    expect(failsWith('BAD_ARGUMENT', () => seal(new Uint8Array(16), new Uint8Array(1)))).toBe(true);
    expect(failsWith('BAD_ARGUMENT', () => open(new Uint8Array(31), new Uint8Array(64)))).toBe(true);
    expect(
      failsWith('BAD_ARGUMENT', () =>
        xchachaDecrypt(randomBytes(32), new Uint8Array(12), new Uint8Array(16)),
      ),
    ).toBe(true);
  });
});
