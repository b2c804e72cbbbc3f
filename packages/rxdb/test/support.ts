import type { AddressInfo } from 'node:net';
import {
  type DiffRelay,
  FerryError,
  isFerryError,
  MemoryHub,
  type MemoryNetwork,
  type PeerMessage,
  type RelayedDiff,
} from '@ferry/core';
import {
  addRxPlugin,
  createRevision,
  createRxDatabase,
  type RxCleanupPolicy,
  type RxCollection,
  type RxConflictHandler,
  type RxDatabase,
  type RxDocumentData,
  type RxStorage,
  type RxStorageInstance,
} from 'rxdb';
import { RxDBAttachmentsPlugin } from 'rxdb/plugins/attachments';
import { disableWarnings, RxDBDevModePlugin } from 'rxdb/plugins/dev-mode';
import { getLocalStorageMock, getRxStorageLocalstorage } from 'rxdb/plugins/storage-localstorage';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';
import {
  getRxStorageRemoteWebsocket,
  startRxStorageRemoteWebsocketServer,
} from 'rxdb/plugins/storage-remote-websocket';
import { RxDBUpdatePlugin } from 'rxdb/plugins/update';
import { wrappedValidateAjvStorage } from 'rxdb/plugins/validate-ajv';
import {
  type FerryReplicationState,
  META_COLLECTION,
  MetaStore,
  type ReplicateFerryOptions,
  replicateFerry,
} from '../src/index.js';
import { noteSchema, todoSchema } from './support-schema.js';

export { noteSchema, todoSchema };

/**
 * A device's entry in a version vector (keys are `clientId~store`): the greatest under its client id.
 */
export function entryOf(vv: Record<string, number>, clientId: string): number {
  let entry = 0;
  for (const [key, value] of Object.entries(vv))
    if (key.split('~')[0] === clientId) entry = Math.max(entry, value);
  return entry;
}

/** The client ids of a version vector's writers, sorted. */
export const writersOf = (vv: Record<string, number>): string[] =>
  [...new Set(Object.keys(vv).map((key) => key.split('~')[0]!))].sort();

/** `promise`, or a failure saying `what` once `ms` passed (a test of a fix that would otherwise hang). */
export async function within<T>(ms: number, promise: Promise<T>, what: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what())), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A row of Ferry's metadata collection, as far as the tests need it. */
type MetaRow = { k: string };

/** The storage instance of Ferry's metadata rows, below RxDB's wrapper (where Ferry writes them). */
export function metaStorage(db: { collections: object }): RxStorageInstance<MetaRow, unknown, unknown> {
  const rows = (db.collections as unknown as Record<string, RxCollection>)[META_COLLECTION]!;
  return (
    rows.storageInstance as unknown as {
      originalStorageInstance: RxStorageInstance<MetaRow, unknown, unknown>;
    }
  ).originalStorageInstance;
}

export interface Todo {
  id: string;
  title: string;
  done?: boolean;
  n?: number;
  note?: string;
}

// RxDB's dev-mode (FERRY_TEST_DEV_MODE=1): its checks of schemas and writes, and documents read from
// the storage deep-frozen, as an app in development runs it.
if (process.env.FERRY_TEST_DEV_MODE === '1') {
  disableWarnings();
  addRxPlugin(RxDBDevModePlugin);
}
addRxPlugin(RxDBUpdatePlugin);
addRxPlugin(RxDBAttachmentsPlugin);

let dbCounter = 0;

/**
 * The RxStorage the devices run on: RxDB's memory storage, or with FERRY_TEST_STORAGE=localstorage
 * or remote its localStorage or remote storage (vitest.config runs the sync suites on all three: Ferry
 * reads and writes below RxDB's wrapper and reads the storage's change feed, which each storage
 * implements its own way).
 */
const STORAGES = {
  memory: () => getRxStorageMemory(),
  localstorage: () => getRxStorageLocalstorage({ localStorage: getLocalStorageMock() }),
  remote: () => getRxStorageRemoteWebsocket({ url: remoteStorageUrl!, mode: 'storage' }),
} satisfies Record<string, () => RxStorage<unknown, unknown>>;

/**
 * RxDB's remote storage, as an app whose storage lives in another process (Electron's main process,
 * a server) has it: a memory storage behind a WebSocket, served here, in this test process.
 */
