import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { FerryError } from '../errors.js';
import { utf8 } from '../util/bytes.js';

/**
 * One HKDF-SHA256 subkey per purpose, so no key is ever used for two things. The labels are part of
 * the protocol: changing one changes every derived value.
 */
export const SUBKEY_PURPOSES = {
  /** Opaque account tag used as `accountId` on the wire and on the diff server. */
  accountTag: 'ferry/v1/account-tag',
  /** Seed of the Ed25519 key whose public key names the signaling room and proves membership to the server. */
  roomSigning: 'ferry/v1/signaling-room-seed',
  /** Seals offers, answers and ICE candidates end to end through the signaling server. */
  signaling: 'ferry/v1/signaling-aead',
  /** Pre-shared key of the Noise NNpsk0 peer handshake. */
  handshakePsk: 'ferry/v1/handshake-psk',
  /** Seals diffs left on the diff server. */
  diff: 'ferry/v1/diff-aead',
  /** Seed of the Ed25519 key that signs diff-server requests. */
  relaySigning: 'ferry/v1/relay-signing-seed',
  /** Seals envelopes in the JSON reference form (spec section 6). */
  envelope: 'ferry/v1/envelope-aead',
} as const;

export type SubkeyPurpose = keyof typeof SUBKEY_PURPOSES;

/** RFC 5869 HKDF-SHA256 (extract then expand); an empty salt means HashLen zero bytes, as the RFC says. */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 1 || length > 255 * 32) {
    throw new FerryError('BAD_ARGUMENT', 'HKDF-SHA256 output length must be 1..8160 bytes');
  }
  return hkdf(sha256, ikm, salt, info, length);
}

/** No salt: the account key is already uniformly random (Argon2id output), so extract needs none. */
export function deriveSubkey(accountKey: Uint8Array, purpose: SubkeyPurpose, length = 32): Uint8Array {
  return hkdfSha256(accountKey, new Uint8Array(0), utf8(SUBKEY_PURPOSES[purpose]), length);
}
