import {
  DEFAULT_MAX_CLOCK_SKEW_MS,
  type DiffRelay,
  FerryError,
  isFerryError,
  type PeerMessage,
  type PeerNetwork,
  type RelayedDiff,
  type RelayHints,
  requirePositive,
} from '@ferry/core';
import {
  addRxPlugin,
  defaultConflictHandler,
  isRxCollection,
  type RxCollection,
  type RxDatabase,
} from 'rxdb';
import { RxDBLeaderElectionPlugin } from 'rxdb/plugins/leader-election';
import { BehaviorSubject, filter, firstValueFrom, Subject, type Subscription } from 'rxjs';
import { DEFAULT_MINIMUM_DELETED_TIME, type PurgeWatcher, watchPurges } from './cleanup.js';
import {
  CollectionSync,
  type FerryConflict,
  removedKey,
  type StoredDoc,
  WRITE_CONTEXT,
} from './collection-sync.js';
import { ConflictRecord } from './conflict-record.js';
import { HybridClock } from './hlc.js';
import { MAX_RETRY_MS, type OutboxHost, RelayOutbox } from './relay-outbox.js';
import { type RoutedReplication, SyncRouter } from './router.js';
import { DEVICES_KEY, type DocMeta, MetaStore } from './store.js';
import { type ConflictPolicy, isConflictPolicy, policyKind } from './versions.js';
import {
  type Change,
  type Checkpoint,
  type ConflictResolve,
  checkers,
  type DiffAck,
  type DiffNack,
  type DiffPush,
  formatVersion,
  type NackReason,
  newId,
  type PolicyKind,
  parseVersion,
  type RelayDiff,
  SYNC_OPS,
  type SyncInit,
  syncMessage,
} from './wire.js';

export interface ReplicateFerryOptions {
  /** The collections to keep in sync, by the name peers know them under (all of one RxDatabase). */
  collections: Record<string, RxCollection>;
  /** The account's devices (WebRTC mesh, or the in-memory hub in tests); shared with other features. */
  network: PeerNetwork;
  /** The diff server's mailbox client: changes for devices that are offline go there. */
  relay?: DiffRelay;
  /**
   * Hints that new diffs wait in this device's mailbox (e.g. `mesh.signaling`, when the signaling
   * server runs beside the diff server): the mailbox is pulled at once, not only at start and when a
   * peer connects.
   */
  relayHints?: RelayHints;
  /** This device's id. Default: the network's. */
  clientId?: string;
  /**
   * How concurrent edits are settled, in every collection of this call. Default: each collection's
   * own RxDB `conflictHandler` where it set one (`addCollections`), else 'lww'. Every device of an
   * account must use the same rule per collection.
   */
  conflict?: ConflictPolicy;
  /**
   * The version of this app's conflict rule (1-64 characters): bump it when a release changes how
   * its conflict handler decides. Devices whose rule or version differ refuse to sync a collection
   * with each other (and say so) until they agree: two handlers would settle one conflict two ways,
   * and never converge. Default none.
   */
  conflictVersion?: string;
  /**
   * Conflicts kept in the persisted record per collection (`conflicts()`): the latest this many,
   * older ones dropped as new ones come (each keeps three copies of its document). 0 keeps none;
   * `conflict$` emits every conflict whatever this is. Default 1,000.
   */
  keepConflicts?: number;
  /** Documents per DB_DIFF_PUSH. Default 500. */
  batchSize?: number;
  /**
   * Approximate bytes of documents per DB_DIFF_PUSH. Default 8 MiB: the session layer chunks a
   * message (MeshNetwork carries up to 64 MiB), and a smaller push keeps other lanes responsive.
   */
  batchBytes?: number;
  /** Approximate bytes per relay diff; keep it under the diff server's maxDiffBytes (default 1 MiB). Default 768 KiB. */
  relayBytes?: number;
  /**
   * Unacknowledged pushes per peer and collection before the sender waits. Default 3: enough to keep
   * the receiver applying without a pause. A fourth synced no faster (240 alternating bench runs) but
   * doubled the UDP packets a busy receiver's socket dropped, and after such drops @roamhq/wrtc's SCTP
   * sometimes crawled at one packet per delayed ack for 5-10 s (5 of ~290 runs; none of 160 at 3).
   */
  window?: number;
  /** Devices to leave relay diffs for even before they were ever seen (ids from the diff server). */
  knownDevices?: string[];
  /** First retry delay of a failed relay push, mailbox read or diff apply (doubles up to 30 s). Default 250 ms. */
  retryDelayMs?: number;
  /** Wall clock for the hybrid logical clock (tests simulate clock skew). Default Date.now. */
  now?: () => number;
  /**
   * On a `multiInstance` database (several browser tabs of one app), replicate only in the tab RxDB
   * elects leader, as RxDB's own replications do: the others start when it goes. Default true.
   * Two instances replicating at once would both write the sync metadata.
   */
  waitForLeadership?: boolean;
  /**
   * Start exchanging changes at once. Default true; with false, as in RxDB, the replication waits
   * for `start()` (the app's writes are still recorded meanwhile).
   */
  autoStart?: boolean;
}

