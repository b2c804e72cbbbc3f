import { FerryError, toBase64, utf8 } from '@ferry/core';
import { sha256 } from '@noble/hashes/sha2.js';
import {
  addRxPlugin,
  type BulkWriteRow,
  createRevision,
  now,
  type RxCollection,
  type RxDatabase,
  type RxDocumentData,
  type RxStorageInstance,
} from 'rxdb';
import { RxDBMigrationSchemaPlugin } from 'rxdb/plugins/migration-schema';
import { type Change, newId } from './wire.js';

/**
 * Ferry's metadata, kept beside the user's data in one extra collection, `ferrymeta`, of the same
 * RxDatabase (so it lives in the same storage and survives the same restarts; the user's schemas
 * are untouched). It holds every replicated document's current version (stamp, version vector,
 * field stamps; the `_rev` it was last seen at; its place in this device's change log), many
 * documents to a row, and small keyed values: this store's epoch, per-peer checkpoints, scan
 * checkpoints, the devices seen so far, and the conflict record.
 */
export const META_COLLECTION = 'ferrymeta';

/** What this device knows about one document's current version. */
export interface DocMeta {
  id: string;
  /** RxDB `_rev` of the stored document that holds this version ('' if never stored, e.g. a remote delete). */
  rev: string;
  st: string;
  vv: Record<string, number>;
  del: boolean;
  fs?: Record<string, [string, string]>;
  /** Position in this device's change log for the collection. */
  seq: number;
  /**
   * The store this exact version came from (see CollectionSync.storeId; '' if made here): never
   * echoed back to it. (An earlier Ferry kept the client id: such a version goes back to it once.)
   */
  via: string;
  /** Made by a write on this device (relayed to offline devices by this device). */
  local: boolean;
  /** The document's attachments as `id:digest` lines in id order (absent: it has none). */
  attDigests?: string;
  /**
   * The log position since which the document has had these attachments (absent: none). A push
   * leaves their data out for a receiver known to hold it (see `replication.ts`).
   */
  attSince?: number;
}

// One collection for everything (RxDB's open-core build allows 16 open collections per process).
// Rows: `g<collection>\u0000<n>` a segment: the metadata of many documents, appended in log order
// (c = collection); `s<key>` state values (c = ''). A row per document cost about as much to write
// as the document itself, plus its index entries in memory; a segment is one row for a whole batch.
// `d<collection>\u0000<id>` rows (one per document, the earlier layout) are moved into a segment
// when the collection is loaded.
//
// The key's maxLength matters: RxDB's storages pad the primary key to it in every index entry, so
// version 0's 1024 cost about 4 KiB of memory per document with the memory storage. Version 1 keeps
// keys to KEY_MAX characters; a longer one (a long document id) keeps its first characters, so
// prefix listing still works, and ends with its SHA-256 (the full id stays in the row's value).
const KEY_MAX = 128;
const KEY_PREFIX_KEPT = 64;
const metaSchema = {
  version: 1,
  primaryKey: 'k',
  type: 'object',
  properties: {
    k: { type: 'string', maxLength: KEY_MAX },
    c: { type: 'string', maxLength: 128 },
    v: { type: 'object' },
  },
  required: ['k', 'c', 'v'],
  // No index on `c`: it is read once per start (a scan), and every index costs memory and writes.
} as const;

/**
 * A collection's storage instance below RxDB's wrapper, where Ferry reads and writes: its rows carry
 * their own `_rev` and `_meta`, and the wrapper would replace an inserted document's `_meta`
 * (dropping Ferry's stamp) and put every call through the database's lock (a queue of promises
 * that costs as much as writing a single row).
 */
export function storageBelowWrapper<T>(
  collection: RxCollection<T>,
): RxStorageInstance<T, unknown, unknown, unknown> {
  type Instance = RxStorageInstance<T, unknown, unknown, unknown>;
  const wrapped = collection.storageInstance as unknown as Instance & { originalStorageInstance?: Instance };
  return wrapped.originalStorageInstance ?? wrapped;
}

