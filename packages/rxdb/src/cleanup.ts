import { addRxPlugin, type RxPlugin } from 'rxdb';

/** Told after RxDB's cleanup purged deleted documents of a collection (see CollectionSync.forgetPurged). */
export interface PurgeWatcher {
  /** Never rejects (RxDB's cleanup awaits it). */
  afterCleanup(databaseName: string, collectionName: string): Promise<void>;
}

/**
 * RxDB's default `minimumDeletedTime` (one month), for a database whose `cleanupPolicy` sets none
 * (the cleanup plugin's own constant is not imported: its module loads RxDB's replication plugin).
 */
export const DEFAULT_MINIMUM_DELETED_TIME = 1000 * 60 * 60 * 24 * 31;

const watchers = new Set<PurgeWatcher>();

/**
 * A plugin made only of a `postCleanup` hook, which RxDB's cleanup plugin (when the app added it)
 * runs after each collection's cleanup: the deletes it purged are forgotten by Ferry too.
 */
const purgeHook: RxPlugin = {
  name: 'ferry-cleanup',
  rxdb: true,
  hooks: {
    postCleanup: {
      // Awaited by RxDB: a `collection.cleanup()` resolves once Ferry forgot what it purged.
      after: ({ databaseName, collectionName }) =>
        Promise.all([...watchers].map((watcher) => watcher.afterCleanup(databaseName, collectionName))),
    },
  },
};

/** Tell `watcher` of every cleanup from now on; returns the call that stops it. */
export function watchPurges(watcher: PurgeWatcher): () => void {
  addRxPlugin(purgeHook); // once: RxDB adds a plugin object only the first time
  watchers.add(watcher);
  return () => watchers.delete(watcher);
}
