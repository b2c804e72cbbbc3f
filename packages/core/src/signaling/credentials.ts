import { Value } from '@sinclair/typebox/value';
import { open, seal } from '../crypto/aead.js';
import { deriveSigningKeyPair, type SigningKeyPair, sign, verify } from '../crypto/sign.js';
import { deriveSubkey } from '../crypto/subkeys.js';
import { FerryError } from '../errors.js';
import { type SignalPlaintext, SignalPlaintextSchema } from '../protocol/signaling.js';
import { fromBase64, fromUtf8, randomBytes, toBase64, utf8 } from '../util/bytes.js';

/**
 * What a device derives from the account key to use the signaling server: the room id (an Ed25519
 * public key, so the server can check membership proofs without learning the account) and the AEAD
 * key that seals signal bodies end to end.
 */
export interface RoomCredentials {
  /** base64url of the room's Ed25519 public key: the only account-derived value the server sees. */
  readonly room: string;
  readonly roomKey: SigningKeyPair;
  readonly sealKey: Uint8Array;
}

export function roomCredentials(accountKey: Uint8Array): RoomCredentials {
  const roomKey = deriveSigningKeyPair(accountKey, 'roomSigning');
  return {
    room: toBase64(roomKey.publicKey, { url: true }),
    roomKey,
    sealKey: deriveSubkey(accountKey, 'signaling'),
  };
}

export interface JoinProofInput {
  challenge: string;
  room: string;
  clientId: string;
  connectionId: string;
}

/** The signed join statement; a JSON array of strings is unambiguous and identical in every runtime. */
export const joinProofMessage = ({ challenge, room, clientId, connectionId }: JoinProofInput): Uint8Array =>
  utf8(JSON.stringify(['ferry/v1/signaling-join', challenge, room, clientId, connectionId]));

export const signJoinProof = (credentials: RoomCredentials, input: Omit<JoinProofInput, 'room'>): string =>
  toBase64(sign(credentials.roomKey.secretKey, joinProofMessage({ ...input, room: credentials.room })), {
    url: true,
  });

export interface MailboxWatchInput {
  challenge: string;
  connectionId: string;
  /** The diff server's account id and the device's client id and Ed25519 diff-server key (base64url). */
  accountId: string;
  clientId: string;
  publicKey: string;
}

/** The signed mailbox-watch statement, bound to this socket's challenge and connection id. */
export const mailboxWatchMessage = ({
  challenge,
  connectionId,
  accountId,
  clientId,
  publicKey,
}: MailboxWatchInput): Uint8Array =>
  utf8(JSON.stringify(['ferry/v1/mailbox-watch', challenge, connectionId, accountId, clientId, publicKey]));

/** Server side: does `proof` show that the joiner holds the secret key of `input.room`? Never throws. */
export function verifyJoinProof(input: JoinProofInput, proof: string): boolean {
  try {
    return verify(fromBase64(input.room), joinProofMessage(input), fromBase64(proof));
  } catch {
    return false;
  }
}

/** Binds a sealed body to its room, sender and recipient: a server that re-addresses it breaks the tag. */
export const signalAssociatedData = (room: string, from: string, to: string): Uint8Array =>
  utf8(JSON.stringify(['ferry/v1/signal', room, from, to]));

export function sealSignal(
  credentials: RoomCredentials,
  from: string,
  to: string,
  data: unknown,
  now: number = Date.now(),
): string {
  const plaintext: SignalPlaintext = { id: toBase64(randomBytes(16), { url: true }), ts: now, data };
  const sealed = seal(
    credentials.sealKey,
    utf8(JSON.stringify(plaintext)),
    signalAssociatedData(credentials.room, from, to),
  );
  return toBase64(sealed, { url: true });
}

/**
 * Opens a relayed body addressed to `to`. Throws FerryError: BAD_BASE64, DECRYPT_FAILED (wrong key,
 * re-addressed or tampered), BAD_JSON or SCHEMA_MISMATCH. Replay checks are the caller's next step.
 */
export function openSignal(
  credentials: RoomCredentials,
  from: string,
  to: string,
  body: string,
): SignalPlaintext {
  const plaintext = fromUtf8(
    open(credentials.sealKey, fromBase64(body), signalAssociatedData(credentials.room, from, to)),
  );
  let parsed: unknown;
  try {
    parsed = JSON.parse(plaintext);
  } catch (cause) {
    throw new FerryError('BAD_JSON', 'sealed signal does not contain JSON', { cause });
  }
  if (!Value.Check(SignalPlaintextSchema, parsed)) {
    throw new FerryError('SCHEMA_MISMATCH', 'sealed signal does not have the {id, ts, data} shape');
  }
  return parsed;
}