/** The row key for a logical key: itself, or for a long one its prefix and SHA-256. */
export function storageKey(key: string): string {
  if (key.length <= KEY_MAX) return key;
  return `${key.slice(0, KEY_PREFIX_KEPT)}#${toBase64(sha256(utf8(key)), { url: true })}`;
}

/** Databases written by an earlier Ferry (version 0 rows) are migrated by RxDB when they open. */
const migrationStrategies = {
  1: (row: MetaRow): MetaRow => ({ ...row, k: storageKey(row.k) }),
};

/** `n`: a segment's number (its key may be hashed when the collection name is long). */
type MetaRow = { k: string; c: string; v: { value: unknown; n?: number } };

const stateKey = (key: string) => storageKey(`s${key}`);
const stateRow = (key: string, value: unknown): MetaRow => ({ k: stateKey(key), c: '', v: { value } });
const segmentKey = (collection: string, n: number) => storageKey(`g${collection}\u0000${n}`);

/**
 * Entries the tail segment takes from small commits (a commit this large gets a segment of its
 * own). Small, since every live write rewrites the whole tail row: with Dexie in Chromium a
 * one-document commit took ~2.4 ms on a tail of up to 32 entries and ~6 ms on one of 224-256.
 */
const TAIL_MAX = 32;

/**
 * Where each document's current metadata lives. A segment is rewritten without its superseded
 * entries once fewer than half are current, so they cost at most as much again as the current
 * ones; an emptied segment's number is reused.
 */
interface Segments {
  entries: Map<number, DocMeta[]>;
  /** Documents whose current metadata is in each segment. */
  live: Map<number, number>;
  /** The segment of each document's current metadata. */
  of: Map<string, number>;
  /** The segment small commits are appended to. */
  tail: number | undefined;
  free: number[];
  next: number;
}

const emptySegments = (): Segments => ({
  entries: new Map(),
  live: new Map(),
  of: new Map(),
  tail: undefined,
  free: [],
  next: 0,
});

const stores = new WeakMap<RxDatabase, Promise<MetaStore>>();

/** The key of the account's devices that a database's replications relay to (see MetaStore.devices). */
export const DEVICES_KEY = 'devices';

export class MetaStore {
  /** `_rev` of every row this store wrote or loaded: writes go straight to the storage instance
   * (no RxDocument objects, which cost more than the sync itself), with the previous revision
   * RxDB needs to detect a concurrent writer. */
  private readonly revs = new Map<string, string>();
  private readonly storage: RxStorageInstance<MetaRow, unknown, unknown, unknown>;
  private readonly segments = new Map<string, Segments>();
  private epochValue: Promise<string> | undefined;
  private devicesValue: Promise<Set<string>> | undefined;

  private constructor(private readonly rows: RxCollection<MetaRow>) {
    this.storage = storageBelowWrapper(rows);
  }

  /** The database's store: one per database, shared by its replications (their keys name their collections). */
  static open(db: RxDatabase): Promise<MetaStore> {
    let opening = stores.get(db);
    if (!opening) {
      opening = MetaStore.create(db);
      stores.set(db, opening);
      opening.catch(() => stores.delete(db));
    }
    return opening;
  }

  private static async create(db: RxDatabase): Promise<MetaStore> {
    addRxPlugin(RxDBMigrationSchemaPlugin);
    if (!db.collections[META_COLLECTION])
      await db.addCollections({ [META_COLLECTION]: { schema: metaSchema, migrationStrategies } });
    return new MetaStore(db.collections[META_COLLECTION] as RxCollection<MetaRow>);
  }

  /**
   * The epoch of this database's change logs, made on first use: a wiped database gets a new one,
   * so peers' checkpoints in the old logs are known for stale.
   */
  epoch(): Promise<string> {
    this.epochValue ??= (async () => {
      const saved = await this.get<string>('epoch');
      if (saved) return saved;
      const made = newId();
      await this.set('epoch', made);
      return made;
    })().catch((error: unknown) => {
      this.epochValue = undefined; // the next call tries again
      throw error;
    });
    return this.epochValue;
  }

  /** A new epoch for this database's change logs (see startOver in replication.ts). */
  async renewEpoch(): Promise<string> {
    const made = newId();
    await this.set('epoch', made);
    this.epochValue = Promise.resolve(made);
    return made;
  }

