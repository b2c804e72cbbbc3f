import { type DiffRelay, FerryError, isFerryError, MAX_PUSH_TARGETS, RelayError, utf8 } from '@ferry/core';
import type { CollectionSync } from './collection-sync.js';
import { Serial } from './serial.js';
import type { MetaStore } from './store.js';
import { approximateSize, type Change, type PolicyKind, type RelayDiff } from './wire.js';

export const MAX_RETRY_MS = 30_000;
/** How long acknowledgements and relay pushes gather before the relay marks are saved (one write). */
const RELAY_MARK_DELAY_MS = 1000;
/**
 * How long a connected peer's request (DB_SYNC_INIT) is awaited after it connects or the replication
 * resumes, before writes go to its mailbox instead. A request that comes opens a stream that carries
 * them: without the wait they would be left in the mailbox as well, and applied twice (as a no-op).
 */
const STREAM_WAIT_MS = 1000;
const relayMarkKey = (collection: string) => `relayed/${collection}`;
/** The peers this device told `unknown-collection` for a collection it did not run then (see announcements). */
const toldKey = (collection: string) => `told-not-run/${collection}`;

/** What the outbox asks of the replication it works for. */
export interface OutboxHost {
  readonly store: MetaStore;
  /** The engine of a collection the replication runs. */
  sync(collection: string): CollectionSync;
  syncs(): Iterable<CollectionSync>;
  /** The conflict rule as the collection's relay diffs name it. */
  policyFields(collection: string): { policy: PolicyKind; policyVersion?: string };
  /** The account's devices this one knows (its writes are owed to each). */
  knownDevices(): ReadonlySet<string>;
  /** Where `peer`'s open stream of `collection` acknowledged this device's log to; undefined without one. */
  ackedBy(peer: string, collection: string): number | undefined;
  /** The devices that said they do not run `collection`, each with the relay mark of when they did. */
  notRunBy(collection: string): ReadonlyMap<string, number>;
  connected(): string[];
  /** Paused, or cancelled: nothing is pushed. */
  halted(): boolean;
  cancelled(): boolean;
  /** The diff server knows none of these devices (removed from the account): relay to them no more. */
  forgetDevices(ids: string[]): void;
  report(error: unknown): void;
  /** Documents left in the mailboxes. */
  sent(count: number): void;
  /** Own documents not yet in the mailboxes they are owed to, whenever that changes. */
  pending(count: number): void;
  /** The outbox's state changed (what awaitInSync() waits for). */
  changed(): void;
}

export interface OutboxOptions {
  /** The diff server's mailboxes; without one the outbox only keeps the relay marks. */
  relay: DiffRelay | undefined;
  batchSize: number;
  relayBytes: number;
  retryDelayMs: number;
}

/**
 * This device's own writes on their way into the mailboxes of the devices that may not get them
 * directly: every known device without an open stream of the collection (offline, or connected but
 * not asking yet). Writes are queued by document id and pushed as relay diffs, a failed push retried
 * after a delay that doubles. The relay mark of each collection is saved, so that a run that stops
 * before its pushes landed has the next run make them.
 */
export class RelayOutbox {
  private readonly relay: DiffRelay | undefined;
  private readonly queue = new Map<string, Set<string>>();
  /** The batch a flush is pushing now, out of the queue: still pending until it is in the mailboxes. */
  private pushing: { collection: string; ids: string[] } | undefined;
  private flushing: Promise<void> | undefined;
  /** Set while the flush waits for connected peers' requests (see STREAM_WAIT_MS). */
  private hold: ReturnType<typeof setTimeout> | undefined;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private retryDelay: number;
  /** Connected peers whose request is awaited (see STREAM_WAIT_MS), with when the wait ends. */
  private readonly streamsExpected = new Map<string, number>();
  /**
   * Per collection, the peers an earlier run told `unknown-collection` (saved): they leave this
   * device's mailbox out of its writes, so a run with a relay tells them through it (an empty diff)
   * that it runs the collection now. A device that only has the relay would not learn it otherwise.
   */
  private readonly announcements = new Map<string, string[]>();
  /** Per collection, the saved relay mark (see saveMarks). */
  private readonly marks = new Map<string, number>();
  private markTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Saves of relay marks and of whom this device told `unknown-collection`, one after another: a
   * lowered mark is not overwritten by an older raise, and two peers told at once are both kept.
   */
  private readonly saves = new Serial();

  constructor(
    private readonly host: OutboxHost,
    private readonly options: OutboxOptions,
  ) {
    this.relay = options.relay;
    this.retryDelay = options.retryDelayMs;
  }

