import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkEnvelope,
  decodeEnvelopeJson,
  decodePeerMessage,
  decodePeerMessageJson,
  encodeEnvelopeJson,
  encodePeerMessage,
  FerryError,
  type FerryErrorCode,
  MAX_PEER_MESSAGE_ID_LENGTH,
  newMessageId,
  openEnvelope,
  sealEnvelope,
  utf8,
} from '../../src/index.js';
import { codeOf } from '../support/errors.js';
import { key, peerMessage, viaJson } from './arbitraries.js';

/** Runs a decoder on hostile input: it may succeed, but any failure must be a FerryError. */
const onlyFerryErrors = (fn: () => unknown): void => {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof FerryError)) throw new Error(`untyped error: ${String(error)}`, { cause: error });
  }
};

const accountKey = new Uint8Array(32).fill(1);
const goodMessage = {
  op: 'DB_DIFF_PUSH',
  data: {
    collection: 'todos',
    stream: 's1',
    changes: [{ id: 'a', st: '0000000000001-0000-laptop', vv: { laptop: 1 }, del: true }],
    baseVersion: 'e1@1',
    newVersion: 'e1@2',
    more: false,
  },
  timestamp: 1_700_000_000_000,
  id: 'm-1',
};
const goodEnvelope = sealEnvelope(
  accountKey,
  { accountId: 'acc', clientId: 'laptop', sessionId: 's' },
  goodMessage,
);

