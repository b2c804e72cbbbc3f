import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { FerryError } from '../errors.js';
import { concatBytes, randomBytes } from '../util/bytes.js';

/**
 * XChaCha20-Poly1305 with random 192-bit nonces: safe for an unbounded number of messages under one
 * long-lived key, which is why Ferry uses it for everything sealed under the account key.
 * Sealed form: nonce (24 bytes) || ciphertext || tag (16 bytes).
 */
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
export const KEY_BYTES = 32;

function checkSizes(key: Uint8Array, nonce: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new FerryError('BAD_ARGUMENT', 'AEAD key must be 32 bytes');
  if (nonce.length !== NONCE_BYTES)
    throw new FerryError('BAD_ARGUMENT', 'XChaCha20-Poly1305 nonce must be 24 bytes');
}

/**
 * The raw AEAD with a caller-chosen nonce; returns ciphertext || tag. Only for known-answer tests and
 * for callers that derive unique nonces themselves: reusing a nonce under one key leaks plaintext.
 */
export function xchachaEncrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  associatedData?: Uint8Array,
): Uint8Array {
  checkSizes(key, nonce);
  return xchacha20poly1305(key, nonce, associatedData).encrypt(plaintext);
}

/** Inverse of xchachaEncrypt; any mismatch of key, nonce, data or associated data is DECRYPT_FAILED. */
export function xchachaDecrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertextAndTag: Uint8Array,
  associatedData?: Uint8Array,
): Uint8Array {
  checkSizes(key, nonce);
  if (ciphertextAndTag.length < TAG_BYTES) {
    throw new FerryError('DECRYPT_FAILED', 'ciphertext is shorter than a tag');
  }
  try {
    return xchacha20poly1305(key, nonce, associatedData).decrypt(ciphertextAndTag);
  } catch (cause) {
    throw new FerryError(
      'DECRYPT_FAILED',
      'ciphertext failed authentication (wrong key, tampered data or tampered header)',
      { cause },
    );
  }
}

export function seal(key: Uint8Array, plaintext: Uint8Array, associatedData?: Uint8Array): Uint8Array {
  const nonce = randomBytes(NONCE_BYTES);
  return concatBytes(nonce, xchachaEncrypt(key, nonce, plaintext, associatedData));
}

export function open(key: Uint8Array, sealed: Uint8Array, associatedData?: Uint8Array): Uint8Array {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) {
    throw new FerryError('DECRYPT_FAILED', 'ciphertext is shorter than a nonce and a tag');
  }
  return xchachaDecrypt(key, sealed.subarray(0, NONCE_BYTES), sealed.subarray(NONCE_BYTES), associatedData);
}
