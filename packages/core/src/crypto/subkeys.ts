import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
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

export function deriveSubkey(accountKey: Uint8Array, purpose: SubkeyPurpose, length = 32): Uint8Array {
  return hkdf(sha256, accountKey, undefined, utf8(SUBKEY_PURPOSES[purpose]), length);
}