  /**
   * The account's devices this database's replications leave relay diffs for (saved under DEVICES_KEY):
   * one set, shared by them, so that what one learns or forgets holds for all (see saveDevices).
   */
  devices(): Promise<Set<string>> {
    this.devicesValue ??= this.getStrings(DEVICES_KEY).then(
      (saved) => new Set(saved),
      (error: unknown) => {
        this.devicesValue = undefined; // the next call tries again
        throw error;
      },
    );
    return this.devicesValue;
  }

  async saveDevices(): Promise<void> {
    if (this.devicesValue) await this.set(DEVICES_KEY, [...(await this.devicesValue)]);
  }

  /** Every document's current metadata in one collection (the highest log position wins). */
  async loadMetas(collection: string): Promise<DocMeta[]> {
    const rows = await this.rows.find({ selector: { c: collection } }).exec();
    const segments = emptySegments();
    this.segments.set(collection, segments);
    const current = new Map<string, DocMeta>();
    const legacy: string[] = [];
    const consider = (meta: DocMeta, segment: number) => {
      const known = current.get(meta.id);
      if (known && known.seq >= meta.seq) return;
      current.set(meta.id, meta);
      segments.of.set(meta.id, segment);
    };
    for (const row of rows) {
      this.revs.set(row.k, row.revision);
      const { value, n } = row.toJSON().v as { value: DocMeta | DocMeta[]; n?: number };
      if (n === undefined) {
        legacy.push(row.k);
        consider(value as DocMeta, -1);
        continue;
      }
      segments.entries.set(n, value as DocMeta[]);
      segments.next = Math.max(segments.next, n + 1);
      for (const meta of value as DocMeta[]) consider(meta, n);
    }
    for (const n of segments.of.values()) segments.live.set(n, (segments.live.get(n) ?? 0) + 1);
    for (const [n, entries] of segments.entries) if (entries.length === 0) segments.free.push(n);
    if (legacy.length > 0) {
      // The current ones go into a segment before their rows are deleted (a crash in between
      // leaves both, which load alike).
      const moved = [...current.values()].filter((meta) => segments.of.get(meta.id) === -1);
      for (const meta of moved) segments.of.delete(meta.id);
      moved.sort((a, b) => a.seq - b.seq);
      await this.saveMetas(collection, moved);
      await this.write(
        legacy.map((k) => ({ k, c: collection, v: { value: null } })),
        true,
      );
    }
    return [...current.values()];
  }

  /**
   * New current versions of documents (one per document, in log order) and state values, in one
   * storage write: usually a single segment row plus the state rows.
   */
  async saveMetas(collection: string, metas: DocMeta[], state: Array<[string, unknown]> = []): Promise<void> {
    const rows: MetaRow[] = [];
    if (metas.length > 0) {
      const segments = this.segments.get(collection);
      if (!segments) throw new FerryError('INTERNAL', `metadata of ${collection} saved before it was loaded`);
      for (const [n, entries] of place(segments, metas))
        rows.push({ k: segmentKey(collection, n), c: collection, v: { value: entries, n } });
    }
    for (const [key, value] of state) rows.push(stateRow(key, value));
    if (rows.length > 0) await this.write(rows);
  }

  /** Empties every segment of one collection (loaded first): its documents have no metadata left. */
  async dropMetas(collection: string): Promise<void> {
    const segments = this.segments.get(collection);
    if (!segments) throw new FerryError('INTERNAL', `metadata of ${collection} dropped before it was loaded`);
    // Emptied, not deleted, as `place` empties a segment: its number is reused (a deleted row's
    // key written again would need its tombstone's revision).
    const emptied = [...segments.entries.keys()].filter((n) => segments.entries.get(n)!.length > 0);
    for (const n of emptied) segments.entries.set(n, []);
    segments.free = [...segments.entries.keys()];
    segments.live.clear();
    segments.of.clear();
    segments.tail = undefined;
    const rows = emptied.map((n) => ({ k: segmentKey(collection, n), c: collection, v: { value: [], n } }));
    if (rows.length > 0) await this.write(rows);
  }