interface OutStream {
  stream: string;
  /** Log position this stream has read up to. */
  cursor: number;
  /**
   * Log position the last push reached (the next push's base). Behind `cursor` after a range whose
   * versions all came from the peer, which is sent nothing: the next push covers that range too, so
   * that its base follows the peer's checkpoint.
   */
  pushedThrough: number;
  /** Log position the peer acknowledged (applied durably). */
  acked: number;
  /** The peer's checkpoint when it asked for this stream: it holds what came up to there. */
  start: number;
  /** The peer's store of the collection (see CollectionSync.storeId): what came from it is not sent back. */
  store: string;
  /** Documents whose attachment data the peer said it lacks: sent with all of it. */
  withData: Set<string>;
  /** Documents sent with their attachment data in this stream, with their `attSince` then. */
  dataSent: Map<string, number>;
  inflight: number;
  needsReply: boolean;
  pumping: boolean;
  again: boolean;
  /** A push of this stream reached the head: the first did, with `holds` (see holdsFor). */
  reachedHead: boolean;
  /** Set while an empty push waits to move the peer's checkpoint past a skipped range (see pushSkippedLater). */
  skipTimer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * A checkpoint in a peer's log. `inherited`: a third device's (see `inherit`), not yet confirmed by
 * a push of this peer's.
 */
type HeldCheckpoint = Checkpoint & { inherited?: true };

interface InStream {
  stream: string;
  checkpoint: HeldCheckpoint | undefined;
  /**
   * Documents whose attachment data this device lacks (its request says so: see `withData`). Should
   * one of them come without it again (the sender lost that data), it is refused, not asked for.
   */
  withData: Set<string>;
  /**
   * Pushes in a row that did not follow the checkpoint or failed to apply, in the streams before
   * this one (0 once a push applies). A correct peer makes no gap; one that goes on making them, or
   * a storage that goes on failing, is asked again after a growing delay, not at once in a loop.
   */
  misses: number;
  /** A push of this stream missed (see `misses`): the rest of it is dropped. */
  dropped: boolean;
  caughtUp: boolean;
  chain: Promise<void>;
  /** Its DB_SYNC_INIT went out (a peer that may have missed it gets it again: see `repeatInit`). */
  initSent: boolean;
  /** Where this device's schema last refused versions of the peer (see Refusal). */
  refusal: Refusal | undefined;
  /** This stream asks from before `refusal`: the local schema changed since, so they may pass now. */
  retrying: boolean;
  /**
   * The peer answered that it does not replicate this collection, or settles its conflicts by another
   * rule: nothing to hear from it or tell it (awaitInSync does not wait for it) until it asks for the
   * collection itself (under this device's rule). Own writes go to its mailbox meanwhile.
   */
  unserved: boolean;
  /**
   * The peer has not answered this request at all within ANSWER_WAIT_MS (it runs no replication of
   * it: an AI-only device, an app that starts its replication later): not waited for, until it does.
   */
  silent: boolean;
  /** A push or a refusal of this stream arrived. */
  answered: boolean;
  /** Versions of this stream were refused. */
  refusedAny: boolean;
}

/**
 * Versions a peer pushed that this device's schema refused: the checkpoint moves past them, so the
 * log position before them is kept, with the collection's schema version then. Once the app's
 * schema changes (an update that migrates it), a stream asks from there again and they may pass;
 * with the same schema they would be refused again, so it does not.
 */
interface Refusal {
  from: Checkpoint;
  schemaVersion: number;
}
interface CollectionPolicy {
  policy: ConflictPolicy;
  /** The rule as this device's requests and relay diffs name it. */
  fields: { policy: PolicyKind; policyVersion?: string };
}

/**
 * The conflict handler the app gave a collection (`addCollections({ todos: { conflictHandler } })`),
 * as RxDB's own replications use it; none for RxDB's default, which keeps the server's copy: with no
 * server, two devices would each keep their own and never converge.
 */
const ownConflictHandler = (collection: RxCollection): ConflictPolicy | undefined =>
  collection.conflictHandler === defaultConflictHandler ? undefined : collection.conflictHandler;

/**
 * How long a request (DB_SYNC_INIT) may go without any answer before awaitInSync() stops waiting for
 * that peer in that collection (see InStream.silent). A replication answers at once, even while it
 * starts ('paused'); before this, a connected device that ran none held awaitInSync() up for good.
 */
const ANSWER_WAIT_MS = 3000;
/**
 * How long a skipped range waits for a push to cover it (see pushSkippedLater): in a live mesh, where
 * a peer's every write lands in this device's log, moving its checkpoint at once would cost a push
 * back per write.
 */
const SKIPPED_PUSH_MS = 1000;
/** How long a first meeting waits for another peer's stream to catch up (see openInbound). */
const INHERIT_WAIT_MS = 30_000;
/** This device's key in version vectors (see CollectionSyncHost.vectorId): 48 bits of the epoch tell stores apart. */
const vectorIdOf = (clientId: string, epoch: string) => `${clientId}~${epoch.slice(0, 8)}`;
/**
 * The store a device names for itself (see CollectionSync.storeId). An earlier Ferry names none, and
 * one naming another device's is not believed: its stores are known by its client id.
 */
const storeOf = (device: string, named: string | undefined) =>
  named?.startsWith(`${device}~`) ? named : device;
const notRunKey = (collection: string) => `not-run/${collection}`;
/** Collection objects whose removal is marked (see markRemovals), each once. */
const removalsMarked = new WeakSet<RxCollection>();

/**
 * When the app removes a replicated collection (RxDB's `collection.remove()`, or another instance's
 * of the same database), mark it in the store, so that the sync of the collection the app adds
 * again under that name starts over for certain (see `removedKey`). The hook stays after the
 * replication ends: a collection removed after its replication was cancelled is marked too. When
 * the whole database is removed its store goes with it: nothing to mark. A write that fails leaves
 * the next start to find the removal as it finds one Ferry did not see.
 */
function markRemovals(store: MetaStore, collections: Record<string, RxCollection>): void {
  for (const [name, collection] of Object.entries(collections)) {
    if (removalsMarked.has(collection)) continue;
    removalsMarked.add(collection);
    collection.onRemove.push(() =>
      // A removed database is closed first (and a write to a closed remote storage never settles).
      collection.database.closed ? undefined : store.set(removedKey(name), true).catch(() => undefined),
    );
  }
}

/** At most this many checkpoints in a push's `holds` (the protocol's limit). */
const MAX_HOLDS = 64;

/** Set while a collection's sync starts over (see startOver): a start that finds it does it again. */
const startOverKey = (collection: string) => `start-over/${collection}`;

/**
 * Whether a peer holds the data of a version's attachments, so that a push may leave it out: it
 * held them at the checkpoint it asked from, or this stream sent them, and it did not say it lacks
 * them. A wrong guess costs a round trip, not data: the peer applies nothing of that push and asks
 * again for the documents with their data (the 'attachments' nack). The relay always carries it.
 */
function peerHoldsData(out: OutStream, meta: DocMeta): boolean {
  const since = meta.attSince;
  return (
    since !== undefined &&
    !out.withData.has(meta.id) &&
    (since <= out.start || out.dataSent.get(meta.id) === since)
  );
}

/**
 * Starts syncing RxDB collections with the account's other devices over one shared PeerNetwork,
 * with the diff relay for devices that are offline. Shaped like RxDB's replication plugins: the
 * returned state exposes observables and await helpers.
 */
export async function replicateFerry(options: ReplicateFerryOptions): Promise<FerryReplicationState> {
  const { batchSize, window, batchBytes, relayBytes, retryDelayMs } = options;
  requirePositive('replicateFerry', { batchSize, window, batchBytes, relayBytes }, { integer: true });
  requirePositive('replicateFerry', { retryDelayMs });
  requirePositive(
    'replicateFerry',
    { keepConflicts: options.keepConflicts },
    { integer: true, zeroAllowed: true },
  );
  const { conflictVersion, conflict } = options;
  if (conflict !== undefined && !isConflictPolicy(conflict)) {
    throw new FerryError(
      'BAD_ARGUMENT',
      "replicateFerry: conflict must be 'lww', { merge: 'fields' } or an RxDB conflict handler ({ isEqual, resolve })",
    );
  }
  const { network } = options;
  if (typeof network?.on !== 'function' || typeof network.send !== 'function') {
    throw new FerryError(
      'BAD_ARGUMENT',
      'replicateFerry: network must be a PeerNetwork (createNodeMesh, MeshNetwork)',
    );
  }
  if (
    conflictVersion !== undefined &&
    (typeof conflictVersion !== 'string' || conflictVersion.length === 0 || conflictVersion.length > 64)
  ) {
    throw new FerryError(
      'BAD_ARGUMENT',
      'replicateFerry: conflictVersion must be a string of 1-64 characters',
    );
  }
  const clientId = options.clientId ?? options.network.clientId;
  if (options.relay?.clientId !== undefined && options.relay.clientId !== clientId) {
    // Peers would leave this device's diffs in a mailbox it never reads.
    throw new FerryError(
      'BAD_ARGUMENT',
      `replicateFerry: relay is the mailbox of ${options.relay.clientId}, this device is ${clientId}`,
    );
  }
  const names = Object.keys(options.collections ?? {});
  if (names.length === 0)
    throw new FerryError('SCHEMA_MISMATCH', 'replicateFerry needs at least one collection');
  const notCollections = names.filter((name) => !isRxCollection(options.collections[name]));
  if (notCollections.length > 0) {
    throw new FerryError(
      'BAD_ARGUMENT',
      `replicateFerry: ${notCollections.join(', ')} is not an RxCollection`,
    );
  }
  const db = options.collections[names[0]!]!.database as RxDatabase;
  for (const name of names) {
    if (options.collections[name]!.database !== db) {
      throw new FerryError('SCHEMA_MISMATCH', `collection ${name} belongs to another database`);
    }
  }
  await Promise.all(names.map((name) => cancelling.get(options.collections[name]!)));
  const seen = new Set<RxCollection>();
  const taken = names.filter((name) => {
    const collection = options.collections[name]!;
    const again = replicated.has(collection) || seen.has(collection);
    seen.add(collection);
    return again;
  });
  if (taken.length > 0) {
    throw new FerryError(
      'BAD_ARGUMENT',
      `replicateFerry: ${taken.join(', ')} already replicated, under another name or by another ` +
        'replicateFerry (cancel() that one first)',
    );
  }
  const router = SyncRouter.of(options.network);
  const releaseNames = router.claim(names);
  for (const collection of seen) replicated.add(collection);
  // As RxDB's replications do, closing the database or a replicated collection cancels: the
  // database's hooks run before any collection closes, so cancel() still saves what it owes.
  let state: FerryReplicationState | undefined;
  const cancelOnClose = () => state?.cancel();
  const closeHooks = [db.onClose, ...names.map((name) => options.collections[name]!.onClose)];
  for (const hooks of closeHooks) hooks.push(cancelOnClose);
  const release = () => {
    releaseNames();
    for (const collection of seen) replicated.delete(collection);
    for (const hooks of closeHooks) {
      const index = hooks.indexOf(cancelOnClose);
      if (index >= 0) hooks.splice(index, 1);
    }
  };
  try {
    const store = await MetaStore.open(db);
    markRemovals(store, options.collections);
    state = new FerryReplicationState(options, store, router, release);
    if (db.multiInstance && options.waitForLeadership !== false) {
      addRxPlugin(RxDBLeaderElectionPlugin);
      // Resolves only in the leader: the state is returned at once, inactive until then.
      state.startWhenLeading(db.waitForLeadership());
    } else {
      await state.begin();
    }
    return state;
  } catch (error) {
    release();
    throw error;
  }
}

/**
 * The collections in a running replication: two replications of one collection would both record
 * its writes as new versions.
 */
const replicated = new WeakSet<RxCollection>();
/**
 * Collections whose replication is being cancelled, with the cancel: a new replicateFerry of one
 * waits for it (`cancel()` then `replicateFerry()` without awaiting, as an app's effect clean-up and
 * re-run do), so the two never write its metadata at once.
 */
const cancelling = new WeakMap<RxCollection, Promise<void>>();

export class FerryReplicationState implements RoutedReplication, PurgeWatcher {
  readonly clientId: string;
  /** True while replication runs (false after pause() or cancel()). */
  readonly active$ = new BehaviorSubject<boolean>(false);
  /** True once cancelled (by cancel(), or by closing the database or one of its collections). */
  readonly canceled$ = new BehaviorSubject<boolean>(false);
  readonly error$ = new Subject<FerryError>();
  /** Devices with an open session that this replication talks to. */
  readonly peers$ = new BehaviorSubject<string[]>([]);
  /** Documents sent to peers and to the relay, and received from both. */
  readonly sent$ = new BehaviorSubject<number>(0);
  readonly received$ = new BehaviorSubject<number>(0);
  /** Own documents waiting to be stored on the diff server (failed pushes being retried, or left over from the last run). */
  readonly pendingRelay$ = new BehaviorSubject<number>(0);
  readonly conflict$ = new Subject<FerryConflict>();

