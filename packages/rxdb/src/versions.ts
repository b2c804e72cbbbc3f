import type { RxConflictHandler, WithDeleted } from 'rxdb';
import { type HybridClock, maxStamp } from './hlc.js';
import type { Change, PolicyKind } from './wire.js';

/**
 * Document versions and the conflict rules. A version is the whole document state plus its HLC
 * stamp and version vector. Two versions are ordered when one vector dominates the other; otherwise
 * they are concurrent (a conflict), resolved by the policy:
 * - 'lww': the higher stamp wins (client id breaks ties); deletes win or lose the same way.
 * - { merge: 'fields' }: a last-writer-wins map over top-level fields (each field keeps the stamp of
 *   its last write), plus a last-writer-wins existence register that every write stamps (a delete
 *   and a concurrent edit: the later one decides whether the document exists). A delete leaves the
 *   fields alone and its version carries the tombstone's content, so a document brought back by a
 *   later concurrent edit is whole (every required field present), never a schema-invalid patch.
 * - an RxDB conflict handler: the app decides; the result is a new version that dominates both.
 * Both built-in rules are joins of a semilattice (commutative, associative, idempotent), so every
 * device reaches the same state in any delivery order without exchanging the resolution.
 */
// biome-ignore lint/suspicious/noExplicitAny: any app document type; the handler sees the app's own documents
export type ConflictPolicy<T = any> = 'lww' | { merge: 'fields' } | RxConflictHandler<T>;

/** Whether a value is one of the three kinds of ConflictPolicy (an app's value, checked at the API). */
export function isConflictPolicy(value: unknown): value is ConflictPolicy {
  if (value === 'lww') return true;
  if (typeof value !== 'object' || value === null) return false;
  const policy = value as { merge?: unknown; isEqual?: unknown; resolve?: unknown };
  if ('merge' in policy) return policy.merge === 'fields';
  return typeof policy.isEqual === 'function' && typeof policy.resolve === 'function';
}

/** Which rule a policy is, as conflicts record it and devices compare it (see PolicyKind). */
export const policyKind = (policy: ConflictPolicy): PolicyKind =>
  policy === 'lww' ? 'lww' : 'merge' in policy ? 'fields' : 'handler';

export type VersionVector = Record<string, number>;

/**
 * `vv` with this device's entry advanced for a new version it makes: past the entry's own value,
 * and past `floor`, which rises at each start above anything an earlier run may have sent without
 * saving (see CollectionSync.open).
 */
export const advanceOwn = (vv: VersionVector | undefined, self: string, floor: number): VersionVector => ({
  ...vv,
  [self]: Math.max(vv?.[self] ?? 0, floor) + 1,
});

export type Order = 'equal' | 'local' | 'remote' | 'concurrent';

export function compareVectors(local: VersionVector, remote: VersionVector): Order {
  let localAhead = false;
  let remoteAhead = false;
  for (const key of new Set([...Object.keys(local), ...Object.keys(remote)])) {
    const l = local[key] ?? 0;
    const r = remote[key] ?? 0;
    if (l > r) localAhead = true;
    else if (r > l) remoteAhead = true;
  }
  if (localAhead && remoteAhead) return 'concurrent';
  if (localAhead) return 'local';
  if (remoteAhead) return 'remote';
  return 'equal';
}

export function joinVectors(a: VersionVector, b: VersionVector): VersionVector {
  const out: VersionVector = { ...a };
  for (const [key, value] of Object.entries(b)) if (value > (out[key] ?? 0)) out[key] = value;
  return out;
}

/** Field stamps: [stamp of the field's last write, hash of its value or REMOVED]. */
export type FieldStamps = Record<string, [string, string]>;
export const REMOVED = '-';
/** The delete register's key among the field stamps (RxDB forbids top-level fields starting with `_`). */
const DELETED_KEY = '_deleted';

/** Cheap 53-bit hash of a JSON value (cyrb53): detects which fields a local write changed. */
export function hashValue(value: unknown): string {
  const text = JSON.stringify(value) ?? 'undefined';
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

/**
 * RxDB's field of a document's attachment descriptions, the one underscore field that travels: a
 * document's attachments are part of its content, and one field under the per-field policy.
 */
export const ATTACHMENTS = '_attachments';

/**
 * Field stamps after a local write at `stamp` that turned `previous` into `doc`. `withAttachments`:
 * the collection's schema allows attachments.
 */
export function stampFields(
  previous: FieldStamps | undefined,
  doc: Record<string, unknown>,
  deleted: boolean,
  stamp: string,
  primaryPath: string,
  withAttachments: boolean,
): FieldStamps {
  const out: FieldStamps = { ...previous };
  const keys = new Set([...Object.keys(doc), ...Object.keys(previous ?? {})]);
  keys.delete(primaryPath);
  keys.delete(DELETED_KEY);
  for (const key of keys) {
    const hash = key in doc ? hashValue(doc[key]) : REMOVED;
    if (out[key]?.[1] !== hash) out[key] = [stamp, hash];
  }
  out[DELETED_KEY] = [stamp, deleted ? '1' : '0'];
  // A delete removes the attachments (the storage drops their data), even where the document had
  // none: a concurrent write may have added some. Every write stamps the existence register too, so
  // a delete that wins it also wins this field over every write it beat, and no merged tombstone's
  // content lists attachments. (One that did read back from storage without them, so devices could
  // hold one version with two contents.)
  if (deleted && withAttachments) out[ATTACHMENTS] = [stamp, REMOVED];
  return out;
}

const stripUndefined = (doc: Record<string, unknown>) =>
  JSON.parse(JSON.stringify(doc)) as Record<string, unknown>;

export function sameContent(a: Change, b: Change): boolean {
  if (a.del || b.del) return a.del === b.del;
  return deepEqual(a.doc ?? {}, b.doc ?? {});
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const key of ka) {
    if (!Object.hasOwn(b, key)) return false;
    if (!deepEqual((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key])) return false;
  }
  return true;
}

