import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MeshNetwork } from '@ferry/core/node';
import type { FerryReplicationState } from '@ferry/rxdb';
import wrtc from '@roamhq/wrtc';
import { pino } from 'pino';
import { createRevision, createRxDatabase, now, type RxCollection, type RxDatabase } from 'rxdb';
import {
  getConnectionHandlerSimplePeer,
  type RxWebRTCReplicationPool,
  replicateWebRTC,
  type SimplePeer,
  startSignalingServerSimplePeer,
} from 'rxdb/plugins/replication-webrtc';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';
import { WebSocket } from 'ws';
import { createSignalingServer } from '../../packages/server/src/signaling/index.js';
import { MB, median, percentile, ratio, sampleRss, significant, udpReceiveDrops } from '../lib/measure.js';
import type { BenchMetric, BenchReport } from '../lib/types.js';

// Ferry's RxDB replication (encrypted Noise sessions over the WebRTC mesh, real signaling server)
// against RxDB's own replication-webrtc plugin (unencrypted, simple-peer, RxDB's signaling server),
// both on @roamhq/wrtc with RxDB memory storage, on the same ~300-byte documents. Every device is its
// own Node process (forked from this file), so each one's peak RSS is its own; timestamps compare
// across processes through performance.timeOrigin + performance.now() (one machine, one clock).

const PEER_FLAG = '--rxdb-bench-peer';
const LIVE_WRITES = 200;
const RUNS = 5;

type System = 'ferry' | 'plugin';

interface PeerConfig {
  system: System;
  clientId: string;
  signalingUrl: string;
  /** Ferry: hex account key shared by both devices. Plugin: the room (topic). */
  secret: string;
  batchSize: number;
}

type Command =
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

type Reply = { id: number; result?: unknown; error?: string };
type Arrival = { event: 'arrived'; index: number; at: number };

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

// ---------------------------------------------------------------- peer process

class Peer {
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
    // Imported here, in the device process, where `@ferry/*` resolve to the sources (sourceTsconfig).
    const { createNodeMesh, fromHex } = await import('@ferry/core/node');
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
      const { replicateFerry } = await import('@ferry/rxdb');
      const start = wallNow();
      this.ferry = await replicateFerry({
        collections: { docs: this.docs },
        network: this.mesh!,
        batchSize: this.config.batchSize,
      });
      this.ferry.error$.subscribe((error) => this.report('ferry', error));
      return { connected: Promise.resolve(start) };
    }
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

// ---------------------------------------------------------------- parent side

class PeerProcess {
  private readonly child: ChildProcess;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly arrivals = new Map<number, number>();
  private arrivalWaiter: { index: number; resolve: () => void } | undefined;

  constructor(tsconfigPath: string) {
    this.child = fork(fileURLToPath(import.meta.url), [PEER_FLAG], {
      execArgv: [
        ...process.execArgv.filter((arg) => arg !== '--expose-gc'),
        // FERRY_BENCH_CPU_PROF=<dir>: a V8 CPU profile of every device process, for finding hot spots.
        ...(process.env.FERRY_BENCH_CPU_PROF
          ? ['--cpu-prof', `--cpu-prof-dir=${process.env.FERRY_BENCH_CPU_PROF}`]
          : []),
      ],
      env: { ...process.env, TSX_TSCONFIG_PATH: tsconfigPath },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (message: Reply | Arrival) => {
      if ('event' in message) {
        this.arrivals.set(message.index, message.at);
        if (this.arrivalWaiter?.index === message.index) this.arrivalWaiter.resolve();
        return;
      }
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter?.reject(new Error(message.error));
      else waiter?.resolve(message.result);
    });
    this.child.on('exit', (code) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`peer process exited (${code})`));
      this.pending.clear();
    });
  }

  call<T>(command: Command): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, command });
    });
  }

  arrival(index: number): Promise<void> {
    if (this.arrivals.has(index)) return Promise.resolve();
    return new Promise((resolve) => {
      this.arrivalWaiter = { index, resolve };
    });
  }

  async close(): Promise<void> {
    const closed = await this.call({ cmd: 'close' }).then(
      () => true,
      () => false,
    );
    if (!closed) this.child.kill();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await new Promise((resolve) => this.child.once('exit', resolve));
    }
  }
}

