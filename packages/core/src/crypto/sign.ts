import { ed25519 } from '@noble/curves/ed25519.js';
import { FerryError } from '../errors.js';
import { deriveSubkey, type SubkeyPurpose } from './subkeys.js';

/** Ed25519 keys derived from a 32-byte seed (for Ferry: the relay-signing subkey of the account key). */
export interface SigningKeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

/**
 * Where Ed25519 keys and signatures are computed (RFC 8032 is deterministic: every implementation
 * gives the same bytes). The default is pure JavaScript (@noble/curves), for every runtime; Node's
 * entry point switches to OpenSSL (`ed25519SigningFromNodeCrypto`): noble's first key or signature
 * builds its precomputed tables, ~70 ms and ~8 MB of memory, which a device pays on its first connect.
 */
export interface Ed25519Signing {
  publicKey(seed: Uint8Array): Uint8Array;
  sign(seed: Uint8Array, message: Uint8Array): Uint8Array;
}

export const nobleEd25519Signing: Ed25519Signing = {
  publicKey: (seed) => ed25519.getPublicKey(seed),
  sign: (seed, message) => ed25519.sign(message, seed),
};

let signing: Ed25519Signing = nobleEd25519Signing;

/** Use another Ed25519 implementation for keys and signatures from now on (see Ed25519Signing). */
export function useEd25519Signing(implementation: Ed25519Signing): void {
  signing = implementation;
}

export function signingKeyFromSeed(seed: Uint8Array): SigningKeyPair {
  if (seed.length !== 32) throw new FerryError('BAD_ARGUMENT', 'Ed25519 seed must be 32 bytes');
  return { secretKey: seed, publicKey: signing.publicKey(seed) };
}

/** The subkey purposes that seed Ed25519 keys. */
export type SigningPurpose = Extract<SubkeyPurpose, 'relaySigning' | 'roomSigning'>;

/** The Ed25519 key pair for one purpose, derived from the account key (same on every device). */
export const deriveSigningKeyPair = (accountKey: Uint8Array, purpose: SigningPurpose): SigningKeyPair =>
  signingKeyFromSeed(deriveSubkey(accountKey, purpose));

export function sign(secretKey: Uint8Array, message: Uint8Array): Uint8Array {
  if (secretKey.length !== 32) throw new FerryError('BAD_ARGUMENT', 'Ed25519 secret key must be 32 bytes');
  return signing.sign(secretKey, message);
}

/**
 * Never throws: malformed keys or signatures simply do not verify. Strict RFC 8032 rules (not the
 * permissive ZIP-215 ones): non-canonical encodings are refused, so a valid signature cannot be
 * re-encoded into a second valid one. Always noble, whose strict checks the tests pin (devices
 * verify nothing on the way to a session; servers verify natively).
 */
export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}
