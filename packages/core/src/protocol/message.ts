import { Type } from '@sinclair/typebox';
import { FerryError, isFerryError } from '../errors.js';
import type { PeerMessage } from '../network/types.js';
import { fromUtf8, randomBytes, toBase64, utf8 } from '../util/bytes.js';
import { compileCheck } from './check.js';
// Core's own operations are defined by these modules' import: whoever decodes knows them.
import './ops/db.js';
import './ops/relay.js';
import './ops/session.js';
import {
  hasOp,
  type KnownOp,
  type OpData,
  SchemaMismatchError,
  type TypedPeerMessage,
  validateOpData,
} from './registry.js';

/**
 * The decrypted payload of spec section 6 (`PeerMessage`: op, data, timestamp, id) and its codec.
 * Decoders check size, encoding, shape, operation and data, and throw only FerryErrors.
 */

/** Same default as the peer session's message limit. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
export const MAX_PEER_MESSAGE_ID_LENGTH = 128;

export const PeerMessageSchema = Type.Object(
  {
    op: Type.String({ pattern: '^[A-Z][A-Z0-9_]{0,63}$', description: 'operation name' }),
    data: Type.Unknown({ description: "operation-specific fields, checked against the operation's schema" }),
    timestamp: Type.Number({ description: "sender's clock, ms since the Unix epoch" }),
    id: Type.String({
      minLength: 1,
      maxLength: MAX_PEER_MESSAGE_ID_LENGTH,
      description: 'unique message id: replay protection and correlation',
    }),
  },
  { additionalProperties: false, description: 'decrypted payload (spec section 6)' },
);
const checkPeerMessageShape = compileCheck(PeerMessageSchema);

export interface DecodeOptions {
  /** Inputs larger than this are TOO_LARGE before any parsing. Default DEFAULT_MAX_MESSAGE_BYTES. */
  maxBytes?: number;
  /**
   * 'reject' (default): an op this process never registered is UNKNOWN_OP. 'accept': such a message
   * passes with its data unchecked (a relay of messages, or a peer session that leaves the data to
   * the component handling the op); registered ops are still checked.
   */
  unknownOps?: 'reject' | 'accept';
}

/** 96 random bits drawn once per process: with a counter after them, ids never repeat. */
const MESSAGE_ID_PREFIX = toBase64(randomBytes(12), { url: true });
let messageCounter = 0;

/**
 * A fresh message id: this process's random prefix and a counter. Ids need only be unique (the
 * session's nonces stop replays); drawing random bytes for each message cost more than encrypting
 * a small one.
 */
export const newMessageId = (): string => `${MESSAGE_ID_PREFIX}${(messageCounter++).toString(36)}`;

/** Builds a message with a checked `data`, the current time and a fresh id. */
export function createPeerMessage<Name extends KnownOp>(
  op: Name,
  data: OpData<Name>,
  options: { timestamp?: number; id?: string } = {},
): TypedPeerMessage<Name> {
  validateOpData(op, data);
  return { op, data, timestamp: options.timestamp ?? Date.now(), id: options.id ?? newMessageId() };
}

/**
 * Checks a parsed value: the message shape, a known operation and data matching its schema.
 * Returns the same object, typed.
 */
export function checkPeerMessage(
  value: unknown,
  options: Pick<DecodeOptions, 'unknownOps'> = {},
): PeerMessage {
  if (!checkPeerMessageShape.Check(value)) {
    const first = checkPeerMessageShape.Errors(value).First();
    throw new SchemaMismatchError(first?.path ?? '', `not a peer message: ${first?.message ?? 'bad shape'}`);
  }
  if (options.unknownOps !== 'accept' || hasOp(value.op)) validateOpData(value.op, value.data);
  return value;
}

function checkSize(length: number, options: DecodeOptions, unit: string): void {
  const max = options.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  if (length > max)
    throw new FerryError('TOO_LARGE', `message of ${length} ${unit} exceeds the limit of ${max}`);
}

/** JSON.parse with BAD_JSON instead of SyntaxError (or RangeError on absurd nesting). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new FerryError('BAD_JSON', 'input is not valid JSON', { cause });
  }
}

/** JSON.stringify with BAD_ENCODING for what JSON cannot carry (BigInt, cycles). */
export function stringifyJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (cause) {
    if (isFerryError(cause)) throw cause;
    throw new FerryError('BAD_ENCODING', 'value cannot be serialized as JSON', { cause });
  }
}

// ---- the codec ----
// JSON is both the reference form and the peer-channel form: a lib0-style binary header around the
// JSON data measured 5-50% slower in bench/suites/protocol.ts, for at most 40 bytes saved per message.

export const encodePeerMessageJson = (message: PeerMessage): string =>
  stringifyJson({ op: message.op, data: message.data, timestamp: message.timestamp, id: message.id });

export function decodePeerMessageJson(input: string | Uint8Array, options: DecodeOptions = {}): PeerMessage {
  // A string of n characters is at least n UTF-8 bytes, so this bound never lets an oversized input through.
  checkSize(input.length, options, typeof input === 'string' ? 'characters' : 'bytes');
  const text = typeof input === 'string' ? input : fromUtf8(input);
  return checkPeerMessage(parseJson(text), options);
}

/** A PeerMessage as bytes for the peer channel (UTF-8 JSON). */
export const encodePeerMessage = (message: PeerMessage): Uint8Array => utf8(encodePeerMessageJson(message));

/**
 * Bytes from the peer channel to a checked PeerMessage. Throws only FerryErrors: TOO_LARGE,
 * BAD_ENCODING (not UTF-8), BAD_JSON, SCHEMA_MISMATCH (with the JSON path), UNKNOWN_OP.
 */
export function decodePeerMessage(bytes: Uint8Array, options: DecodeOptions = {}): PeerMessage {
  if (!(bytes instanceof Uint8Array)) throw new FerryError('BAD_ENCODING', 'a peer message must be bytes');
  return decodePeerMessageJson(bytes, options);
}
