import { FerryError, toBase64 } from '@ferry/core';
import { type BulkWriteRow, createRevision, now, type RxCollection, type RxDocumentData } from 'rxdb';
import {
  type AttachmentStub,
  attachmentStubs,
  attachmentsToWrite,
  hasAttachments,
  lackingData,
  receivedData,
  withAttachmentDigests,
  withoutAttachmentData,
  withoutAttachments,
} from './attachments.js';
import { type ChangeCheckpoint, changedDocumentsSince, type StorageInstance } from './change-feed.js';
import { decodeStamp, type HybridClock } from './hlc.js';
import { type DocMeta, type MetaStore, storageBelowWrapper, versionOf } from './store.js';
import {
  ATTACHMENTS,
  advanceOwn,
  type ConflictPolicy,
  compareVectors,
  deepEqual,
  policyKind,
  resolveConcurrent,
  sameContent,
  stampFields,
} from './versions.js';
import { approximateSize, type Change, newId } from './wire.js';

/** Two versions of one document met and neither included the other. */
export interface FerryConflict {
  collection: string;
  id: string;
  /** This device's version and the one that arrived, and what the policy made of them. */
  local: Change;
  remote: Change;
  resolved: Change;
  /** The device the remote version came from. */
  from: string;
  /** Which rule decided: 'lww', 'fields' or 'handler'. */
  policy: 'lww' | 'fields' | 'handler';
}

export interface ApplyOutcome {
  /** Documents the local schema refused (the rest of the batch was applied). */
  rejected: Array<{ id: string; error: unknown }>;
  /**
   * Documents that came without data of an attachment this device does not hold, and for which
   * `askForData` said to ask: then nothing of the batch was applied.
   */
  lacking: string[];
  conflicts: FerryConflict[];
  /** New versions made by the app's conflict handler: they travel back in DB_CONFLICT_RESOLVE. */
  created: Array<{ conflict: FerryConflict; resolution: Change }>;
}

/** State rows saved with an apply's metadata: given, or made from its outcome. */
export type StateRows = Array<[string, unknown]> | ((outcome: ApplyOutcome) => Array<[string, unknown]>);

export interface CollectionSyncHost {
  readonly clock: HybridClock;
  /**
   * This device's key in version vectors: its client id and its store's epoch. A device whose store
   * is lost but whose client id is kept (a reinstall, a Node device on the memory storage restarted
   * with a configured id) starts a new entry: counting again under its old key, its new versions
   * would repeat vectors its lost ones had, with other content, and peers would take them for those.
   */
  readonly vectorId: string;
  readonly store: MetaStore;
  readonly policy: ConflictPolicy;
  /** New entries in this collection's change log (local writes and applied remote versions). */
  onVersions(sync: CollectionSync, metas: DocMeta[]): void;
}

interface Decision {
  version: Change;
  via: string;
  local: boolean;
  conflict?: FerryConflict;
  created?: boolean;
}

export type StoredDoc = RxDocumentData<Record<string, unknown>>;

export interface BatchLimits {
  count: number;
  bytes: number;
}

/**
 * Where received versions came from: the device (named in conflicts), and its store of the
 * collection (see CollectionSync.storeId), to which they are not sent back.
 */
export interface Source {
  device: string;
  store: string;
}

/** Changes for a push; `newSeq` is the log position they reach, `more` whether the log goes on. */
export interface Batch {
  changes: Change[];
  /** The metadata of each change's version, in the same order. */
  metas: DocMeta[];
  newSeq: number;
  more: boolean;
}

/**
 * Whether the receiver of a push holds the data of this version's attachments (then the push leaves
 * it out). Without one, every attachment travels with its data.
 */
export type HoldsData = (meta: DocMeta) => boolean;

/** What a device keeps about what it received from each peer, per copy of a collection. */
const PEER_VALUES = ['cp', 'refused'] as const;
type PeerValue = (typeof PEER_VALUES)[number];

/** The `context` of Ferry's document writes, which their change events carry. */
export const WRITE_CONTEXT = 'ferry-replication';
const SCAN_PAGE = 1000;
const MAX_APPLY_ATTEMPTS = 8;
/** The log's latest live versions whose documents a start looks up in the storage (see holdsLatest). */
const HELD_SAMPLE = 16;
/**
 * Set when the app removed the collection while Ferry watched it (see replication.ts
 * `markRemovals`): its next start starts its sync over for certain, not by `holdsLatest`'s guess.
 */
export const removedKey = (collection: string) => `removed/${collection}`;
/**
 * A commit of at most this many versions goes out while its metadata is still being saved (a live
 * write waits for no storage write but its own). A crash in between loses metadata of versions that
 * peers have; so that no later version reuses their log positions or version-vector entries, each
 * start skips this many positions and raises the floor of this device's vector entry.
 */
const UNSAVED_MAX = 1000;
/** RxDB's own top-level fields start with '_' (and the app's may not). */
const UNDERSCORE = 0x5f;

/**
 * One replicated collection on this device: a change log (every version this device holds gets a
 * fresh, increasing sequence number), local-write detection, and the idempotent application of
 * remote versions. Every operation runs in one serial queue, so the log and the stored documents
 * never disagree while a peer is being served.
 *
 * Local writes are found by reading the storage's own change feed (changedDocumentsSince) from a
 * persisted checkpoint: a document whose `_rev` is not the one Ferry recorded was written by the app.
 * Nothing is lost if the process dies between the app's write and Ferry noticing it.
 */
