import type { MeshNetwork } from '@ferry/core/node';
import type { FerryReplicationState } from '@ferry/rxdb';
import { createRevision, createRxDatabase, now, type RxCollection, type RxDatabase } from 'rxdb';
import type { RxWebRTCReplicationPool, SimplePeer } from 'rxdb/plugins/replication-webrtc';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';
import { sampleRss } from '../lib/measure.js';

// One device of the rxdb suite (bench/suites/rxdb.ts), driven over IPC by the suite's process. The
// suite compiles this file to JavaScript and runs it in plain Node, as an app would ship: under tsx,
// every module a process loads costs memory for its transformed source, which would count against
// whichever system loads more modules (Ferry's sources and their dependencies). Each device imports
// only its own system: Ferry from the packages' build (dist/), the plugin from RxDB.

export type System = 'ferry' | 'plugin';

export interface PeerConfig {
  system: System;
  clientId: string;
  signalingUrl: string;
  /** Ferry: hex account key shared by both devices. Plugin: the room (topic). */
  secret: string;
  batchSize: number;
}

export type Command =
  | { cmd: 'open'; config: PeerConfig }
  | { cmd: 'insert'; count: number }
  /** Ferry: start the mesh and wait for the other device (the plugin connects inside its replication). */
  | { cmd: 'connect' }
  | { cmd: 'replicate' }
  /** Start replicating and wait until `count` documents are here; timed from the connection being usable. */
  | { cmd: 'sync'; count: number }
  /** No replication: store `count` documents as a receiver gets them (JSON batches of 500), timed. */
  | { cmd: 'floor'; count: number }
  | { cmd: 'write'; index: number }
  | { cmd: 'peak' }
  /** The run is over: the other device may go away at any moment now. */
  | { cmd: 'ending' }
  | { cmd: 'close' };

export type Reply = { id: number; result?: unknown; error?: string };
export type Arrival = { event: 'arrived'; index: number; at: number };

/** A wall-clock instant comparable between processes of this machine, in ms. */
const wallNow = () => performance.timeOrigin + performance.now();

interface BenchDoc {
  id: string;
  title: string;
  body: string;
  done: boolean;
  priority: number;
  tags: string[];
  updatedAt: number;
}

const docSchema = {
  version: 0,
  primaryKey: 'id',
  type: 'object',
  properties: {
    id: { type: 'string', maxLength: 40 },
    title: { type: 'string' },
    body: { type: 'string' },
    done: { type: 'boolean' },
    priority: { type: 'number' },
    tags: { type: 'array', items: { type: 'string' } },
    updatedAt: { type: 'number' },
  },
  required: ['id', 'title', 'body', 'done', 'priority', 'tags', 'updatedAt'],
} as const;

const LOREM =
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et ' +
  'dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip.';

/** About 300 bytes of JSON, like a todo with a note. */
const makeDoc = (id: string, n: number): BenchDoc => ({
  id,
  title: `Task number ${n}`,
  body: LOREM.slice(0, 150 + (n % 50)),
  done: n % 3 === 0,
  priority: n % 5,
  tags: ['home', `list-${n % 7}`],
  updatedAt: 1_700_000_000_000 + n,
});

/** The n-th of the documents a device holds before syncing. */
const storedDoc = (n: number): BenchDoc => makeDoc(`doc-${String(n).padStart(6, '0')}`, n);

const loadFerry = async () => ({ ...(await import('@ferry/core/node')), ...(await import('@ferry/rxdb')) });
const loadPlugin = async () => ({
  ...(await import('rxdb/plugins/replication-webrtc')),
  wrtc: (await import('@roamhq/wrtc')).default,
  WebSocket: (await import('ws')).WebSocket,
});
type Ferry = Awaited<ReturnType<typeof loadFerry>>;
type Plugin = Awaited<ReturnType<typeof loadPlugin>>;

class Peer {
  /** The modules of the system this device runs. */
  system!: Ferry | Plugin;
  db!: RxDatabase;
  docs!: RxCollection<BenchDoc>;
  config!: PeerConfig;
  mesh?: MeshNetwork;
  ferry?: FerryReplicationState;
  plugin?: RxWebRTCReplicationPool<BenchDoc, SimplePeer>;
  private readonly rss = sampleRss(10);
  /** Ids of documents present (from the collection's change stream, which storage-level writes feed too). */
  private readonly present = new Set<string>();
  private countWaiter: { count: number; resolve: () => void } | undefined;
  private closing = false;
  /**
   * Only the receiving device reports arrivals: on the writing one, the report (an IPC message)
   * would run inside the write's change event, ahead of whichever replication listens after it.
   */
  private receiving = false;

  async open(config: PeerConfig): Promise<void> {
    this.config = config;
    // Loaded now, so that no timed step includes it.
    this.system = config.system === 'ferry' ? await loadFerry() : await loadPlugin();
    this.db = await createRxDatabase({
      name: `bench${config.clientId}`,
      storage: getRxStorageMemory(),
      multiInstance: false,
      eventReduce: true,
    });
    await this.db.addCollections({ docs: { schema: docSchema } });
    this.docs = this.db.docs as RxCollection<BenchDoc>;
    this.docs.$.subscribe((event) => {
      if (event.operation === 'DELETE') return;
      this.present.add(event.documentId);
      if (this.receiving && event.documentId.startsWith('live-')) {
        const arrival: Arrival = {
          event: 'arrived',
          index: Number(event.documentId.slice(5)),
          at: wallNow(),
        };
        process.send!(arrival);
      }
      if (this.countWaiter && this.present.size >= this.countWaiter.count) this.countWaiter.resolve();
    });
  }

