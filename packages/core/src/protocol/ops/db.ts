import { Type } from '@sinclair/typebox';
import { defineOps, type OpDataOf } from '../registry.js';

/**
 * Database synchronization (spec sections 7.1 and 8), on the 'sync' lane. Every message names its
 * collection: one peer session carries all of a device's collections. The document and revision
 * fields stay open (`unknown`) here; the RxDB replication plugin validates its own document shapes.
 */

/** RxDB's rule for collection names. */
export const CollectionNameSchema = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[a-z][_$a-z0-9-]*$',
  description: 'RxDB collection name',
});

/** A version or checkpoint, opaque to everything but the sync engine (spec appendix A: a string). */
export const SyncVersionSchema = Type.String({ maxLength: 4096, description: 'version or checkpoint' });

export const DocumentChangeSchema = Type.Object(
  {
    id: Type.String({ minLength: 1, maxLength: 1024, description: 'document primary key' }),
    deleted: Type.Boolean({ description: 'true: the document was deleted (doc may be absent)' }),
    doc: Type.Optional(Type.Unknown({ description: 'the document JSON as written by the origin' })),
    meta: Type.Optional(
      Type.Unknown({ description: 'revision and hybrid-logical-clock metadata of the sync engine' }),
    ),
  },
  { additionalProperties: false },
);

const collection = CollectionNameSchema;

export const DB_OPS = defineOps('sync', {
  DB_SYNC_INIT: {
    data: Type.Object(
      {
        collection,
        checkpoint: Type.Unknown({
          description: "the receiver's checkpoint for the sender's changes; null: send everything",
        }),
        dbVersion: Type.Optional(
          Type.String({ maxLength: 256, description: 'local database/schema version' }),
        ),
        lastSyncTimestamp: Type.Optional(
          Type.Number({ minimum: 0, description: 'ms since epoch of the last completed sync' }),
        ),
      },
      { additionalProperties: false },
    ),
    description:
      'Opens or resumes sync of one collection: tells the peer where its changes should start, so it answers with DB_DIFF_PUSH.',
  },
  DB_DIFF_PUSH: {
    data: Type.Object(
      {
        collection,
        changes: Type.Array(DocumentChangeSchema, { description: 'changed documents, oldest first' }),
        baseVersion: SyncVersionSchema,
        newVersion: SyncVersionSchema,
      },
      { additionalProperties: false },
    ),
    description:
      'A batch of document changes after baseVersion; the receiver applies them, resolves conflicts and answers DB_DIFF_ACK or DB_DIFF_NACK.',
  },
  DB_DIFF_ACK: {
    data: Type.Object(
      {
        collection,
        ackVersion: SyncVersionSchema,
        resolvedConflicts: Type.Optional(
          Type.Array(Type.Unknown(), { description: 'conflicts the receiver resolved while applying' }),
        ),
      },
      { additionalProperties: false },
    ),
    description: 'The receiver applied every change up to ackVersion (its new checkpoint for the sender).',
  },
  DB_DIFF_NACK: {
    data: Type.Object(
      {
        collection,
        baseVersion: SyncVersionSchema,
        reason: Type.String({ maxLength: 4096 }),
        retryable: Type.Boolean({ description: 'true: send again later; false: needs a fresh DB_SYNC_INIT' }),
      },
      { additionalProperties: false },
    ),
    description: 'The receiver could not apply the push based on baseVersion (spec 10.6).',
  },
  DB_CONFLICT_RESOLVE: {
    data: Type.Object(
      {
        collection,
        conflicts: Type.Array(Type.Unknown(), { description: 'the conflicting documents and revisions' }),
        clientResolution: Type.Array(Type.Unknown(), { description: 'resolved documents / new revisions' }),
      },
      { additionalProperties: false },
    ),
    description:
      'Conflicts the receiver could not merge automatically, with the resolution it chose (spec 8).',
  },
});

declare module '../registry.js' {
  interface OpDataMap extends OpDataOf<typeof DB_OPS> {}
}