export class CollectionSync {
  readonly primaryPath: string;
  head = 0;
  /** The log's head when this collection's sync was opened: no peer can know a later position but from this run. */
  private openedAt = 0;
  /** The log position up to which versions may be sent (a large commit's only once it is saved). */
  private sendable = 0;
  /** Every version at or below this log position was announced to the host (`onVersions`). */
  get announcedThrough(): number {
    return this.sendable;
  }
  /** This device's vector entry in a new version exceeds this (see UNSAVED_MAX). */
  private ownFloor = 0;
  /**
   * No version with an own vector entry above this goes out before this bound is saved, so the next
   * start's floor lies above every entry this run gave out, saved or not. A per-start floor of one
   * more than the last was not enough: a document can take several entries between two saves (one
   * per write the app makes to it), and after a crash a new version reused the entry of a lost one
   * that the peers held, who then took the two different contents for the same version.
   */
  private ownReserved = 0;
  /**
   * When this store first ran (RxDB's clock): a document Ferry never saw that was written before is a
   * copy the device held before it first synced, stamped at its write time (see localVersions).
   */
  private since: number | undefined;
  private readonly metas = new Map<string, DocMeta>();
  private log: Array<{ seq: number; id: string }> = [];
  private scanCheckpoint: unknown;
  private queue: Promise<unknown> = Promise.resolve();
  private pendingScan: Promise<void> | undefined;
  private pendingRecord: Promise<void> | undefined;
  private eventDocs: StoredDoc[] = [];
  /**
   * The documents of the last recorded or applied batch, as their change events carried them or
   * as Ferry wrote them: the push that follows needs no storage read for them (a `_rev` names one
   * content, so a match is current).
   */
  private recorded = new Map<string, StoredDoc>();
  /**
   * Left by an earlier Ferry that crashed between a document write and its metadata (it saved the
   * versions it was about to write in a state row); adopted by the first scan, then cleared.
   */
  private intent = new Map<string, { rev: string; version: Change }>();
  /**
   * Names this copy of the collection's documents in the keys of what the device received from each
   * peer (checkpoints, refusals): a new one after the documents were found gone (see holdsLatest), so
   * that every peer sends everything again. '' for the first copy.
   */
  private copy = '';
  /** Set when the app may have written since the last scan (a change event, or a write that lost a race). */
  private dirty = true;
  /** Where Ferry reads and writes documents (see storageBelowWrapper). */
  private readonly storage: StorageInstance;
  /** The collection's schema allows attachments. */
  private readonly withAttachments: boolean;
  /**
   * The collection's schema stores attachments compressed or encrypted (RxDB's attachments-compression
   * and encryption wrappers): their descriptions' `length` is then the stored form's, not the data's.
   */
  private readonly transformsAttachments: boolean;

  private constructor(
    readonly name: string,
    readonly collection: RxCollection,
    private readonly host: CollectionSyncHost,
  ) {
    this.primaryPath = collection.schema.primaryPath as string;
    this.storage = storageBelowWrapper(collection as RxCollection<Record<string, unknown>>);
    this.withAttachments = Boolean(collection.schema.jsonSchema.attachments);
    const attachments = collection.schema.jsonSchema.attachments;
    this.transformsAttachments = Boolean(attachments?.compression || attachments?.encrypted);
  }

  /** `startOver`: forget this collection's versions and start over (see replication.ts startOver). */
  static async open(
    name: string,
    collection: RxCollection,
    host: CollectionSyncHost,
    startOver = false,
  ): Promise<CollectionSync> {
    const sync = new CollectionSync(name, collection, host);
    const metas = await host.store.loadMetas(name);
    metas.sort((a, b) => a.seq - b.seq);
    for (const meta of metas) {
      sync.metas.set(meta.id, meta);
      sync.log.push({ seq: meta.seq, id: meta.id });
    }
    host.clock.observeAll(metas.map((meta) => meta.st));
    const loadedHead = metas.at(-1)?.seq ?? 0;
    let loadedOwn = 0;
    for (const meta of metas) loadedOwn = Math.max(loadedOwn, meta.vv[host.vectorId] ?? 0);
    // What the last run may have sent without saving lies above what it recorded here at its start
    // (no record: a new store, or one from a Ferry that saved before sending).
    const issued = await host.store.get<{ seq: number; own: number; since?: number }>(`issued/${name}`);
    sync.head = issued ? Math.max(loadedHead, issued.seq) + UNSAVED_MAX : loadedHead;
    sync.ownFloor = issued ? Math.max(loadedOwn, issued.own) + 1 : 0;
    // A store an earlier Ferry made has no record of it: every document it never saw is stamped at its write time.
    sync.since = issued ? issued.since : now();
    sync.ownReserved = sync.ownFloor + UNSAVED_MAX;
    sync.sendable = sync.head;
    await host.store.set(`issued/${name}`, sync.issued());
    sync.copy = (await host.store.get<string>(`copy/${name}`)) ?? '';
    // Nothing recorded by a store that ran before: it never held anything (then asking from scratch
    // costs nothing), or a crash lost the metadata of all its versions. Then the peers may hold
    // writes of this device that it lost since (the collection removed, say), and they skip those
    // for it unless it asks from scratch. (Found by hunts once checkpoints of empty pushes were saved.)
    const recordedNothing = sync.log.length === 0 && issued !== undefined;
    const removed = Boolean(await host.store.get(removedKey(name)));
    if (startOver || removed || !(await sync.holdsLatest())) await sync.forgetVersions();
    else if (recordedNothing) await sync.newCopy();
    sync.openedAt = sync.head;
    sync.scanCheckpoint = await host.store.get(`scan/${name}`);
    const intent = (await host.store.get<Array<[string, string, Change]>>(`intent/${name}`)) ?? [];
    sync.intent = new Map(intent.map(([id, rev, version]) => [id, { rev, version }]));
    return sync;
  }

  /**
   * Whether a peer's checkpoint in this log names a position this device never issued as far as its
   * store remembers: past the head the store had at open, and past what this run pushed to the peer.
   */
  unknownPosition(seq: number, pushedThisRun: number): boolean {
    return seq > this.openedAt && seq > pushedThisRun;
  }

  /**
   * This device's store of the collection as the source of versions: its id in version vectors
   * (client id and epoch) and the copy. A wiped store, or one whose sync started over (the
   * collection removed, say), is a new one: versions the old one sent go back to it, even those that
   * reach a peer (from the old one's relay diffs) after the new one asked.
   */
  get storeId(): string {
    return `${this.host.vectorId}${this.copy ? `/${this.copy}` : ''}`;
  }

  /** The key of a value about what this device received from `peer` (`kind`: 'cp' or 'refused'). */
  peerKey(kind: PeerValue, peer: string, copy = this.copy): string {
    return `${kind}/${peer}/${this.name}${copy ? `/${copy}` : ''}`;
  }

  /**
   * Whether the storage holds the documents of the log's latest live versions (as stored, or
   * written since). None of them is held after RxDB's `collection.remove()` and a new collection of
   * that name (or when a storage lost them): its documents are not removed from the other devices,
   * which still hold them. (A removal Ferry saw is marked instead: see `removedKey`.)
   */
  private async holdsLatest(): Promise<boolean> {
    const sample: DocMeta[] = [];
    for (let i = this.log.length - 1; i >= 0 && sample.length < HELD_SAMPLE; i--) {
      const meta = this.metas.get(this.log[i]!.id)!;
      if (!meta.del && meta.rev) sample.push(meta);
    }
    if (sample.length === 0) return true;
    const stored = await this.findStored(sample.map((meta) => meta.id));
    return sample.some((meta) => {
      const rev = stored.get(meta.id)?._rev;
      return rev !== undefined && (rev === meta.rev || revisionHeight(rev) > revisionHeight(meta.rev));
    });
  }

