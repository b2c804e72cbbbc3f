import {
  getPrimaryFieldOfPrimaryKey,
  normalizeMangoQuery,
  prepareQuery,
  RX_META_LWT_MINIMUM,
  type RxStorageInstance,
} from 'rxdb';
import type { StoredDoc } from './collection-sync.js';

export type StorageInstance = RxStorageInstance<Record<string, unknown>, unknown, unknown, unknown>;

/** A position in a storage's change feed, in RxDB's checkpoint shape (scan checkpoints saved earlier read alike). */
export interface ChangeCheckpoint {
  id: string;
  lwt: number;
}

/**
 * What RxDB's getChangedDocumentsSince returns (the next `limit` documents after `checkpoint` in
 * `_meta.lwt`, primary key order, deleted ones included), as two index ranges where the storage has
 * no change feed of its own (memory and Dexie have none). RxDB's helper asks
 * for `lwt = since and id > sinceId, or lwt > since` in one query that no index satisfies, so every
 * document of the page goes through the query matcher: that took half of a first scan of 10,000
 * documents. Each half of the `or` is a range of the `[_meta.lwt, primary key]` index RxDB gives
 * every collection, and the first range sorts before the second.
 */
export async function changedDocumentsSince(
  storage: StorageInstance,
  limit: number,
  checkpoint: ChangeCheckpoint | undefined,
): Promise<{ documents: StoredDoc[]; checkpoint: ChangeCheckpoint }> {
  // A storage with its own change feed (e.g. RxDB's remote storage: one round trip, not two) serves it.
  if (storage.getChangedDocumentsSince) {
    return (await storage.getChangedDocumentsSince(limit, checkpoint)) as {
      documents: StoredDoc[];
      checkpoint: ChangeCheckpoint;
    };
  }
  const primaryPath = getPrimaryFieldOfPrimaryKey(storage.schema.primaryKey) as string;
  const lwt = checkpoint?.lwt ?? RX_META_LWT_MINIMUM;
  const page = async (selector: Record<string, unknown>, count: number) => {
    const query = normalizeMangoQuery(storage.schema, {
      selector,
      sort: [{ '_meta.lwt': 'asc' }, { [primaryPath]: 'asc' }],
      skip: 0,
      limit: count,
    } as never);
    return (await storage.query(prepareQuery(storage.schema, query))).documents as StoredDoc[];
  };
  const sameTime = await page(
    { '_meta.lwt': { $eq: lwt }, [primaryPath]: { $gt: checkpoint?.id ?? '' } },
    limit,
  );
  const documents =
    sameTime.length < limit
      ? sameTime.concat(await page({ '_meta.lwt': { $gt: lwt } }, limit - sameTime.length))
      : sameTime;
  const last = documents.at(-1);
  return {
    documents,
    checkpoint: last
      ? { id: last[primaryPath] as string, lwt: last._meta.lwt }
      : (checkpoint ?? { id: '', lwt: 0 }),
  };
}