  /**
   * Loads a collection's relay mark and whom an earlier run told `unknown-collection`. A relay mark
   * is the log position through which every own version of a collection reached each known device:
   * acknowledged by the connected ones, stored in the mailboxes of the others. What lies above it is
   * queued for the relay at start, so a relay push that failed or never ran (the process died first)
   * is made by the next run. A mark that lags only costs a diff pushed twice, which applies as a
   * no-op. A run without a relay moves the mark only past what every known device acknowledged, so
   * that the next run with one relays what was owed and this run's other writes (a device that is
   * never online with this one has no other way to get them). Without a saved mark (a new store, or
   * one from an earlier Ferry) the versions already in the log are taken as delivered.
   */
  async open(sync: CollectionSync): Promise<void> {
    const told = this.relay ? await this.host.store.getStrings(toldKey(sync.name)) : [];
    if (told.length > 0) this.announcements.set(sync.name, told);
    const key = relayMarkKey(sync.name);
    const stored = await this.host.store.get<unknown>(key);
    const saved = typeof stored === 'number' && Number.isInteger(stored) && stored >= 0 ? stored : undefined;
    const mark = saved ?? sync.announcedThrough;
    if (saved === undefined) await this.host.store.set(key, mark);
    this.marks.set(sync.name, mark);
    if (!this.relay) return;
    const pending = sync.localIdsAfter(mark);
    if (pending.length > 0) this.enqueue(sync.name, pending);
  }

  /** Own writes of `collection` owed to the mailboxes (nothing without a relay). */
  add(collection: string, ids: string[]): void {
    if (!this.relay) return;
    this.enqueue(collection, ids);
    this.flushSoon();
  }

  /** Nothing queued, being pushed or announced. */
  get settled(): boolean {
    return this.queue.size === 0 && this.announcements.size === 0 && !this.flushing;
  }

  /** The saved relay mark of a collection. */
  markOf(collection: string): number {
    return this.marks.get(collection) ?? 0;
  }

  /**
   * The log position through which every own version of `collection` reached each known device
   * now: the saved mark, or further where acknowledgements and pushes since say so (not while a
   * flush is pushing: its batch is out of the queue but not in the mailboxes yet).
   */
  deliveredThrough(collection: string): number {
    const saved = this.markOf(collection);
    if (this.flushing) return saved;
    return Math.max(saved, this.markCandidates().get(collection) ?? saved);
  }

  /** A peer just connected, or the replication resumed: its request is expected (see STREAM_WAIT_MS). */
  expectStreams(peer: string): void {
    if (this.relay) this.streamsExpected.set(peer, performance.now() + STREAM_WAIT_MS);
  }

  /** The peer asked for every collection, left, or asks for nothing meanwhile: what was held for it goes now. */
  expectNoStreams(peer: string): void {
    if (this.streamsExpected.delete(peer)) this.flushSoon();
  }

  /** The replication paused: no request is awaited. */
  expectNothing(): void {
    this.streamsExpected.clear();
  }

  /**
   * Saves that `peer` was told `unknown-collection`, so that a later run that has the collection
   * says otherwise (see announcements).
   */
  told(peer: string, collection: string): Promise<void> {
    return this.saves.run(async () => {
      const told = await this.host.store.getStrings(toldKey(collection));
      if (!told.includes(peer)) await this.host.store.set(toldKey(collection), [...told, peer]);
    });
  }

  flushSoon(): void {
    if (this.flushing || this.retry || this.host.halted()) return;
    if (this.queue.size === 0 && this.announcements.size === 0) return;
    clearTimeout(this.hold);
    this.hold = undefined;
    const wait = this.streamWaitMs();
    if (wait > 0) {
      this.hold = setTimeout(() => {
        this.hold = undefined;
        this.flushSoon();
      }, wait);
      return;
    }
    this.flushing = Promise.resolve()
      .then(() => this.flush())
      .finally(() => {
        this.flushing = undefined;
        this.flushSoon(); // ids queued after the loop's last check
        this.scheduleMarks();
        this.host.changed();
      });
  }

  /**
   * Stops retrying; resolves once a flush under way ended. Queued writes stay for a later flush:
   * the retry is forgotten with its timer, or the sync's next start (after a start-over) would take
   * it for one still to come and never flush.
   */
  async stop(): Promise<void> {
    clearTimeout(this.retry);
    this.retry = undefined;
    await this.flushing?.catch(() => undefined);
  }