  readonly clock: HybridClock;
  /**
   * Each collection's conflict rule, and the fields its requests and relay diffs name it by: devices
   * settling one collection's conflicts by different rules never converge.
   */
  private readonly policies = new Map<string, CollectionPolicy>();
  private readonly network: PeerNetwork;
  private readonly relay: DiffRelay | undefined;
  private readonly batchSize: number;
  private readonly batchBytes: number;
  private readonly window: number;
  private readonly retryDelayMs: number;
  private readonly conflictRecord: ConflictRecord;
  /** By metadata key, the last save of what this device learned of its peers (see learned). */
  private readonly learning = new Map<string, Promise<void>>();
  /** Pushes and conflict resolutions being applied: they write, so cancel() waits for them. */
  private readonly applications = new Set<Promise<void>>();
  private readonly syncs = new Map<string, CollectionSync>();
  private readonly outbound = new Map<string, Map<string, OutStream>>();
  private readonly inbound = new Map<string, Map<string, InStream>>();
  /** Shared by the replications of this database (see MetaStore.devices); set at start. */
  private knownDevices = new Set<string>();
  /** Own writes on their way to the mailboxes of devices that may not get them directly. */
  private readonly outbox: RelayOutbox;
  /**
   * Per collection, the devices that answered `unknown-collection` for it (saved), each with the
   * relay mark of when it did: its writes are not left in their mailboxes, where no replication would
   * take them, until they ask for it or relay it. Own writes above that mark are owed to it then.
   */
  private readonly notRunBy = new Map<string, Map<string, number>>();
  private readonly changed$ = new Subject<void>();
  private readonly subscriptions: Subscription[] = [];
  private epoch = '';
  private paused = true;
  private cancelled = false;
  /** cancel()'s work, once it was called. */
  private cancelling: Promise<void> | undefined;
  private started = false;
  /** Paused before it started (`autoStart: false`, or pause() in a tab waiting for leadership). */
  private startPaused = false;
  /** Answer waits (see awaitAnswer) and pushes of skipped ranges (see pushSkippedLater). */
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private relayPulling: Promise<number> | undefined;
  private initialRelayPullDone = false;
  /** A mailbox read that failed (diff server unreachable: the device started offline) is retried. */
  private pullRetry: ReturnType<typeof setTimeout> | undefined;
  private pullRetryDelay: number;
  /** The greatest log position this run pushed to each peer, by `peer\u0000collection`. */
  private readonly pushedTo = new Map<string, number>();
  private startingOver = false;
  /** Stops RxDB's cleanup telling this replication what it purged (see afterCleanup). */
  private unwatchPurges: (() => void) | undefined;

  constructor(
    private readonly options: ReplicateFerryOptions,
    readonly store: MetaStore,
    private readonly router: SyncRouter,
    /** Frees its collections' names on the network and the collections for another replication. */
    private readonly release: () => void,
  ) {
    this.network = options.network;
    this.relay = options.relay;
    this.clientId = options.clientId ?? options.network.clientId;
    this.clock = new HybridClock(this.clientId, options.now, {
      // The limit the session handshake puts on a peer's clock: a stamp can come from further off,
      // through the relay or a third device.
      maxAheadMs: DEFAULT_MAX_CLOCK_SKEW_MS,
      onAhead: (device, aheadMs) =>
        this.report(
          new FerryError(
            'STALE',
            `${device}'s clock runs ${Math.round(aheadMs / 1000)} s ahead of this device's (limit ${DEFAULT_MAX_CLOCK_SKEW_MS / 1000} s): ` +
              "of writes made apart, its win last-writer-wins conflicts, and the devices' clocks move forward to its stamps; set its clock right",
          ),
        ),
    });
    for (const [name, collection] of Object.entries(options.collections)) {
      const policy = options.conflict ?? ownConflictHandler(collection) ?? 'lww';
      this.policies.set(name, {
        policy,
        fields: {
          policy: policyKind(policy),
          ...(options.conflictVersion === undefined ? {} : { policyVersion: options.conflictVersion }),
        },
      });
    }
    this.batchSize = options.batchSize ?? 500;
    this.batchBytes = options.batchBytes ?? 8 * 1024 * 1024;
    this.window = options.window ?? 3;
    this.retryDelayMs = options.retryDelayMs ?? 250;
    this.conflictRecord = new ConflictRecord(store, options.keepConflicts ?? 1000);
    this.pullRetryDelay = this.retryDelayMs;
    this.outbox = new RelayOutbox(this.outboxHost(), {
      relay: this.relay,
      batchSize: this.batchSize,
      relayBytes: options.relayBytes ?? 768 * 1024,
      retryDelayMs: this.retryDelayMs,
    });
    this.startPaused = options.autoStart === false;
  }

  /** What the relay outbox sees of this replication. */
  private outboxHost(): OutboxHost {
    return {
      store: this.store,
      sync: (collection) => this.syncs.get(collection)!,
      syncs: () => this.syncs.values(),
      policyFields: (collection) => this.policies.get(collection)!.fields,
      knownDevices: () => this.knownDevices,
      ackedBy: (peer, collection) => this.outbound.get(peer)?.get(collection)?.acked,
      notRunBy: (collection) => this.notRunBy.get(collection)!,
      connected: () => this.connected(),
      halted: () => this.paused,
      cancelled: () => this.cancelled,
      forgetDevices: (ids) => this.forgetDevices(ids),
      report: (error) => this.report(error),
      sent: (count) => this.sent$.next(this.sent$.value + count),
      pending: (count) => {
        if (count !== this.pendingRelay$.value) this.pendingRelay$.next(count);
      },
      changed: () => this.changed$.next(),
    };
  }

  /** @internal Load the metadata, listen, scan for the app's writes, then run (unless paused). */
  async begin(): Promise<void> {
    this.epoch = await this.store.epoch();
    const names = Object.keys(this.options.collections);
    const startOver = await Promise.all(names.map((name) => this.store.get(startOverKey(name))));
    if (startOver.some(Boolean)) this.epoch = await this.store.renewEpoch();
    this.knownDevices = await this.store.devices();
    for (const id of this.options.knownDevices ?? []) if (id !== this.clientId) this.knownDevices.add(id);
    const host = {
      clock: this.clock,
      vectorId: vectorIdOf(this.clientId, this.epoch),
      store: this.store,
      onVersions: (sync: CollectionSync, metas: DocMeta[]) => this.onVersions(sync, metas),
    };
    for (const [i, [name, collection]] of Object.entries(this.options.collections).entries()) {
      const { policy } = this.policies.get(name)!;
      const sync = await CollectionSync.open(name, collection, { ...host, policy }, Boolean(startOver[i]));
      if (startOver[i]) await this.store.set(startOverKey(name), null);
      this.syncs.set(name, sync);
      this.notRunBy.set(name, await this.loadNotRunBy(name));
      await this.outbox.open(sync);
    }
    // Cancelled while starting (a tab that just became leader): attach nothing.
    if (this.cancelled) return;
    for (const [name, collection] of Object.entries(this.options.collections)) {
      const sync = this.syncs.get(name)!;
      // The storage's change feed tells us the app wrote; the scan itself reads from a checkpoint
      // (so a write before this subscription is not missed). Whole bulks, as RxDB's own internals
      // read them (`$` emits every event through RxJS alone).
      this.subscriptions.push(
        collection.eventBulks$.subscribe((bulk) => {
          // RxDB local documents are not replicated; Ferry's own writes are recorded as it makes them.
          if (bulk.isLocal || bulk.context === WRITE_CONTEXT) return;
          for (const event of bulk.events) {
            const doc = event.documentData as StoredDoc | undefined;
            if (sync.isForeignWrite(event.documentId, doc)) this.guard(doc ? sync.record(doc) : sync.scan());
          }
        }),
      );
    }
    this.router.attach(this, [...this.syncs.keys()]);
    this.unwatchPurges = watchPurges(this);
    this.network.on('peer-connected', this.onPeerConnected);
    this.network.on('peer-disconnected', this.onPeerDisconnected);
    const { relayHints } = this.options;
    if (relayHints && this.relay?.mailboxWatch) {
      relayHints.on('mailbox', this.onMailboxHint);
      const hints = relayHints;
      this.guard(this.relay.mailboxWatch().then((watch) => hints.watchMailbox(watch)));
    }
    await Promise.all([...this.syncs.values()].map((sync) => sync.scan()));
    if (this.cancelled) return;
    this.started = true;
    if (!this.startPaused) this.resume();
  }

  /** @internal Start once this database instance leads (see `waitForLeadership`). */
  startWhenLeading(leading: Promise<unknown>): void {
    this.guard(leading.then(() => (this.cancelled ? undefined : this.begin())));
  }

  /**
   * Resolves once every collection caught up with every connected peer (at least one that answers:
   * not only devices that run no replication) and the relay mailbox was read.
   */
  async awaitInitialReplication(): Promise<void> {
    await this.until(() => {
      const peers = this.connected();
      return (
        !this.startingOver &&
        this.initialRelayPullDone &&
        peers.some((p) => !this.silentPeer(p)) &&
        peers.every((p) => this.caughtUpWith(p))
      );
    });
  }

  /** The peer answered none of this replication's requests (see InStream.silent). */
  private silentPeer(peer: string): boolean {
    const streams = this.inbound.get(peer);
    return [...this.syncs.keys()].every((name) => streams?.get(name)?.silent === true);
  }

  /**
   * Resolves once this device has nothing left to tell or hear: local writes recorded, every
   * connected peer caught up both ways and every push acknowledged, no relay push pending, and the
   * mailbox read (at start, and any read under way).
   */
  async awaitInSync(): Promise<void> {
    // RxDB emits a write's change event before the write resolves, so the app's writes so far are known.
    await Promise.all([...this.syncs.values()].map((sync) => sync.settle()));
    await this.until(
      () =>
        // A sync starting over has not yet found the writes made meanwhile (see startOver).
        !this.startingOver &&
        this.initialRelayPullDone &&
        this.relayPulling === undefined &&
        this.outbox.settled &&
        this.connected().every((peer) => this.caughtUpWith(peer) && this.deliveredTo(peer)),
    );
    await Promise.all([...this.syncs.values()].map((sync) => sync.idle()));
  }