  /**
   * Drops every entry of `ids` from one collection's segments (loaded first), current or superseded:
   * those documents have no metadata left, and no older entry of theirs comes back at the next load.
   * The superseded entries go in a first write: a crash between the two leaves the current ones,
   * which load as they were. `state` rows are saved with the first.
   */
  async forgetMetas(
    collection: string,
    ids: ReadonlySet<string>,
    state: Array<[string, unknown]> = [],
  ): Promise<void> {
    const segments = this.segments.get(collection);
    if (!segments)
      throw new FerryError('INTERNAL', `metadata of ${collection} forgotten before it was loaded`);
    const rewrite = async (drop: (meta: DocMeta, n: number) => boolean, rows: MetaRow[] = []) => {
      for (const [n, entries] of segments.entries) {
        const kept = entries.filter((meta) => !drop(meta, n));
        if (kept.length === entries.length) continue;
        segments.entries.set(n, kept);
        if (kept.length === 0 && n !== segments.tail) segments.free.push(n);
        rows.push({ k: segmentKey(collection, n), c: collection, v: { value: kept, n } });
      }
      if (rows.length > 0) await this.write(rows);
    };
    const current = (meta: DocMeta, n: number) => segments.of.get(meta.id) === n;
    await rewrite(
      (meta, n) => ids.has(meta.id) && !current(meta, n),
      state.map(([key, value]) => stateRow(key, value)),
    );
    await rewrite((meta) => ids.has(meta.id));
    for (const id of ids) {
      const n = segments.of.get(id);
      if (n === undefined) continue;
      segments.of.delete(id);
      segments.live.set(n, segments.live.get(n)! - 1);
    }
  }

  async get<T>(key: string): Promise<T | undefined> {
    const [row] = await this.storage.findDocumentsById([stateKey(key)], false);
    if (!row) return undefined;
    this.revs.set(row.k, row._rev);
    return row.v.value as T;
  }

  /** A saved list of strings (a missing or malformed one reads as empty). */
  async getStrings(key: string): Promise<string[]> {
    const saved = await this.get<unknown>(key);
    return Array.isArray(saved) ? saved.filter((item): item is string => typeof item === 'string') : [];
  }

  async set(key: string, value: unknown): Promise<void> {
    await this.setAll([[key, value]]);
  }

  /** Several values in one storage write; returns the handle of each row, for `remove`. */
  async setAll(entries: Array<[string, unknown]>): Promise<string[]> {
    const rows = entries.map(([key, value]) => stateRow(key, value));
    if (rows.length > 0) await this.write(rows);
    return rows.map((row) => row.k);
  }

  /** Values whose key starts with `prefix` (at most KEY_PREFIX_KEPT characters long). */
  async list<T>(prefix: string): Promise<T[]> {
    return (await this.entries<T>(prefix)).map((entry) => entry.value);
  }

  /** As `list`, each value with the handle of its row, for `remove`. */
  async entries<T>(prefix: string): Promise<Array<{ handle: string; value: T }>> {
    const pattern = `^${escapeRegex(`s${prefix}`)}`;
    const rows = await this.rows.find({ selector: { k: { $regex: pattern } } }).exec();
    return rows.map((row) => ({ handle: row.k, value: row.toJSON().v.value as T }));
  }

  /** Deletes the values of those of `keys` that are set, in one storage write. */
  async removeKeys(keys: string[]): Promise<void> {
    const rows = await this.storage.findDocumentsById(keys.map(stateKey), false);
    await this.remove(rows.map((row) => row.k));
  }

  /** Deletes rows by their handles (from `setAll` or `entries`), in one storage write. */
  async remove(handles: string[]): Promise<void> {
    if (handles.length > 0)
      await this.write(
        handles.map((k) => ({ k, c: '', v: { value: null } })),
        true,
      );
  }