  /**
   * The replication is cancelled: no more timers. Returns where the marks may move to now, for
   * `finish` once the work under way ended (taken before the peers' acknowledgements are forgotten).
   */
  close(): Map<string, number> {
    clearTimeout(this.markTimer);
    clearTimeout(this.hold);
    return this.markCandidates();
  }

  /** Saves `marks` (from close) and waits for every save. Unsaved (the database closed first), the marks only lag. */
  async finish(marks: Map<string, number>): Promise<void> {
    await this.saveMarks(marks).catch(() => undefined);
    await this.saves.idle();
  }

  /** Saves the marks a while after an acknowledgement or a push, in one write. */
  scheduleMarks(): void {
    if (this.markTimer || this.host.cancelled()) return;
    this.markTimer = setTimeout(() => {
      this.markTimer = undefined;
      // A flush that is running schedules this again when it ends.
      if (!this.flushing) this.saveMarks(this.markCandidates()).catch((error) => this.host.report(error));
    }, RELAY_MARK_DELAY_MS);
  }

  /** Save a relay mark (only a higher one when `raise`), after every mark write before it. */
  writeMark(collection: string, mark: number, raise = false): Promise<void> {
    return this.saves.run(async () => {
      const current = this.marks.get(collection) ?? 0;
      if (raise && (mark <= current || this.queue.has(collection))) return;
      this.marks.set(collection, mark);
      await this.host.store.set(relayMarkKey(collection), mark);
    });
  }

  private enqueue(collection: string, ids: string[]): void {
    const queued = this.queue.get(collection) ?? new Set<string>();
    for (const id of ids) queued.add(id);
    this.queue.set(collection, queued);
    this.countPending();
  }

  /** How long the relay still waits for connected peers' requests (0: not at all). */
  private streamWaitMs(): number {
    if (this.streamsExpected.size === 0) return 0; // the usual case, on every write
    const now = performance.now();
    const connected = new Set(this.host.connected());
    let wait = 0;
    for (const [peer, until] of this.streamsExpected) {
      if (until <= now || !connected.has(peer)) this.streamsExpected.delete(peer);
      else wait = Math.max(wait, until - now);
    }
    return wait;
  }

  /** Leave this device's own writes in the mailbox of every known device without an open stream of the collection. */
  private async flush(): Promise<void> {
    const relay = this.relay!;
    if (!(await this.announce(relay))) return;
    while (this.queue.size > 0 && !this.host.halted()) {
      const [name, ids] = this.queue.entries().next().value as [string, Set<string>];
      // A peer gets a collection's writes directly once it asked for them (its stream is open): until
      // then, even connected, through its mailbox (it may go before it asks).
      const notRunBy = this.host.notRunBy(name);
      const targets = [...this.host.knownDevices()].filter(
        (id) => this.host.ackedBy(id, name) === undefined && !notRunBy.has(id),
      );
      if (targets.length === 0) {
        this.queue.delete(name);
        this.countPending();
        continue;
      }
      // Taken out of the queue before the awaits: an id queued again meanwhile (a newer write) stays queued.
      const batchIds = [...ids].slice(0, this.options.batchSize);
      for (const id of batchIds) ids.delete(id);
      if (ids.size === 0) this.queue.delete(name);
      this.pushing = { collection: name, ids: batchIds };
      try {
        const changes = await this.host.sync(name).current(batchIds);
        for (const group of relayGroups(changes, this.options.relayBytes)) {
          await this.pushGroup(relay, name, group, targets);
        }
        this.retryDelay = this.options.retryDelayMs;
      } catch (error) {
        this.enqueue(name, batchIds);
        const gone =
          error instanceof RelayError ? error.unknownTargets.filter((id) => targets.includes(id)) : [];
        if (gone.length > 0) {
          // Removed from the account (or never registered there): the rest get the diff at once.
          this.host.forgetDevices(gone);
          continue;
        }
        this.failed(error);
        break;
      } finally {
        this.pushing = undefined;
        this.countPending();
      }
    }
  }

  /** Tell the peers in `announcements` that this device runs their collections now; false if the relay failed. */
  private async announce(relay: DiffRelay): Promise<boolean> {
    for (const [name, told] of [...this.announcements]) {
      if (this.host.halted()) return false;
      const known = this.host.knownDevices();
      const targets = told.filter((id) => known.has(id));
      try {
        if (targets.length > 0) await this.pushDiff(relay, name, [], targets);
      } catch (error) {
        const gone = error instanceof RelayError ? error.unknownTargets : [];
        if (gone.length > 0) {
          this.host.forgetDevices(gone);
          return this.announce(relay);
        }
        this.failed(error);
        return false;
      }
      this.announcements.delete(name);
      await this.host.store.set(toldKey(name), null);
    }
    return true;
  }