  /** Stops listening to the network, the mailbox hints and the collections; waits for work in progress. */
  private async detach(): Promise<void> {
    this.router.detach(this);
    this.unwatchPurges?.();
    this.unwatchPurges = undefined;
    this.network.off('peer-connected', this.onPeerConnected);
    this.network.off('peer-disconnected', this.onPeerDisconnected);
    this.options.relayHints?.off('mailbox', this.onMailboxHint);
    for (const subscription of this.subscriptions.splice(0)) subscription.unsubscribe();
    // Forgotten with its timer: a start-over's next start would take it for a read still to come.
    clearTimeout(this.pullRetry);
    this.pullRetry = undefined;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    // Paused already, so no new ones start; a push's conflict record is written after its versions.
    await Promise.all(this.applications);
    await Promise.all([...this.syncs.values()].map((sync) => sync.idle()));
    await this.outbox.stop();
  }

  /**
   * A peer holds a position of this device's log that its store never issued: the store is older
   * than what it wrote since (a database restored from a backup, or a copy of one), and its log
   * positions and vector entries went back with it, so peers would take its new writes for the lost
   * ones and ignore them. The replication starts over as a new store would: a new epoch (a new log
   * and vector key), its collections' versions forgotten and found again by a scan, and every peer
   * asked for everything; the conflict rule settles each document against what the peers hold (the
   * copy written last wins under 'lww'). Marked first, so a process that dies meanwhile does it at
   * its next start.
   */
  private async startOver(peer: string, collection: string, seq: number): Promise<void> {
    if (this.startingOver || this.cancelled) return;
    this.startingOver = true;
    // From here on the app's pause() and resume() say only how the sync goes on once it started
    // again (see begin): a resume() meanwhile would run it on the collections being reopened.
    this.started = false;
    this.startPaused = false; // it was running: a paused replication answers no request
    let halted = false;
    try {
      this.report(
        new FerryError(
          'STALE',
          `${peer} holds ${collection} of this device's log through position ${seq}, which this store never issued (restored from a backup?): its sync starts over`,
        ),
      );
      for (const name of this.syncs.keys()) await this.store.set(startOverKey(name), true);
      this.halt();
      halted = true;
      await this.detach();
      if (this.cancelled) return;
      this.syncs.clear();
      this.pushedTo.clear();
      await this.begin();
    } catch (error) {
      // The start-over could not be marked: the sync goes on as it was (a later request retries).
      if (!halted) this.started = true;
      throw error;
    } finally {
      this.startingOver = false;
      this.changed$.next(); // what awaitInSync() waits for
    }
  }

  /**
   * Paused by pause(), or not started yet (a tab waiting for leadership); false once cancelled.
   * During a start-over, which halts the sync for a moment, what the app asked for.
   */
  isPaused(): boolean {
    return (this.startingOver ? this.startPaused : this.paused) && !this.cancelled;
  }

  /** Cancelled for good (RxDB's name for it). */
  isStopped(): boolean {
    return this.cancelled;
  }

  isStoppedOrPaused(): boolean {
    return this.isPaused() || this.cancelled;
  }

  /**
   * Look again for what may have been missed: this device's mailbox, and app writes no change event
   * reported (another process writing the same storage). RxDB's name for "pull now".
   */
  reSync(): void {
    if (this.cancelled) return;
    for (const sync of this.syncs.values()) this.guard(sync.scan());
    if (!this.paused) this.guard(this.pullRelay());
  }

  /** Stop exchanging changes (local writes are still recorded); resume() picks up from checkpoints. */
  pause(): void {
    if (!this.started) this.startPaused = true;
    this.halt();
  }

  /** What pause() does, without taking it for the app's wish (a start-over halts the sync too). */
  private halt(): void {
    if (this.paused) return;
    this.paused = true;
    this.outbox.expectNothing();
    // Peers stop waiting on this device (their streams with it end here) and relay to it meanwhile.
    for (const streams of [this.outbound, this.inbound]) {
      for (const [peer, byCollection] of streams) {
        for (const [collection, { stream }] of byCollection) {
          this.nack(peer, collection, stream, '', 'paused', 'replication is paused');
        }
      }
    }
    // Pushed when the replication resumes (or by the next run): the streams end here.
    for (const peer of this.outbound.keys()) this.relayUnacknowledged(peer);
    this.outbound.clear();
    this.inbound.clear();
    this.active$.next(false);
    this.changed$.next();
  }

  /**
   * RxDB's name for resume(): runs a replication created with `autoStart: false`, or paused. Does
   * nothing once cancelled.
   */
  async start(): Promise<void> {
    this.resume();
  }

  resume(): void {
    if (!this.started) this.startPaused = false;
    if (!this.paused || this.cancelled || !this.started) return;
    this.paused = false;
    this.active$.next(true);
    this.peers$.next(this.connected());
    for (const peer of this.connected()) {
      this.guard(this.knowDevice(peer)); // connected before this replication listened
      this.outbox.expectStreams(peer);
      this.openPeer(peer, true);
    }
    this.guard(this.pullRelay());
    this.outbox.flushSoon();
  }

  /**
   * Stop for good; resolves once in-flight writes are done (every call, the first or a later one).
   * The network stays open (it is shared).
   */
  cancel(): Promise<void> {
    if (!this.cancelling) {
      const collections = Object.values(this.options.collections);
      this.cancelling = this.shutDown().finally(() => {
        for (const collection of collections) {
          if (cancelling.get(collection) === this.cancelling) cancelling.delete(collection);
        }
      });
      for (const collection of collections) cancelling.set(collection, this.cancelling);
    }
    return this.cancelling;
  }

  private async shutDown(): Promise<void> {
    const marks = this.outbox.close(); // before pause() forgets the peers' acknowledgements
    this.pause();
    this.cancelled = true;
    await this.detach();
    // Also whom it told `unknown-collection`; unsaved, the marks only lag: a restart pushes some diffs again.
    await this.outbox.finish(marks);
    await this.relayPulling?.catch(() => undefined);
    this.canceled$.next(true);
    for (const subject of [
      this.active$,
      this.canceled$,
      this.error$,
      this.peers$,
      this.sent$,
      this.received$,
      this.pendingRelay$,
    ]) {
      subject.complete();
    }
    this.conflict$.complete();
    this.changed$.complete();
    this.release();
  }

  /**
   * cancel(), and the next replication of these collections starts their sync over, as RxDB's
   * remove() does: this device's versions are found again by a scan, under a new log (epoch), and
   * every peer is asked for everything. Conflicts recorded so far are kept.
   */
  async remove(): Promise<void> {
    // Marked before cancelling, as a start-over is: a process that dies meanwhile still starts over.
    for (const name of Object.keys(this.options.collections)) await this.store.set(startOverKey(name), true);
    await this.cancel();
  }

  /** The persisted conflict record of this replication's collections, oldest first (see keepConflicts). */
  conflicts(): Promise<FerryConflict[]> {
    return this.conflictRecord.list(this.syncs.keys());
  }

  /** Empties the conflict record of this replication's collections (an app that showed them, say). */
  clearConflicts(): Promise<void> {
    return this.conflictRecord.clear(this.syncs.keys());
  }

  /** The collection engine (tests and diagnostics). */
  collection(name: string): CollectionSync | undefined {
    return this.syncs.get(name);
  }

  /**
   * Read this device's relay mailbox: apply every diff, then acknowledge it (so the server deletes
   * it). Runs at start, when a peer connects and whenever the app calls it (e.g. on a push hint).
   */
  pullRelay(): Promise<number> {
    if (!this.relay || this.cancelled) {
      this.initialRelayPullDone = true;
      return Promise.resolve(0);
    }
    const pulling = this.router
      .pull(this.relay, this)
      .then(
        (applied) => {
          clearTimeout(this.pullRetry);
          this.pullRetry = undefined;
          this.pullRetryDelay = this.retryDelayMs;
          return applied;
        },
        (error: unknown) => {
          this.schedulePullRetry();
          throw error;
        },
      )
      .finally(() => {
        if (this.relayPulling === pulling) this.relayPulling = undefined;
        this.initialRelayPullDone = true;
        this.changed$.next();
      });
    this.relayPulling = pulling;
    return pulling;
  }

  /** Read the mailbox again after a delay that doubles while reads fail (paused: resume() reads it). */
  private schedulePullRetry(): void {
    if (this.pullRetry || this.paused || this.cancelled) return;
    this.pullRetry = setTimeout(() => {
      this.pullRetry = undefined;
      if (!this.paused) this.guard(this.pullRelay());
    }, this.pullRetryDelay);
    this.pullRetryDelay = Math.min(this.pullRetryDelay * 2, MAX_RETRY_MS);
  }

  /**
   * @internal See RoutedReplication. A diff from a device with another conflict policy waits in the
   * mailbox until the two run the same one.
   */
  takesRelayDiff(diff: RelayedDiff, parsed: RelayDiff): boolean {
    if (!this.started || this.paused || this.cancelled) return false;
    if (this.samePolicy(parsed.collection, parsed.policy, parsed.policyVersion)) return true;
    const problem = this.policyMismatch(
      diff.senderClientId,
      parsed.policy!,
      parsed.policyVersion,
      parsed.collection,
    );
    this.report(new FerryError('REJECTED', `relay diff ${diff.diffId}: ${problem}`));
    return false;
  }

  /**
   * Whether a peer's conflict rule for a collection is this device's (one from an earlier Ferry, which
   * names none, is taken as it).
   */
  private samePolicy(collection: string, kind: PolicyKind | undefined, version: string | undefined): boolean {
    const ours = this.policies.get(collection)!.fields;
    return !kind || (kind === ours.policy && version === ours.policyVersion);
  }