  /**
   * Start this collection's sync over, as a new device would, keeping the log's positions and this
   * device's vector entries counting up (peers hold checkpoints in this log, and versions it made):
   * every document the storage holds now is found by a scan, and every peer is asked for everything
   * under a new `copy`. The new copy is saved first: a crash before the versions are dropped only
   * does it again.
   */
  private async forgetVersions(): Promise<void> {
    await this.newCopy([
      [`intent/${this.name}`, []],
      [removedKey(this.name), null],
    ]);
    await this.host.store.dropMetas(this.name);
    this.metas.clear();
    this.log = [];
  }

  /**
   * Ask every peer for everything under a new `copy` of this collection's checkpoints, and find
   * what the storage holds by a full scan (adopting documents a crash left with an intent row).
   */
  private async newCopy(state: Array<[string, unknown]> = []): Promise<void> {
    const old = this.copy;
    this.copy = newId();
    await this.host.store.saveMetas(
      this.name,
      [],
      [[`copy/${this.name}`, this.copy], [`scan/${this.name}`, null], ...state],
    );
    // Never read again (a device that starts with nothing recorded makes a new copy every time).
    const peers = await this.host.store.devices();
    await this.host.store.removeKeys(
      [...peers].flatMap((peer) => PEER_VALUES.map((kind) => this.peerKey(kind, peer, old))),
    );
  }

  /** Run `task` after everything queued before it. */
  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Record the app's writes since the last scan as new local versions. Calls while a scan is waiting
   * in the queue share it (a bulk write fires one change event per document).
   */
  scan(): Promise<void> {
    this.dirty = true;
    this.pendingScan ??= this.serial(() => {
      this.pendingScan = undefined;
      return this.scanNow();
    });
    return this.pendingScan;
  }

  /** Record writes the change events reported (no storage query when there were none). */
  settle(): Promise<void> {
    return this.dirty ? this.scan() : this.idle();
  }

  /**
   * Whether a change event is a write Ferry did not make (or has not recorded yet). Ferry's own
   * writes do not need a scan (their change events come before their metadata is saved), and
   * scanning the storage's change feed is the costly part of a sync.
   */
  isForeignWrite(id: string, doc: StoredDoc | undefined): boolean {
    return doc === undefined || (this.metas.get(id)?.rev !== doc._rev && !receivedVersion(doc));
  }

  /**
   * Apply versions received from `from` (a peer or a relay sender). `state` (e.g. the new checkpoint
   * for that peer, or rows that depend on the outcome) is saved in the same write as the last of the
   * batch's metadata. A version that
   * came without attachment data this device lacks is refused (`rejected`), or, when `askForData`
   * says so for its document, nothing is applied and it is reported in `lacking`.
   */
  apply(
    changes: Change[],
    from: Source,
    state: StateRows = [],
    askForData?: (id: string) => boolean,
  ): Promise<ApplyOutcome> {
    return this.serial(() => this.applyNow(changes, from, state, askForData));
  }

  /**
   * The next batch of this device's log after `cursor`, skipping versions that came from the
   * store `to` (see storeId). `newSeq` is the log position the batch reaches.
   */
  changesSince(cursor: number, to: string, limits: BatchLimits, holdsData?: HoldsData): Promise<Batch> {
    return this.serial(async () => {
      await this.scanNow();
      for (;;) {
        const { picked, newSeq } = this.pick(cursor, to, limits.count);
        const changes = await this.read(picked, holdsData);
        if (changes) return this.cut(changes, picked, newSeq, limits.bytes);
        await this.catchUp(picked);
      }
    });
  }

  /**
   * The same batch as changesSince, at once, when every version in it is in hand (recorded from a
   * change event or written by an apply) and may be sent: a live write goes out without
   * waiting in the queue behind the task that recorded it, or reading the document back. A version
   * and the document content at its `_rev` never change, so the batch is right whatever runs in the
   * queue meanwhile. Undefined when only the queue can serve it, and while the log may lack an app
   * write (one to scan for, or one whose change event is waiting to be recorded): a batch that says
   * "no more" must not come before it.
   */
  changesInHand(cursor: number, to: string, limits: BatchLimits, holdsData?: HoldsData): Batch | undefined {
    if (this.sendable < this.head || this.dirty || this.pendingRecord) return undefined;
    const { picked, newSeq } = this.pick(cursor, to, limits.count);
    for (const meta of picked) {
      if (travelsWithContent(meta) && this.recorded.get(meta.id)?._rev !== meta.rev) return undefined;
    }
    const changes = this.versions(picked, this.recorded);
    // Attachment data is read from storage: only the queue can serve a version that needs it.
    if (!changes || changes.some((change, i) => hasAttachments(change) && !holdsData?.(picked[i]!))) {
      return undefined;
    }
    return this.cut(changes, picked, newSeq, limits.bytes);
  }

  /** Up to `count` current versions after `cursor` for the store `to`, and the log position reached. */
  private pick(cursor: number, to: string, count: number): { picked: DocMeta[]; newSeq: number } {
    let newSeq = cursor;
    const picked: DocMeta[] = [];
    let i = this.firstAfter(cursor);
    for (; i < this.log.length && picked.length < count; i++) {
      const entry = this.log[i]!;
      const meta = this.metas.get(entry.id)!;
      if (meta.seq !== entry.seq) continue; // superseded by a later entry
      newSeq = entry.seq;
      if (meta.via !== to) picked.push(meta);
    }
    // The whole rest of the log: the batch reaches the head (positions skipped at a start are empty).
    if (i === this.log.length) newSeq = this.head;
    return { picked, newSeq };
  }

  /**
   * Keep one push well under the session's message limit: cut after the change that crosses the
   * byte budget (a single document larger than the budget still travels, alone).
   */
  private cut(changes: Change[], picked: DocMeta[], newSeq: number, budget: number): Batch {
    let bytes = 0;
    for (let i = 0; i < changes.length; i++) {
      bytes += approximateSize(changes[i]!);
      if (bytes > budget && i + 1 < changes.length) {
        changes.length = i + 1;
        newSeq = picked[i]!.seq;
        break;
      }
    }
    return { changes, metas: picked.slice(0, changes.length), newSeq, more: newSeq < this.head };
  }