async function startRemoteStorage(): Promise<string> {
  const { serverState } = startRxStorageRemoteWebsocketServer({
    port: 0,
    host: '127.0.0.1',
    storage: getRxStorageMemory(),
  } as Parameters<typeof startRxStorageRemoteWebsocketServer>[0]);
  const server = serverState.server;
  await new Promise((resolve) => server.once('listening', resolve));
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
const remoteStorageUrl = process.env.FERRY_TEST_STORAGE === 'remote' ? await startRemoteStorage() : undefined;

export function testStorage(): RxStorage<unknown, unknown> {
  const name = process.env.FERRY_TEST_STORAGE ?? 'memory';
  if (!Object.hasOwn(STORAGES, name)) {
    throw new Error(`FERRY_TEST_STORAGE must be one of ${Object.keys(STORAGES).join(', ')}, not ${name}`);
  }
  return STORAGES[name as keyof typeof STORAGES]();
}

/**
 * One storage per simulated disk: a database reopened on it finds its data (both storages keep it per
 * database name: RxDB's localStorage mock is one store for the whole process).
 */
export const newDisk = (): { storage: RxStorage<unknown, unknown>; name: string } => ({
  storage: wrappedValidateAjvStorage({ storage: testStorage() }),
  name: `ferrytest${++dbCounter}x${Math.random().toString(36).slice(2, 8)}`,
});

export type TodoDb = RxDatabase<{
  todos: RxCollection<Todo>;
  notes: RxCollection<{ key: string; body: string }>;
}>;

/** RxDB's open-core build allows 13 open collections per process: devices open `notes` only when asked. */
export async function openDb(
  disk: { storage: RxStorage<unknown, unknown>; name: string },
  withNotes = false,
  /** The app's own conflict handlers, set on the collections as RxDB's `addCollections` takes them. */
  conflictHandlers: CollectionHandlers = {},
  /** RxDB's `cleanupPolicy` (when a test adds RxDB's cleanup plugin). */
  cleanupPolicy?: Partial<RxCleanupPolicy>,
): Promise<TodoDb> {
  const db = (await createRxDatabase({
    name: disk.name,
    storage: disk.storage,
    multiInstance: false,
    eventReduce: true,
    closeDuplicates: true,
    ...(cleanupPolicy ? { cleanupPolicy } : {}),
  })) as TodoDb;
  await db.addCollections({
    todos: { schema: todoSchema, conflictHandler: conflictHandlers.todos },
    ...(withNotes ? { notes: { schema: noteSchema, conflictHandler: conflictHandlers.notes } } : {}),
  });
  return db;
}

/** Requests the devices sent from a checkpoint inherited from a third device (property test coverage). */
export const sentInits = { inherited: 0 };

/** A device: its disk, database, network endpoint and replication; restartable. */
export class Device {
  db!: TodoDb;
  network!: MemoryNetwork;
  replication!: FerryReplicationState;
  disk = newDisk();
  online = false;
  private lastMetaWrite:
    | {
        ids: string[];
        before: RxDocumentData<MetaRow>[];
        write: RxStorageInstance<MetaRow, unknown, unknown>['bulkWrite'];
      }
    | undefined;

  constructor(
    readonly id: string,
    private readonly hub: MemoryHub,
    /** What the next start() passes to replicateFerry (a test may change it between runs). */
    readonly extra: DeviceOptions = {},
  ) {}

  async start(): Promise<this> {
    this.db = await openDb(
      this.disk,
      this.extra.withNotes,
      this.extra.conflictHandlers,
      this.extra.cleanupPolicy,
    );
    this.network = this.hub.join(this.id);
    const send = this.network.send.bind(this.network);
    this.network.send = (peer: string, message: PeerMessage) => {
      if (message.op === 'DB_SYNC_INIT' && (message.data as { inherited?: boolean } | null)?.inherited)
        sentInits.inherited++;
      return send(peer, message);
    };
    this.online = true;
    const { relayServer, withNotes, conflictHandlers, cleanupPolicy, ...rest } = this.extra;
    this.replication = await replicateFerry({
      collections: withNotes ? { todos: this.db.todos, notes: this.db.notes } : { todos: this.db.todos },
      network: this.network,
      ...(relayServer ? { relay: relayServer.client(this.id) } : {}),
      retryDelayMs: 20,
      ...rest,
    });
    this.watchMetaWrites();
    return this;
  }

  /** Process death: replication and database gone, the disk stays. */
  async stop(): Promise<void> {
    await this.replication.cancel();
    await this.network.close();
    await this.db.close();
    this.online = false;
  }

  /**
   * Process death with Ferry's last write of new versions' metadata lost: the rows it changed go
   * back to what they held (so a version sent before its metadata was saved has none on disk), and
   * nothing Ferry writes from then on lands. What Ferry had to do (record the app's last write, send it) is done
   * first; then the device drops off the network, so that nothing comes in meanwhile.
   */
  async crash(): Promise<void> {
    const settle = async () => {
      for (const name of ['todos', 'notes']) await this.replication.collection(name)?.idle();
    };
    await settle();
    await this.network.close();
    await settle();
    const storage = metaStorage(this.db);
    const undo = this.lastMetaWrite;
    storage.bulkWrite = async () => ({ error: [] });
    if (undo) {
      const now = await storage.findDocumentsById(undo.ids, true);
      const rows = undo.ids.map((id) => {
        const current = now.find((doc) => doc.k === id)!;
        const before = undo.before.find((doc) => doc.k === id) ?? { ...current, _deleted: true };
        const document = {
          ...before,
          _rev: createRevision(this.db.token, current),
          _meta: { lwt: Date.now() },
        };
        return { previous: current, document };
      });
      await undo.write(rows, 'test-crash');
    }
    await this.stop();
  }

  /** Keeps what the rows of each metadata write held before it, so that crash() can lose the last one. */
  private watchMetaWrites(): void {
    const storage = metaStorage(this.db);
    const write = storage.bulkWrite.bind(storage);
    this.lastMetaWrite = undefined;
    storage.bulkWrite = async (rows, context) => {
      const ids = rows.map((row) => row.document.k);
      const before = await storage.findDocumentsById(ids, true);
      const result = await write(rows, context);
      // Segment rows ('g…') hold versions: only a write of new versions may be lost with them
      // already sent (state rows are also written outside the commit order, and landed).
      if (ids.some((id) => id.startsWith('g'))) this.lastMetaWrite = { ids, before, write };
      return result;
    };
  }

  /** The device's storage is lost while it is down (a reinstall that keeps its client id). */
  wipe(): void {
    if (this.online) throw new Error(`${this.id} is running: stop it before wiping its disk`);
    this.disk = newDisk();
  }

  /** The app removes the collection (RxDB `collection.remove()`) while Ferry is not running: its metadata stays. */
  async removeCollection(): Promise<void> {
    if (this.online) throw new Error(`${this.id} is running: stop it before removing its collection`);
    const db = await openDb(this.disk);
    await db.todos.remove();
    await db.close();
  }

  /** The app writes while Ferry is not running (it sees the write when it next starts). */
  async writeWhileDown(todo: Todo): Promise<void> {
    const db = await openDb(this.disk);
    await db.todos.upsert(todo);
    await db.close();
  }

  /** The documents, sorted; those with attachments also list them (`attachments`: id -> text). */
  async docs(collection: 'todos' | 'notes' = 'todos'): Promise<Record<string, unknown>[]> {
    if (!this.db[collection]) return [];
    const rows = await this.db[collection].find().exec();
    const docs = await Promise.all(
      rows.map(async (row) => {
        const doc = row.toMutableJSON() as Record<string, unknown>;
        const attachments = this.db[collection].schema.jsonSchema.attachments ? row.allAttachments() : [];
        if (attachments.length > 0) {
          doc.attachments = Object.fromEntries(
            await Promise.all(attachments.map(async (a) => [a.id, await a.getStringData()])),
          );
        }
        return doc;
      }),
    );
    return docs.sort((a, b) => key(a).localeCompare(key(b)));
  }
}

const key = (doc: Record<string, unknown>) => String(doc.id ?? doc.key);

/**
 * `peer` asks `device` for its todos from a log position `device`'s store never issued, as a peer of
 * a database restored from a backup does: `device`'s sync starts over (`STALE`) unless it is paused.
 * False when the two have no session (or `device` is starting over already).
 */
export async function claimUnissuedPosition(
  peer: Device,
  device: Device,
  stream = 'forged',
): Promise<boolean> {
  const sync = device.replication.collection('todos');
  if (!sync) return false;
  const epoch = await (await MetaStore.open(device.db as unknown as RxDatabase)).epoch();
  try {
    await peer.network.send(device.id, {
      op: 'DB_SYNC_INIT',
      data: { collection: 'todos', stream, checkpoint: `${epoch}@${sync.head + 100}`, dbVersion: '' },
      timestamp: Date.now(),
      id: `${stream}-init`,
    });
    return true;
  } catch (error) {
    if (isFerryError(error, 'CLOSED')) return false;
    throw error;
  }
}

export type DeviceOptions = Partial<ReplicateFerryOptions> & {
  relayServer?: MemoryRelayServer;
  withNotes?: boolean;
  conflictHandlers?: CollectionHandlers;
  cleanupPolicy?: Partial<RxCleanupPolicy>;
};

// biome-ignore lint/suspicious/noExplicitAny: a handler of either collection's documents
export type CollectionHandlers = { todos?: RxConflictHandler<any>; notes?: RxConflictHandler<any> };

export async function startDevices(
  count: number,
  extra: DeviceOptions = {},
): Promise<{ hub: MemoryHub; devices: Device[] }> {
  const hub = new MemoryHub();
  const devices: Device[] = [];
  for (let i = 0; i < count; i++)
    devices.push(await new Device(`dev${String.fromCharCode(97 + i)}`, hub, { ...extra }).start());
  return { hub, devices };
}

/**
 * Wait until every online device reports in sync and all hold the same documents; a bounded number
 * of rounds (each round is event-driven), so a replication that never converges fails.
 */
export async function converge(devices: Device[], rounds = 20): Promise<void> {
  const online = devices.filter((d) => d.online);
  for (let round = 0; round < rounds; round++) {
    await Promise.all(online.map((d) => d.replication.awaitInSync()));
    const states = await Promise.all(
      online.map(async (d) => JSON.stringify([await d.docs('todos'), await d.docs('notes')])),
    );
    if (states.every((s) => s === states[0])) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  const states = await Promise.all(online.map(async (d) => `${d.id}: ${JSON.stringify(await d.docs())}`));
  throw new Error(`devices did not converge:\n${states.join('\n')}`);
}

/**
 * An in-memory diff server for property tests: per-device mailboxes, and faults a real server or
 * network may produce: a diff served twice, pages in another order, diffs that expired unread.
 */
export class MemoryRelayServer {
  private readonly mailboxes = new Map<string, RelayedDiff[]>();
  private readonly sequences = new Map<string, number>();
  private counter = 0;
  duplicate = false;
  reorder = false;
  /** Unreachable: every request fails, as a fetch to a server that is down does. */
  down = false;
  pushes = 0;
  failedPulls = 0;
  /** Pushes wait for it while it is set (a slow diff server); `held` counts those waiting. */
  pushGate: Promise<void> | undefined;
  held = 0;

  client(clientId: string): DiffRelay {
    return {
      push: async (targets, payload) => {
        await new Promise((resolve) => setImmediate(resolve)); // a network round trip: writes go on meanwhile
        if (this.pushGate) {
          this.held++;
          await this.pushGate.finally(() => this.held--);
        }
        if (this.down) throw new FerryError('TRANSPORT', 'diff server unreachable');
        const diffId = `d${++this.counter}`;
        const sequence = (this.sequences.get(clientId) ?? 0) + 1;
        this.sequences.set(clientId, sequence);
        this.pushes++;
        for (const target of targets) {
          const box = this.mailboxes.get(target) ?? [];
          box.push({ diffId, senderClientId: clientId, sequence, payload: payload.slice() });
          this.mailboxes.set(target, box);
        }
        return { diffId };
      },
      pull: async (options) => {
        await new Promise((resolve) => setImmediate(resolve));
        if (this.down) {
          this.failedPulls++;
          throw new FerryError('TRANSPORT', 'diff server unreachable');
        }
        let box = [...(this.mailboxes.get(clientId) ?? [])].slice(0, options?.limit ?? 3);
        if (this.reorder) box = box.reverse();
        if (this.duplicate && box.length > 0) box = [...box, box[0]!];
        return box.map((d) => ({ ...d, payload: d.payload.slice() }));
      },
      ack: async (ids) => {
        if (this.down) throw new FerryError('TRANSPORT', 'diff server unreachable');
        const box = this.mailboxes.get(clientId) ?? [];
        this.mailboxes.set(
          clientId,
          box.filter((d) => !ids.includes(d.diffId)),
        );
      },
    };
  }

  /** Drop everything waiting for a device, as a TTL expiry would. */
  expire(clientId: string): void {
    this.mailboxes.delete(clientId);
  }

  waiting(clientId: string): number {
    return this.mailboxes.get(clientId)?.length ?? 0;
  }
}