  private policyMismatch(
    peer: string,
    theirs: PolicyKind,
    theirVersion: string | undefined,
    collection: string,
  ): string {
    const label = (kind: PolicyKind, version: string | undefined) =>
      version === undefined ? `'${kind}'` : `'${kind}' version ${JSON.stringify(version)}`;
    const ours = this.policies.get(collection)!.fields;
    return (
      `${peer} settles conflicts in ${collection} by ${label(theirs, theirVersion)}, ${this.clientId} by ` +
      `${label(ours.policy, ours.policyVersion)}: every device of an account must use the same ` +
      'policy, so the two do not sync it until they do'
    );
  }

  /**
   * @internal RxDB's cleanup ran on a collection (see watchPurges): forget the deletes it purged,
   * those stamped more than its `minimumDeletedTime` ago (see CollectionSync.forgetPurged). The
   * mailbox is read first: a diff waiting there may hold an older version of a purged document,
   * which read after its delete was forgotten would bring the document back. While it cannot be
   * read (paused, the diff server unreachable) nothing is forgotten; a later cleanup does it.
   */
  async afterCleanup(databaseName: string, collectionName: string): Promise<void> {
    const sync = [...this.syncs.values()].find(
      ({ collection }) => collection.database.name === databaseName && collection.name === collectionName,
    );
    if (!sync || this.cancelled) return;
    if (this.relay) {
      if (this.paused) return;
      try {
        await this.pullRelay();
      } catch (error) {
        this.report(error); // read again after a delay (see pullRelay)
        return;
      }
      if (this.cancelled) return;
    }
    const now = (this.options.now ?? Date.now)();
    const minimum =
      sync.collection.database.cleanupPolicy?.minimumDeletedTime ?? DEFAULT_MINIMUM_DELETED_TIME;
    try {
      await sync.forgetPurged(now - minimum, this.outbox.deliveredThrough(sync.name));
    } catch (error) {
      this.report(error);
    }
  }

  /** @internal Apply a relay diff of one of this replication's collections (see SyncRouter.pull). */
  async applyRelayDiff(diff: RelayedDiff, parsed: RelayDiff): Promise<number> {
    // Both saved before the diff is acknowledged (a meeting may have made either first, still being
    // saved): a device met only through the relay may never send another, and a sender says that it
    // runs the collection only once.
    await (this.knowDevice(diff.senderClientId) ?? this.learning.get(DEVICES_KEY));
    await (this.runsCollection(diff.senderClientId, parsed.collection, true, true) ??
      this.learning.get(notRunKey(parsed.collection)));
    const sender = diff.senderClientId;
    const source = { device: sender, store: storeOf(sender, parsed.store) };
    const outcome = await this.syncs.get(parsed.collection)!.apply(parsed.changes, source);
    await this.recordConflicts(outcome.conflicts);
    for (const { id } of outcome.rejected) {
      this.report(
        new FerryError('SCHEMA_MISMATCH', `relayed document ${parsed.collection}/${id} was refused`),
      );
    }
    this.received$.next(this.received$.value + parsed.changes.length);
    return parsed.changes.length;
  }

  // ---- peers ----

  private readonly onPeerConnected = (peer: string): void => {
    if (peer === this.clientId) return;
    this.guard(this.knowDevice(peer));
    if (this.paused) return;
    this.peers$.next(this.connected());
    if (!this.inbound.has(peer)) {
      this.outbox.expectStreams(peer);
      this.openPeer(peer); // unless resume() opened it already
    }
    this.guard(this.pullRelay());
  };

  /**
   * A device of the account: this device's writes go to its mailbox whenever it has no open stream.
   * The save when it is new.
   */
  private knowDevice(peer: string): Promise<void> | undefined {
    if (this.knownDevices.has(peer)) return undefined;
    this.knownDevices.add(peer);
    return this.learned(DEVICES_KEY, this.store.saveDevices(), () => this.knownDevices.delete(peer));
  }

  /**
   * `save`, kept under its metadata `key` until it lands: a relay diff that tells the same is
   * acknowledged only once it did (see applyRelayDiff). Unsaved, `forget` undoes what was learned,
   * so that hearing it again (the diff served again) saves it; later diffs wait for it no more.
   */
  private learned(key: string, save: Promise<void>, forget: () => void): Promise<void> {
    const landed: Promise<void> = save.catch((error: unknown) => {
      forget();
      if (this.learning.get(key) === landed) this.learning.delete(key);
      throw error;
    });
    this.learning.set(key, landed);
    return landed;
  }

  /** Devices the diff server does not know: nothing is relayed to them until they connect again. */
  private forgetDevices(ids: string[]): void {
    for (const id of ids) this.knownDevices.delete(id);
    this.guard(this.store.saveDevices());
    this.report(
      new FerryError(
        'REJECTED',
        `${ids.join(', ')} ${ids.length > 1 ? 'are not devices' : 'is not a device'} of this account on the ` +
          'diff server (removed?): no longer relayed to',
      ),
    );
  }

  private readonly onMailboxHint = (): void => {
    if (!this.paused) this.guard(this.pullRelay());
  };

  private readonly onPeerDisconnected = (peer: string): void => {
    this.outbox.expectNoStreams(peer); // it will not ask now: relay to it
    this.relayUnacknowledged(peer);
    this.outbound.delete(peer);
    this.inbound.delete(peer);
    if (!this.paused) this.peers$.next(this.connected());
    this.changed$.next();
  };

  /** A peer's streams end: own writes it never acknowledged go to its mailbox, in case we are gone when it is back. */
  private relayUnacknowledged(peer: string): void {
    for (const [name, out] of this.outbound.get(peer) ?? []) {
      const ids = this.syncs.get(name)!.localIdsAfter(out.acked);
      if (ids.length > 0) this.outbox.add(name, ids);
    }
  }

  private connected(): string[] {
    return this.network.connectedPeers().filter((peer) => peer !== this.clientId);
  }

  /**
   * Ask the peer for everything after our checkpoint, per collection. `mayHaveMissed`: we just
   * started or resumed, so the peer's own DB_SYNC_INIT may have reached no listener; unless it
   * already arrived, ask the peer to send it again.
   */
  private openPeer(peer: string, mayHaveMissed = false): void {
    for (const name of this.syncs.keys()) {
      const askBack = mayHaveMissed && !this.outbound.get(peer)?.has(name);
      this.guard(this.openInbound(peer, name, askBack));
    }
  }

  private async openInbound(
    peer: string,
    collection: string,
    askBack = false,
    withData = new Set<string>(),
    misses = 0,
  ): Promise<void> {
    const streams = this.inbound.get(peer) ?? new Map<string, InStream>();
    this.inbound.set(peer, streams);
    // Registered before the first await, so pushes of the stream it replaces are ignored from now on.
    const stream: InStream = {
      stream: newId(),
      checkpoint: undefined,
      withData,
      misses,
      dropped: false,
      caughtUp: false,
      chain: Promise.resolve(),
      initSent: false,
      refusal: undefined,
      retrying: false,
      refusedAny: false,
      unserved: false,
      silent: false,
      answered: false,
    };
    streams.set(collection, stream);
    const sync = this.syncs.get(collection)!;
    const current = () =>
      !this.paused && !this.cancelled && this.inbound.get(peer)?.get(collection) === stream;
    const read = () =>
      Promise.all([
        this.store.get<HeldCheckpoint>(sync.peerKey('cp', peer)),
        this.store.get<Refusal | null>(sync.peerKey('refused', peer)),
      ]);
    let [checkpoint, refusal] = await read();
    if (!checkpoint && current() && this.catchingUpElsewhere(peer, collection)) {
      // A first meeting while another peer's stream catches up: once it has, this device may hold
      // a checkpoint in this peer's log from it (see inherit), and need not ask for the whole log.
      // Not for longer than INHERIT_WAIT_MS: this peer's own writes wait meanwhile.
      let waited = false;
      const timer = setTimeout(() => {
        waited = true;
        this.changed$.next();
      }, INHERIT_WAIT_MS);
      while (!waited && current() && this.catchingUpElsewhere(peer, collection)) {
        await firstValueFrom(this.changed$, { defaultValue: undefined });
      }
      clearTimeout(timer);
      [checkpoint, refusal] = await read();
    }
    if (!current()) return;
    stream.checkpoint = checkpoint;
    stream.refusal = refusal ?? undefined;
    if (
      refusal &&
      checkpoint?.epoch === refusal.from.epoch &&
      refusal.schemaVersion !== this.schemaVersion(collection)
    ) {
      stream.retrying = true;
      stream.checkpoint = { ...checkpoint, seq: Math.min(checkpoint.seq, refusal.from.seq) };
    }
    await this.sendInit(peer, collection, stream, askBack);
  }

  private async sendInit(peer: string, collection: string, stream: InStream, askBack = false): Promise<void> {
    stream.initSent = true;
    stream.silent = false; // asked again: awaited again
    const init: SyncInit = {
      collection,
      stream: stream.stream,
      checkpoint: formatVersion(stream.checkpoint),
      dbVersion: formatVersion({ epoch: this.epoch, seq: this.syncs.get(collection)!.head }),
      store: this.syncs.get(collection)!.storeId,
      ...(stream.checkpoint?.inherited ? { inherited: true } : {}),
      ...(askBack ? { askBack } : {}),
      ...(stream.withData.size > 0 ? { withData: [...stream.withData] } : {}),
      ...this.policies.get(collection)!.fields,
    };
    if (await this.send(peer, SYNC_OPS.syncInit, init)) this.awaitAnswer(peer, collection, stream);
  }

