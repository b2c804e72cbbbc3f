import { ed25519 } from '@noble/curves/ed25519.js';
import { FerryError } from '../errors.js';

/** Ed25519 keys derived from a 32-byte seed (for Ferry: the relay-signing subkey of the account key). */
export interface SigningKeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

export function signingKeyFromSeed(seed: Uint8Array): SigningKeyPair {
  if (seed.length !== 32) throw new FerryError('INTERNAL', 'Ed25519 seed must be 32 bytes');
  return { secretKey: seed, publicKey: ed25519.getPublicKey(seed) };
}

export const sign = (secretKey: Uint8Array, message: Uint8Array): Uint8Array =>
  ed25519.sign(message, secretKey);

/** Never throws: malformed keys or signatures simply do not verify. */
export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return ed25519.verify(signature, message, publicKey);
  } catch {
    return false;
  }
}
