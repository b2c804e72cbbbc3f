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

export function seal(key: Uint8Array, plaintext: Uint8Array, associatedData?: Uint8Array): Uint8Array {
  if (key.length !== KEY_BYTES) throw new FerryError('INTERNAL', 'AEAD key must be 32 bytes');
  const nonce = randomBytes(NONCE_BYTES);
  return concatBytes(nonce, xchacha20poly1305(key, nonce, associatedData).encrypt(plaintext));
}

export function open(key: Uint8Array, sealed: Uint8Array, associatedData?: Uint8Array): Uint8Array {
  if (key.length !== KEY_BYTES) throw new FerryError('INTERNAL', 'AEAD key must be 32 bytes');
  if (sealed.length < NONCE_BYTES + TAG_BYTES) {
    throw new FerryError('DECRYPT_FAILED', 'ciphertext is shorter than a nonce and a tag');
  }
  try {
    return xchacha20poly1305(key, sealed.subarray(0, NONCE_BYTES), associatedData).decrypt(
      sealed.subarray(NONCE_BYTES),
    );
  } catch (cause) {
    throw new FerryError(
      'DECRYPT_FAILED',
      'ciphertext failed authentication (wrong key, tampered data or tampered header)',
      { cause },
    );
  }
}