  /** After ANSWER_WAIT_MS, a request still unanswered stops holding up awaitInSync() (see InStream.silent). */
  private awaitAnswer(peer: string, collection: string, stream: InStream): void {
    if (stream.answered) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (stream.answered || this.inbound.get(peer)?.get(collection) !== stream) return;
      stream.silent = true;
      this.changed$.next();
    }, ANSWER_WAIT_MS);
    this.timers.add(timer);
  }

  /** The peer answered our request in `collection` (a push or a refusal of the stream). */
  private answered(peer: string, collection: string, streamId: string): void {
    const stream = this.inbound.get(peer)?.get(collection);
    if (stream?.stream !== streamId) return;
    stream.answered = true;
    stream.silent = false;
  }

  /**
   * The peer (re)started and may have missed our DB_SYNC_INIT. Our open stream's request goes again
   * as it was: a peer that did get it (the two requests crossed) goes on serving that stream instead
   * of starting over, which would send everything twice. Without a stream, one is opened; a request
   * still being prepared goes out anyway, after the peer's listener is there.
   */
  private async repeatInit(peer: string, collection: string): Promise<void> {
    const stream = this.inbound.get(peer)?.get(collection);
    if (!stream) return this.openInbound(peer, collection);
    if (stream.initSent) await this.sendInit(peer, collection, stream);
  }

  /**
   * The peer (re)started and says it may have missed our request for `collection`. It may have
   * missed those of our other collections too, including ones it does not replicate (which it asks
   * back for none of): every request of ours it has not answered yet goes again.
   */
  private askedBack(peer: string, collection: string): void {
    const streams = this.inbound.get(peer);
    for (const name of this.syncs.keys()) {
      const stream = streams?.get(name);
      const unanswered = stream !== undefined && !stream.caughtUp && !stream.unserved;
      if (name === collection || unanswered) this.guard(this.repeatInit(peer, name));
    }
  }

  private caughtUpWith(peer: string): boolean {
    const streams = this.inbound.get(peer);
    return (
      streams !== undefined &&
      [...this.syncs.keys()].every((name) => {
        const stream = streams.get(name);
        return stream !== undefined && (stream.caughtUp || stream.unserved || stream.silent);
      })
    );
  }

  private deliveredTo(peer: string): boolean {
    const streams = this.outbound.get(peer);
    return [...this.syncs].every(([name, sync]) => {
      const out = streams?.get(name);
      const ours = this.inbound.get(peer)?.get(name);
      if (!out) return ours?.unserved === true || ours?.silent === true;
      return out.cursor >= sync.head && out.inflight === 0 && !out.needsReply;
    });
  }

  private async send(peer: string, op: string, data: unknown): Promise<boolean> {
    try {
      await this.network.send(peer, syncMessage(op, data), { lane: 'sync' });
      return true;
    } catch (error) {
      if (!isFerryError(error, 'CLOSED')) this.report(error);
      return false;
    }
  }

  // ---- messages ----

  /** @internal A sync message of one of this replication's collections, or of no one's (see SyncRouter). */
  handleMessage(peer: string, message: PeerMessage): void {
    if (this.cancelled) return;
    const checker = checkers[message.op as keyof typeof checkers];
    if (!checker.Check(message.data)) {
      const first = checker.Errors(message.data).First();
      this.report(
        new FerryError(
          'SCHEMA_MISMATCH',
          `${message.op} from ${peer}: ${first?.path ?? ''} ${first?.message ?? ''}`,
        ),
      );
      const data = (message.data ?? {}) as Record<string, unknown>;
      if (
        message.op === SYNC_OPS.diffPush &&
        typeof data.collection === 'string' &&
        typeof data.stream === 'string'
      ) {
        this.nack(peer, data.collection, data.stream, '', 'invalid', 'the push does not match the schema');
      }
      return;
    }
    switch (message.op) {
      case SYNC_OPS.syncInit:
        this.onSyncInit(peer, message.data as SyncInit);
        break;
      case SYNC_OPS.diffPush:
        this.onPush(peer, message.data as DiffPush);
        break;
      case SYNC_OPS.diffAck:
        this.onAck(peer, message.data as DiffAck);
        break;
      case SYNC_OPS.diffNack:
        this.onNack(peer, message.data as DiffNack);
        break;
      case SYNC_OPS.conflictResolve:
        this.onConflictResolve(peer, message.data as ConflictResolve);
        break;
    }
  }

  private onSyncInit(peer: string, init: SyncInit): void {
    const sync = this.syncs.get(init.collection);
    if (!sync) {
      this.tellNotRun(peer, init.collection, init.stream);
      return;
    }
    if (this.paused) {
      // resume() re-opens every peer, so the peer asks again; meanwhile it relays to this device.
      this.nack(peer, init.collection, init.stream, '', 'paused', 'replication is paused');
      return;
    }
    const ours = this.inbound.get(peer)?.get(init.collection);
    if (ours) ours.unserved = false; // the peer runs the collection now
    this.guard(this.runsCollection(peer, init.collection, true));
    if (init.askBack) this.askedBack(peer, init.collection);
    if (!this.samePolicy(init.collection, init.policy, init.policyVersion)) {
      // Refused after asking back: the peer then refuses this device's request too, and says so.
      const problem = this.policyMismatch(peer, init.policy!, init.policyVersion, init.collection);
      this.report(new FerryError('REJECTED', problem));
      this.nack(peer, init.collection, init.stream, '', 'policy', problem);
      // Its refusal of our request may have come first, and been undone above.
      if (ours) ours.unserved = true;
      this.changed$.next();
      return;
    }
    const streams = this.outbound.get(peer) ?? new Map<string, OutStream>();
    this.outbound.set(peer, streams);
    // A repeated request (see repeatInit) for the stream already being served changes nothing.
    if (streams.get(init.collection)?.stream === init.stream) return;
    const checkpoint = parseVersion(init.checkpoint);
    // A checkpoint the peer inherited from a third device may be one this run pushed to that device.
    const pushed = init.inherited
      ? this.pushedToAnyone(init.collection)
      : (this.pushedTo.get(`${peer}\u0000${init.collection}`) ?? 0);
    const unknown = checkpoint?.epoch === this.epoch && sync.unknownPosition(checkpoint.seq, pushed);
    if (unknown && !init.inherited) {
      this.guard(this.startOver(peer, init.collection, checkpoint.seq));
      return;
    }
    // An inherited one is only a shortcut: one this store does not know it issued is not trusted.
    const valid = !unknown && checkpoint?.epoch === this.epoch && checkpoint.seq <= sync.head;
    const start = valid ? checkpoint.seq : 0;
    streams.set(init.collection, {
      stream: init.stream,
      cursor: start,
      pushedThrough: start,
      acked: start,
      start,
      store: storeOf(peer, init.store),
      withData: new Set(init.withData),
      dataSent: new Map(),
      inflight: 0,
      needsReply: true,
      pumping: false,
      again: false,
      reachedHead: false,
      skipTimer: undefined,
    });
    this.guard(this.pump(peer, init.collection));
    // What was held for this peer now goes to the others only.
    if ([...this.syncs.keys()].every((name) => streams.has(name))) this.outbox.expectNoStreams(peer);
  }

  /** Send the peer what it lacks of one collection, in batches, a few unacknowledged at a time. */
  private async pump(peer: string, collection: string): Promise<void> {
    const out = this.outbound.get(peer)?.get(collection);
    if (!out) return;
    if (out.pumping) {
      out.again = true;
      return;
    }
    out.pumping = true;
    const sync = this.syncs.get(collection)!;
    try {
      do {
        out.again = false;
        while (
          this.outbound.get(peer)?.get(collection) === out &&
          out.inflight < this.window &&
          (out.cursor < sync.head || out.needsReply)
        ) {
          const limits = { count: this.batchSize, bytes: this.batchBytes };
          const holdsData = (meta: DocMeta) => peerHoldsData(out, meta);
          // Taken before the batch is read: all that came up to these checkpoints is in the log by then.
          const holds = out.reachedHead ? undefined : this.holdsFor(peer, collection);
          // A live write is in hand: it goes out now, not after the queue's next turn.
          const batch =
            sync.changesInHand(out.cursor, out.store, limits, holdsData) ??
            (await sync.changesSince(out.cursor, out.store, limits, holdsData));
          if (this.outbound.get(peer)?.get(collection) !== out) return;
          for (let i = 0; i < batch.changes.length; i++) {
            const since = batch.metas[i]!.attSince;
            if (batch.changes[i]!.att && since !== undefined) out.dataSent.set(batch.metas[i]!.id, since);
          }
          if (batch.changes.length === 0 && !out.needsReply) {
            out.cursor = batch.newSeq; // everything in range came from this peer
            this.pushSkippedLater(peer, collection, out);
            continue;
          }
          const push: DiffPush = {
            collection,
            stream: out.stream,
            changes: batch.changes,
            baseVersion: formatVersion({ epoch: this.epoch, seq: out.pushedThrough }),
            newVersion: formatVersion({ epoch: this.epoch, seq: batch.newSeq }),
            more: batch.more,
            store: sync.storeId,
          };
          if (!batch.more && !out.reachedHead) {
            out.reachedHead = true;
            if (holds && Object.keys(holds).length > 0) push.holds = holds;
          }
          out.cursor = batch.newSeq;
          out.pushedThrough = batch.newSeq;
          const pushedKey = `${peer}\u0000${collection}`;
          this.pushedTo.set(pushedKey, Math.max(this.pushedTo.get(pushedKey) ?? 0, batch.newSeq));
          out.needsReply = false;
          out.inflight += 1;
          if (!(await this.send(peer, SYNC_OPS.diffPush, push))) return;
          this.sent$.next(this.sent$.value + batch.changes.length);
        }
      } while (out.again);
    } finally {
      out.pumping = false;
      this.changed$.next();
    }
  }

  /**
   * This device's checkpoints in the logs of the peers other than `peer` (in-memory, so held: a
   * stream's checkpoint moves once its push is applied), for DB_DIFF_PUSH's `holds`. Not those of
   * streams with versions this device's schema refused (it does not hold those).
   */
  private holdsFor(peer: string, collection: string): Record<string, string> {
    const holds: Record<string, string> = {};
    let count = 0;
    for (const [other, streams] of this.inbound) {
      const stream = streams.get(collection);
      if (other === peer || !stream?.checkpoint || stream.refusal || stream.dropped) continue;
      if (++count > MAX_HOLDS) break;
      holds[other] = formatVersion(stream.checkpoint);
    }
    return holds;
  }

  /**
   * A range of the log held only versions that came from the peer, so nothing was sent: unless a push
   * covers it meanwhile, an empty one moves the peer's checkpoint past it after SKIPPED_PUSH_MS. The
   * peer's checkpoints are what a device that catches up from it inherits (see inherit): one left
   * behind, at the peer's own writes, would have a new device ask this one for them all again.
   */
  private pushSkippedLater(peer: string, collection: string, out: OutStream): void {
    if (out.skipTimer) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      out.skipTimer = undefined;
      if (this.paused || this.outbound.get(peer)?.get(collection) !== out) return;
      if (out.pushedThrough >= out.cursor) return;
      out.needsReply = true;
      this.guard(this.pump(peer, collection));
    }, SKIPPED_PUSH_MS);
    out.skipTimer = timer;
    this.timers.add(timer);
  }

  /** The furthest log position this run pushed to any peer in `collection`. */
  private pushedToAnyone(collection: string): number {
    let furthest = 0;
    for (const [key, seq] of this.pushedTo) {
      if (key.endsWith(`\u0000${collection}`)) furthest = Math.max(furthest, seq);
    }
    return furthest;
  }

  /**
   * `peer`'s stream caught up, with nothing refused: this device holds all that `peer` held when it
   * built the push that ended the catch-up, so also what the devices in `holds` had pushed `peer` up
   * to its checkpoints in their logs then. Each becomes this device's checkpoint for that device where it has none or a
   * lower one in the same log, unless a stream of that device's serves this device already: a first
   * meeting then asks from there, not for the device's whole log, which would bring again what came
   * from `peer`.
   */
  private async inherit(peer: string, collection: string, holds: Record<string, string>): Promise<void> {
    const sync = this.syncs.get(collection)!;
    for (const [device, version] of Object.entries(holds)) {
      if (device === peer || device === this.clientId || !this.knownDevices.has(device)) continue;
      if (this.inbound.get(device)?.get(collection)?.initSent) continue;
      const held = parseVersion(version);
      if (!held) continue;
      const key = sync.peerKey('cp', device);
      const own = await this.store.get<HeldCheckpoint>(key);
      if (own && (own.epoch !== held.epoch || own.seq >= held.seq)) continue;
      await this.store.set(key, { ...held, inherited: true } satisfies HeldCheckpoint);
    }
  }

  /**
   * A stream of `collection` other than `peer`'s is catching up: its request went out, and it has
   * not caught up, been dropped or left unanswered.
   */
  private catchingUpElsewhere(peer: string, collection: string): boolean {
    for (const [other, streams] of this.inbound) {
      const stream = streams.get(collection);
      if (other === peer || !stream) continue;
      if (stream.initSent && !stream.caughtUp && !stream.dropped && !stream.silent && !stream.unserved)
        return true;
    }
    return false;
  }

  private onPush(peer: string, push: DiffPush): void {
    if (!this.syncs.has(push.collection)) return; // no stream of ours: nothing to answer
    const stream = this.inbound.get(peer)?.get(push.collection);
    if (this.paused) {
      this.nack(peer, push.collection, push.stream, push.baseVersion, 'paused', 'replication is paused');
      return;
    }
    if (!stream || stream.stream !== push.stream) return; // a stream we replaced: its pushes are stale
    this.answered(peer, push.collection, push.stream);
    stream.chain = this.applying(stream.chain.then(() => this.applyPush(peer, push, stream)));
  }

  /**
   * Drop the rest of `stream` (its pushes in flight would only miss the checkpoint) and ask the peer
   * again from the checkpoint: at once for a first gap, else after `retryDelayMs`, doubling with each
   * miss in a row up to 30 s. Only while `stream` is still the current one: a newer stream, opened
   * meanwhile, is never replaced.
   */
  private askAgain(
    peer: string,
    collection: string,
    stream: InStream,
    { firstAtOnce }: { firstAtOnce: boolean },
  ): void {
    stream.dropped = true;
    const misses = stream.misses + 1;
    const reopen = () => this.reopen(peer, collection, stream, new Set(), misses);
    const doublings = misses - (firstAtOnce ? 2 : 1);
    if (doublings < 0) reopen();
    else setTimeout(reopen, Math.min(this.retryDelayMs * 2 ** doublings, MAX_RETRY_MS));
  }

  /**
   * Ask the peer again on a new stream in place of `stream`, unless `stream` is no longer the current
   * one: a newer request replaced it, or the peer went (its streams end with it, and its next
   * connection opens new ones; a stream opened for a peer that is gone would stand in for them, its
   * request never sent, and the peer would never be asked again).
   */
  private reopen(
    peer: string,
    collection: string,
    stream: InStream,
    withData: Set<string>,
    misses = 0,
  ): void {
    if (!this.cancelled && this.inbound.get(peer)?.get(collection) === stream) {
      this.guard(this.openInbound(peer, collection, false, withData, misses));
    }
  }

  private async applyPush(peer: string, push: DiffPush, stream: InStream): Promise<void> {
    if (this.inbound.get(peer)?.get(push.collection) !== stream || stream.dropped) return;
    const base = parseVersion(push.baseVersion);
    const next = parseVersion(push.newVersion);
    const sync = this.syncs.get(push.collection)!;
    const known = stream.checkpoint;
    const contiguous =
      base?.seq === 0 || (known !== undefined && base?.epoch === known.epoch && base.seq <= known.seq);
    if (!base || !next || next.epoch !== base.epoch || next.seq < base.seq || !contiguous) {
      this.nack(
        peer,
        push.collection,
        push.stream,
        push.baseVersion,
        'gap',
        'the push does not follow my checkpoint',
      );
      this.askAgain(peer, push.collection, stream, { firstAtOnce: true });
      return;
    }
    const advances = known === undefined || known.epoch !== next.epoch || next.seq > known.seq;
    const checkpointKey = sync.peerKey('cp', peer);
    // Kept should the schema refuse some of these versions (see Refusal).
    const previous = stream.refusal;
    const refusal: Refusal = {
      from: previous?.from.epoch === base.epoch && previous.from.seq < base.seq ? previous.from : base,
      schemaVersion: this.schemaVersion(push.collection),
    };
    let outcome: Awaited<ReturnType<CollectionSync['apply']>>;
    try {
      // The checkpoint goes into the same storage write as the batch's metadata, never before it,
      // and with it where versions were refused, never after it.
      outcome = await sync.apply(
        push.changes,
        { device: peer, store: storeOf(peer, push.store) },
        (applied) => [
          ...(advances ? [[checkpointKey, next] as [string, unknown]] : []),
          ...(applied.rejected.length > 0
            ? [[sync.peerKey('refused', peer), refusal] as [string, unknown]]
            : []),
        ],
        (id) => !stream.withData.has(id),
      );
    } catch (error) {
      this.report(error);
      this.nack(peer, push.collection, push.stream, push.baseVersion, 'failed', 'applying the diff failed');
      this.askAgain(peer, push.collection, stream, { firstAtOnce: false });
      return;
    }
    if (outcome.lacking.length > 0) {
      // The sender took this device for holding attachment data it lacks: ask again from the
      // checkpoint, for these documents with their data (the rest of the stream is dropped).
      this.nack(
        peer,
        push.collection,
        push.stream,
        push.baseVersion,
        'attachments',
        'documents came without attachment data this device does not hold',
        outcome.lacking,
      );
      this.reopen(peer, push.collection, stream, new Set(outcome.lacking));
      return;
    }
    stream.misses = 0;
    this.received$.next(this.received$.value + push.changes.length);
    if (advances) stream.checkpoint = next;
    await this.recordConflicts(outcome.conflicts);
    if (outcome.rejected.length > 0) {
      stream.refusal = refusal;
      stream.refusedAny = true;
      for (const { id, error } of outcome.rejected) {
        this.report(
          new FerryError('SCHEMA_MISMATCH', `document ${push.collection}/${id} from ${peer} was refused`, {
            cause: error,
          }),
        );
      }
      this.nack(
        peer,
        push.collection,
        push.stream,
        push.baseVersion,
        'rejected',
        'documents failed the local schema',
        outcome.rejected.map((r) => r.id),
      );
    } else {
      const ack: DiffAck = {
        collection: push.collection,
        stream: push.stream,
        ackVersion: push.newVersion,
        ...(outcome.conflicts.length > 0 ? { resolvedConflicts: outcome.conflicts.map((c) => c.id) } : {}),
      };
      await this.send(peer, SYNC_OPS.diffAck, ack);
    }
    if (outcome.created.length > 0) {
      const resolve: ConflictResolve = {
        collection: push.collection,
        conflicts: outcome.created.map(({ conflict }) => ({
          id: conflict.id,
          local: conflict.local,
          remote: conflict.remote,
        })),
        clientResolution: outcome.created.map(({ resolution }) => resolution),
      };
      await this.send(peer, SYNC_OPS.conflictResolve, resolve);
    }
    const clean = outcome.rejected.length === 0 && !stream.refusedAny && !stream.refusal;
    if (!push.more && !stream.caughtUp && push.holds && clean) {
      await this.inherit(peer, push.collection, push.holds);
    }
    if (!push.more && !stream.caughtUp) {
      stream.caughtUp = true;
      if (stream.retrying && !stream.refusedAny) {
        // Everything from the refusal on was offered again and none of it refused.
        stream.refusal = undefined;
        await this.store.set(sync.peerKey('refused', peer), null);
      }
    }
    this.changed$.next();
  }

  private schemaVersion(collection: string): number {
    return this.syncs.get(collection)!.collection.schema.version;
  }

  private onAck(peer: string, ack: DiffAck): void {
    const out = this.outbound.get(peer)?.get(ack.collection);
    const version = parseVersion(ack.ackVersion);
    if (out && out.stream === ack.stream && version?.epoch === this.epoch) {
      out.acked = Math.max(out.acked, version.seq);
      this.outbox.scheduleMarks();
    }
    this.settle(peer, ack.collection, ack.stream);
  }

  private onNack(peer: string, nack: DiffNack): void {
    this.answered(peer, nack.collection, nack.stream);
    let reported = nack.reason === 'rejected' || nack.reason === 'invalid';
    if (nack.reason === 'policy') {
      const stream = this.inbound.get(peer)?.get(nack.collection);
      if (stream?.stream === nack.stream) stream.unserved = true;
    }
    if (nack.reason === 'unknown-collection') {
      const stream = this.inbound.get(peer)?.get(nack.collection);
      // Said once per peer, not at every meeting, until it runs the collection.
      if (stream?.stream === nack.stream) {
        stream.unserved = true;
        const saving = this.runsCollection(peer, nack.collection, false);
        this.guard(saving);
        reported = saving !== undefined;
      }
    }
    // A 'policy' nack is not reported: this device reports the same mismatch when the peer's own
    // request arrives (see onSyncInit).
    if (reported) {
      const code = nack.reason === 'invalid' ? 'SCHEMA_MISMATCH' : 'REJECTED';
      const ids = nack.ids ? ` (${nack.ids.join(', ')})` : '';
      this.report(
        new FerryError(code, `${peer} refused ${nack.collection}: ${nack.reason}: ${nack.message}${ids}`),
      );
    }
    if (nack.reason === 'paused') this.peerPaused(peer, nack.collection, nack.stream);
    this.settle(peer, nack.collection, nack.stream);
    // A refusal of our request changes what awaitInSync() waits for, with no push of ours to settle.
    this.changed$.next();
  }

  /**
   * The peer paused its replication (it refused our request or push with 'paused'): until it resumes
   * and asks again, it neither serves nor takes this collection, so nothing is awaited from it, and
   * own writes it did not acknowledge go to its mailbox, as to a peer that left.
   */
  private peerPaused(peer: string, collection: string, stream: string): void {
    const ours = this.inbound.get(peer)?.get(collection);
    if (ours) ours.unserved = true;
    const streams = this.outbound.get(peer);
    const out = streams?.get(collection);
    if (out?.stream === stream) {
      const ids = this.syncs.get(collection)!.localIdsAfter(out.acked);
      streams!.delete(collection);
      if (ids.length > 0) this.outbox.add(collection, ids);
    }
    this.outbox.expectNoStreams(peer); // it asks for nothing meanwhile
  }

  /**
   * Notes whether `peer` runs `collection` (see notRunBy); the save when that changed. A peer that says
   * so through the relay (`byRelay`) may never meet this device: the own writes it was not sent
   * meanwhile go to the mailboxes, and the relay mark goes back to where it stopped them, so that a
   * process that dies before the push makes it at its next start.
   */
  private runsCollection(
    peer: string,
    collection: string,
    runs: boolean,
    byRelay = false,
  ): Promise<void> | undefined {
    const notRunBy = this.notRunBy.get(collection);
    if (!notRunBy || notRunBy.has(peer) !== runs) return undefined;
    const since = notRunBy.get(peer) ?? 0;
    if (runs) notRunBy.delete(peer);
    else notRunBy.set(peer, this.outbox.markOf(collection));
    const saved = [...notRunBy];
    let saving: Promise<void>;
    if (runs && byRelay && this.relay) {
      this.outbox.add(collection, this.syncs.get(collection)!.localIdsAfter(since));
      saving = this.outbox
        .writeMark(collection, since)
        .then(() => this.store.set(notRunKey(collection), saved));
    } else {
      saving = this.store.set(notRunKey(collection), saved);
    }
    return this.learned(notRunKey(collection), saving, () =>
      runs ? notRunBy.set(peer, since) : notRunBy.delete(peer),
    );
  }

  /** The saved notRunBy of a collection; a device saved by an earlier Ferry, without a mark, is owed every own write. */
  private async loadNotRunBy(collection: string): Promise<Map<string, number>> {
    const saved = await this.store.get<unknown>(notRunKey(collection));
    const notRunBy = new Map<string, number>();
    for (const entry of Array.isArray(saved) ? saved : []) {
      if (typeof entry === 'string') notRunBy.set(entry, 0);
      else if (
        Array.isArray(entry) &&
        typeof entry[0] === 'string' &&
        Number.isInteger(entry[1]) &&
        entry[1] >= 0
      ) {
        notRunBy.set(entry[0], entry[1]);
      }
    }
    return notRunBy;
  }

  /**
   * Answer `unknown-collection` to `peer`, once it is saved that this device did, so that a later
   * run of it says otherwise (see RelayOutbox.told): the peer stops relaying the collection to this
   * device until then, so an answer whose record a crash lost would stop it for good. Unsaved, it is
   * not answered: the peer takes this device for silent and goes on relaying to it.
   */
  private tellNotRun(peer: string, collection: string, stream: string): void {
    this.guard(
      this.outbox
        .told(peer, collection)
        .then(() =>
          this.nack(peer, collection, stream, '', 'unknown-collection', `no collection ${collection}`),
        ),
    );
  }

  private settle(peer: string, collection: string, stream: string): void {
    const out = this.outbound.get(peer)?.get(collection);
    if (!out || out.stream !== stream) return;
    out.inflight = Math.max(0, out.inflight - 1);
    this.guard(this.pump(peer, collection));
    this.changed$.next();
  }

  private onConflictResolve(peer: string, resolve: ConflictResolve): void {
    const sync = this.syncs.get(resolve.collection);
    if (!sync || this.paused) return;
    // Sent by the store this device serves (it answers a push).
    const store = this.outbound.get(peer)?.get(resolve.collection)?.store ?? peer;
    void this.applying(
      sync
        .apply(resolve.clientResolution, { device: peer, store })
        .then((outcome) => this.recordConflicts(outcome.conflicts)),
    );
  }

  /**
   * `work` (an application that writes) with its failure reported, kept in `applications` until
   * it settles. Never rejects: a push's chain goes on to the next push after a failed one.
   */
  private applying(work: Promise<unknown>): Promise<void> {
    const settled = work.then(
      () => undefined,
      (error) => this.report(error),
    );
    this.applications.add(settled);
    void settled.then(() => this.applications.delete(settled));
    return settled;
  }

  private nack(
    peer: string,
    collection: string,
    stream: string,
    baseVersion: string,
    reason: NackReason,
    message: string,
    ids?: string[],
  ): void {
    const nack: DiffNack = { collection, stream, baseVersion, reason, message, ...(ids ? { ids } : {}) };
    this.guard(this.send(peer, SYNC_OPS.diffNack, nack));
  }

  /**
   * Record a batch's conflicts (see ConflictRecord), then emit them. The versions are applied already:
   * a record that cannot be saved is reported, and the conflicts are still emitted (and the push
   * acknowledged).
   */
  private async recordConflicts(conflicts: FerryConflict[]): Promise<void> {
    if (conflicts.length === 0) return;
    await this.conflictRecord.add(conflicts).catch((error) => this.report(error));
    for (const conflict of conflicts) this.conflict$.next(conflict);
  }

  // ---- new versions: live pushes and the relay ----

  private onVersions(sync: CollectionSync, metas: DocMeta[]): void {
    if (this.cancelled) return;
    for (const [peer, streams] of this.outbound)
      if (streams.has(sync.name)) this.guard(this.pump(peer, sync.name));
    const local = metas.filter((m) => m.local).map((m) => m.id);
    if (local.length > 0) this.outbox.add(sync.name, local);
    this.changed$.next();
  }

  // ---- helpers ----

  private async until(condition: () => boolean): Promise<void> {
    while (!condition()) {
      if (this.cancelled) throw new FerryError('CANCELLED', 'the replication was cancelled');
      await firstValueFrom(this.changed$.pipe(filter(() => true)), { defaultValue: undefined });
    }
  }

  private guard(promise: Promise<unknown> | undefined): void {
    promise?.catch((error) => this.report(error));
  }

  /** @internal */
  report(error: unknown): void {
    if (this.cancelled) return;
    this.error$.next(
      error instanceof FerryError
        ? error
        : new FerryError('INTERNAL', String((error as Error)?.message ?? error), { cause: error }),
    );
  }
}

export type { Change, FerryConflict };