interface Servers {
  ferryUrl: string;
  pluginUrl: string;
  /** tsx configuration of the device processes (see sourceTsconfig). */
  tsconfigPath: string;
}

/**
 * The device processes resolve `@ferry/*` to the packages' TypeScript sources, as the tests do: the
 * sync engine and the mesh must share one copy of core (FerryError identity, the op registry), and
 * the figures must describe the code in the tree, not whatever `dist/` was last built from.
 */
function sourceTsconfig(): string {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const path = join(mkdtempSync(join(tmpdir(), 'ferry-bench-rxdb-')), 'tsconfig.json');
  const paths = {
    '@ferry/core': [`${root}packages/core/src/index.ts`],
    '@ferry/core/node': [`${root}packages/core/src/node.ts`],
    '@ferry/rxdb': [`${root}packages/rxdb/src/index.ts`],
  };
  writeFileSync(path, JSON.stringify({ compilerOptions: { paths } }));
  return path;
}

interface Scenario {
  system: System;
  batchSize: number;
  count: number;
  live?: boolean;
}

interface ScenarioResult {
  docsPerSecond: number;
  syncMs: number;
  /** replicate() on the device that already holds the documents (Ferry indexes them on first start). */
  startMs: number;
  peakBytes: number;
  latencies?: number[];
  /** UDP packets the kernel dropped during the sync and live writes (undefined: not countable here). */
  udpDrops?: number;
}

let scenarioCounter = 0;

async function runScenario(servers: Servers, scenario: Scenario): Promise<ScenarioResult> {
  const run = ++scenarioCounter;
  const secret =
    scenario.system === 'ferry' ? randomBytes(32).toString('hex') : `benchroom${run}x${Date.now()}`;
  const signalingUrl = scenario.system === 'ferry' ? servers.ferryUrl : servers.pluginUrl;
  const source = new PeerProcess(servers.tsconfigPath);
  const sink = new PeerProcess(servers.tsconfigPath);
  const config = (clientId: string): PeerConfig => ({
    system: scenario.system,
    clientId,
    signalingUrl,
    secret,
    batchSize: scenario.batchSize,
  });
  try {
    await Promise.all([
      source.call({ cmd: 'open', config: config(`a${run}`) }),
      sink.call({ cmd: 'open', config: config(`b${run}`) }),
    ]);
    await source.call({ cmd: 'insert', count: scenario.count });
    if (scenario.system === 'ferry') {
      await Promise.all([source.call({ cmd: 'connect' }), sink.call({ cmd: 'connect' })]);
    }
    const dropsBefore = udpReceiveDrops();
    const startMs = await source.call<number>({ cmd: 'replicate' });
    const { ms } = await sink.call<{ ms: number }>({ cmd: 'sync', count: scenario.count });
    let latencies: number[] | undefined;
    if (scenario.live) {
      latencies = [];
      for (let i = 0; i < LIVE_WRITES; i++) {
        const { at } = await source.call<{ at: number }>({ cmd: 'write', index: i });
        await sink.arrival(i);
        latencies.push(sink.arrivals.get(i)! - at);
        await new Promise((resolve) => setTimeout(resolve, 5)); // single writes, not a stream
      }
    }
    const dropsAfter = udpReceiveDrops();
    const peaks = await Promise.all([
      source.call<number>({ cmd: 'peak' }),
      sink.call<number>({ cmd: 'peak' }),
    ]);
    return {
      docsPerSecond: scenario.count / (ms / 1000),
      syncMs: ms,
      startMs,
      peakBytes: Math.max(...peaks),
      ...(latencies ? { latencies } : {}),
      ...(dropsBefore !== undefined && dropsAfter !== undefined
        ? { udpDrops: dropsAfter - dropsBefore }
        : {}),
    };
  } finally {
    await Promise.all([source.call({ cmd: 'ending' }), sink.call({ cmd: 'ending' })]).catch(() => undefined);
    await Promise.all([source.close(), sink.close()]);
  }
}

