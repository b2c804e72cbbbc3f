import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { PeerMessage, PeerNetwork, PeerNetworkEvents } from '@ferry/core';
import type { MeshNetwork, NodeWebRTCName } from '@ferry/core/node';
import type { DiffPush, FerryReplicationState } from '@ferry/rxdb';
import { EventEmitter } from 'eventemitter3';
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
  /** Ferry: compress large session messages (its default). False: send them as they are. */
  compress: boolean;
  /** Ferry: Node's WebRTC implementation (default @roamhq/wrtc, as the plugin's). */
  webrtc?: NodeWebRTCName;
}

export type Command =
  | { cmd: 'open'; config: PeerConfig }
  | { cmd: 'insert'; count: number }
  /** Ferry: start the mesh and wait for the other device (the plugin connects inside its replication). */
  | { cmd: 'connect' }
  | { cmd: 'replicate' }
  /** Start replicating and wait until `count` documents are here; timed from the connection being usable. */
  | { cmd: 'sync'; count: number }
  /**
   * No replication: store `count` documents as a receiver gets them (JSON batches of 500), timed:
   * into a fresh database, then again into another one in the same (now warm) process.
   */
  | { cmd: 'floor'; count: number }
  /** Ferry as the sending device of a sync to an empty peer, without a network: its pushes go to `file`. */
  | { cmd: 'record'; count: number; file: string }
  /**
   * Ferry as the receiving device, without a network: the pushes recorded in `file` are delivered
   * through the wire codec, `window` unacknowledged at a time, into a fresh database, then again into
   * another one in the same (now warm) process. Times each from the first delivery until every
   * document's change event fired and the last push was acknowledged.
   */
  | { cmd: 'replay'; count: number; file: string; window: number }
  /** Insert the index-th live document; `turn`: one of the writes the two devices make in turns. */
  | { cmd: 'write'; index: number; turn?: boolean }
  | { cmd: 'peak' }
  /** The run is over: the other device may go away at any moment now. */
  | { cmd: 'ending' }
  | { cmd: 'close' };

export type Reply = { id: number; result?: unknown; error?: string };
/** A timed step run twice in one process: first with V8's JIT cold, then warm. */
export type ColdWarm = { coldMs: number; warmMs: number };
/** Another device's live write reached this one: `live` from the one-way series, `turn` from the turns. */
export type Arrival = { event: 'arrived'; kind: 'live' | 'turn'; index: number; at: number };
/** Bytes of a sync's pushes as a session carries them: JSON, and DEFLATE-compressed. */
export type PushSizes = { jsonBytes: number; deflatedBytes: number };

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

/**
 * Words of the documents' text. Each document draws its own sequence, so documents share words but
 * not sentences, as notes do: a push of them deflates ~3.5x. (Until this bench measured compression,
 * every document held a slice of one Latin sentence, and a push deflated 14x.)
 */
const WORDS = (
  'the of and to in is you that it he was for on are as with his they at be this have from or one had by ' +
  'word but not what all were we when your can said there use an each which she do how their if will up ' +
  'other about out many then them these so some her would make like him into time has look two more write ' +
  'go see number no way could people my than first water been call who oil its now find long down day did ' +
  'get come made may part over new sound take only little work know place year live me back give most very ' +
  'after thing our just name good sentence man think say great where help through much before line right ' +
  'too mean old any same tell boy follow came want show also around form three small set put end does ' +
  'another well large must big even such because turn here why ask went men read need land different home ' +
  'us move try kind hand picture again change off play spell air away animal house point page letter mother ' +
  'answer found study still learn should america world high every near add food between own below country ' +
  'plant last school father keep tree never start city earth eye light thought head under story saw left ' +
  'few while along might close something seem next hard open example begin life always those both paper ' +
  'together got group often run important until children side feet car mile night walk white sea began ' +
  'grow took river four carry state once book hear stop without second later miss idea enough eat face ' +
  'watch far indian real almost let above girl sometimes mountain cut young talk soon list song being leave'
).split(' ');

/** A document's own pseudo-random words (xorshift32 seeded by its number: the same on every device). */
function words(n: number, count: number): string {
  let x = (n + 1) * 2654435761;
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.push(WORDS[(x >>> 0) % WORDS.length]!);
  }
  return out.join(' ');
}