  /** The current versions of some documents (for the relay). */
  current(ids: string[]): Promise<Change[]> {
    return this.serial(async () => {
      for (;;) {
        const metas = ids.map((id) => this.metas.get(id)).filter((m): m is DocMeta => m !== undefined);
        const changes = await this.read(metas);
        if (changes) return changes;
        await this.catchUp(metas);
      }
    });
  }

  /** Documents whose current version was written on this device after log position `seq`. */
  localIdsAfter(seq: number): string[] {
    const ids: string[] = [];
    for (let i = this.firstAfter(seq); i < this.log.length; i++) {
      const entry = this.log[i]!;
      const meta = this.metas.get(entry.id)!;
      if (meta.seq === entry.seq && meta.local) ids.push(entry.id);
    }
    return ids;
  }

  /**
   * Forgets the deletes RxDB's cleanup purged from the storage: their metadata goes as their
   * tombstones went, and peers that ask from before them no longer get them. Only a delete stamped
   * at or before `stampedBy` (ms) can have been purged yet, and one made here is kept until it
   * reached every known device (`ownThrough`: see RelayOutbox.deliveredThrough). A delete of a
   * document this device never stored (it came as a tombstone) has no tombstone to purge: it goes
   * once stamped by `stampedBy`, as RxDB would have purged its tombstone. Returns the ids.
   */
  forgetPurged(stampedBy: number, ownThrough: number): Promise<string[]> {
    return this.serial(async () => {
      const candidates: string[] = [];
      const purged = new Set<string>();
      for (const meta of this.metas.values()) {
        if (!meta.del || (meta.local && meta.seq > ownThrough)) continue;
        const time = decodeStamp(meta.st)?.time;
        if (time === undefined || time > stampedBy) continue;
        if (meta.rev === '') purged.add(meta.id);
        else candidates.push(meta.id);
      }
      if (candidates.length > 0) {
        const stored = await this.findStored(candidates);
        for (const id of candidates) if (!stored.has(id)) purged.add(id);
      }
      if (purged.size === 0) return [];
      // The log's latest positions may go with them: the next start counts on from the head saved here.
      await this.host.store.forgetMetas(this.name, purged, [[`issued/${this.name}`, this.issued()]]);
      for (const id of purged) {
        // A document written anew counts its entry from the floor: above what a forgotten version
        // gave out, or a peer still holding that version would take the new one for older.
        this.ownFloor = Math.max(this.ownFloor, this.metas.get(id)!.vv[this.host.vectorId] ?? 0);
        this.metas.delete(id);
        this.recorded.delete(id);
      }
      this.log = this.log.filter((entry) => !purged.has(entry.id));
      return [...purged];
    });
  }

  /** Snapshot of the metadata, for tests and diagnostics. */
  meta(id: string): DocMeta | undefined {
    const meta = this.metas.get(id);
    return meta && structuredClone(meta);
  }

  /** Wait for everything queued so far. */
  idle(): Promise<void> {
    return this.serial(async () => {});
  }

  /**
   * Versions of `metas` with their stored content and attachment data (but the data `holdsData`
   * says the receiver has); undefined if a document changed under us.
   */
  private async read(metas: DocMeta[], holdsData?: HoldsData): Promise<Change[] | undefined> {
    const stored = new Map<string, StoredDoc>();
    const readIds = this.takeInHand(metas, stored);
    if (readIds.length > 0) await this.findStored(readIds, stored);
    const changes = this.versions(metas, stored);
    if (!changes) return undefined;
    return !changes.some(hasAttachments) || (await this.withAttachmentData(changes, metas, holdsData))
      ? changes
      : undefined;
  }

  /** Puts the documents of `metas` that are in hand at their version into `stored`; returns the ids to read. */
  private takeInHand(metas: DocMeta[], stored: Map<string, StoredDoc>): string[] {
    const readIds: string[] = [];
    for (const meta of metas) {
      if (!travelsWithContent(meta)) continue;
      const recent = this.recorded.get(meta.id);
      if (recent?._rev === meta.rev) stored.set(meta.id, recent);
      else readIds.push(meta.id);
    }
    return readIds;
  }

  /**
   * Sets `att` on the changes of documents with attachments (`metas` in the same order): each
   * attachment's data, in base64, unless `holdsData` says the receiver has it. False when a document
   * changed since it was read (its data may be gone with it). Data missing from a document that did
   * not change is left out: the receiver asks for it or refuses that document and says so, rather
   * than this device retrying for ever.
   */
  private async withAttachmentData(
    changes: Change[],
    metas: DocMeta[],
    holdsData: HoldsData | undefined,
  ): Promise<boolean> {
    const incomplete: number[] = [];
    for (const [i, change] of changes.entries()) {
      const stubs = change.doc?.[ATTACHMENTS] as Record<string, AttachmentStub> | undefined;
      if (!stubs || holdsData?.(metas[i]!)) continue;
      const att: Record<string, string> = {};
      for (const [attachmentId, stub] of Object.entries(stubs)) {
        try {
          const blob = await this.storage.getAttachmentData(change.id, attachmentId, stub.digest);
          att[attachmentId] = toBase64(new Uint8Array(await blob.arrayBuffer()));
        } catch {
          incomplete.push(i);
        }
      }
      change.att = att;
    }
    if (incomplete.length === 0) return true;
    const now = await this.findStored(incomplete.map((i) => changes[i]!.id));
    return incomplete.every((i) => now.get(changes[i]!.id)?._rev === metas[i]!.rev);
  }

  /** Versions of `metas` with the content of `docs`; undefined if a document is not at its version's `_rev`. */
  private versions(metas: DocMeta[], docs: Map<string, StoredDoc>): Change[] | undefined {
    const changes: Change[] = [];
    for (const meta of metas) {
      const doc = docs.get(meta.id);
      if (meta.del) {
        // A tombstone purged by RxDB's cleanup travels without content.
        if (doc && (doc._rev !== meta.rev || !doc._deleted)) return undefined;
        changes.push(versionOf(meta, doc && this.content(doc)));
        continue;
      }
      if (!doc || doc._rev !== meta.rev || doc._deleted) return undefined;
      changes.push(versionOf(meta, this.content(doc)));
    }
    return changes;
  }

  private firstAfter(cursor: number): number {
    let lo = 0;
    let hi = this.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.log[mid]!.seq <= cursor) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The stored documents of `ids` by id, added to `byId` when given. */
  private async findStored(
    ids: string[],
    byId = new Map<string, StoredDoc>(),
  ): Promise<Map<string, StoredDoc>> {
    return this.byId((await this.storage.findDocumentsById(ids, true)) as StoredDoc[], byId);
  }