/** RxDB alone storing `count` received documents, median over fresh processes (see Peer.floor). */
async function rxdbFloor(servers: Servers, count: number, runs = RUNS): Promise<number> {
  const rates: number[] = [];
  for (let i = 0; i < runs; i++) {
    const peer = new PeerProcess(servers.tsconfigPath);
    try {
      await peer.call({
        cmd: 'open',
        config: { system: 'plugin', clientId: `floor${i}`, signalingUrl: '', secret: '', batchSize: 500 },
      });
      const { ms } = await peer.call<{ ms: number }>({ cmd: 'floor', count });
      rates.push(count / (ms / 1000));
    } finally {
      await peer.close();
    }
  }
  return median(rates);
}

/** The median run's docs/s and start time, the median peak RSS, every run's latencies, all runs' UDP drops. */
function summarizeRuns(results: ScenarioResult[]): ScenarioResult {
  const sorted = [...results].sort((a, b) => a.docsPerSecond - b.docsPerSecond);
  const latencies = results.flatMap((r) => r.latencies ?? []);
  const drops = results.map((r) => r.udpDrops);
  return {
    ...sorted[Math.floor(sorted.length / 2)]!,
    peakBytes: median(results.map((r) => r.peakBytes)),
    ...(latencies.length > 0 ? { latencies } : {}),
    udpDrops: drops.every((d) => d !== undefined) ? drops.reduce((sum, d) => sum + d, 0) : undefined,
  };
}

/**
 * Ferry and the plugin on fresh process pairs, alternating run by run: the machine is shared and
 * its load drifts, so interleaving gives both the same conditions.
 */
async function compare(
  servers: Servers,
  scenario: Omit<Scenario, 'system'>,
  runs = RUNS,
): Promise<{ ferry: ScenarioResult; plugin: ScenarioResult }> {
  const ferry: ScenarioResult[] = [];
  const plugin: ScenarioResult[] = [];
  for (let i = 0; i < runs; i++) {
    ferry.push(await runScenario(servers, { ...scenario, system: 'ferry' }));
    plugin.push(await runScenario(servers, { ...scenario, system: 'plugin' }));
  }
  return { ferry: summarizeRuns(ferry), plugin: summarizeRuns(plugin) };
}

/**
 * The kernel's UDP receive-buffer drops while each system ran: WebRTC on loopback loses packets when
 * a burst meets a busy receiver, and a lost tail stalls SCTP until its retransmission timer, so a
 * run far below the others usually had drops.
 */
function udpDropNote(groups: Array<[label: string, ferry: ScenarioResult, plugin: ScenarioResult]>): string {
  if (groups.some(([, ferry, plugin]) => ferry.udpDrops === undefined || plugin.udpDrops === undefined))
    return '';
  const counts = groups.map(
    ([label, ferry, plugin]) => `${label}, Ferry ${ferry.udpDrops}, plugin ${plugin.udpDrops}`,
  );
  return (
    'UDP packets the kernel dropped for a full receive buffer during the runs (SCTP resends them; a lost tail ' +
    `waits for the retransmission timer): ${counts.join('; ')}.`
  );
}

/** RxDB's signaling server logs every disconnect with console.log: keep the bench output readable. */
function quietPluginServerLog(): () => void {
  const log = console.log;
  console.log = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('# disconnect peer')) return;
    log(...args);
  };
  return () => {
    console.log = log;
  };
}

