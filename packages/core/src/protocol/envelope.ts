import { type Static, Type } from '@sinclair/typebox';
import { open, seal } from '../crypto/aead.js';
import { deriveSubkey } from '../crypto/subkeys.js';
import { FerryError } from '../errors.js';
import type { PeerMessage } from '../network/types.js';
import { concatBytes, fromBase64, fromUtf8, toBase64, utf8 } from '../util/bytes.js';
import { compileCheck } from './check.js';
import {
  checkPeerMessage,
  DEFAULT_MAX_MESSAGE_BYTES,
  type DecodeOptions,
  encodePeerMessageJson,
  parseJson,
  stringifyJson,
} from './message.js';
import { getOp, OP_NAME_PATTERN, SchemaMismatchError } from './registry.js';

/**
 * The message envelope of spec section 6: a cleartext header and the payload (a PeerMessage as JSON)
 * sealed with XChaCha20-Poly1305 under deriveSubkey(accountKey, 'envelope'). The header is the AEAD's
 * associated data, so changing, swapping or dropping any header field makes opening fail.
 */

export const ENVELOPE_VERSION = '1.0';

const HeaderText = (description: string) => Type.String({ minLength: 1, maxLength: 256, description });

export const EnvelopeSchema = Type.Object(
  {
    version: Type.Literal(ENVELOPE_VERSION, {
      description: 'envelope format version; another is UNKNOWN_VERSION',
    }),
    accountId: HeaderText('opaque account tag derived from the account key'),
    clientId: HeaderText('sending device'),
    sessionId: Type.Optional(HeaderText('peer session the message belongs to')),
    type: Type.String({ pattern: OP_NAME_PATTERN.source, description: 'the payload operation, in clear' }),
    payload: Type.String({
      contentEncoding: 'base64',
      description: 'base64 of nonce (24 bytes) || ciphertext || tag (16 bytes) of the JSON payload',
    }),
  },
  { additionalProperties: false, description: 'message envelope (spec section 6)' },
);
export type Envelope = Static<typeof EnvelopeSchema>;
export type EnvelopeHeader = Omit<Envelope, 'payload'>;
/** What a sender chooses; `version` is the current one and `type` is the payload's op. */
export type EnvelopeAddress = Pick<Envelope, 'accountId' | 'clientId' | 'sessionId'>;

const checkEnvelopeShape = compileCheck(EnvelopeSchema);
const AD_LABEL = utf8('ferry/v1/envelope-header');

/**
 * Canonical bytes of the header: a label, then each field in a fixed order as a 4-byte big-endian
 * length and its UTF-8 (0xffffffff: an absent sessionId), so no two different headers share an encoding.
 */
export function envelopeAssociatedData(header: EnvelopeHeader): Uint8Array {
  const fields = [header.version, header.accountId, header.clientId, header.sessionId, header.type];
  const parts: Uint8Array[] = [AD_LABEL];
  for (const field of fields) {
    const bytes = field === undefined ? undefined : utf8(field);
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, bytes ? bytes.length : 0xffff_ffff);
    parts.push(length);
    if (bytes) parts.push(bytes);
  }
  return concatBytes(...parts);
}

// Deriving costs an HKDF per call; envelopes are opened in bursts with one key.
const envelopeKeys = new WeakMap<Uint8Array, Uint8Array>();
function envelopeKey(accountKey: Uint8Array): Uint8Array {
  let key = envelopeKeys.get(accountKey);
  if (!key) {
    key = deriveSubkey(accountKey, 'envelope');
    envelopeKeys.set(accountKey, key);
  }
  return key;
}

const headerOf = (envelope: EnvelopeHeader): EnvelopeHeader => ({
  version: envelope.version,
  accountId: envelope.accountId,
  clientId: envelope.clientId,
  ...(envelope.sessionId === undefined ? {} : { sessionId: envelope.sessionId }),
  type: envelope.type,
});

/** Checks and seals `message` (its data must match its operation's schema). */
export function sealEnvelope(
  accountKey: Uint8Array,
  address: EnvelopeAddress,
  message: PeerMessage,
): Envelope {
  const checked = checkPeerMessage(message);
  const header = headerOf({ ...address, version: ENVELOPE_VERSION, type: checked.op });
  if (!checkEnvelopeShape.Check({ ...header, payload: '' })) {
    const first = checkEnvelopeShape.Errors({ ...header, payload: '' }).First();
    throw new SchemaMismatchError(first?.path ?? '', `bad envelope header: ${first?.message ?? ''}`);
  }
  const sealed = seal(
    envelopeKey(accountKey),
    utf8(encodePeerMessageJson(checked)),
    envelopeAssociatedData(header),
  );
  return { ...header, payload: toBase64(sealed) };
}

/** Checks the shape and version of a parsed envelope (no decryption). */
export function checkEnvelope(value: unknown, options: DecodeOptions = {}): Envelope {
  if (
    typeof value === 'object' &&
    value !== null &&
    'version' in value &&
    value.version !== ENVELOPE_VERSION
  ) {
    throw new FerryError(
      'UNKNOWN_VERSION',
      `envelope version ${JSON.stringify(value.version)?.slice(0, 32)} is not ${ENVELOPE_VERSION}`,
    );
  }
  if (!checkEnvelopeShape.Check(value)) {
    const first = checkEnvelopeShape.Errors(value).First();
    throw new SchemaMismatchError(first?.path ?? '', `not an envelope: ${first?.message ?? 'bad shape'}`);
  }
  const max = options.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  // Base64 carries 3 bytes per 4 characters.
  if (value.payload.length > Math.ceil((max * 4) / 3) + 4) {
    throw new FerryError(
      'TOO_LARGE',
      `envelope payload of ${value.payload.length} characters exceeds the limit`,
    );
  }
  getOp(value.type);
  return value;
}

/**
 * Decrypts and checks an envelope: its shape and version, the AEAD over payload and header, the
 * decrypted message, `type` equal to its `op`, and the data against the op's schema.
 */
export function openEnvelope(
  accountKey: Uint8Array,
  input: unknown,
  options: DecodeOptions = {},
): { header: EnvelopeHeader; message: PeerMessage } {
  const envelope = checkEnvelope(input, options);
  const header = headerOf(envelope);
  const plaintext = open(
    envelopeKey(accountKey),
    fromBase64(envelope.payload),
    envelopeAssociatedData(header),
  );
  const message = checkPeerMessage(parseJson(fromUtf8(plaintext)));
  if (message.op !== header.type) {
    throw new SchemaMismatchError(
      '/type',
      `envelope type ${header.type} differs from the sealed op ${message.op}`,
    );
  }
  return { header, message };
}

// ---- JSON text form ----

export const encodeEnvelopeJson = (envelope: Envelope): string => stringifyJson(envelope);

/** Parses and checks an envelope's JSON text (no decryption); see openEnvelope. */
export function decodeEnvelopeJson(input: string | Uint8Array, options: DecodeOptions = {}): Envelope {
  const max = options.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  // Header fields and base64 inflation on top of the payload limit.
  const limit = Math.ceil((max * 4) / 3) + 4096;
  if (input.length > limit) throw new FerryError('TOO_LARGE', `envelope of ${input.length} exceeds ${limit}`);
  return checkEnvelope(parseJson(typeof input === 'string' ? input : fromUtf8(input)), options);
}
