import { ed25519 } from '@noble/curves/ed25519.js';
import { FerryError } from '../errors.js';
import { deriveSubkey, type SubkeyPurpose } from './subkeys.js';

/** Ed25519 keys derived from a 32-byte seed (for Ferry: the relay-signing subkey of the account key). */
export interface SigningKeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

export function signingKeyFromSeed(seed: Uint8Array): SigningKeyPair {
  if (seed.length !== 32) throw new FerryError('INTERNAL', 'Ed25519 seed must be 32 bytes');
  return { secretKey: seed, publicKey: ed25519.getPublicKey(seed) };
}

/** The subkey purposes that seed Ed25519 keys. */
export type SigningPurpose = Extract<SubkeyPurpose, 'relaySigning' | 'roomSigning'>;

/** The Ed25519 key pair for one purpose, derived from the account key (same on every device). */
export const deriveSigningKeyPair = (accountKey: Uint8Array, purpose: SigningPurpose): SigningKeyPair =>
  signingKeyFromSeed(deriveSubkey(accountKey, purpose));

export function sign(secretKey: Uint8Array, message: Uint8Array): Uint8Array {
  if (secretKey.length !== 32) throw new FerryError('INTERNAL', 'Ed25519 secret key must be 32 bytes');
  return ed25519.sign(message, secretKey);
}

/**
 * Never throws: malformed keys or signatures simply do not verify. Strict RFC 8032 rules (not the
 * permissive ZIP-215 ones): non-canonical encodings are refused, so a valid signature cannot be
 * re-encoded into a second valid one.
 */
export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}