  private byId(docs: StoredDoc[], byId: Map<string, StoredDoc>): Map<string, StoredDoc> {
    for (const doc of docs) byId.set(doc[this.primaryPath] as string, doc);
    return byId;
  }

  /**
   * The document as the app sees it: no `_rev`, `_meta` or `_deleted`, and `_attachments` only when
   * it has some (their descriptions: a new attachment is a new version of the document). A copy with
   * RxDB's fields deleted, last first (so the copy stays a fast object): enumerating the stored
   * document itself would give its hidden class an enum cache that lives as long as the document,
   * and RxDB's memory storage gives nearly every stored document a class of its own (~240 B per
   * document, 2.4 MB for 10,000 sent).
   */
  private content(doc: StoredDoc): Record<string, unknown> {
    const out: Record<string, unknown> = withFields(doc, {});
    const rxdbFields: string[] = [];
    for (const key in out) if (key.charCodeAt(0) === UNDERSCORE) rxdbFields.push(key);
    for (let i = rxdbFields.length - 1; i >= 0; i--) delete out[rxdbFields[i]!];
    // A deleted document's attachments are gone with it (the storage drops their data).
    const attachments = doc._deleted
      ? undefined
      : attachmentStubs(doc._attachments as Record<string, AttachmentStub> | undefined);
    if (attachments) out[ATTACHMENTS] = attachments;
    return out;
  }

  private async scanNow(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    for (;;) {
      const { documents, checkpoint } = await changedDocumentsSince(
        this.storage,
        SCAN_PAGE,
        this.scanCheckpoint as ChangeCheckpoint | undefined,
      );
      if (documents.length === 0) break;
      await this.commit(this.localVersions(documents as StoredDoc[], true), [
        [`scan/${this.name}`, checkpoint],
      ]);
      this.scanCheckpoint = checkpoint;
    }
    if (this.intent.size > 0) {
      // Left over from a crash: the scan above adopted what was written.
      this.intent.clear();
      await this.host.store.saveMetas(this.name, [], [[`intent/${this.name}`, []]]);
    }
  }

  /**
   * Some of `metas` could not be read at their version: the app wrote meanwhile, so the scan
   * records it. A document the scan does not bring either is one the storage no longer holds
   * without a change to show for it (the app deleted it while Ferry did not run, and RxDB's cleanup
   * purged the tombstone before Ferry saw it), or holds at a `_rev` the change feed never showed:
   * the storage's state is recorded as the app's write (a document gone as a delete made now), so
   * that the read goes on instead of scanning again for ever.
   */
  private async catchUp(metas: DocMeta[]): Promise<void> {
    this.dirty = true;
    const head = this.head;
    await this.scanNow();
    if (this.head !== head) return; // the scan recorded the app's writes: the caller reads again
    const ids = metas.map((meta) => meta.id);
    const stored = await this.findStored(ids);
    const unseen: StoredDoc[] = [];
    for (const id of ids) {
      const meta = this.metas.get(id);
      const doc = stored.get(id);
      if (doc && doc._rev !== meta?.rev) unseen.push(doc);
      else if (!doc && meta && !meta.del) unseen.push(this.gone(id));
    }
    if (unseen.length > 0) await this.commit(this.localVersions(unseen, true));
  }

  /** A tombstone for a document the storage lost track of (see catchUp): no content, no `_rev`. */
  private gone(id: string): StoredDoc {
    const doc = { _deleted: true, _rev: '', _attachments: {}, _meta: { lwt: now() } } as StoredDoc;
    doc[this.primaryPath] = id;
    return doc;
  }

  /**
   * The live path: the app's writes as their change events carry them, recorded without a storage
   * query (the scan checkpoint stays behind; a later scan skips them by `_rev`).
   */
  record(doc: StoredDoc): Promise<void> {
    this.eventDocs.push(doc);
    this.pendingRecord ??= this.serial(async () => {
      this.pendingRecord = undefined;
      const docs = this.eventDocs;
      this.eventDocs = [];
      this.recorded = new Map(docs.map((doc) => [doc[this.primaryPath] as string, doc]));
      const doubtful = docs.filter((doc) => this.seemsOlder(doc));
      await this.commit(
        this.localVersions(doubtful.length === 0 ? docs : docs.filter((doc) => !doubtful.includes(doc))),
      );
      if (doubtful.length === 0) return;
      // Storage says which it is: a write seen late (storage holds what the log has, or a later
      // write) or a document written anew after RxDB's cleanup purged its tombstone (its `_rev`
      // counts from 1 again).
      const current = await this.findStored([
        ...new Set(doubtful.map((doc) => doc[this.primaryPath] as string)),
      ]);
      await this.commit(this.localVersions([...current.values()], true));
    });
    return this.pendingRecord;
  }

  /** A change event's document whose `_rev` is no later than the one the log holds (and not the same). */
  private seemsOlder(doc: StoredDoc): boolean {
    const known = this.metas.get(doc[this.primaryPath] as string);
    return (
      known !== undefined &&
      known.rev !== doc._rev &&
      revisionHeight(doc._rev) <= revisionHeight(known.rev) &&
      !receivedVersion(doc)
    );
  }