/** Outcome of two concurrent versions meeting. */
export interface Resolution {
  version: Change;
  /** True when the app's handler produced a new version (it must travel back: DB_CONFLICT_RESOLVE). */
  created: boolean;
}

interface JoinContext {
  primaryPath: string;
  /** The collection's schema allows attachments. */
  withAttachments: boolean;
}

/** The deterministic join of two concurrent versions under 'lww'. */
function joinLww(local: Change, remote: Change): Change {
  const winner = remote.st > local.st ? remote : local;
  return { ...winner, st: maxStamp(local.st, remote.st), vv: joinVectors(local.vv, remote.vv) };
}

/**
 * The deterministic join under the per-field policy (a pointwise maximum of field stamps). A version
 * without field stamps (written under 'lww', before the collection switched to per-field merging)
 * counts as having written each of its fields at its own stamp: without this, two such versions
 * joined into a document holding nothing but its primary key.
 */
function joinFields(local: Change, remote: Change, context: JoinContext): Change {
  const lf = local.fs ?? stampsOfWhole(local, context);
  const rf = remote.fs ?? stampsOfWhole(remote, context);
  const fs: FieldStamps = {};
  const doc: Record<string, unknown> = { [context.primaryPath]: local.id };
  for (const key of new Set([...Object.keys(lf), ...Object.keys(rf)])) {
    const l = lf[key];
    const r = rf[key];
    const fromRemote = r !== undefined && (l === undefined || r[0] > l[0]);
    const entry = fromRemote ? r : l!;
    fs[key] = entry;
    if (key === DELETED_KEY || entry[1] === REMOVED) continue;
    const source = fromRemote ? remote.doc : local.doc;
    if (source && key in source) doc[key] = source[key];
  }
  return {
    id: local.id,
    st: maxStamp(local.st, remote.st),
    vv: joinVectors(local.vv, remote.vv),
    del: fs[DELETED_KEY]?.[1] === '1',
    doc: stripUndefined(doc),
    fs,
  };
}

function stampsOfWhole(version: Change, { primaryPath, withAttachments }: JoinContext): FieldStamps {
  return stampFields(undefined, version.doc ?? {}, version.del, version.st, primaryPath, withAttachments);
}

const withDeleted = (change: Change, primaryPath: string): WithDeleted<Record<string, unknown>> => ({
  ...(change.doc ?? { [primaryPath]: change.id }),
  _deleted: change.del,
});

export async function resolveConcurrent(
  policy: ConflictPolicy,
  local: Change,
  remote: Change,
  context: JoinContext & { clock: HybridClock; vectorId: string; ownFloor: number },
): Promise<Resolution> {
  if (policy === 'lww') return { version: joinLww(local, remote), created: false };
  if (typeof policy === 'object' && 'merge' in policy) {
    return { version: joinFields(local, remote, context), created: false };
  }
  const handler = policy;
  const localState = withDeleted(local, context.primaryPath);
  const remoteState = withDeleted(remote, context.primaryPath);
  // Equal content: the deterministic join, so two devices that resolved alike stop here (also when
  // the handler's isEqual says otherwise: resolving equal copies again would never end).
  if (sameContent(local, remote) || handler.isEqual(localState, remoteState, 'ferry-replication')) {
    return { version: joinLww(local, remote), created: false };
  }
  // The same roles on every device, whichever holds which: the version the last-writer rule would
  // keep is the "master". Two devices that settle one conflict at once then ask the handler the same
  // question and make equal resolutions, which join. With the local copy as master, a handler that
  // keeps the master (as RxDB's default does) made each device keep its own: a new conflict at each
  // meeting, for ever.
  const [master, fork] = remote.st > local.st ? [remoteState, localState] : [localState, remoteState];
  const resolved = await handler.resolve(
    { realMasterState: master, newDocumentState: fork },
    'ferry-replication',
  );
  const { _deleted, ...rest } = resolved as Record<string, unknown>;
  const vv = advanceOwn(joinVectors(local.vv, remote.vv), context.vectorId, context.ownFloor);
  const del = _deleted === true;
  return {
    version: {
      id: local.id,
      st: context.clock.now(),
      vv,
      del,
      ...(del ? {} : { doc: stripUndefined({ ...rest, [context.primaryPath]: local.id }) }),
    },
    created: true,
  };
}
