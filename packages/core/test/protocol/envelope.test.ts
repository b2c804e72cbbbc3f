import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { seal } from '../../src/crypto/aead.js';
import { deriveSubkey } from '../../src/crypto/subkeys.js';
import {
  createPeerMessage,
  decodeEnvelopeJson,
  ENVELOPE_VERSION,
  type Envelope,
  type EnvelopeHeader,
  encodeEnvelopeJson,
  envelopeAssociatedData,
  FerryError,
  fromBase64,
  isFerryError,
  openEnvelope,
  sealEnvelope,
  toBase64,
  utf8,
} from '../../src/index.js';
import { address, headerText, key, peerMessage, viaJson } from './arbitraries.js';

const failsWith = (fn: () => unknown): FerryError => {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(FerryError);
    return error as FerryError;
  }
  throw new Error('expected a FerryError, got success');
};

const sample = () => ({
  accountKey: new Uint8Array(32).fill(7),
  message: createPeerMessage('DB_DIFF_ACK', { collection: 'todos', stream: 's1', ackVersion: 'e1@12' }),
});

describe('envelope', () => {
  it('round-trips any message through seal, JSON text and open', () => {
    fc.assert(
      fc.property(key, address, peerMessage, (accountKey, to, message) => {
        const envelope = sealEnvelope(accountKey, to, message);
        expect(envelope).toMatchObject({ version: ENVELOPE_VERSION, type: message.op, ...to });
        const received = decodeEnvelopeJson(utf8(encodeEnvelopeJson(envelope)));
        const { header, message: opened } = openEnvelope(accountKey, received);
        expect(opened).toEqual(viaJson(message));
        expect(header).toEqual({ version: ENVELOPE_VERSION, type: message.op, ...to });
      }),
      { numRuns: 300 },
    );
  });

  it('fails to open when any byte of the sealed payload is flipped', () => {
    fc.assert(
      fc.property(
        key,
        peerMessage,
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (accountKey, message, at, mask) => {
          const envelope = sealEnvelope(accountKey, { accountId: 'a', clientId: 'c' }, message);
          const sealed = fromBase64(envelope.payload);
          sealed[at % sealed.length]! ^= mask;
          const error = failsWith(() => openEnvelope(accountKey, { ...envelope, payload: toBase64(sealed) }));
          expect(error.code).toBe('DECRYPT_FAILED');
        },
      ),
      { numRuns: 300 },
    );
  });

  it('fails to open when any header field is changed, added or dropped', () => {
    const fields = ['accountId', 'clientId', 'sessionId', 'type'] as const;
    fc.assert(
      fc.property(
        key,
        address,
        peerMessage,
        fc.constantFrom(...fields),
        headerText,
        fc.constantFrom('DB_DIFF_PUSH', 'SESSION_PING', 'DB_SYNC_INIT'),
        (accountKey, to, message, field, text, otherOp) => {
          const envelope = sealEnvelope(accountKey, to, message);
          const value = field === 'type' ? otherOp : text;
          fc.pre(envelope[field] !== value);
          const error = failsWith(() => openEnvelope(accountKey, { ...envelope, [field]: value }));
          expect(error.code).toBe('DECRYPT_FAILED');
          if (field === 'sessionId' && envelope.sessionId !== undefined) {
            const { sessionId: _dropped, ...withoutSession } = envelope;
            expect(failsWith(() => openEnvelope(accountKey, withoutSession)).code).toBe('DECRYPT_FAILED');
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("fails to open with another account's key", () => {
    fc.assert(
      fc.property(key, key, peerMessage, (keyA, keyB, message) => {
        fc.pre(toBase64(keyA) !== toBase64(keyB));
        const envelope = sealEnvelope(keyA, { accountId: 'a', clientId: 'c' }, message);
        expect(failsWith(() => openEnvelope(keyB, envelope)).code).toBe('DECRYPT_FAILED');
      }),
      { numRuns: 100 },
    );
  });

  it('moves the payload of one envelope under another header: fails', () => {
    const { accountKey, message } = sample();
    const a = sealEnvelope(accountKey, { accountId: 'acc', clientId: 'laptop' }, message);
    const b = sealEnvelope(accountKey, { accountId: 'acc', clientId: 'phone', sessionId: 's1' }, message);
    expect(failsWith(() => openEnvelope(accountKey, { ...b, payload: a.payload })).code).toBe(
      'DECRYPT_FAILED',
    );
  });

  it('gives every header its own associated data (no field boundary ambiguity)', () => {
    const base: EnvelopeHeader = {
      version: ENVELOPE_VERSION,
      accountId: 'ab',
      clientId: 'c',
      type: 'DB_DIFF_ACK',
    };
    const variants: EnvelopeHeader[] = [
      base,
      { ...base, accountId: 'a', clientId: 'bc' },
      { ...base, sessionId: '' },
      { ...base, sessionId: 'x' },
    ];
    const encoded = new Set(variants.map((header) => toBase64(envelopeAssociatedData(header))));
    expect(encoded.size).toBe(variants.length);
  });

  it('rejects a sealed op that differs from the clear type, and data that breaks its schema', () => {
    const { accountKey } = sample();
    const header = {
      version: ENVELOPE_VERSION,
      accountId: 'acc',
      clientId: 'c',
      type: 'DB_DIFF_ACK',
    } as const;
    const forge = (plaintext: unknown): Envelope => ({
      ...header,
      payload: toBase64(
        seal(
          deriveSubkey(accountKey, 'envelope'),
          utf8(JSON.stringify(plaintext)),
          envelopeAssociatedData(header),
        ),
      ),
    });
    const pong = { op: 'SESSION_PONG', data: { pingId: 'p' }, timestamp: 1, id: 'i' };
    expect(failsWith(() => openEnvelope(accountKey, forge(pong)))).toMatchObject({
      code: 'SCHEMA_MISMATCH',
      path: '/type',
    });
    const badData = {
      op: 'DB_DIFF_ACK',
      data: { collection: 'todos', stream: 's1', ackVersion: 3 },
      timestamp: 1,
      id: 'i',
    };
    expect(failsWith(() => openEnvelope(accountKey, forge(badData)))).toMatchObject({
      code: 'SCHEMA_MISMATCH',
      path: '/data/ackVersion',
    });
    expect(failsWith(() => openEnvelope(accountKey, forge('not a message'))).code).toBe('SCHEMA_MISMATCH');
    const notJson = {
      ...header,
      payload: toBase64(
        seal(deriveSubkey(accountKey, 'envelope'), utf8('{'), envelopeAssociatedData(header)),
      ),
    };
    expect(failsWith(() => openEnvelope(accountKey, notJson)).code).toBe('BAD_JSON');
  });

  it('refuses to seal what it could not open', () => {
    const { accountKey, message } = sample();
    expect(failsWith(() => sealEnvelope(accountKey, { accountId: '', clientId: 'c' }, message)).code).toBe(
      'SCHEMA_MISMATCH',
    );
    const unknown = { ...message, op: 'NOT_AN_OP' };
    expect(failsWith(() => sealEnvelope(accountKey, { accountId: 'a', clientId: 'c' }, unknown)).code).toBe(
      'UNKNOWN_OP',
    );
    const bigint = { ...message, data: { collection: 'x', ackVersion: '1', resolvedConflicts: [1n] } };
    expect(
      isFerryError(failsWith(() => sealEnvelope(accountKey, { accountId: 'a', clientId: 'c' }, bigint))),
    ).toBe(true);
  });
});
