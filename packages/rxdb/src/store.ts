import { toBase64, utf8 } from '@ferry/core';
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
import type { Change } from './wire.js';

/**
 * Ferry's metadata, kept beside the user's data in one extra collection, `ferrymeta`, of the same
 * RxDatabase (so it lives in the same storage and survives the same restarts; the user's schemas
 * are untouched). It holds one row per replicated document (its current version: stamp, version
 * vector, field stamps; the `_rev` it was last seen at; its place in this device's change log) and
 * small keyed values: this store's epoch, per-peer checkpoints, scan checkpoints, the devices seen
 * so far, and the conflict record.
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
  /** The peer this exact version came from ('' if made here): never echoed back to it. */
  via: string;
  /** Made by a write on this device (relayed to offline devices by this device). */
  local: boolean;
}

// One collection for everything (RxDB's open-core build allows 16 open collections per process).
// Rows: `d<collection>\u0000<id>` document metadata (c = collection), `s<key>` state values (c = '').
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

/** The row key for a logical key: itself, or for a long one its prefix and SHA-256. */
export function storageKey(key: string): string {
  if (key.length <= KEY_MAX) return key;
  return `${key.slice(0, KEY_PREFIX_KEPT)}#${toBase64(sha256(utf8(key)), { url: true })}`;
}

/** Databases written by an earlier Ferry (version 0 rows) are migrated by RxDB when they open. */
const migrationStrategies = {
  1: (row: MetaRow): MetaRow => ({ ...row, k: storageKey(row.k) }),
};

type MetaRow = { k: string; c: string; v: { value: unknown } };

const docKey = (collection: string, id: string) => storageKey(`d${collection}\u0000${id}`);
const stateKey = (key: string) => storageKey(`s${key}`);

export class MetaStore {
  /** `_rev` of every row this store wrote or loaded: writes go straight to the storage instance
   * (no RxDocument objects, which cost more than the sync itself), with the previous revision
   * RxDB needs to detect a concurrent writer. */
  private readonly revs = new Map<string, string>();
  private readonly storage: RxStorageInstance<MetaRow, unknown, unknown, unknown>;

  private constructor(private readonly rows: RxCollection<MetaRow>) {
    this.storage = rows.storageInstance as unknown as typeof this.storage;
  }

  static async open(db: RxDatabase): Promise<MetaStore> {
    addRxPlugin(RxDBMigrationSchemaPlugin);
    if (!db.collections[META_COLLECTION])
      await db.addCollections({ [META_COLLECTION]: { schema: metaSchema, migrationStrategies } });
    return new MetaStore(db.collections[META_COLLECTION] as RxCollection<MetaRow>);
  }

  async loadMetas(collection: string): Promise<DocMeta[]> {
    const rows = await this.rows.find({ selector: { c: collection } }).exec();
    return rows.map((row) => {
      this.revs.set(row.k, row.revision);
      return row.toJSON().v.value as DocMeta;
    });
  }

  /** Document metadata and state values in one storage write (one write per batch, not three). */
  async saveMetas(collection: string, metas: DocMeta[], state: Array<[string, unknown]> = []): Promise<void> {
    const rows = metas.map((m): MetaRow => ({ k: docKey(collection, m.id), c: collection, v: { value: m } }));
    for (const [key, value] of state) rows.push({ k: stateKey(key), c: '', v: { value } });
    if (rows.length > 0) await this.write(rows);
  }

  async get<T>(key: string): Promise<T | undefined> {
    const [row] = await this.storage.findDocumentsById([stateKey(key)], false);
    if (!row) return undefined;
    this.revs.set(row.k, row._rev);
    return row.v.value as T;
  }

  async set(key: string, value: unknown): Promise<void> {
    await this.write([{ k: stateKey(key), c: '', v: { value } }]);
  }

  /** Values whose key starts with `prefix` (at most KEY_PREFIX_KEPT characters long). */
  async list<T>(prefix: string): Promise<T[]> {
    const pattern = `^${escapeRegex(`s${prefix}`)}`;
    const rows = await this.rows.find({ selector: { k: { $regex: pattern } } }).exec();
    return rows.map((row) => row.toJSON().v.value as T);
  }

  private async write(rows: MetaRow[]): Promise<void> {
    const token = this.rows.database.token;
    let pending: Array<BulkWriteRow<MetaRow>> = rows.map((row) => {
      const rev = this.revs.get(row.k);
      // Only `_rev` of `previous` matters for the conflict check; the rest is a placeholder.
      const previous = rev === undefined ? undefined : placeholder(row, rev);
      return previous
        ? { previous, document: stored(row, token, previous) }
        : { document: stored(row, token) };
    });
    for (let attempt = 0; pending.length > 0; attempt++) {
      const result = await this.storage.bulkWrite(pending, 'ferry-meta');
      const retry: Array<BulkWriteRow<MetaRow>> = [];
      const failed = new Set<string>();
      for (const error of result.error) {
        failed.add(error.documentId);
        if (error.status !== 409 || !error.documentInDb || attempt > 3) throw error;
        const previous = error.documentInDb;
        retry.push({ previous, document: stored(error.writeRow.document, token, previous) });
      }
      for (const row of pending)
        if (!failed.has(row.document.k)) this.revs.set(row.document.k, row.document._rev);
      pending = retry;
    }
  }
}

function stored(row: MetaRow, token: string, previous?: RxDocumentData<MetaRow>): RxDocumentData<MetaRow> {
  return {
    k: row.k,
    c: row.c,
    v: row.v,
    _deleted: false,
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
  return {
    id: meta.id,
    st: meta.st,
    vv: meta.vv,
    del: meta.del,
    ...(doc && (!meta.del || meta.fs) ? { doc } : {}),
    ...(meta.fs ? { fs: meta.fs } : {}),
  };
}
