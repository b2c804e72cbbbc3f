// Bundled for Chromium by browser.test.ts: a Ferry device in a page: RxDB on Dexie (IndexedDB), the
// MeshNetwork on the browser's native WebRTC, and replicateFerry, driven through a page global.
import { canGenerateCode, fromBase64, MeshNetwork, useInterpretedChecks } from '@ferry/core';
import { type FerryReplicationState, MetaStore, replicateFerry } from '@ferry/rxdb';
import { addRxPlugin, createRxDatabase, type RxCollection, type RxDatabase } from 'rxdb';
import { RxDBAttachmentsPlugin } from 'rxdb/plugins/attachments';
import { RxDBLeaderElectionPlugin } from 'rxdb/plugins/leader-election';
import { getRxStorageDexie } from 'rxdb/plugins/storage-dexie';
import { todoSchema } from '../support-schema.js';

// simple-peer's streams call process.nextTick at run time (see core/test/browser/mesh-entry.ts).
(globalThis as { process?: unknown }).process ??= {
  env: {},
  nextTick: (fn: (...args: unknown[]) => void, ...args: unknown[]) => queueMicrotask(() => fn(...args)),
};

type Todo = { id: string; title: string; done?: boolean };
let db: RxDatabase | undefined;
let todos: RxCollection<Todo>;
let mesh: MeshNetwork | undefined;
let replication: FerryReplicationState | undefined;

addRxPlugin(RxDBLeaderElectionPlugin);
addRxPlugin(RxDBAttachmentsPlugin);
// The page's Content-Security-Policy refuses 'unsafe-eval': say so, and Ferry does not even try.
useInterpretedChecks();

const api = {
  async start(url: string, accountKey: string, clientId: string, peerId: string): Promise<void> {
    await api.open(clientId, false);
    await api.replicate(url, accountKey, clientId, peerId);
  },
  /** Opens this device's database; `tabs`: as one of several tabs of the app (multiInstance). */
  async open(clientId: string, tabs: boolean): Promise<void> {
    db = await createRxDatabase({
      name: `ferry${clientId}`,
      storage: getRxStorageDexie(),
      multiInstance: tabs,
    });
    await db.addCollections({ todos: { schema: todoSchema } });
    todos = db.todos as RxCollection<Todo>;
  },
  /**
   * Connects and replicates. In a multiInstance database, only once this tab leads, as an app does:
   * one client id connecting from two tabs would have the signaling server drop one for the other.
   */
  async replicate(url: string, accountKey: string, clientId: string, peerId: string): Promise<void> {
    if (db!.multiInstance) await db!.waitForLeadership();
    mesh = new MeshNetwork({ clientId, accountKey: fromBase64(accountKey), signalingUrls: [url] });
    replication = await replicateFerry({ collections: { todos }, network: mesh });
    replication.error$.subscribe((error) => console.error('ferry error', error.code, error.message));
    if (mesh.connectedPeers().includes(peerId)) return;
    await new Promise<void>((resolve) => mesh!.on('peer-connected', (id) => id === peerId && resolve()));
  },
  async insert(docs: Todo[]): Promise<void> {
    await todos.bulkInsert(docs);
  },
  async setTitle(id: string, title: string): Promise<void> {
    await (await todos.findOne(id).exec())!.incrementalPatch({ title });
  },
  async attach(id: string, attachmentId: string, text: string): Promise<void> {
    const doc = (await todos.findOne(id).exec())!;
    await doc.putAttachment({
      id: attachmentId,
      type: 'text/plain',
      data: new Blob([text], { type: 'text/plain' }),
    });
  },
  /** A document's attachments as [id, text], read back from Dexie. */
  async attachments(id: string): Promise<Array<[string, string]>> {
    const doc = await todos.findOne(id).exec();
    return Promise.all(
      (doc?.allAttachments() ?? []).map(async (a) => [a.id, await a.getStringData()] as [string, string]),
    );
  },
  async remove(id: string): Promise<void> {
    await (await todos.findOne(id).exec())!.remove();
  },
  /** Resolves once this device has applied at least `count` received changes. */
  async received(count: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const subscription = replication!.received$.subscribe((n) => {
        if (n < count) return;
        queueMicrotask(() => subscription.unsubscribe());
        resolve();
      });
    });
  },
  /**
   * What this device's IndexedDB holds, read by a database opened only for that (no replication):
   * how many documents, and its checkpoint in `peerId`'s log (0 if none).
   */
  async stored(clientId: string, peerId: string): Promise<{ docs: number; checkpoint: number }> {
    await api.open(clientId, false);
    try {
      const docs = await todos.count().exec();
      const checkpoint = await (await MetaStore.open(db!)).get<{ seq: number }>(`cp/${peerId}/todos`);
      return { docs, checkpoint: checkpoint?.seq ?? 0 };
    } finally {
      await db!.close();
    }
  },
  async awaitInSync(): Promise<void> {
    await replication!.awaitInSync();
  },
  async docs(): Promise<Todo[]> {
    const rows = await todos.find().exec();
    return rows.map((row) => row.toMutableJSON()).sort((a, b) => a.id.localeCompare(b.id));
  },
  /** Messages this page sent compressed to `peerId` (fflate here; the Node device inflates with zlib). */
  messagesCompressed(peerId: string): number | undefined {
    return mesh?.session(peerId)?.stats.messagesCompressed;
  },
  /** Whether Ferry's schema checks are compiled here (false under a CSP without 'unsafe-eval'). */
  codeGeneration(): boolean {
    return canGenerateCode();
  },
  async close(): Promise<void> {
    await replication?.cancel();
    await mesh?.close();
    await db?.close();
  },
};

declare global {
  // eslint-disable-next-line no-var
  var ferryDevice: typeof api;
}
globalThis.ferryDevice = api;
