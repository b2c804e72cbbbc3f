export { type ApplyOutcome, CollectionSync, type FerryConflict } from './collection-sync.js';
export { decodeStamp, encodeStamp, HybridClock } from './hlc.js';
export { FerryReplicationState, type ReplicateFerryOptions, replicateFerry } from './replication.js';
export { type DocMeta, META_COLLECTION, MetaStore, storageKey } from './store.js';
export { type ConflictPolicy, compareVectors, joinVectors } from './versions.js';
export * from './wire.js';