  /**
   * New local versions for stored documents the app wrote (skipping what the log already has).
   * Documents from change events (`readNow` false) may come late: one whose `_rev` is no later than
   * the log's is skipped. Documents just read from storage (`readNow`) are current: only the `_rev`
   * the log holds is skipped (after RxDB's cleanup purged a tombstone, a document written anew counts
   * its `_rev` from 1), and they may have been written while Ferry did not watch: a document Ferry
   * never saw is stamped at its write's time (two devices that held copies before they first synced
   * keep the one written last, not the one of the device that started syncing last).
   */
  private localVersions(docs: StoredDoc[], readNow = false): DocMeta[] {
    const fieldMode = policyKind(this.host.policy) === 'fields';
    const self = this.host.vectorId;
    const written = new Map<string, DocMeta>();
    for (const doc of docs) {
      const id = doc[this.primaryPath] as string;
      const known = written.get(id) ?? this.metas.get(id);
      // Ferry's own write, or a write the log already holds (or an older one, seen late).
      if (known && (readNow ? doc._rev === known.rev : revisionHeight(doc._rev) <= revisionHeight(known.rev)))
        continue;
      const intended = this.intent.get(id);
      const stamp = receivedVersion(doc);
      const version = stamp ?? (intended?.rev === doc._rev ? intended.version : undefined);
      if (version) {
        // Ferry wrote this version and died before saving its metadata: adopt it as it was
        // written, not as a new local write (which would outrank the origin's later edits). A
        // resolution this device made stays its to relay: no one else may hold it.
        this.host.clock.observe(version.st);
        const adopted: DocMeta = {
          id,
          rev: doc._rev,
          st: version.st,
          vv: version.vv,
          del: doc._deleted,
          seq: 0,
          via: '',
          local: stamp?.own === true,
        };
        if (version.fs) adopted.fs = version.fs;
        withAttachmentDigests(adopted, doc);
        written.set(id, adopted);
        continue;
      }
      // Only a document written before the store first ran is stamped at its write time. One written
      // since is a write whose metadata a crash lost (peers may hold it under a later stamp, if a
      // peer's clock had carried this one ahead) or one made while Ferry did not run.
      const before = this.since === undefined || (doc._meta?.lwt ?? 0) < this.since;
      const st =
        readNow && !known && before ? this.host.clock.stampAt(doc._meta?.lwt) : this.host.clock.now();
      const meta: DocMeta = {
        id,
        rev: doc._rev,
        st,
        vv: advanceOwn(known?.vv, self, this.ownFloor),
        del: doc._deleted,
        seq: 0,
        via: '',
        local: true,
      };
      if (fieldMode) {
        meta.fs = stampFields(
          known?.fs,
          this.content(doc),
          doc._deleted,
          st,
          this.primaryPath,
          this.withAttachments,
        );
      }
      withAttachmentDigests(meta, doc);
      written.set(id, meta);
    }
    return [...written.values()];
  }

  /** What a start must skip past: the log head and own vector entry this run may give out unsaved. */
  private issued(): { seq: number; own: number; since?: number } {
    return {
      seq: this.head,
      own: this.ownReserved,
      ...(this.since === undefined ? {} : { since: this.since }),
    };
  }

  /** Give new versions their log positions, persist them, and tell the host (before saving, when small). */
  private async commit(metas: DocMeta[], state: Array<[string, unknown]> = []): Promise<void> {
    if (metas.length === 0) {
      await this.host.store.saveMetas(this.name, [], state);
      return;
    }
    this.appendToLog(metas);
    let own = 0;
    for (const meta of metas) own = Math.max(own, meta.vv[this.host.vectorId] ?? 0);
    const reserving = own > this.ownReserved;
    if (reserving) {
      this.ownReserved = own + UNSAVED_MAX;
      state = [...state, [`issued/${this.name}`, this.issued()]];
    }
    // Sent before it is saved only when small, and within the saved bound of own entries.
    const early = metas.length <= UNSAVED_MAX && !reserving;
    if (early) {
      this.announce(metas);
      // Sessions write what was just queued in a microtask: let it reach the wire before this save.
      await Promise.resolve();
    }
    await this.host.store.saveMetas(this.name, metas, state);
    if (!early) this.announce(metas);
  }

  private appendToLog(metas: DocMeta[]): void {
    for (const meta of metas) {
      meta.seq = ++this.head;
      if (meta.attDigests !== undefined) {
        const previous = this.metas.get(meta.id);
        meta.attSince = previous?.attDigests === meta.attDigests ? (previous.attSince ?? meta.seq) : meta.seq;
      }
      this.metas.set(meta.id, meta);
      this.log.push({ seq: meta.seq, id: meta.id });
    }
    if (this.log.length > 2 * this.metas.size + 1000) {
      this.log = [...this.metas.values()]
        .sort((a, b) => a.seq - b.seq)
        .map((m) => ({ seq: m.seq, id: m.id }));
    }
  }

  private announce(metas: DocMeta[]): void {
    this.sendable = this.head;
    this.host.onVersions(this, metas);
  }

