import { type Static, Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';

/**
 * The DB_* operations of spec section 7.1 as Ferry sends them inside PeerMessage.data (and, for the
 * diff relay, inside a sealed relay payload). Every incoming message is checked against these
 * schemas before anything touches the database.
 *
 * Versions (`baseVersion`, `newVersion`, `ackVersion`, `checkpoint`) are checkpoints into the
 * sender's change log for one collection: `<epoch>@<sequence>`, where the epoch names one life of
 * the sender's metadata store (a wiped device starts a new epoch, and old checkpoints stop applying).
 */
export const SYNC_OPS = {
  syncInit: 'DB_SYNC_INIT',
  diffPush: 'DB_DIFF_PUSH',
  diffAck: 'DB_DIFF_ACK',
  diffNack: 'DB_DIFF_NACK',
  conflictResolve: 'DB_CONFLICT_RESOLVE',
} as const;

const Id = Type.String({ minLength: 1, maxLength: 512 });
const Name = Type.String({ minLength: 1, maxLength: 128 });
const Version = Type.String({ maxLength: 200, pattern: '^([A-Za-z0-9_-]{1,64}@[0-9]{1,15})?$' });
const Stamp = Type.String({ minLength: 17, maxLength: 400 });

/** One document version: the full state (not a patch), so applying it twice or late is harmless. */
export const ChangeSchema = Type.Object(
  {
    id: Id,
    /** Hybrid-logical-clock stamp of this version (see hlc.ts). */
    st: Stamp,
    /** Version vector: writes per device that this version includes (detects concurrent edits). */
    vv: Type.Record(Type.String({ maxLength: 256 }), Type.Integer({ minimum: 0 })),
    del: Type.Boolean(),
    /** The document without RxDB's underscore fields; omitted for deletes. */
    doc: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    /** Per-field [stamp, value hash]; present only under the per-field merge policy. */
    fs: Type.Optional(Type.Record(Type.String(), Type.Tuple([Type.String(), Type.String()]))),
  },
  { additionalProperties: false },
);
export type Change = Static<typeof ChangeSchema>;

export const SyncInitSchema = Type.Object({
  collection: Name,
  /** Names this catch-up stream; pushes, acks and nacks carry it, so stale ones are recognised. */
  stream: Id,
  /** The receiver's checkpoint in the sender's log ('' = from the beginning). */
  checkpoint: Version,
  /** The receiver's own current version (informational, spec `dbVersion`). */
  dbVersion: Version,
  /**
   * Set by a device that just started or resumed: it may have missed the other side's DB_SYNC_INIT,
   * so the other side opens its own catch-up stream again.
   */
  askBack: Type.Optional(Type.Boolean()),
});
export type SyncInit = Static<typeof SyncInitSchema>;

export const DiffPushSchema = Type.Object({
  collection: Name,
  stream: Id,
  changes: Type.Array(ChangeSchema, { maxItems: 100_000 }),
  baseVersion: Version,
  newVersion: Version,
  /** False once this push reaches the sender's head at the time it was sent. */
  more: Type.Boolean(),
});
export type DiffPush = Static<typeof DiffPushSchema>;

export const DiffAckSchema = Type.Object({
  collection: Name,
  stream: Id,
  ackVersion: Version,
  /** Ids of documents whose concurrent versions the receiver resolved while applying. */
  resolvedConflicts: Type.Optional(Type.Array(Id)),
});
export type DiffAck = Static<typeof DiffAckSchema>;

export const NackReason = Type.Union([
  Type.Literal('gap'), // baseVersion is ahead of the receiver's checkpoint: a new DB_SYNC_INIT follows
  Type.Literal('rejected'), // some documents failed the receiver's schema; the rest were applied
  Type.Literal('invalid'), // the message itself was malformed
  Type.Literal('paused'), // replication is paused on the receiver; it will send DB_SYNC_INIT on resume
  Type.Literal('unknown-collection'),
  Type.Literal('failed'), // the receiver's storage failed; it will ask again with DB_SYNC_INIT
]);
export type NackReason = Static<typeof NackReason>;

export const DiffNackSchema = Type.Object({
  collection: Type.String({ maxLength: 128 }),
  stream: Type.String({ maxLength: 512 }),
  baseVersion: Type.String({ maxLength: 200 }),
  reason: NackReason,
  message: Type.String({ maxLength: 2000 }),
  ids: Type.Optional(Type.Array(Id)),
});
export type DiffNack = Static<typeof DiffNackSchema>;

export const ConflictResolveSchema = Type.Object({
  collection: Name,
  /** The two versions that met: the receiver's and the one it was sent. */
  conflicts: Type.Array(Type.Object({ id: Id, local: ChangeSchema, remote: ChangeSchema })),
  /** The resolved versions (they dominate both inputs); the origin applies them like any push. */
  clientResolution: Type.Array(ChangeSchema),
});
export type ConflictResolve = Static<typeof ConflictResolveSchema>;

/** What a device leaves in another's relay mailbox: the same changes as a push, without a stream. */
export const RelayDiffSchema = Type.Object({
  v: Type.Literal(1),
  collection: Name,
  changes: Type.Array(ChangeSchema, { maxItems: 100_000 }),
});
export type RelayDiff = Static<typeof RelayDiffSchema>;

export const checkers = {
  [SYNC_OPS.syncInit]: TypeCompiler.Compile(SyncInitSchema),
  [SYNC_OPS.diffPush]: TypeCompiler.Compile(DiffPushSchema),
  [SYNC_OPS.diffAck]: TypeCompiler.Compile(DiffAckSchema),
  [SYNC_OPS.diffNack]: TypeCompiler.Compile(DiffNackSchema),
  [SYNC_OPS.conflictResolve]: TypeCompiler.Compile(ConflictResolveSchema),
} as const;
export const relayDiffChecker = TypeCompiler.Compile(RelayDiffSchema);

export interface Checkpoint {
  epoch: string;
  seq: number;
}

export const formatVersion = (checkpoint: Checkpoint | undefined): string =>
  checkpoint ? `${checkpoint.epoch}@${checkpoint.seq}` : '';

export function parseVersion(version: string): Checkpoint | undefined {
  const at = version.indexOf('@');
  if (at < 0) return undefined;
  return { epoch: version.slice(0, at), seq: Number(version.slice(at + 1)) };
}

/** Rough encoded size of a change in bytes, for batch budgets. */
export const approximateSize = (change: Change): number =>
  200 +
  (change.doc ? JSON.stringify(change.doc).length : 0) +
  (change.fs ? JSON.stringify(change.fs).length : 0);