  async insert(count: number): Promise<void> {
    // Small bulk inserts, as an app accumulates documents over time: RxDB gives each write call one
    // `_meta.lwt`, and large groups sharing one make checkpoint queries rescan the group (slow for both).
    const CHUNK = 10;
    for (let start = 0; start < count; start += CHUNK) {
      const docs = Array.from({ length: Math.min(CHUNK, count - start) }, (_, i) => storedDoc(start + i));
      await this.docs.bulkInsert(docs);
    }
  }

  async connect(): Promise<void> {
    if (this.config.system !== 'ferry') return;
    const { createNodeMesh, fromHex } = this.system as Ferry;
    const mesh = createNodeMesh({
      clientId: this.config.clientId,
      accountKey: fromHex(this.config.secret),
      signalingUrls: [this.config.signalingUrl],
    });
    this.mesh = mesh;
    if (mesh.connectedPeers().length > 0) return;
    await new Promise((resolve) => mesh.once('peer-connected', resolve));
  }

  /** Starts replication; `connected` resolves with the instant the connection to the other device is usable. */
  async replicate(): Promise<{ connected: Promise<number> }> {
    if (this.config.system === 'ferry') {
      if (!this.mesh) await this.connect();
      const { replicateFerry } = this.system as Ferry;
      const start = wallNow();
      this.ferry = await replicateFerry({
        collections: { docs: this.docs },
        network: this.mesh!,
        batchSize: this.config.batchSize,
      });
      this.ferry.error$.subscribe((error) => this.report('ferry', error));
      return { connected: Promise.resolve(start) };
    }
    const { getConnectionHandlerSimplePeer, replicateWebRTC, wrtc, WebSocket } = this.system as Plugin;
    const pool = await replicateWebRTC<BenchDoc, SimplePeer>({
      collection: this.docs,
      topic: this.config.secret,
      connectionHandlerCreator: getConnectionHandlerSimplePeer({
        signalingServerUrl: this.config.signalingUrl,
        wrtc: wrtc as never,
        config: { iceServers: [] },
        webSocketConstructor: WebSocket as never,
      }),
      pull: { batchSize: this.config.batchSize },
      push: { batchSize: this.config.batchSize },
    });
    pool.error$.subscribe((error) => this.report('plugin', error));
    this.plugin = pool;
    // The handler's socket cannot open before this subscription: no event is missed.
    const connected = new Promise<number>((resolve) => {
      const sub = pool.connectionHandler.connect$.subscribe(() => {
        sub.unsubscribe();
        resolve(wallNow());
      });
    });
    return { connected };
  }

  async sync(count: number): Promise<{ ms: number }> {
    this.receiving = true;
    const reached = new Promise<void>((resolve) => {
      this.countWaiter = { count, resolve };
      if (this.present.size >= count) resolve();
    });
    const { connected } = await this.replicate();
    await reached;
    return { ms: wallNow() - (await connected) };
  }

  /**
   * The least any replication must do in a fresh receiving process: parse each batch, look up what
   * is stored, write it through the collection's storage instance, and see every change event.
   */
  async floor(count: number): Promise<{ ms: number }> {
    const BATCH = 500;
    const batches: string[] = [];
    for (let start = 0; start < count; start += BATCH) {
      const docs = Array.from({ length: Math.min(BATCH, count - start) }, (_, i) => storedDoc(start + i));
      batches.push(JSON.stringify(docs));
    }
    const reached = new Promise<void>((resolve) => {
      this.countWaiter = { count, resolve };
    });
    const storage = this.docs.storageInstance;
    const start = wallNow();
    for (const text of batches) {
      const docs = JSON.parse(text) as BenchDoc[];
      await storage.findDocumentsById(
        docs.map((doc) => doc.id),
        true,
      );
      await storage.bulkWrite(
        docs.map((doc) => ({
          document: {
            ...doc,
            _deleted: false,
            _attachments: {},
            _meta: { lwt: now() },
            _rev: createRevision(this.db.token),
          },
        })),
        'bench-floor',
      );
    }
    await reached;
    return { ms: wallNow() - start };
  }

  async write(index: number): Promise<{ at: number }> {
    const at = wallNow();
    await this.docs.insert(makeDoc(`live-${index}`, index));
    return { at };
  }

  /** Errors while measuring are printed; those of a peer whose other side is shutting down are expected. */
  private report(system: System, error: unknown): void {
    if (!this.closing) console.error(`${system} replication error:`, error);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.ferry?.cancel();
    await this.plugin?.cancel();
    await this.mesh?.close();
    await this.db.close();
  }

  async handle(command: Command): Promise<unknown> {
    switch (command.cmd) {
      case 'open':
        return this.open(command.config);
      case 'insert':
        return this.insert(command.count);
      case 'connect':
        return this.connect();
      case 'replicate': {
        const start = wallNow();
        await this.replicate();
        return wallNow() - start;
      }
      case 'sync':
        return this.sync(command.count);
      case 'floor':
        return this.floor(command.count);
      case 'write':
        return this.write(command.index);
      case 'peak':
        return this.rss.stop().peakBytes;
      case 'ending':
        this.closing = true;
        return undefined;
      case 'close':
        return this.close();
    }
  }
}

function runPeer(): void {
  const peer = new Peer();
  // A bench killed midway must not leave its device processes running (and loading the machine).
  process.on('disconnect', () => process.exit(0));
  process.on('message', (message: { id: number; command: Command }) => {
    peer.handle(message.command).then(
      (result) => {
        // After `close`, exit on our own (a normal exit is what writes a --cpu-prof profile).
        const exit = message.command.cmd === 'close' ? () => process.exit(0) : undefined;
        process.send!({ id: message.id, result } satisfies Reply, undefined, undefined, exit);
      },
      (error: Error) =>
        process.send!({ id: message.id, error: error.stack ?? String(error) } satisfies Reply),
    );
  });
}

runPeer();
