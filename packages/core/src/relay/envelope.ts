import { CloneType, type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { decompressMessage } from '../compression/deflate.js';
import { open, seal } from '../crypto/aead.js';
import { FerryError } from '../errors.js';
import { ClientIdSchema } from '../protocol/signaling.js';
import { concatBytes, fromUtf8, utf8 } from '../util/bytes.js';
import { DiffIdSchema, MAX_PUSH_TARGETS, PushTargetSchema } from './wire.js';

/**
 * A diff as left on the diff server. The server sees the header (ids, sequence numbers, expiry: the
 * metadata it needs or could infer anyway) but cannot change it: the header is the AEAD's associated
 * data, so a server that re-addresses, re-numbers or extends a diff breaks its tag.
 *
 *   byte 0      format version (1)
 *   bytes 1..2  header length, big-endian
 *   header      JSON DiffHeader (UTF-8)
 *   sealed      XChaCha20-Poly1305 nonce || ciphertext || tag, under the account's `diff` subkey
 *
 * A header with `z: 1` says the sealed payload is compressed: its inflated length (u32 BE), then raw
 * DEFLATE, as in session records. The length is inside the seal; the server sees only that the
 * payload is compressed, and its compressed size.
 */
const FORMAT_VERSION = 1;
const MAX_HEADER_BYTES = 16 * 1024;
/** The most a compressed payload may inflate to: diffs are at most 1 MiB as stored, 1032x that is absurd. */
export const MAX_INFLATED_DIFF_BYTES = 64 * 1024 * 1024;
const AAD_DOMAIN = utf8('ferry/v1/relay-diff\u0000');

export const DiffHeaderSchema = Type.Object(
  {
    v: Type.Literal(1, { description: 'Header version.' }),
    id: CloneType(DiffIdSchema, { description: "The diff's id, as in the push request." }),
    from: CloneType(ClientIdSchema, { description: 'The sending device.' }),
    ep: Type.String({
      minLength: 1,
      maxLength: 32,
      pattern: '^[A-Za-z0-9_-]+$',
      description: "The sender's sequence epoch: new sender state, new numbering from 1.",
    }),
    to: Type.Array(Type.Tuple([PushTargetSchema, Type.Integer({ minimum: 1 })]), {
      minItems: 1,
      maxItems: MAX_PUSH_TARGETS,
      description: 'One [target, sequence] per addressee; the target `*` means every other device.',
    }),
    exp: Type.Integer({
      minimum: 0,
      description: 'Expiry in ms since the epoch: a receiver drops it after this.',
    }),
    z: Type.Optional(Type.Literal(1, { description: 'Present: the payload is compressed (see above).' })),
  },
  { additionalProperties: false },
);
export type DiffHeader = Static<typeof DiffHeaderSchema>;

export function sealDiff(diffKey: Uint8Array, header: DiffHeader, payload: Uint8Array): Uint8Array {
  const headerBytes = utf8(JSON.stringify(header));
  if (headerBytes.length > MAX_HEADER_BYTES) throw new FerryError('TOO_LARGE', 'diff header is too large');
  const prefix = new Uint8Array([FORMAT_VERSION, headerBytes.length >> 8, headerBytes.length & 0xff]);
  return concatBytes(prefix, headerBytes, seal(diffKey, payload, concatBytes(AAD_DOMAIN, headerBytes)));
}

/**
 * Parses and opens a sealed diff, and inflates a compressed payload. Throws FerryError:
 * UNKNOWN_VERSION, BAD_ENCODING (also a compressed payload that does not inflate to its length),
 * TOO_LARGE (a payload announcing more than MAX_INFLATED_DIFF_BYTES), BAD_JSON, SCHEMA_MISMATCH
 * (malformed header) or DECRYPT_FAILED (another account's key, or tampering).
 */
export function openDiff(
  diffKey: Uint8Array,
  sealed: Uint8Array,
): { header: DiffHeader; payload: Uint8Array } {
  if (sealed.length < 3) throw new FerryError('BAD_ENCODING', 'sealed diff is shorter than its prefix');
  if (sealed[0] !== FORMAT_VERSION) {
    throw new FerryError('UNKNOWN_VERSION', `sealed diff format ${sealed[0]} is not supported`);
  }
  const headerLength = (sealed[1]! << 8) | sealed[2]!;
  if (sealed.length < 3 + headerLength)
    throw new FerryError('BAD_ENCODING', 'sealed diff header is cut short');
  const headerBytes = sealed.subarray(3, 3 + headerLength);
  let header: unknown;
  try {
    header = JSON.parse(fromUtf8(headerBytes));
  } catch (cause) {
    if (cause instanceof FerryError) throw cause;
    throw new FerryError('BAD_JSON', 'sealed diff header is not JSON', { cause });
  }
  if (!Value.Check(DiffHeaderSchema, header)) {
    throw new FerryError('SCHEMA_MISMATCH', 'sealed diff header does not have the DiffHeader shape');
  }
  const payload = open(diffKey, sealed.subarray(3 + headerLength), concatBytes(AAD_DOMAIN, headerBytes));
  return { header, payload: header.z ? decompressMessage(payload, MAX_INFLATED_DIFF_BYTES) : payload };
}