  private async write(rows: MetaRow[], deleted = false): Promise<void> {
    const token = this.rows.database.token;
    let pending: Array<BulkWriteRow<MetaRow>> = rows.map((row) => {
      const rev = this.revs.get(row.k);
      // Only `_rev` of `previous` matters for the conflict check; the rest is a placeholder.
      const previous = rev === undefined ? undefined : placeholder(row, rev);
      return { ...(previous ? { previous } : {}), document: stored(row, token, previous, deleted) };
    });
    for (let attempt = 0; pending.length > 0; attempt++) {
      const result = await this.storage.bulkWrite(pending, 'ferry-meta');
      const retry: Array<BulkWriteRow<MetaRow>> = [];
      const failed = new Set<string>();
      for (const error of result.error) {
        failed.add(error.documentId);
        if (error.status !== 409 || !error.documentInDb || attempt > 3) throw error;
        const previous = error.documentInDb;
        retry.push({ previous, document: stored(error.writeRow.document, token, previous, deleted) });
      }
      for (const row of pending)
        if (!failed.has(row.document.k)) this.revs.set(row.document.k, row.document._rev);
      pending = retry;
    }
  }
}

/**
 * Segment rows to write so that they hold `metas` as the current versions of their documents:
 * appended to the tail segment (or a new one), and each segment they supersede entries of
 * rewritten with only its current entries once fewer than half are current.
 */
function place(segments: Segments, metas: DocMeta[]): Map<number, DocMeta[]> {
  const changed = new Map<number, DocMeta[]>();
  const tail = segments.tail === undefined ? undefined : segments.entries.get(segments.tail)!;
  let target: number;
  if (tail && tail.length + metas.length <= TAIL_MAX) {
    target = segments.tail!;
    changed.set(target, [...tail, ...metas]);
  } else {
    target = segments.free.pop() ?? segments.next++;
    changed.set(target, metas.slice());
    segments.tail = metas.length < TAIL_MAX ? target : undefined;
  }
  const touched = new Set<number>([target]);
  for (const meta of metas) {
    const before = segments.of.get(meta.id);
    if (before !== undefined) {
      segments.live.set(before, segments.live.get(before)! - 1);
      touched.add(before);
    }
    segments.of.set(meta.id, target);
    segments.live.set(target, (segments.live.get(target) ?? 0) + 1);
  }
  for (const n of touched) {
    const entries = changed.get(n) ?? segments.entries.get(n)!;
    if ((segments.live.get(n) ?? 0) * 2 >= entries.length) {
      changed.set(n, entries);
      continue;
    }
    // The last entry of each document whose current version is in this segment.
    const kept: DocMeta[] = [];
    const seen = new Set<string>();
    for (let i = entries.length - 1; i >= 0; i--) {
      const meta = entries[i]!;
      if (segments.of.get(meta.id) !== n || seen.has(meta.id)) continue;
      seen.add(meta.id);
      kept.push(meta);
    }
    changed.set(n, kept.reverse());
    if (kept.length === 0 && n !== segments.tail) segments.free.push(n);
  }
  for (const [n, entries] of changed) segments.entries.set(n, entries);
  return changed;
}

function stored(
  row: MetaRow,
  token: string,
  previous: RxDocumentData<MetaRow> | undefined,
  deleted: boolean,
): RxDocumentData<MetaRow> {
  return {
    k: row.k,
    c: row.c,
    v: row.v,
    _deleted: deleted,
    _attachments: {},
    _meta: { lwt: now() },
    _rev: createRevision(token, previous),
  };
}

const placeholder = (row: MetaRow, rev: string): RxDocumentData<MetaRow> => ({
  ...row,
  _deleted: false,
  _attachments: {},
  _meta: { lwt: 0 },
  _rev: rev,
});

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The version a meta row describes, with the document content read from storage. A delete carries
 * the tombstone's content only under the per-field policy (where a concurrent edit can revive it).
 */
export function versionOf(meta: DocMeta, doc: Record<string, unknown> | undefined): Change {
  // Optional fields set after, not spread in (V8 builds a literal with a conditional spread slowly).
  const change: Change = { id: meta.id, st: meta.st, vv: meta.vv, del: meta.del };
  if (doc && (!meta.del || meta.fs)) change.doc = doc;
  if (meta.fs) change.fs = meta.fs;
  return change;
}
