import fc from 'fast-check';
import type { PeerMessage } from '../../src/index.js';

/** Valid messages of core's operations, with arbitrary JSON where the schemas leave data open. */

const collection = fc.stringMatching(/^[a-z][_$a-z0-9-]{0,20}$/);
const version = fc.oneof(
  fc.constant(''),
  fc.tuple(fc.stringMatching(/^[A-Za-z0-9_-]{1,16}$/), fc.nat(1e9)).map(([epoch, seq]) => `${epoch}@${seq}`),
);
const id = fc.string({ minLength: 1, maxLength: 40 });
const json = fc.jsonValue({ maxDepth: 3 });
const change = fc.record(
  {
    id,
    st: fc.string({ minLength: 17, maxLength: 40 }),
    vv: fc.dictionary(fc.string({ maxLength: 10 }), fc.nat()),
    del: fc.boolean(),
    doc: fc.dictionary(fc.string({ maxLength: 10 }), json),
    fs: fc.dictionary(fc.string({ maxLength: 10 }), fc.tuple(fc.string(), fc.string())),
  },
  { requiredKeys: ['id', 'st', 'vv', 'del'] },
);

const dataByOp: Record<string, fc.Arbitrary<unknown>> = {
  DB_SYNC_INIT: fc.record(
    {
      collection,
      stream: id,
      checkpoint: version,
      dbVersion: version,
      askBack: fc.boolean(),
      withData: fc.array(id, { maxLength: 3 }),
      policy: fc.constantFrom('lww', 'fields', 'handler'),
      policyVersion: fc.string({ minLength: 1, maxLength: 64 }),
    },
    { requiredKeys: ['collection', 'stream', 'checkpoint', 'dbVersion'] },
  ),
  DB_DIFF_PUSH: fc.record({
    collection,
    stream: id,
    changes: fc.array(change, { maxLength: 5 }),
    baseVersion: version,
    newVersion: version,
    more: fc.boolean(),
  }),
  DB_DIFF_ACK: fc.record(
    { collection, stream: id, ackVersion: version, resolvedConflicts: fc.array(id, { maxLength: 3 }) },
    { requiredKeys: ['collection', 'stream', 'ackVersion'] },
  ),
  DB_DIFF_NACK: fc.record(
    {
      collection,
      stream: id,
      baseVersion: version,
      reason: fc.constantFrom(
        'gap',
        'rejected',
        'invalid',
        'paused',
        'unknown-collection',
        'failed',
        'attachments',
        'policy',
      ),
      message: fc.string({ maxLength: 100 }),
      ids: fc.array(id, { maxLength: 3 }),
    },
    { requiredKeys: ['collection', 'stream', 'baseVersion', 'reason', 'message'] },
  ),
  DB_CONFLICT_RESOLVE: fc.record({
    collection,
    conflicts: fc.array(fc.record({ id, local: change, remote: change }), { maxLength: 2 }),
    clientResolution: fc.array(change, { maxLength: 2 }),
  }),
  SESSION_PING: fc.record({ pingId: fc.string({ minLength: 1, maxLength: 64 }) }),
  SESSION_PONG: fc.record({ pingId: fc.string({ minLength: 1, maxLength: 64 }) }),
  SESSION_CLOSE: fc.record({ reason: fc.string({ maxLength: 200 }) }),
  SESSION_ERROR: fc.record(
    { code: fc.string({ maxLength: 64 }), message: fc.string(), inReplyTo: fc.string({ maxLength: 128 }) },
    { requiredKeys: ['code', 'message'] },
  ),
};

export const peerMessage: fc.Arbitrary<PeerMessage> = fc.constantFrom(...Object.keys(dataByOp)).chain((op) =>
  fc.record({
    op: fc.constant(op),
    data: dataByOp[op]!,
    timestamp: fc.oneof(
      fc.integer({ min: 0, max: 2 ** 48 }),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
    ),
    id: fc.string({ minLength: 1, maxLength: 128 }),
  }),
);

/** Header text: 1..256 characters, any Unicode. */
export const headerText = fc.string({ minLength: 1, maxLength: 60, unit: 'binary' });

export const address = fc.record(
  { accountId: headerText, clientId: headerText, sessionId: headerText },
  { requiredKeys: ['accountId', 'clientId'] },
);

export const key = fc.uint8Array({ minLength: 32, maxLength: 32 });

/** What a JSON round trip makes of a value (-0 becomes 0, undefined keys vanish). */
export const viaJson = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;