describe('peer message codec', () => {
  it('gives every message a fresh id that fits the schema', () => {
    const ids = Array.from({ length: 100_000 }, () => newMessageId());
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of [ids[0]!, ids.at(-1)!]) {
      expect(id).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(id.length).toBeLessThanOrEqual(MAX_PEER_MESSAGE_ID_LENGTH);
    }
  });

  it('round-trips every valid message', () => {
    fc.assert(
      fc.property(peerMessage, (message) => {
        expect(decodePeerMessage(encodePeerMessage(message))).toEqual(viaJson(message));
        expect(decodePeerMessageJson(JSON.stringify(message))).toEqual(viaJson(message));
      }),
      { numRuns: 500 },
    );
  });

  it('answers random bytes with FerryErrors only', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        onlyFerryErrors(() => decodePeerMessage(bytes));
        onlyFerryErrors(() => decodeEnvelopeJson(bytes));
      }),
      { numRuns: 1000 },
    );
  });

  it('answers random and mutated JSON with FerryErrors only', () => {
    const mutated = fc
      .tuple(
        peerMessage,
        fc.jsonValue({ maxDepth: 2 }),
        fc.constantFrom('op', 'data', 'timestamp', 'id', 'extra'),
      )
      .map(([message, value, field]) => ({ ...message, [field]: value }));
    const mutatedEnvelope = fc
      .tuple(
        fc.jsonValue({ maxDepth: 2 }),
        fc.constantFrom('version', 'accountId', 'clientId', 'sessionId', 'type', 'payload', 'extra'),
      )
      .map(([value, field]) => ({ ...goodEnvelope, [field]: value }));
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), mutated, mutatedEnvelope), (value) => {
        const text = JSON.stringify(value) ?? 'undefined';
        onlyFerryErrors(() => decodePeerMessage(utf8(text)));
        onlyFerryErrors(() => decodePeerMessageJson(text));
        onlyFerryErrors(() => decodeEnvelopeJson(text));
        onlyFerryErrors(() => checkEnvelope(value));
        onlyFerryErrors(() => openEnvelope(accountKey, value));
      }),
      { numRuns: 1000 },
    );
  });

  it('answers truncated and bit-flipped encodings with FerryErrors only', () => {
    fc.assert(
      fc.property(key, peerMessage, fc.nat(), fc.nat(255), (someKey, message, at, mask) => {
        const sealed = sealEnvelope(someKey, { accountId: 'a', clientId: 'c' }, message);
        for (const bytes of [encodePeerMessage(message), utf8(encodeEnvelopeJson(sealed))]) {
          const flipped = bytes.slice();
          flipped[at % flipped.length]! ^= mask;
          for (const input of [bytes.subarray(0, at % (bytes.length + 1)), flipped]) {
            onlyFerryErrors(() => decodePeerMessage(input));
            onlyFerryErrors(() => openEnvelope(someKey, decodeEnvelopeJson(input)));
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('bad inputs and their error codes', () => {
  const message = (patch: Record<string, unknown>) => JSON.stringify({ ...goodMessage, ...patch });
  const envelope = (patch: Record<string, unknown>) => ({ ...goodEnvelope, ...patch });
  const { version: _version, ...envelopeWithoutVersion } = goodEnvelope;
  const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;

  const messageCases: Array<[string, Uint8Array | string, FerryErrorCode | 'ok', { maxBytes?: number }?]> = [
    ['a valid message', message({}), 'ok'],
    ['not UTF-8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), 'BAD_ENCODING'],
    ['not JSON', '{"op":', 'BAD_JSON'],
    ['empty input', '', 'BAD_JSON'],
    ['absurdly nested JSON', deep, 'SCHEMA_MISMATCH'],
    ['a JSON array', '[]', 'SCHEMA_MISMATCH'],
    ['null', 'null', 'SCHEMA_MISMATCH'],
    ['op missing', JSON.stringify({ data: {}, timestamp: 1, id: 'x' }), 'SCHEMA_MISMATCH'],
    ['op in lower case', message({ op: 'db_diff_push' }), 'SCHEMA_MISMATCH'],
    ['unknown op', message({ op: 'DB_DIFF_EXPLODE' }), 'UNKNOWN_OP'],
    ['timestamp as a string', message({ timestamp: '2024-01-01' }), 'SCHEMA_MISMATCH'],
    ['empty id', message({ id: '' }), 'SCHEMA_MISMATCH'],
    ['id of 129 characters', message({ id: 'x'.repeat(129) }), 'SCHEMA_MISMATCH'],
    ['an extra top-level field', message({ extra: 1 }), 'SCHEMA_MISMATCH'],
    ['data of the wrong type', message({ data: { ...goodMessage.data, changes: 'all' } }), 'SCHEMA_MISMATCH'],
    ['data with an unknown field', message({ data: { ...goodMessage.data, evil: true } }), 'SCHEMA_MISMATCH'],
    [
      'bad collection name',
      message({ data: { ...goodMessage.data, collection: 'Todos!' } }),
      'SCHEMA_MISMATCH',
    ],
    ['larger than the limit', message({}), 'TOO_LARGE', { maxBytes: 50 }],
  ];

  it.each(messageCases)('peer message: %s -> %s', (_name, input, expected, options) => {
    expect(codeOf(() => decodePeerMessageJson(input, options))).toBe(expected);
    const bytes = typeof input === 'string' ? utf8(input) : input;
    expect(codeOf(() => decodePeerMessage(bytes, options))).toBe(expected);
  });

  it('passes ops this process never registered when asked to, still checking registered ones', () => {
    const future = message({ op: 'FUTURE_OP', data: { anything: [1, 2] } });
    expect(codeOf(() => decodePeerMessage(utf8(future)))).toBe('UNKNOWN_OP');
    expect(decodePeerMessage(utf8(future), { unknownOps: 'accept' })).toMatchObject({ op: 'FUTURE_OP' });
    const badKnown = message({ data: { collection: 'todos' } });
    expect(codeOf(() => decodePeerMessage(utf8(badKnown), { unknownOps: 'accept' }))).toBe('SCHEMA_MISMATCH');
    expect(codeOf(() => decodePeerMessage(utf8(message({ op: 'bad op' })), { unknownOps: 'accept' }))).toBe(
      'SCHEMA_MISMATCH',
    );
  });

  it('names the JSON path of a schema mismatch', () => {
    expect(() =>
      decodePeerMessageJson(message({ data: { ...goodMessage.data, changes: [{ id: 'a' }] } })),
    ).toThrow(expect.objectContaining({ code: 'SCHEMA_MISMATCH', path: '/data/changes/0/st' }));
    expect(() => decodePeerMessageJson(message({ timestamp: 'soon' }))).toThrow(
      expect.objectContaining({ path: '/timestamp' }),
    );
  });

  const envelopeCases: Array<[string, unknown, FerryErrorCode | 'ok', { maxBytes?: number }?]> = [
    ['a valid envelope', goodEnvelope, 'ok'],
    ['version 2.0', envelope({ version: '2.0' }), 'UNKNOWN_VERSION'],
    ['numeric version', envelope({ version: 1 }), 'UNKNOWN_VERSION'],
    ['no version', envelopeWithoutVersion, 'SCHEMA_MISMATCH'],
    ['not an object', 'hello', 'SCHEMA_MISMATCH'],
    ['empty clientId', envelope({ clientId: '' }), 'SCHEMA_MISMATCH'],
    ['accountId as a number', envelope({ accountId: 5 }), 'SCHEMA_MISMATCH'],
    ['an extra field', envelope({ extra: 'x' }), 'SCHEMA_MISMATCH'],
    ['unknown type', envelope({ type: 'NOPE' }), 'UNKNOWN_OP'],
    ['payload not base64', envelope({ payload: 'not base64!' }), 'BAD_BASE64'],
    ['payload of an impossible base64 length', envelope({ payload: 'AAAAA' }), 'BAD_BASE64'],
    ['payload too short for a nonce and tag', envelope({ payload: 'AAAA' }), 'DECRYPT_FAILED'],
    ['payload above the limit', goodEnvelope, 'TOO_LARGE', { maxBytes: 16 }],
  ];

  it.each(envelopeCases)('envelope: %s -> %s', (_name, input, expected, options) => {
    expect(codeOf(() => openEnvelope(accountKey, input, options))).toBe(expected);
    if (expected !== 'DECRYPT_FAILED' && expected !== 'BAD_BASE64') {
      expect(codeOf(() => decodeEnvelopeJson(JSON.stringify(input), options))).toBe(expected);
    }
  });

  it('envelope text: not JSON, not UTF-8, too large', () => {
    expect(codeOf(() => decodeEnvelopeJson('{"version"'))).toBe('BAD_JSON');
    expect(codeOf(() => decodeEnvelopeJson(new Uint8Array([0xc3, 0x28])))).toBe('BAD_ENCODING');
    expect(codeOf(() => decodeEnvelopeJson(' '.repeat(10_000), { maxBytes: 100 }))).toBe('TOO_LARGE');
  });
});
