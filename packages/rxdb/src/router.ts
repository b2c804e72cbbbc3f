import {
  type DiffRelay,
  FerryError,
  fromUtf8,
  type PeerMessage,
  type PeerNetwork,
  type RelayedDiff,
} from '@ferry/core';
import { type DiffNack, type RelayDiff, relayDiffChecker, SYNC_OPS, syncMessage } from './wire.js';

/** What the router needs of a replication running on its network. */
export interface RoutedReplication {
  /** Handle a sync message of one of its collections (or, for the oldest, of no one's). */
  handleMessage(peer: string, message: PeerMessage): void;
  /** Takes this relay diff of one of its collections now (false while paused or stopped). */
  takesRelayDiff(diff: RelayedDiff, parsed: RelayDiff): boolean;
  /** Apply a relay diff of one of its collections durably; resolves to the documents it held. */
  applyRelayDiff(diff: RelayedDiff, parsed: RelayDiff): Promise<number>;
  report(error: unknown): void;
}

const OPS = new Set<string>(Object.values(SYNC_OPS));
/** Diffs read from the mailbox per page (besides those left in it). */
const PULL_PAGE = 1_000;

/**
 * The replications running on one PeerNetwork (one device), each owning some collections by the
 * name peers know them under. Sync messages go to the collection's owner; the device's relay
 * mailbox is read once for all of them, each diff applied by its collection's owner.
 */
export class SyncRouter {
  private static readonly routers = new WeakMap<PeerNetwork, SyncRouter>();

  /** Collection name -> the replication that claimed it, once it runs (undefined while it starts). */
  private readonly owners = new Map<string, RoutedReplication | undefined>();
  /** Running replications, oldest first: the oldest answers messages of collections no one owns. */
  private readonly running: RoutedReplication[] = [];
  private readonly pulls = new Map<DiffRelay, { current?: Promise<number>; next?: Promise<number> }>();

  private constructor(private readonly network: PeerNetwork) {}

  static of(network: PeerNetwork): SyncRouter {
    let router = SyncRouter.routers.get(network);
    if (!router) {
      router = new SyncRouter(network);
      SyncRouter.routers.set(network, router);
    }
    return router;
  }

  /**
   * Reserve collection names for a replication about to start: two owners of one name would answer
   * each other's peers. Returns the release.
   */
  claim(names: string[]): () => void {
    const taken = names.filter((name) => this.owners.has(name));
    if (taken.length > 0) {
      throw new FerryError(
        'BAD_ARGUMENT',
        `replicateFerry: this network already carries a replication of ${taken.join(', ')}; ` +
          'cancel() it first, or sync that collection under another name',
      );
    }
    // Listening from the claim on: a request that comes while the replication starts is answered.
    if (this.owners.size === 0) this.network.on('message', this.onMessage);
    for (const name of names) this.owners.set(name, undefined);
    return () => {
      for (const name of names) this.owners.delete(name);
      if (this.owners.size === 0) this.network.off('message', this.onMessage);
    };
  }

  /** The replication runs: messages of its claimed collections go to it from now on. */
  attach(replication: RoutedReplication, names: string[]): void {
    for (const name of names) this.owners.set(name, replication);
    this.running.push(replication);
  }

  detach(replication: RoutedReplication): void {
    const index = this.running.indexOf(replication);
    if (index < 0) return;
    this.running.splice(index, 1);
    for (const [name, owner] of this.owners) if (owner === replication) this.owners.set(name, undefined);
  }

  private readonly onMessage = (peer: string, message: PeerMessage): void => {
    if (!OPS.has(message.op)) return;
    const collection = (message.data as { collection?: unknown } | null)?.collection;
    const named = typeof collection === 'string' && this.owners.has(collection);
    // Anything of a collection no one claimed is answered by the oldest.
    const handler = named ? this.owners.get(collection) : this.running[0];
    if (handler) handler.handleMessage(peer, message);
    else if (named && message.op === SYNC_OPS.syncInit) this.answerStarting(peer, collection, message.data);
  };

  /**
   * A request for a claimed collection whose replication is still starting (or waits for
   * leadership, or starts paused) is answered as a paused one would answer it: the peer stops waiting
   * for this device and relays to it meanwhile, and this device asks it back once it runs (see
   * askBack). Unanswered, the peer waited for good when the replication started paused.
   */
  private answerStarting(peer: string, collection: string, data: unknown): void {
    const stream = (data as { stream?: unknown }).stream;
    if (typeof stream !== 'string') return;
    const nack: DiffNack = {
      collection,
      stream,
      baseVersion: '',
      reason: 'paused',
      message: 'replication is starting',
    };
    // Unsent (the session closed meanwhile), it is not awaited: a peer that left waits for nothing.
    this.network.send(peer, syncMessage(SYNC_OPS.diffNack, nack), { lane: 'sync' }).catch(() => undefined);
  }

  /**
   * Read this device's relay mailbox through `relay`: every diff is applied by its collection's
   * replication, then acknowledged (so the server deletes it). A diff of a collection that no
   * replication here takes now (not started, paused) stays in the mailbox for a later pull: it is not
   * lost because the replications of a device start one after another. One pull per relay at a time;
   * a call during one gets one more after it (the running one may have read the mailbox too early).
   */
  pull(relay: DiffRelay, caller: RoutedReplication): Promise<number> {
    let state = this.pulls.get(relay);
    if (!state) {
      state = {};
      this.pulls.set(relay, state);
    }
    const pulls = state;
    if (pulls.current) {
      pulls.next ??= pulls.current
        .catch(() => 0)
        .then(() => {
          pulls.next = undefined;
          return this.pull(relay, caller);
        });
      return pulls.next;
    }
    pulls.current = this.pullNow(relay, caller).finally(() => {
      pulls.current = undefined;
    });
    return pulls.current;
  }

  private async pullNow(relay: DiffRelay, caller: RoutedReplication): Promise<number> {
    let applied = 0;
    const left = new Set<string>();
    for (;;) {
      const diffs = (await relay.pull({ limit: PULL_PAGE + left.size })).filter((d) => !left.has(d.diffId));
      if (diffs.length === 0) return applied;
      const done: string[] = [];
      for (const diff of diffs) {
        const parsed = parseRelayDiff(diff.payload);
        if (!parsed) {
          caller.report(
            new FerryError(
              'SCHEMA_MISMATCH',
              `relay diff ${diff.diffId} from ${diff.senderClientId} is not a Ferry DB diff`,
            ),
          );
          done.push(diff.diffId);
          continue;
        }
        const owner = this.owners.get(parsed.collection);
        if (!owner?.takesRelayDiff(diff, parsed)) {
          left.add(diff.diffId);
          continue;
        }
        applied += await owner.applyRelayDiff(diff, parsed);
        done.push(diff.diffId);
      }
      // Acknowledge only after the page is durably applied: a crash before this re-serves it.
      if (done.length > 0) await relay.ack(done);
    }
  }
}

function parseRelayDiff(payload: Uint8Array): RelayDiff | undefined {
  try {
    const value: unknown = JSON.parse(fromUtf8(payload));
    return relayDiffChecker.Check(value) ? value : undefined;
  } catch {
    return undefined;
  }
}