  /** A relay push failed: reported, and the flush retried later, each time after twice the delay. */
  private failed(error: unknown): void {
    this.host.report(error);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.flushSoon();
    }, this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, MAX_RETRY_MS);
  }

  /**
   * Leave one group of changes in the targets' mailboxes. A group the diff server refuses as too
   * large (its `maxDiffBytes` below what `relayBytes` allows) goes again in halves; a document too
   * large alone is reported and reaches the devices by checkpoint when they meet. (Until the
   * sixteenth round such a refusal was retried as a failure, for ever: the relay queue never
   * emptied and `awaitInSync()` never resolved.)
   */
  private async pushGroup(relay: DiffRelay, name: string, group: Change[], targets: string[]): Promise<void> {
    const { relayBytes } = this.options;
    const tooLarge = (detail: string) =>
      this.host.report(
        new FerryError('TOO_LARGE', `${name}/${group[0]!.id} is too large for the relay: ${detail}`),
      );
    if (group.length === 1 && approximateSize(group[0]!) > relayBytes) {
      tooLarge(`more than relayBytes (${relayBytes})`);
      return;
    }
    try {
      await this.pushDiff(relay, name, group, targets);
    } catch (error) {
      if (!isFerryError(error, 'TOO_LARGE')) throw error;
      if (group.length === 1) {
        tooLarge(error.message);
        return;
      }
      const half = Math.ceil(group.length / 2);
      await this.pushGroup(relay, name, group.slice(0, half), targets);
      await this.pushGroup(relay, name, group.slice(half), targets);
      return;
    }
    this.host.sent(group.length);
  }

  /** One relay diff of `changes` into the targets' mailboxes. */
  private async pushDiff(
    relay: DiffRelay,
    name: string,
    changes: Change[],
    targets: string[],
  ): Promise<void> {
    const diff: RelayDiff = {
      v: 1,
      collection: name,
      changes,
      store: this.host.sync(name).storeId,
      ...this.host.policyFields(name),
    };
    const payload = utf8(JSON.stringify(diff));
    // One push names at most MAX_PUSH_TARGETS devices (an account has at most 64 by default).
    for (let i = 0; i < targets.length; i += MAX_PUSH_TARGETS) {
      await relay.push(targets.slice(i, i + MAX_PUSH_TARGETS), payload);
    }
  }

  /**
   * Where each collection's mark may move to now: nothing waits for the relay, and every connected
   * peer acknowledged; without a relay, every known device acknowledged (nothing else reaches them)
   * but those that said they do not run the collection, which no relay push would name either.
   */
  private markCandidates(): Map<string, number> {
    const marks = new Map<string, number>();
    for (const sync of this.host.syncs()) {
      const name = sync.name;
      if (this.queue.has(name)) continue;
      const notRunBy = this.host.notRunBy(name);
      const holders = this.relay
        ? this.host.connected()
        : [...this.host.knownDevices()].filter((id) => !notRunBy.has(id));
      let mark = sync.announcedThrough;
      for (const peer of holders) {
        // With a relay, a peer without a stream of this collection gets its writes from it (see flush).
        const acked = this.host.ackedBy(peer, name) ?? (this.relay ? mark : -1);
        mark = Math.min(mark, acked);
      }
      if (mark >= 0) marks.set(name, mark);
    }
    return marks;
  }

  private async saveMarks(marks: Map<string, number>): Promise<void> {
    for (const [name, mark] of marks) {
      // Queued meanwhile: a push of these versions failed and is being retried.
      if (this.queue.has(name) || mark <= (this.marks.get(name) ?? 0)) continue;
      await this.writeMark(name, mark, true);
    }
  }

  /** Own documents not yet in the mailboxes they are owed to: queued (or waiting to be retried), and being pushed. */
  private countPending(): void {
    let count = 0;
    for (const ids of this.queue.values()) count += ids.size;
    if (this.pushing) {
      const { collection, ids } = this.pushing;
      const queued = this.queue.get(collection);
      for (const id of ids) if (!queued?.has(id)) count++;
    }
    this.host.pending(count);
  }
}

/** Consecutive groups of changes of at most `budget` approximate bytes (a bigger change alone). */
function relayGroups(changes: Change[], budget: number): Change[][] {
  const groups: Change[][] = [];
  let current: Change[] = [];
  let bytes = 0;
  for (const change of changes) {
    const size = approximateSize(change);
    if (current.length > 0 && bytes + size > budget) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(change);
    bytes += size;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}
