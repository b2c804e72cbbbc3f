import { Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { FerryError, isFerryError } from '../errors.js';
import type { PeerMessage } from '../network/types.js';
import { fromUtf8, randomBytes, toBase64, utf8 } from '../util/bytes.js';
import { ByteReader, ByteWriter } from './bytes-io.js';
import {
  type KnownOp,
  type OpData,
  SchemaMismatchError,
  type TypedPeerMessage,
  validateOpData,
} from './registry.js';

/**
 * The decrypted payload of spec section 6 (`PeerMessage`: op, data, timestamp, id) and its codecs:
 * JSON, the reference form (inside envelopes, towards the diff server), and a compact binary form
 * for the peer channel. Decoders check size, encoding, shape, operation and data, and throw only
 * FerryErrors.
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
const checkPeerMessageShape = TypeCompiler.Compile(PeerMessageSchema);

export interface DecodeOptions {
  /** Inputs larger than this are TOO_LARGE before any parsing. Default DEFAULT_MAX_MESSAGE_BYTES. */
  maxBytes?: number;
}

/** A fresh message id: 128 random bits, base64url. */
export const newMessageId = (): string => toBase64(randomBytes(16), { url: true });

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
export function checkPeerMessage(value: unknown): PeerMessage {
  if (!checkPeerMessageShape.Check(value)) {
    const first = checkPeerMessageShape.Errors(value).First();
    throw new SchemaMismatchError(first?.path ?? '', `not a peer message: ${first?.message ?? 'bad shape'}`);
  }
  validateOpData(value.op, value.data);
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

// ---- JSON: the reference form ----

export const encodePeerMessageJson = (message: PeerMessage): string =>
  stringifyJson({ op: message.op, data: message.data, timestamp: message.timestamp, id: message.id });

export function decodePeerMessageJson(input: string | Uint8Array, options: DecodeOptions = {}): PeerMessage {
  // A string of n characters is at least n UTF-8 bytes, so this bound never lets an oversized input through.
  checkSize(input.length, options, typeof input === 'string' ? 'characters' : 'bytes');
  const text = typeof input === 'string' ? input : fromUtf8(input);
  return checkPeerMessage(parseJson(text));
}

// ---- binary: the peer-channel form ----

/** First byte of the binary form; a different value is UNKNOWN_VERSION. */
export const BINARY_CODEC_VERSION = 1;

/**
 * version (1 byte) | op (varint length + UTF-8) | timestamp (float64 LE) | id (varint length + UTF-8)
 * | data as JSON UTF-8 (the rest; empty when data is undefined).
 */
export function encodePeerMessageBinary(message: PeerMessage): Uint8Array {
  const data = message.data === undefined ? new Uint8Array(0) : utf8(stringifyJson(message.data));
  const writer = new ByteWriter(32 + message.op.length + message.id.length * 3 + data.length);
  writer
    .byte(BINARY_CODEC_VERSION)
    .bytes(utf8(message.op))
    .float64(message.timestamp)
    .bytes(utf8(message.id));
  return writer.raw(data).finish();
}

export function decodePeerMessageBinary(input: Uint8Array, options: DecodeOptions = {}): PeerMessage {
  if (!(input instanceof Uint8Array))
    throw new FerryError('BAD_ENCODING', 'binary message must be a Uint8Array');
  checkSize(input.length, options, 'bytes');
  const reader = new ByteReader(input);
  const version = reader.byte('the codec version');
  if (version !== BINARY_CODEC_VERSION) {
    throw new FerryError(
      'UNKNOWN_VERSION',
      `binary message codec version ${version} is not ${BINARY_CODEC_VERSION}`,
    );
  }
  const op = fromUtf8(reader.bytes('the op name'));
  const timestamp = reader.float64('the timestamp');
  const id = fromUtf8(reader.bytes('the message id'));
  const rest = reader.rest();
  const data = rest.length === 0 ? undefined : parseJson(fromUtf8(rest));
  return checkPeerMessage({ op, data, timestamp, id });
}