/** About 300 bytes of JSON, like a todo with a note. */
const makeDoc = (id: string, n: number): BenchDoc => ({
  id,
  title: `Task number ${n}`,
  body: words(n, 30 + (n % 8)),
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

/** The one peer of a ScriptedNetwork. */
const SCRIPTED_PEER = 'bench-peer';

/**
 * A peer network whose only peer is this bench, for timing Ferry's replication without WebRTC,
 * encryption or a second process: what Ferry sends goes to `onSend`, and the bench's messages reach
 * Ferry through the wire codec (decoded as a session would), one microtask later. Not core's
 * MemoryHub: that encodes a message when it is sent, and a replay must encode the sending device's
 * pushes before its clock starts.
 */
class ScriptedNetwork extends EventEmitter<PeerNetworkEvents> implements PeerNetwork {
  private nextId = 0;

  constructor(
    readonly clientId: string,
    private readonly ferry: Ferry,
    private readonly onSend: (message: PeerMessage) => void,
  ) {
    super();
  }

  connectedPeers(): string[] {
    return [SCRIPTED_PEER];
  }

  async send(_peer: string, message: PeerMessage): Promise<void> {
    this.onSend(message);
  }

  async close(): Promise<void> {}

  encode(op: string, data: unknown): Uint8Array {
    return this.ferry.encodeWireMessage({ op, data, timestamp: Date.now(), id: `bench-${this.nextId++}` });
  }

  deliver(bytes: Uint8Array): void {
    queueMicrotask(() =>
      this.emit('message', SCRIPTED_PEER, this.ferry.decodeWireMessage(bytes, Number.POSITIVE_INFINITY)),
    );
  }
}

export class Peer {
  /** The modules of the system this device runs. */
  system!: Ferry | Plugin;
  db!: RxDatabase;
  docs!: RxCollection<BenchDoc>;
  config!: PeerConfig;
  mesh?: MeshNetwork;
  ferry?: FerryReplicationState;
  plugin?: RxWebRTCReplicationPool<BenchDoc, SimplePeer>;
  private readonly rss = sampleRss(10);
  private closing = false;
  /**
   * Only the receiving device reports arrivals: on the writing one, the report (an IPC message)
   * would run inside the write's change event, ahead of whichever replication listens after it.
   */
  private receiving = false;
  /** Writes in turns this device made (it reports only the other device's). */
  private readonly ownTurns = new Set<string>();

  async open(config: PeerConfig): Promise<void> {
    this.config = config;
    // Loaded now, so that no timed step includes it.
    this.system = config.system === 'ferry' ? await loadFerry() : await loadPlugin();
    this.docs = await openDocs(`bench${config.clientId}`);
    this.db = this.docs.database;
    this.docs.$.subscribe((event) => {
      if (event.operation === 'DELETE') return;
      const id = event.documentId;
      const kind =
        this.receiving && id.startsWith('live-')
          ? 'live'
          : id.startsWith('turn-') && !this.ownTurns.has(id)
            ? 'turn'
            : undefined;
      if (!kind) return;
      const arrival: Arrival = { event: 'arrived', kind, index: Number(id.slice(5)), at: wallNow() };
      process.send!(arrival);
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
    const { createNodeMesh, fromHex, loadNodeWebRTC } = this.system as Ferry;
    const mesh = createNodeMesh({
      ...(this.config.webrtc ? { wrtc: await loadNodeWebRTC(this.config.webrtc) } : {}),
      clientId: this.config.clientId,
      accountKey: fromHex(this.config.secret),
      signalingUrls: [this.config.signalingUrl],
      ...(this.config.compress ? {} : { session: { compressMinBytes: false } }),
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
    // The receiving device starts empty: `count` documents written from now on are all of them.
    const reached = changeEvents(this.docs, count);
    const { connected } = await this.replicate();
    await reached;
    return { ms: wallNow() - (await connected) };
  }

  /**
   * The least any replication must do in a receiving process: parse each batch, look up what is
   * stored, write it through the collection's storage instance, and see every change event.
   */
  async floor(count: number): Promise<ColdWarm> {
    const BATCH = 500;
    const batches: string[] = [];
    for (let start = 0; start < count; start += BATCH) {
      const docs = Array.from({ length: Math.min(BATCH, count - start) }, (_, i) => storedDoc(start + i));
      batches.push(JSON.stringify(docs));
    }
    const pass = async (name: string): Promise<number> => {
      const collection = await openDocs(name);
      const arrived = changeEvents(collection, count);
      const storage = collection.storageInstance;
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
              _rev: createRevision(collection.database.token),
            },
          })),
          'bench-floor',
        );
      }
      await arrived;
      const ms = wallNow() - start;
      await collection.database.remove();
      return ms;
    };
    return { coldMs: await pass('floorcold'), warmMs: await pass('floorwarm') };
  }

  async record(count: number, file: string): Promise<PushSizes> {
    const ferry = this.system as Ferry;
    await this.insert(count);
    const pushes: PeerMessage[] = [];
    let done!: () => void;
    const finished = new Promise<void>((resolve) => {
      done = resolve;
    });
    const network: ScriptedNetwork = new ScriptedNetwork('bench-source', ferry, (message) => {
      if (message.op !== 'DB_DIFF_PUSH') return;
      const push = message.data as DiffPush;
      pushes.push(message);
      const ack = { collection: push.collection, stream: push.stream, ackVersion: push.newVersion };
      network.deliver(network.encode('DB_DIFF_ACK', ack));
      if (!push.more) done();
    });
    const replication = await ferry.replicateFerry({ collections: { docs: this.docs }, network });
    network.emit('peer-connected', SCRIPTED_PEER);
    const init = { collection: 'docs', stream: 'recording', checkpoint: '', dbVersion: '' };
    network.deliver(network.encode('DB_SYNC_INIT', init));
    await finished;
    await replication.cancel();
    writeFileSync(file, JSON.stringify(pushes));
    // What a session sends of these pushes, as they are and compressed (zlib level 1, as it does).
    let jsonBytes = 0;
    let deflatedBytes = 0;
    for (const push of pushes) {
      const bytes = ferry.encodeWireMessage(push);
      jsonBytes += bytes.length;
      deflatedBytes += ferry.nodeDeflate.compress(bytes).length;
    }
    return { jsonBytes, deflatedBytes };
  }

  async replay(count: number, file: string, window: number): Promise<ColdWarm> {
    const ferry = this.system as Ferry;
    const recorded = JSON.parse(readFileSync(file, 'utf8')) as PeerMessage[];
    const pass = async (name: string): Promise<number> => {
      const collection = await openDocs(name);
      const arrived = changeEvents(collection, count);
      let frames: Uint8Array[] = [];
      let delivered = 0;
      let acked = 0;
      let stream!: (id: string) => void;
      const opened = new Promise<string>((resolve) => {
        stream = resolve;
      });
      let settle!: { resolve: () => void; reject: (error: Error) => void };
      const allAcked = new Promise<void>((resolve, reject) => {
        settle = { resolve, reject };
      });
      const network: ScriptedNetwork = new ScriptedNetwork(`replay-${name}`, ferry, (message) => {
        if (message.op === 'DB_SYNC_INIT') stream((message.data as { stream: string }).stream);
        if (message.op === 'DB_DIFF_NACK')
          settle.reject(new Error(`Ferry refused a push: ${JSON.stringify(message.data)}`));
        if (message.op !== 'DB_DIFF_ACK') return;
        acked++;
        if (delivered < frames.length) network.deliver(frames[delivered++]!);
        else if (acked === frames.length) settle.resolve();
      });
      const replication = await ferry.replicateFerry({ collections: { docs: collection }, network });
      network.emit('peer-connected', SCRIPTED_PEER);
      const id = await opened;
      // Encoding is the sending device's work: done before the clock starts.
      frames = recorded.map((message) =>
        network.encode(message.op, { ...(message.data as DiffPush), stream: id }),
      );
      const start = wallNow();
      while (delivered < Math.min(window, frames.length)) network.deliver(frames[delivered++]!);
      await Promise.all([allAcked, arrived]);
      const ms = wallNow() - start;
      await replication.cancel();
      await collection.database.remove();
      return ms;
    };
    return { coldMs: await pass('replaycold'), warmMs: await pass('replaywarm') };
  }

  async write(index: number, turn = false): Promise<{ at: number }> {
    const id = `${turn ? 'turn' : 'live'}-${index}`;
    if (turn) this.ownTurns.add(id);
    const at = wallNow();
    await this.docs.insert(makeDoc(id, index));
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
      case 'record':
        return this.record(command.count, command.file);
      case 'replay':
        return this.replay(command.count, command.file, command.window);
      case 'write':
        return this.write(command.index, command.turn);
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

/** A fresh in-memory database holding the bench's collection. */
async function openDocs(name: string): Promise<RxCollection<BenchDoc>> {
  const db: RxDatabase = await createRxDatabase({
    name,
    storage: getRxStorageMemory(),
    multiInstance: false,
    eventReduce: true,
  });
  await db.addCollections({ docs: { schema: docSchema } });
  return db.docs as RxCollection<BenchDoc>;
}

/** Resolves once the collection's change stream has shown `count` distinct documents written. */
function changeEvents(collection: RxCollection<BenchDoc>, count: number): Promise<void> {
  const seen = new Set<string>();
  return new Promise((resolve) => {
    const subscription = collection.$.subscribe((event) => {
      if (event.operation !== 'DELETE') seen.add(event.documentId);
      if (seen.size >= count) {
        subscription.unsubscribe();
        resolve();
      }
    });
  });
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

// The rxdb suite runs this file (compiled) as a program of its own; its test imports Peer instead.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) runPeer();
