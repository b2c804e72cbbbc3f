import type { RxCollection, RxDatabase } from 'rxdb';
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
const metaSchema = {
  version: 0,
  primaryKey: 'k',
  type: 'object',
  properties: {
    k: { type: 'string', maxLength: 1024 },
    c: { type: 'string', maxLength: 128 },
    v: { type: 'object' },
  },
  required: ['k', 'c', 'v'],
  indexes: ['c'],
} as const;

type MetaRow = { k: string; c: string; v: { value: unknown } };

const docKey = (collection: string, id: string) => `d${collection}\u0000${id}`;
const stateKey = (key: string) => `s${key}`;

export class MetaStore {
  private constructor(private readonly rows: RxCollection<MetaRow>) {}

  static async open(db: RxDatabase): Promise<MetaStore> {
    if (!db.collections[META_COLLECTION])
      await db.addCollections({ [META_COLLECTION]: { schema: metaSchema } });
    return new MetaStore(db.collections[META_COLLECTION] as RxCollection<MetaRow>);
  }

  async loadMetas(collection: string): Promise<DocMeta[]> {
    const rows = await this.rows.find({ selector: { c: collection } }).exec();
    return rows.map((row) => row.toJSON().v.value as DocMeta);
  }

  async saveMetas(collection: string, metas: DocMeta[]): Promise<void> {
    if (metas.length === 0) return;
    const result = await this.rows.bulkUpsert(
      metas.map((m) => ({ k: docKey(collection, m.id), c: collection, v: { value: stripUndefined(m) } })),
    );
    if (result.error.length > 0) throw result.error[0];
  }

  async get<T>(key: string): Promise<T | undefined> {
    const row = await this.rows.findOne(stateKey(key)).exec();
    return row ? (row.toJSON().v.value as T) : undefined;
  }

  async set(key: string, value: unknown): Promise<void> {
    await this.rows.upsert({ k: stateKey(key), c: '', v: { value } });
  }

  async list<T>(prefix: string): Promise<T[]> {
    const pattern = `^${escapeRegex(stateKey(prefix))}`;
    const rows = await this.rows.find({ selector: { k: { $regex: pattern } } }).exec();
    return rows.map((row) => row.toJSON().v.value as T);
  }
}

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const stripUndefined = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

/** The version a meta row describes, with the document content read from storage. */
export function versionOf(meta: DocMeta, doc: Record<string, unknown> | undefined): Change {
  return {
    id: meta.id,
    st: meta.st,
    vv: meta.vv,
    del: meta.del,
    ...(meta.del || !doc ? {} : { doc }),
    ...(meta.fs ? { fs: meta.fs } : {}),
  };
}