  private async applyNow(
    changes: Change[],
    from: Source,
    state: StateRows,
    askForData: ((id: string) => boolean) | undefined,
  ): Promise<ApplyOutcome> {
    const outcome: ApplyOutcome = { rejected: [], lacking: [], conflicts: [], created: [] };
    if (changes.length === 0) {
      // An empty push still moves the checkpoint (its range held only this device's own versions,
      // or nothing yet): unsaved, the next start asks from the old one and gets them all back.
      await this.commit([], typeof state === 'function' ? state(outcome) : state);
      return outcome;
    }
    const data = receivedData(changes);
    let pending = changes;
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (attempt === MAX_APPLY_ATTEMPTS) {
        throw new FerryError('INTERNAL', `documents of ${this.name} kept changing while a diff was applied`);
      }
      if (this.dirty) await this.scanNow();
      const stored = await this.findStored([...new Set(pending.map((c) => c.id))]);
      // An app write whose change event is still queued behind this apply: record it first, or the
      // remote version would be compared with the old metadata but the new content (and merge into
      // a version vector the other devices already hold with different content).
      const unrecorded = this.unrecorded(stored);
      if (unrecorded.length > 0) await this.commit(this.localVersions(unrecorded, true));
      if (askForData && attempt === 0) {
        outcome.lacking = lackingData(pending, stored, data).filter(askForData);
        if (outcome.lacking.length > 0) return outcome;
      }
      this.host.clock.observeAll(pending.map((remote) => remote.st));
      const decisions = new Map<string, Decision>();
      // Awaited only when the app's conflict handler runs: a microtask per document is a tenth of a
      // large batch's time.
      let waiting = this.decideFrom(0, pending, stored, from, decisions);
      while (waiting) {
        addDecision(decisions, pending[waiting.index]!.id, await waiting.decision);
        waiting = this.decideFrom(waiting.index + 1, pending, stored, from, decisions);
      }
      const { retry, rejected, revs, written } = await this.write(decisions, stored, data);
      this.recorded = written;
      outcome.rejected.push(...rejected);
      const committed = this.decidedMetas(decisions, retry, rejected, revs, outcome);
      // The state goes with the last write of the batch's metadata.
      const rows = retry.size > 0 ? [] : typeof state === 'function' ? state(outcome) : state;
      await this.commit(committed, rows);
      pending = pending.filter((c) => retry.has(c.id));
      if (pending.length > 0) this.dirty = true; // the app wrote under us: record that write first
    }
    return outcome;
  }

  // The per-document loops of an apply (and of reading a batch to send) are small synchronous
  // methods: V8 optimizes a hot loop in an async method by compiling the whole method, and the
  // receiving device of a first sync spent ~200 ms of CPU (on its two cores, shared with the
  // sender) compiling applyNow three times and write twice.

  /** Stored documents whose `_rev` the log does not hold: app writes not recorded yet. */
  private unrecorded(stored: Map<string, StoredDoc>): StoredDoc[] {
    const docs: StoredDoc[] = [];
    for (const doc of stored.values()) {
      if (this.metas.get(doc[this.primaryPath] as string)?.rev !== doc._rev) docs.push(doc);
    }
    return docs;
  }

  /**
   * Decides `pending` from index `start` on into `decisions`, until a decision that must be awaited
   * (the app's conflict handler): that one is returned with its index.
   */
  private decideFrom(
    start: number,
    pending: Change[],
    stored: Map<string, StoredDoc>,
    from: Source,
    decisions: Map<string, Decision>,
  ): { index: number; decision: Promise<Decision | undefined> } | undefined {
    for (let i = start; i < pending.length; i++) {
      const remote = pending[i]!;
      const earlier = decisions.get(remote.id);
      const current = earlier ? earlier.version : this.currentVersion(remote.id, stored.get(remote.id));
      const decision = this.decide(current, remote, from, earlier?.local);
      if (decision instanceof Promise) return { index: i, decision };
      addDecision(decisions, remote.id, decision);
    }
    return undefined;
  }

  /** The metadata of the decided versions that were written (or needed no write); conflicts into `outcome`. */
  private decidedMetas(
    decisions: Map<string, Decision>,
    retry: Set<string>,
    rejected: ApplyOutcome['rejected'],
    revs: Map<string, string>,
    outcome: ApplyOutcome,
  ): DocMeta[] {
    const rejectedIds = new Set(rejected.map((r) => r.id));
    const committed: DocMeta[] = [];
    for (const [id, decision] of decisions) {
      if (retry.has(id) || rejectedIds.has(id)) continue;
      const { version } = decision;
      const meta: DocMeta = {
        id,
        rev: revs.get(id) ?? '',
        st: version.st,
        vv: version.vv,
        del: version.del,
        seq: 0,
        via: decision.via,
        local: decision.local,
      };
      // Set after, not spread in: V8 builds a literal with a conditional spread on a slow path.
      if (version.fs) meta.fs = version.fs;
      if (!version.del && version.doc?.[ATTACHMENTS]) withAttachmentDigests(meta, version.doc);
      committed.push(meta);
      if (decision.conflict) {
        outcome.conflicts.push(decision.conflict);
        if (decision.created) outcome.created.push({ conflict: decision.conflict, resolution: version });
      }
    }
    return committed;
  }

  private currentVersion(id: string, doc: StoredDoc | undefined): Change | undefined {
    const meta = this.metas.get(id);
    if (!meta) return undefined;
    return versionOf(meta, doc && this.content(doc));
  }

  /** `ownEarlier`: whether an earlier decision in this batch made `current` this device's to relay. */
  private decide(
    current: Change | undefined,
    remote: Change,
    from: Source,
    ownEarlier: boolean | undefined,
  ): Decision | undefined | Promise<Decision | undefined> {
    if (!current) return { version: remote, via: from.store, local: false };
    const order = compareVectors(current.vv, remote.vv);
    // One vector names one version. Another stamp under it means its writer used its counters twice
    // (a database restored from a backup that nothing told apart, or a device that lies): a conflict,
    // settled alike on every device whichever copy it saw first, never two devices each keeping theirs.
    if (order === 'local' || (order === 'equal' && remote.st === current.st)) return undefined;
    const ownCurrent = ownEarlier ?? this.metas.get(remote.id)?.local === true;
    // A later version that carries this device's write unchanged (a join another device made of it
    // and a concurrent version, which is no one's own) stays this device's to relay: devices met
    // only through the relay that missed the write may get it from no one else.
    if (order === 'remote')
      return { version: remote, via: from.store, local: ownCurrent && sameContent(current, remote) };
    return this.resolveConflict(current, remote, from, ownCurrent, order === 'equal');
  }

  /**
   * Two concurrent versions: the policy decides (the app's handler may take its time). A resolution
   * of this device's own write is this device's to relay, like the write: it may be the only
   * version that carries it (a peer that was sent the write may never have received it).
   * `sameVector`: two versions under one vector. The per-field merge would make a third under it
   * too, which a device holding the copy with the same stamp would take for its own: the later
   * stamp wins whole instead. The app's handler makes a version under a new vector, as ever.
   */
  private async resolveConflict(
    current: Change,
    remote: Change,
    from: Source,
    ownCurrent: boolean,
    sameVector = false,
  ): Promise<Decision> {
    const policy = this.host.policy;
    const rule = sameVector && policyKind(policy) === 'fields' ? 'lww' : policy;
    const { version, created } = await resolveConcurrent(rule, current, remote, {
      primaryPath: this.primaryPath,
      withAttachments: this.withAttachments,
      clock: this.host.clock,
      vectorId: this.host.vectorId,
      ownFloor: this.ownFloor,
    }).catch((error: unknown) => {
      // The app's handler threw (only it can: the built-in rules are pure). Named, not taken for Ferry's fault.
      throw new FerryError(
        'BAD_ARGUMENT',
        `the app's conflict handler threw while settling ${this.name}/${remote.id}: ${(error as Error)?.message ?? String(error)}`,
        { cause: error },
      );
    });
    const via = deepEqualVersion(version, remote) ? from.store : '';
    // Equal contents are no conflict, but the join still carries this device's write when `current`
    // was its to relay (two devices resolving one conflict alike: each made a version, and neither
    // may have reached a device that was offline).
    if (sameContent(current, remote)) return { version, via, local: ownCurrent };
    const conflict: FerryConflict = {
      collection: this.name,
      id: remote.id,
      local: current,
      // Recorded and shown without attachment data (the descriptions say which attachments).
      remote: withoutAttachmentData(remote),
      resolved: withoutAttachmentData(version),
      from: from.device,
      policy: policyKind(policy),
    };
    return { version, via, local: created || ownCurrent, conflict, created };
  }

  /**
   * Write the decided versions whose content differs from what is stored; report 409s and refusals.
   * `data`: the attachment data that arrived, by digest.
   */
  private async write(
    decisions: Map<string, Decision>,
    stored: Map<string, StoredDoc>,
    data: Map<string, string>,
  ) {
    const { rows, revs, rejected } = this.rowsToWrite(decisions, stored, data);
    const retry = new Set<string>();
    let written = new Map<string, StoredDoc>();
    if (rows.length > 0) {
      const result = await this.storage.bulkWrite(rows, WRITE_CONTEXT);
      const failed = new Set<string>();
      for (const error of result.error) {
        failed.add(error.documentId);
        if (error.status === 409) retry.add(error.documentId);
        else rejected.push({ id: error.documentId, error });
      }
      written = this.writtenDocs(rows, failed);
    }
    return { retry, rejected, revs, written };
  }

  private writtenDocs(rows: BulkWriteRow<Record<string, unknown>>[], failed: Set<string>) {
    const written = new Map<string, StoredDoc>();
    for (const { document } of rows) {
      const id = document[this.primaryPath] as string;
      if (!failed.has(id)) written.set(id, document);
    }
    return written;
  }

  /** The storage rows for the decided versions (none where the stored content is already theirs). */
  private rowsToWrite(
    decisions: Map<string, Decision>,
    stored: Map<string, StoredDoc>,
    data: Map<string, string>,
  ) {
    const rows: BulkWriteRow<Record<string, unknown>>[] = [];
    const revs = new Map<string, string>();
    const rejected: Array<{ id: string; error: unknown }> = [];
    const token = this.collection.database.token;
    for (const [id, { version, local }] of decisions) {
      const previous = stored.get(id);
      if (version.del && !version.doc) {
        if (!previous || previous._deleted) {
          revs.set(id, previous?._rev ?? '');
          continue;
        }
        const rev = createRevision(token, previous);
        // The storage drops a deleted document's attachment data: its tombstone lists none either.
        const document = withFields(previous, {
          _deleted: true,
          _attachments: {},
          _meta: { lwt: now(), ferry: stampOf(rev, version, local) },
          _rev: rev,
        });
        rows.push({ previous, document });
        revs.set(id, document._rev);
        continue;
      }
      // A live version, or a delete with the tombstone's content (per-field policy). A delete stamps
      // the attachments removed (see stampFields), but one made by an earlier Ferry may still name
      // some (merged from a concurrent edit): the stored tombstone lists none, since the storage
      // drops their data with the delete and RxDB's upsert over a tombstone can carry its list into
      // the revived document, without the data.
      const content = version.del ? withoutAttachments(version.doc) : version.doc;
      if (previous && previous._deleted === version.del && deepEqual(this.content(previous), content ?? {})) {
        revs.set(id, previous._rev);
        continue;
      }
      let attachments: StoredDoc['_attachments'];
      try {
        attachments = version.del
          ? {}
          : attachmentsToWrite(version.doc?.[ATTACHMENTS], previous, data, !this.transformsAttachments);
      } catch (error) {
        rejected.push({ id, error });
        continue;
      }
      const rev = createRevision(token, previous);
      // The primary key set apart: a literal with a computed key is built on V8's slow path.
      const document: StoredDoc = withFields(version.doc ?? {}, {
        _deleted: version.del,
        _attachments: attachments,
        _meta: { lwt: now(), ferry: stampOf(rev, version, local) },
        _rev: rev,
      });
      if (document[this.primaryPath] !== id) document[this.primaryPath] = id;
      // A tombstone may still list attachments whose data the storage dropped with the delete (RxDB's
      // own remove() keeps the list): written as the previous state, the storage would take an equal
      // digest for data it still holds. Without the list, it stores the data that arrived.
      const before = previous?._deleted ? withFields(previous, { _attachments: {} }) : previous;
      rows.push(before ? { previous: before, document } : { document });
      revs.set(id, document._rev);
    }
    return { rows, revs, rejected };
  }
}

