import { FerryError } from '../errors.js';
import type { PeerMessage } from '../network/types.js';
import { compileCheck } from '../protocol/check.js';
import { encodePeerMessageJson, PeerMessageSchema, parseJson } from '../protocol/message.js';
import { SchemaMismatchError, validateOpData } from '../protocol/registry.js';
import { fromUtf8, utf8 } from '../util/bytes.js';

/**
 * PeerMessages on the peer channel: UTF-8 JSON in the protocol's PeerMessage shape (spec section 6
 * decrypted payload). Every PeerNetwork adapter goes through these two functions, so a message
 * arrives the same way over WebRTC and in memory.
 *
 * The session checks the envelope (op name, id, timestamp, no extra fields) and the data of its own
 * SESSION_* operations. The data of other operations is checked by the component that handles them
 * (the sync engine, AI streams): a device may carry operations this process never registered.
 */
const checkShape = compileCheck(PeerMessageSchema);

function checkEnvelope(value: unknown): PeerMessage {
  if (checkShape.Check(value)) {
    if (value.op.startsWith('SESSION_')) validateOpData(value.op, value.data);
    return value;
  }
  const first = checkShape.Errors(value).First();
  throw new SchemaMismatchError(first?.path ?? '', `not a peer message: ${first?.message ?? 'bad shape'}`);
}

/**
 * Throws SCHEMA_MISMATCH for a malformed message (`data` must be present: JSON would drop an
 * undefined one and the peer would refuse the message) and BAD_ENCODING for data JSON cannot carry.
 */
export function encodeWireMessage(message: PeerMessage): Uint8Array {
  const { op, data, timestamp, id } = message;
  if (data === undefined) throw new SchemaMismatchError('/data', `${op}: data is required (use null)`);
  checkEnvelope({ op, data, timestamp, id });
  return utf8(encodePeerMessageJson(message));
}

/**
 * Throws only FerryErrors: TOO_LARGE, BAD_ENCODING (not UTF-8), BAD_JSON, SCHEMA_MISMATCH (JSON
 * path in the message), UNKNOWN_OP (an unregistered SESSION_ operation).
 */
export function decodeWireMessage(bytes: Uint8Array, maxBytes: number): PeerMessage {
  if (bytes.length > maxBytes) {
    throw new FerryError('TOO_LARGE', `message of ${bytes.length} bytes exceeds the limit of ${maxBytes}`);
  }
  return checkEnvelope(parseJson(fromUtf8(bytes)));
}
