import { createPublicKey, verify } from 'node:crypto';
import {
  fromBase64,
  type JoinProofInput,
  joinProofMessage,
  type MailboxWatchInput,
  mailboxWatchMessage,
  rfc8410Der,
} from '@ferry/core';

/** Ed25519 with Node's OpenSSL (about 6x faster than the pure-JS verify here). Never throws. */
function verifyNative(publicKeyBase64: string, message: Uint8Array, signatureBase64: string): boolean {
  try {
    const publicKey = fromBase64(publicKeyBase64);
    const signature = fromBase64(signatureBase64);
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    const key = createPublicKey({
      key: Buffer.from(rfc8410Der('ed25519Public', publicKey)),
      format: 'der',
      type: 'spki',
    });
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}

/**
 * Server-side check of a join proof: the same statement as core's verifyJoinProof, verified natively,
 * since every join costs the server one verification.
 */
export const verifyJoinProofNative = (input: JoinProofInput, proof: string): boolean =>
  verifyNative(input.room, joinProofMessage(input), proof);

/** Does `proof` show that the watcher holds the secret key of `input.publicKey`? */
export const verifyMailboxWatch = (input: MailboxWatchInput, proof: string): boolean =>
  verifyNative(input.publicKey, mailboxWatchMessage(input), proof);