/**
 * The version Ferry wrote into a document, kept in the document's own `_meta` (RxDB allows extra
 * fields there), so a received version and the document are stored in one write: after a crash
 * before its metadata is saved, the scan adopts it instead of taking it for the app's write.
 * `r` is the `_rev` it was written at: an app write keeps RxDB's `_meta` (or drops it) but never
 * keeps the `_rev`. `own`: the version is this device's to relay (a resolution it made, or one of
 * its own write), which a version adopted as received would not be.
 */
type FerryStamp = {
  r: string;
  st: string;
  vv: Change['vv'];
  fs?: Change['fs'];
  own?: true;
};

function stampOf(rev: string, version: Change, own: boolean): FerryStamp {
  const stamp: FerryStamp = { r: rev, st: version.st, vv: version.vv };
  if (version.fs) stamp.fs = version.fs;
  if (own) stamp.own = true;
  return stamp;
}

/** The version of a document as Ferry received and wrote it, unless something wrote it since. */
function receivedVersion(doc: StoredDoc): FerryStamp | undefined {
  const stamp = (doc._meta as { ferry?: FerryStamp }).ferry;
  return stamp?.r === doc._rev ? stamp : undefined;
}

/**
 * A copy of `source` with `fields` set on it. V8 builds this ~10x faster than a spread literal with
 * fields after the spread (measured on documents parsed from JSON, the hot path of a sync). A
 * `__proto__` key, which JSON can carry, is copied as a plain field, as a spread would.
 */
function withFields<T extends object, F extends object>(source: T, fields: F): T & F {
  const copy = Object.hasOwn(source, '__proto__') ? { ...source } : Object.assign({}, source);
  return Object.assign(copy, fields);
}

/** A version carries its stored content unless it is a delete (tombstones travel only under the per-field policy). */
const travelsWithContent = (meta: DocMeta): boolean =>
  !meta.del || (meta.fs !== undefined && meta.rev !== '');

/** RxDB revisions are `<height>-<hash>`; a document's height grows with every write to it. */
const revisionHeight = (rev: string): number => (rev ? Number.parseInt(rev, 10) : 0);

const deepEqualVersion = (a: Change, b: Change) =>
  a.st === b.st && a.del === b.del && deepEqual(a.vv, b.vv) && deepEqual(a.doc, b.doc);

function addDecision(decisions: Map<string, Decision>, id: string, decision: Decision | undefined): void {
  if (!decision) return;
  const earlier = decisions.get(id);
  decisions.set(id, earlier ? mergeDecisions(earlier, decision) : decision);
}

/** Two versions of one document in the same batch: the later decision already started from the earlier. */
function mergeDecisions(earlier: Decision, later: Decision): Decision {
  return {
    ...later,
    local: earlier.local || later.local,
    ...(later.conflict
      ? {}
      : earlier.conflict
        ? { conflict: earlier.conflict, created: earlier.created }
        : {}),
  };
}
