import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { defineOps, type OpDataOf } from '../registry.js';

/**
 * Database synchronization (spec sections 7.1 and 8), on the 'sync' lane: the messages exactly as
 * `@ferry/rxdb` sends them (it imports these schemas; they are its only definition). Every message
 * names its collection, since one peer session carries all of a device's collections.
 *
 * Versions (`baseVersion`, `newVersion`, `ackVersion`, `checkpoint`) are checkpoints into the
 * sender's change log for one collection: `<epoch>@<sequence>`, where the epoch names one life of
 * the sender's metadata store (a wiped device starts a new epoch, and old checkpoints stop applying).
 */

const Id = Type.String({ minLength: 1, maxLength: 512 });
/** RxDB's rule for collection names. */
export const CollectionNameSchema = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[a-z][_$a-z0-9-]*$',
  description: 'RxDB collection name',
});
/** Top-level message fields are closed: an unknown field is a SCHEMA_MISMATCH, not silently carried. */
const closed = { additionalProperties: false } as const;
export const SyncVersionSchema = Type.String({
  maxLength: 200,
  pattern: '^([A-Za-z0-9_-]{1,64}@[0-9]{1,15})?$',
  description: "checkpoint '<epoch>@<sequence>' in the sender's change log; '' = the beginning",
});
/**
 * A device's store of one collection as the source of versions: its client id, its metadata
 * store's epoch and the collection's copy (a new one when its sync started over, the collection
 * removed, say). Versions that came from a store are not pushed back to it; a new store of the same
 * device gets them back.
 */
export const SyncStoreSchema = Type.String({ minLength: 1, maxLength: 700 });
const Stamp = Type.String({ minLength: 17, maxLength: 400, description: 'hybrid logical clock stamp' });
/**
 * An object whose every field holds a `value`. Not a TypeBox Record: its compiled check makes an
 * array of entries and tests each key against a `^(.*)$` pattern, and with a version vector in every
 * change that was about half of checking a push (~7 of 13 ms for 10,000 changes in a fresh process).
 */
const mapOf = <T extends TSchema>(value: T, options: { description: string; maxProperties?: number }) =>
  Type.Unsafe<Record<string, Static<T>>>(Type.Object({}, { ...options, additionalProperties: value }));

/** One document version: the full state (not a patch), so applying it twice or late is harmless. */
export const DocumentChangeSchema = Type.Object(
  {
    id: Id,
    st: Stamp,
    vv: mapOf(Type.Integer({ minimum: 0 }), {
      description:
        "version vector: writes per writer included in this version (detects concurrent edits); Ferry's writer key is a device's client id and its store's epoch",
    }),
    del: Type.Boolean({ description: 'true: the document is deleted' }),
    // Any object: the receiving collection's own schema checks the fields; `_attachments`, when the
    // document has attachments, holds RxDB's descriptions of them. (A TypeBox Record here
    // compiled to a regular-expression test of every field name, a tenth of a sync's message checks.)
    doc: Type.Optional(
      Type.Unsafe<Record<string, unknown>>(
        Type.Object(
          {},
          {
            additionalProperties: true,
            description:
              "the document without RxDB's underscore fields; for a delete, the tombstone's content under the per-field policy, else omitted",
          },
        ),
      ),
    ),
    fs: Type.Optional(
      mapOf(Type.Tuple([Type.String(), Type.String()]), {
        description: 'per-field [stamp, value hash]; only under the per-field merge policy',
      }),
    ),
    att: Type.Optional(
      Type.Object(
        {},
        {
          additionalProperties: Type.String(),
          description:
            "attachment data in base64, by attachment id, for the attachments in doc._attachments (RxDB's descriptions: digest, length, type); a push leaves out the data of attachments unchanged since a version the receiver was sent, and the relay never does",
        },
      ),
    ),
  },
  { additionalProperties: false },
);
export type DocumentChange = Static<typeof DocumentChangeSchema>;

export const SyncNackReasonSchema = Type.Union([
  Type.Literal('gap'), // baseVersion is ahead of the receiver's checkpoint: a new DB_SYNC_INIT follows
  Type.Literal('rejected'), // some documents failed the receiver's schema; the rest were applied
  Type.Literal('invalid'), // the message itself was malformed
  Type.Literal('paused'), // replication is paused on the receiver; it sends DB_SYNC_INIT on resume
  Type.Literal('unknown-collection'),
  Type.Literal('failed'), // the receiver's storage failed; it will ask again with DB_SYNC_INIT
  // `ids` came without data of an attachment the receiver does not hold: nothing of the push was
  // applied, and a DB_SYNC_INIT naming them in `withData` follows
  Type.Literal('attachments'),
  // the two devices settle conflicts by different policies (see DB_SYNC_INIT's `policy`): nothing is
  // served until they run the same one
  Type.Literal('policy'),
]);

/**
 * How a device settles concurrent versions: 'lww', 'fields' (per-field merge) or 'handler' (the app's
 * own). Devices whose built-in policies differ would settle one conflict two ways, each under the
 * same version vector: they would never converge.
 */