async function run(): Promise<BenchReport> {
  const restoreLog = quietPluginServerLog();
  const ferrySignaling = await createSignalingServer({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
  });
  const pluginPort = 20_000 + Math.floor(Math.random() * 20_000);
  const pluginSignaling = await startSignalingServerSimplePeer({ port: pluginPort, host: '127.0.0.1' });
  const tsconfigPath = sourceTsconfig();
  const servers: Servers = {
    ferryUrl: ferrySignaling.url,
    pluginUrl: `ws://127.0.0.1:${pluginPort}`,
    tsconfigPath,
  };
  const metrics: BenchMetric[] = [];
  try {
    const { ferry: ferry1k, plugin: plugin1k } = await compare(servers, {
      batchSize: 500,
      count: 1_000,
      live: true,
    });
    const { ferry: ferry10k, plugin: plugin10k } = await compare(servers, { batchSize: 500, count: 10_000 });
    const pluginDefault10k = await runScenario(servers, { system: 'plugin', batchSize: 20, count: 10_000 });
    const floor10k = await rxdbFloor(servers, 10_000);

    const rate = (name: string, ferry: ScenarioResult, plugin: ScenarioResult, target?: string) =>
      metrics.push({
        name,
        value: significant(ferry.docsPerSecond),
        unit: 'docs/s',
        baseline: significant(plugin.docsPerSecond),
        ratio: ratio(ferry.docsPerSecond, plugin.docsPerSecond),
        ...(target ? { target } : {}),
      });
    rate('initial sync, 1,000 docs', ferry1k, plugin1k);
    rate('initial sync, 10,000 docs', ferry10k, plugin10k, '>= 50,000 docs/s');
    metrics.push({
      name: 'RxDB alone storing 10,000 received docs (no network, no sync)',
      value: significant(floor10k),
      unit: 'docs/s',
    });

    const sortedFerry = [...ferry1k.latencies!].sort((a, b) => a - b);
    const sortedPlugin = [...plugin1k.latencies!].sort((a, b) => a - b);
    for (const [p, target] of [
      [50, '< 1 ms'],
      [95, '< 2 ms'],
    ] as const) {
      const value = percentile(sortedFerry, p);
      const baseline = percentile(sortedPlugin, p);
      metrics.push({
        name: `live propagation of a single write, p${p}`,
        value: significant(value),
        unit: 'ms',
        baseline: significant(baseline),
        ratio: ratio(value, baseline),
        target,
      });
    }
    metrics.push({
      name: 'first replicate() on a device already holding 10,000 docs',
      value: significant(ferry10k.startMs),
      unit: 'ms',
      baseline: significant(plugin10k.startMs),
      ratio: ratio(ferry10k.startMs, plugin10k.startMs),
    });
    metrics.push({
      name: 'peak RSS per device, 10,000-doc sync',
      value: significant(ferry10k.peakBytes / MB),
      unit: 'MB',
      baseline: significant(plugin10k.peakBytes / MB),
      ratio: ratio(ferry10k.peakBytes, plugin10k.peakBytes),
      target: 'less than the plugin',
    });

    return {
      name: 'rxdb',
      description:
        'RxDB replication between two Node processes over @roamhq/wrtc on loopback, memory storage, ~300 B docs: ' +
        'Ferry (replicateFerry over the encrypted WebRTC mesh, batch 500) vs RxDB replication-webrtc',
      baseline:
        "RxDB 17 replication-webrtc plugin (simple-peer, unencrypted, RxDB's signaling server) with pull/push batch size 500, same run",
      metrics,
      notes:
        'Sync time runs from the moment the connection is usable (Ferry: replicateFerry() on a connected ' +
        'mesh; plugin: its peer connect event) until the receiver holds every document; median of ' +
        `${RUNS} fresh process pairs per system, Ferry and plugin runs alternating. Live: ` +
        `${LIVE_WRITES * RUNS} single inserts per system, 5 ms apart, write call to change event on the ` +
        'other process. First replicate(): Ferry records every existing document in its metadata once ' +
        '(later writes as they happen); the plugin has no such step. Peak RSS: the larger of the two ' +
        'processes (median over runs). RxDB plugin with its default batch size (20), one run: ' +
        `${significant(pluginDefault10k.docsPerSecond)} docs/s for 10,000 docs. 10k sync: Ferry ` +
        `${significant(ferry10k.syncMs)} ms, plugin ${significant(plugin10k.syncMs)} ms. "RxDB alone": a fresh ` +
        'receiving process with the same database parses JSON batches of 500, looks them up and bulk-writes them ' +
        'through the collection storage until every change event fired; no replication of either kind can sync faster ' +
        `(median of ${RUNS} processes). ${udpDropNote([
          ['1,000 docs and the live writes', ferry1k, plugin1k],
          ['10,000 docs', ferry10k, plugin10k],
        ])}`,
    };
  } finally {
    await ferrySignaling.close();
    await pluginSignaling.server.close();
    rmSync(dirname(tsconfigPath), { recursive: true, force: true });
    restoreLog();
  }
}

if (process.argv.includes(PEER_FLAG)) runPeer();

export default { name: 'rxdb', run };
