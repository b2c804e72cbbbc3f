import {
  CollectionNameSchema,
  ConflictPolicyKindSchema,
  ConflictPolicyVersionSchema,
  compileCheck,
  DB_OPS,
  type DocumentChange,
  DocumentChangeSchema,
  newMessageId,
  type PeerMessage,
  randomBytes,
  SyncNackReasonSchema,
  SyncStoreSchema,
  toBase64,
} from '@ferry/core';
import { type Static, Type } from '@sinclair/typebox';

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

// The message schemas are core's protocol registry entries (one definition, also behind
// docs/schemas and docs/PROTOCOL.md); this module adds the relay payload and compiled checkers.
export const ChangeSchema = DocumentChangeSchema;
export type Change = DocumentChange;
export const SyncInitSchema = DB_OPS.DB_SYNC_INIT.data;
export type SyncInit = Static<typeof SyncInitSchema>;
export const DiffPushSchema = DB_OPS.DB_DIFF_PUSH.data;
export type DiffPush = Static<typeof DiffPushSchema>;
export const DiffAckSchema = DB_OPS.DB_DIFF_ACK.data;
export type DiffAck = Static<typeof DiffAckSchema>;
export const NackReason = SyncNackReasonSchema;
export type NackReason = Static<typeof NackReason>;
export const DiffNackSchema = DB_OPS.DB_DIFF_NACK.data;
export type DiffNack = Static<typeof DiffNackSchema>;
export const ConflictResolveSchema = DB_OPS.DB_CONFLICT_RESOLVE.data;
export type ConflictResolve = Static<typeof ConflictResolveSchema>;

const Name = CollectionNameSchema;

/** What a device leaves in another's relay mailbox: the same changes as a push, without a stream. */
export const RelayDiffSchema = Type.Object({
  v: Type.Literal(1),
  collection: Name,
  changes: Type.Array(ChangeSchema, { maxItems: 100_000 }),
  /** The sender's conflict policy (absent from diffs of earlier Ferry versions). */
  policy: Type.Optional(ConflictPolicyKindSchema),
  /** The version the sender's app gives its conflict rule (`conflictVersion`), if any. */
  policyVersion: Type.Optional(ConflictPolicyVersionSchema),
  /** The sender's store of the collection (see DB_SYNC_INIT's `store`; absent from diffs of earlier Ferry versions). */
  store: Type.Optional(SyncStoreSchema),
});
export type PolicyKind = Static<typeof ConflictPolicyKindSchema>;
export type RelayDiff = Static<typeof RelayDiffSchema>;

export const checkers = {
  [SYNC_OPS.syncInit]: compileCheck(SyncInitSchema),
  [SYNC_OPS.diffPush]: compileCheck(DiffPushSchema),
  [SYNC_OPS.diffAck]: compileCheck(DiffAckSchema),
  [SYNC_OPS.diffNack]: compileCheck(DiffNackSchema),
  [SYNC_OPS.conflictResolve]: compileCheck(ConflictResolveSchema),
} as const;
export const relayDiffChecker = compileCheck(RelayDiffSchema);

/** A random id (a stream's, a change log's epoch). */
export const newId = (): string => toBase64(randomBytes(12), { url: true });

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
  (change.doc ? jsonSize(change.doc) : 0) +
  (change.fs ? jsonSize(change.fs) : 0) +
  (change.att ? jsonSize(change.att) : 0);

/**
 * About the length of `value` as JSON (within ~15% for documents; more where strings need escapes),
 * without building the text: stringifying every document only to measure it took a tenth of the
 * sending side's sync time. The session refuses what exceeds its limit, so a budget is only a guide.
 */
function jsonSize(value: unknown): number {
  switch (typeof value) {
    case 'string':
      return value.length + 2;
    case 'number':
      return 24;
    case 'boolean':
      return 5;
    case 'object': {
      if (value === null) return 4;
      let size = 2;
      if (Array.isArray(value)) {
        for (const item of value) size += jsonSize(item) + 1;
        return size;
      }
      for (const key in value) size += key.length + 4 + jsonSize((value as Record<string, unknown>)[key]);
      return size;
    }
    default:
      return 0;
  }
}

/** A sync message as this device sends it: a fresh id and the send time. */
export const syncMessage = (op: string, data: unknown): PeerMessage => ({
  op,
  data,
  timestamp: Date.now(),
  id: newMessageId(),
});