export const ConflictPolicyKindSchema = Type.Union([
  Type.Literal('lww'),
  Type.Literal('fields'),
  Type.Literal('handler'),
]);

/**
 * The version of a device's conflict rule, which the app names (`conflictVersion`): two devices
 * whose app handlers differ settle one conflict two ways, as two built-in rules would.
 */
export const ConflictPolicyVersionSchema = Type.String({ minLength: 1, maxLength: 64 });

export const DB_OPS = defineOps('sync', {
  DB_SYNC_INIT: {
    data: Type.Object(
      {
        collection: CollectionNameSchema,
        stream: Type.String({
          ...Id,
          description:
            'names this catch-up stream; pushes, acks and nacks carry it. A request for the stream already being served changes nothing',
        }),
        checkpoint: SyncVersionSchema,
        dbVersion: SyncVersionSchema,
        store: Type.Optional(
          Type.String({
            ...SyncStoreSchema,
            description:
              "the receiver's store of this collection (client id, epoch, copy): versions that came from it are not pushed back to it (absent: known by its client id)",
          }),
        ),
        askBack: Type.Optional(
          Type.Boolean({
            description:
              "the sender just (re)started and may have missed the receiver's own request: the receiver repeats its open stream's request as it was, or opens one",
          }),
        ),
        withData: Type.Optional(
          Type.Array(Id, {
            maxItems: 100_000,
            description:
              "documents whose attachment data the receiver lacks (see the 'attachments' nack): this stream's pushes carry all of their attachments' data",
          }),
        ),
        policy: Type.Optional(
          Type.Union(ConflictPolicyKindSchema.anyOf, {
            description:
              "the receiver's conflict policy; a device running another answers with the 'policy' nack and serves nothing",
          }),
        ),
        policyVersion: Type.Optional(
          Type.String({
            ...ConflictPolicyVersionSchema,
            description:
              "the version the receiver's app gives its conflict rule (absent: none); a device whose version differs answers with the 'policy' nack",
          }),
        ),
        inherited: Type.Optional(
          Type.Boolean({
            description:
              "the checkpoint is one a third device held (see DB_DIFF_PUSH's holds), not one of this stream's acks: a position the sender does not know it issued is served from the beginning, not taken for a store restored from a backup",
          }),
        ),
      },
      closed,
    ),
    description:
      "On connect, per collection: the receiver's checkpoint in the other device's log; the other side answers with DB_DIFF_PUSH from there.",
  },
  DB_DIFF_PUSH: {
    data: Type.Object(
      {
        collection: CollectionNameSchema,
        stream: Id,
        changes: Type.Array(DocumentChangeSchema, { maxItems: 100_000 }),
        baseVersion: SyncVersionSchema,
        newVersion: SyncVersionSchema,
        more: Type.Boolean({ description: "false once this push reaches the sender's head" }),
        store: Type.Optional(
          Type.String({
            ...SyncStoreSchema,
            description:
              "the sender's store of this collection (see DB_SYNC_INIT's store): the receiver does not push these versions back to it",
          }),
        ),
        holds: Type.Optional(
          mapOf(SyncVersionSchema, {
            maxProperties: 64,
            description:
              "only on a stream's first push with more: false (the end of its catch-up): the sender's checkpoints in other devices' logs (by client id) as of this push. A receiver that applied the whole stream holds what the sender held, so it may ask those devices from there (DB_SYNC_INIT's inherited) instead of from the beginning",
          }),
        ),
      },
      closed,
    ),
    description:
      'A batch of document versions from baseVersion to newVersion; the receiver applies it, then acks.',
  },
  DB_DIFF_ACK: {
    data: Type.Object(
      {
        collection: CollectionNameSchema,
        stream: Id,
        ackVersion: SyncVersionSchema,
        resolvedConflicts: Type.Optional(
          Type.Array(Id, { description: 'ids whose concurrent versions were resolved' }),
        ),
      },
      closed,
    ),
    description: 'The batch up to ackVersion is durably applied.',
  },
  DB_DIFF_NACK: {
    data: Type.Object(
      {
        collection: Type.String({ maxLength: 128 }),
        stream: Type.String({ maxLength: 512 }),
        baseVersion: Type.String({ maxLength: 200 }),
        reason: SyncNackReasonSchema,
        message: Type.String({ maxLength: 2000 }),
        ids: Type.Optional(Type.Array(Id)),
      },
      closed,
    ),
    description:
      'The batch could not be applied (or only partly), with the reason; the sender retries or reports.',
  },
  DB_CONFLICT_RESOLVE: {
    data: Type.Object(
      {
        collection: CollectionNameSchema,
        conflicts: Type.Array(
          Type.Object({ id: Id, local: DocumentChangeSchema, remote: DocumentChangeSchema }),
        ),
        clientResolution: Type.Array(DocumentChangeSchema, {
          description: 'resolved versions, dominating both inputs',
        }),
      },
      closed,
    ),
    description:
      "Conflicts settled by the app's own handler, with the resolved versions; the origin applies them like a push (spec 8).",
  },
});

declare module '../registry.js' {
  interface OpDataMap extends OpDataOf<typeof DB_OPS> {}
}
