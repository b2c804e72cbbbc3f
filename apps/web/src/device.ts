import { askPeer, listPeerModels } from '@ferry/ai';
import { deriveAccount, FerryError, MeshNetwork, RelayClient } from '@ferry/core';
import { type Change, decodeStamp, type FerryConflict, replicateFerry } from '@ferry/rxdb';
import { BehaviorSubject, combineLatest } from 'rxjs';
import { openTodoDatabase } from './db.js';
import type { ChatReply, ConflictView, Device, DeviceStatus, PeerModel } from './device-types.js';
import { newId } from './ids.js';
import { LocalDocumentRelayStateStore } from './relay-state.js';

export interface OpenDeviceOptions {
  /** URL the page was loaded from: the Ferry server that served it also runs signaling and the diff server. */
  origin: string;
}

/** A reply may not be longer than this many tokens (the demo models are small). */
const MAX_REPLY_TOKENS = 256;

/**
 * Signs this browser in as one device of the account the passphrase names: derives the account key,
 * opens this device's database, joins the account's devices through the signaling server, and keeps
 * the diff server as the mailbox for devices that are away.
 */
export async function openDevice(passphrase: string, options: OpenDeviceOptions): Promise<Device> {
  const account = await deriveAccount(passphrase);
  const cleanup: Array<() => unknown> = [await claimThisTab(account.accountId)];
  const close = async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  };
  try {
    const clientId = deviceClientId(account.accountId);
    const db = await openTodoDatabase(account.accountId);
    cleanup.push(() => db.close());
    const urls = serverUrls(options.origin);

    const network = new MeshNetwork({ clientId, accountKey: account.key, signalingUrls: [urls.signaling] });
    cleanup.push(() => network.close());
    const relay = new RelayClient({
      url: urls.relay,
      accountKey: account.key,
      clientId,
      state: new LocalDocumentRelayStateStore(db),
    });

    // Devices registered on the diff server get relay diffs even before this device first meets them.
    const knownDevices = await relay.listDevices().catch(() => [] as string[]);
    const replication = await replicateFerry({
      collections: { todos: db.todos },
      network,
      relay,
      relayHints: network.signaling,
      knownDevices: knownDevices.filter((id) => id !== clientId),
    });
    cleanup.push(() => replication.cancel());

    // The network has been connecting meanwhile: start from its current state, then follow its events.
    const status$ = new BehaviorSubject<DeviceStatus>({
      signaling: network.signaling.connected ? 'online' : 'connecting',
      peers: [],
      devices: knownDevices.filter((id) => id !== clientId),
      pendingRelay: 0,
      sent: 0,
      received: 0,
    });
    const update = (change: Partial<DeviceStatus>) => status$.next({ ...status$.value, ...change });
    cleanup.push(() => status$.complete());
    const onPeers = () => {
      const peers = network.connectedPeers().sort();
      update({ peers, devices: [...new Set([...status$.value.devices, ...peers])].sort() });
    };
    onPeers();
    network.on('peer-connected', onPeers);
    network.on('peer-disconnected', onPeers);
    network.on('error', (error) => update({ lastError: error.message }));
    network.signaling.on('connected', () => {
      update({ signaling: 'online' });
      // Back online after a network change: diffs may have been left for this device meanwhile.
      void replication.pullRelay().catch(() => undefined);
    });
    network.signaling.on('disconnected', () => update({ signaling: 'offline' }));
    relay.on('gap', (gap) =>
      update({
        lastError: `the diff server withheld diffs ${gap.from}-${gap.to} from ${gap.senderClientId}`,
      }),
    );
    const counters = combineLatest([
      replication.pendingRelay$,
      replication.sent$,
      replication.received$,
    ]).subscribe(([pendingRelay, sent, received]) =>
      update({
        pendingRelay,
        sent,
        received,
        ...(received > status$.value.received ? { lastSyncAt: Date.now() } : {}),
      }),
    );
    const errors = replication.error$.subscribe((error) => update({ lastError: error.message }));
    cleanup.push(() => {
      counters.unsubscribe();
      errors.unsubscribe();
    });

    const conflicts$ = new BehaviorSubject<ConflictView[]>((await replication.conflicts()).map(conflictView));
    const conflictFeed = replication.conflict$.subscribe((conflict) =>
      conflicts$.next([...conflicts$.value, conflictView(conflict)]),
    );
    cleanup.push(() => {
      conflictFeed.unsubscribe();
      conflicts$.complete();
    });

    return {
      accountTag: account.accountId,
      clientId,
      todos: db.todos,
      status$,
      conflicts$,
      listModels: () => listModels(network),
      ask: (model, prompt, signal) => ask(network, model, prompt, signal),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/** A version as the user reads it: the todo's fields (its id is shown once, in the conflict's heading). */
function versionValue(change: Change): unknown {
  if (change.del) return { deleted: true };
  const { id: _id, ...fields } = change.doc ?? {};
  return fields;
}

function conflictView(conflict: FerryConflict): ConflictView {
  const kept =
    conflict.resolved.st === conflict.local.st
      ? 'local'
      : conflict.resolved.st === conflict.remote.st
        ? 'remote'
        : 'merged';
  return {
    documentId: conflict.id,
    from: conflict.from,
    local: versionValue(conflict.local),
    remote: versionValue(conflict.remote),
    kept,
    resolved: versionValue(conflict.resolved),
    at: decodeStamp(conflict.resolved.st)?.time ?? Date.now(),
  };
}

/** Same origin as the page: the diff server at its base path, signaling at `signal` below it. */
function serverUrls(origin: string): { relay: string; signaling: string } {
  const base = new URL('.', origin);
  const signaling = new URL('signal', base);
  signaling.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
  return { relay: base.href, signaling: signaling.href };
}

async function listModels(network: MeshNetwork): Promise<PeerModel[]> {
  const perPeer = await Promise.all(
    network.connectedPeers().map(async (peerId) => {
      // A peer that serves nothing (or an older build that does not answer) is simply left out.
      const models = await listPeerModels(network, peerId, { timeoutMs: 5_000 }).catch(() => []);
      return models.map((model) => ({ peerId, modelId: model.id }));
    }),
  );
  return perPeer.flat();
}

function ask(network: MeshNetwork, model: PeerModel, prompt: string, signal: AbortSignal): ChatReply {
  const stream = askPeer(
    network,
    model.peerId,
    {
      modelId: model.modelId,
      messages: [{ role: 'user', content: prompt }],
      params: { maxTokens: MAX_REPLY_TOKENS },
    },
    { signal },
  );
  return {
    [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator](),
    result: stream.result.then((result) => ({
      completionTokens: result.usage.completionTokens,
      finishReason: result.finishReason,
    })),
  };
}

/**
 * The client id names this browser profile's device: it must stay the same across reloads, because
 * the diff server keeps this device's mailbox under it and peers keep sync checkpoints per device.
 */
function deviceClientId(accountTag: string): string {
  const key = `ferry.clientId.${accountTag}`;
  let clientId = localStorage.getItem(key);
  if (!clientId) {
    clientId = `web-${newId()}`;
    localStorage.setItem(key, clientId);
  }
  return clientId;
}

/**
 * Two tabs of one profile would be two devices with one client id and one database. A Web Lock lets
 * only the first tab in; the lock goes away by itself when that tab closes.
 */
function claimThisTab(accountTag: string): Promise<() => void> {
  if (!navigator.locks) return Promise.resolve(() => undefined);
  return new Promise((resolve, reject) => {
    navigator.locks
      .request(`ferry-device-${accountTag}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          reject(
            new FerryError(
              'LIMIT',
              'This account is already open in another tab of this browser; use that tab.',
            ),
          );
          return undefined;
        }
        return new Promise<void>((release) => resolve(release));
      })
      .catch(reject);
  });
}
