import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NodeWebRTCName } from '@ferry/core/node';
import { build } from 'esbuild';
import { pino } from 'pino';
import { startSignalingServerSimplePeer } from 'rxdb/plugins/replication-webrtc';
import { createSignalingServer } from '../../packages/server/src/signaling/index.js';
import type {
  Arrival,
  ColdWarm,
  Command,
  PeerConfig,
  PushSizes,
  Reply,
  System,
} from '../devices/rxdb-device.js';
import { MB, median, percentile, ratio, significant, udpReceiveDrops } from '../lib/measure.js';
import type { BenchMetric, BenchReport } from '../lib/types.js';

// Ferry's RxDB replication (encrypted Noise sessions over the WebRTC mesh, real signaling server)
// against RxDB's own replication-webrtc plugin (unencrypted, simple-peer, RxDB's signaling server),
// both on @roamhq/wrtc with RxDB memory storage, on the same ~300-byte documents. Every device is its
// own Node process (bench/devices/rxdb-device.ts), so each one's peak RSS is its own; timestamps
// compare across processes through performance.timeOrigin + performance.now() (one machine, one clock).

const LIVE_WRITES = 200;
/** Live writes the two devices then make in turns, each after the other's arrived. */
const TURN_WRITES = 100;
/**
 * Fresh process pairs per system and scenario. More runs show the tail: a rare run many times the
 * median (see the README's note on SCTP stalls) hardly ever lands among five.
 */
const RUNS = runCount(process.env.FERRY_BENCH_RXDB_RUNS);

function runCount(value: string | undefined): number {
  if (value === undefined || value === '') return 5;
  const runs = Number(value);
  if (!Number.isInteger(runs) || runs < 1) {
    throw new Error(`FERRY_BENCH_RXDB_RUNS must be a positive integer, not ${JSON.stringify(value)}`);
  }
  return runs;
}

/**
 * Node flags of every device process: `FERRY_BENCH_CPU_PROF=<dir>` writes a V8 CPU profile of each
 * (sampled every 100 µs: the default 1 ms gives a 250 ms sync too few samples), and
 * `FERRY_BENCH_NODE_FLAGS` adds its space-separated flags (V8's `--trace-opt` or `--no-opt`, which
 * NODE_OPTIONS does not pass on), for finding where a sync's time goes.
 */
function deviceFlags(): string[] {
  const profile = process.env.FERRY_BENCH_CPU_PROF;
  return [
    ...(profile ? ['--cpu-prof', '--cpu-prof-interval=100', `--cpu-prof-dir=${profile}`] : []),
    ...(process.env.FERRY_BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? []),
  ];
}

class PeerProcess {
  private readonly child: ChildProcess;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** When each of the other device's live writes arrived, by `${kind}:${index}`. */
  readonly arrivals = new Map<string, number>();
  private arrivalWaiter: { key: string; resolve: () => void } | undefined;

  constructor(deviceScript: string) {
    this.child = fork(deviceScript, [], {
      // Plain Node, without the bench's tsx loader (see rxdb-device.ts).
      execArgv: deviceFlags(),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (message: Reply | Arrival) => {
      if ('event' in message) {
        const key = `${message.kind}:${message.index}`;
        this.arrivals.set(key, message.at);
        if (this.arrivalWaiter?.key === key) this.arrivalWaiter.resolve();
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

  /** Resolves with the instant the other device's live write arrived here. */
  async arrival(kind: Arrival['kind'], index: number): Promise<number> {
    const key = `${kind}:${index}`;
    if (!this.arrivals.has(key)) {
      await new Promise<void>((resolve) => {
        this.arrivalWaiter = { key, resolve };
      });
    }
    return this.arrivals.get(key)!;
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

export interface Servers {
  ferryUrl: string;
  pluginUrl: string;
  /** The compiled device program (see buildDevice). */
  deviceScript: string;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The device program of the checkout at `root` as JavaScript, next to its sources so that its imports
 * resolve from that checkout's node_modules: `@ferry/*` to the packages' dist/, rebuilt first (tsc -b
 * does nothing when it is current), so the figures describe the code in the tree.
 */
export async function buildDevice(root = ROOT): Promise<{ script: string; dispose(): void }> {
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b'], {
    cwd: root,
    stdio: 'inherit',
  });
  const dir = join(root, 'bench/.build');
  mkdirSync(dir, { recursive: true });
  const script = join(dir, `rxdb-device-${process.pid}.mjs`);
  await build({
    entryPoints: [join(root, 'bench/devices/rxdb-device.ts')],
    outfile: script,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
  });
  return { script, dispose: () => rmSync(script, { force: true }) };
}

interface Scenario {
  system: System;
  batchSize: number;
  count: number;
  live?: boolean;
  /** Ferry only: false sends its pushes uncompressed. Default true, as Ferry's own default. */
  compress?: boolean;
  /** Ferry only: Node's WebRTC implementation. Default @roamhq/wrtc, the plugin's. */
  webrtc?: NodeWebRTCName;
}

/** A variant of Ferry's settings, run beside the default in the same alternation. */
type FerryVariant = Pick<Scenario, 'compress' | 'webrtc'>;

interface ScenarioResult {
  docsPerSecond: number;
  syncMs: number;
  /** A summary of several runs (summarizeRuns): the fastest and the slowest run's sync time. */
  syncRangeMs?: [fastest: number, slowest: number];
  /** replicate() on the device that already holds the documents (Ferry indexes them on first start). */
  startMs: number;
  peakBytes: number;
  latencies?: number[];
  /** Live writes made in turns by the two devices: each one's latency. */
  turnLatencies?: number[];
  /** UDP packets the kernel dropped during the sync and live writes (undefined: not countable here). */
  udpDrops?: number;
}

let scenarioCounter = 0;

export async function runScenario(servers: Servers, scenario: Scenario): Promise<ScenarioResult> {
  const run = ++scenarioCounter;
  const secret =
    scenario.system === 'ferry' ? randomBytes(32).toString('hex') : `benchroom${run}x${Date.now()}`;
  const signalingUrl = scenario.system === 'ferry' ? servers.ferryUrl : servers.pluginUrl;
  const source = new PeerProcess(servers.deviceScript);
  const sink = new PeerProcess(servers.deviceScript);
  const config = (clientId: string): PeerConfig => ({
    system: scenario.system,
    clientId,
    signalingUrl,
    secret,
    batchSize: scenario.batchSize,
    compress: scenario.compress ?? true,
    ...(scenario.webrtc ? { webrtc: scenario.webrtc } : {}),
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
    let turnLatencies: number[] | undefined;
    if (scenario.live) {
      latencies = [];
      for (let i = 0; i < LIVE_WRITES; i++) {
        const { at } = await source.call<{ at: number }>({ cmd: 'write', index: i });
        latencies.push((await sink.arrival('live', i)) - at);
        await new Promise((resolve) => setTimeout(resolve, 5)); // single writes, not a stream
      }
      // A conversation: each device writes once the other's write has arrived.
      turnLatencies = [];
      for (let i = 0; i < TURN_WRITES; i++) {
        const [writer, reader] = i % 2 === 0 ? [source, sink] : [sink, source];
        const { at } = await writer.call<{ at: number }>({ cmd: 'write', index: i, turn: true });
        turnLatencies.push((await reader.arrival('turn', i)) - at);
        await new Promise((resolve) => setTimeout(resolve, 5));
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
      ...(turnLatencies ? { turnLatencies } : {}),
      ...(dropsBefore !== undefined && dropsAfter !== undefined
        ? { udpDrops: dropsAfter - dropsBefore }
        : {}),
    };
  } finally {
    await Promise.all([source.call({ cmd: 'ending' }), sink.call({ cmd: 'ending' })]).catch(() => undefined);
    await Promise.all([source.close(), sink.close()]);
  }
}

/** Runs `step` in a fresh device process, opened as `system`. */
async function inFreshProcess<T>(
  servers: Servers,
  system: System,
  step: (peer: PeerProcess) => Promise<T>,
): Promise<T> {
  const peer = new PeerProcess(servers.deviceScript);
  try {
    await peer.call({
      cmd: 'open',
      config: { system, clientId: 'solo', signalingUrl: '', secret: '', batchSize: 500, compress: true },
    });
    return await step(peer);
  } finally {
    await peer.close();
  }
}

const medians = (timings: ColdWarm[]): ColdWarm => ({
  coldMs: median(timings.map((t) => t.coldMs)),
  warmMs: median(timings.map((t) => t.warmMs)),
});

/**
 * The receiving side alone, without a network, in fresh processes: RxDB alone storing `count`
 * documents (see Peer.floor), and Ferry applying a sending Ferry's pushes of them, recorded once (see
 * Peer.record and Peer.replay). Their processes alternate, so that both meet the same machine load.
 */
async function receivingAlone(
  servers: Servers,
  count: number,
): Promise<{ rxdb: ColdWarm; ferry: ColdWarm; pushes: PushSizes }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-'));
  const file = join(dir, 'pushes.json');
  try {
    const pushes = await inFreshProcess(servers, 'ferry', (peer) =>
      peer.call<PushSizes>({ cmd: 'record', count, file }),
    );
    const rxdb: ColdWarm[] = [];
    const ferry: ColdWarm[] = [];
    for (let i = 0; i < RUNS; i++) {
      rxdb.push(
        await inFreshProcess(servers, 'plugin', (peer) => peer.call<ColdWarm>({ cmd: 'floor', count })),
      );
      // Three pushes unacknowledged at a time, as replicateFerry's default window sends them.
      ferry.push(
        await inFreshProcess(servers, 'ferry', (peer) =>
          peer.call<ColdWarm>({ cmd: 'replay', count, file, window: 3 }),
        ),
      );
    }
    return { rxdb: medians(rxdb), ferry: medians(ferry), pushes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The median run's docs/s and start time, the fastest and slowest sync, the median peak RSS, every
 * run's latencies, all runs' UDP drops.
 */
function summarizeRuns(results: ScenarioResult[]): ScenarioResult {
  const sorted = [...results].sort((a, b) => a.docsPerSecond - b.docsPerSecond);
  const latencies = results.flatMap((r) => r.latencies ?? []);
  const turnLatencies = results.flatMap((r) => r.turnLatencies ?? []);
  const drops = results.map((r) => r.udpDrops);
  return {
    ...sorted[Math.floor(sorted.length / 2)]!,
    syncRangeMs: [sorted.at(-1)!.syncMs, sorted[0]!.syncMs],
    peakBytes: median(results.map((r) => r.peakBytes)),
    ...(latencies.length > 0 ? { latencies } : {}),
    ...(turnLatencies.length > 0 ? { turnLatencies } : {}),
    udpDrops: drops.every((d) => d !== undefined) ? drops.reduce((sum, d) => sum + d, 0) : undefined,
  };
}

/**
 * Ferry, the plugin and Ferry's `variants` (compression off, another WebRTC) on fresh process pairs,
 * alternating run by run: the machine is shared and its load drifts, so interleaving gives all of
 * them the same conditions.
 */
async function compare<V extends string>(
  servers: Servers,
  scenario: Omit<Scenario, 'system' | keyof FerryVariant>,
  variants: Record<V, FerryVariant>,
): Promise<{ ferry: ScenarioResult; plugin: ScenarioResult; variants: Record<V, ScenarioResult> }> {
  const names = Object.keys(variants) as V[];
  const runs = { ferry: [] as ScenarioResult[], plugin: [] as ScenarioResult[] };
  const variantRuns = Object.fromEntries(names.map((name) => [name, [] as ScenarioResult[]])) as Record<
    V,
    ScenarioResult[]
  >;
  for (let i = 0; i < RUNS; i++) {
    runs.ferry.push(await runScenario(servers, { ...scenario, system: 'ferry' }));
    for (const name of names) {
      variantRuns[name].push(await runScenario(servers, { ...scenario, ...variants[name], system: 'ferry' }));
    }
    runs.plugin.push(await runScenario(servers, { ...scenario, system: 'plugin' }));
  }
  return {
    ferry: summarizeRuns(runs.ferry),
    plugin: summarizeRuns(runs.plugin),
    variants: Object.fromEntries(names.map((name) => [name, summarizeRuns(variantRuns[name])])) as Record<
      V,
      ScenarioResult
    >,
  };
}

const ON_DATACHANNEL: FerryVariant = { webrtc: 'node-datachannel' };

/** Median sync time and the range over the runs. */
function syncSpread(result: ScenarioResult): string {
  const [fastest, slowest] = result.syncRangeMs ?? [result.syncMs, result.syncMs];
  return `${significant(result.syncMs)} ms (runs ${significant(fastest)}-${significant(slowest)} ms)`;
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
  const device = await buildDevice();
  const servers: Servers = {
    ferryUrl: ferrySignaling.url,
    pluginUrl: `ws://127.0.0.1:${pluginPort}`,
    deviceScript: device.script,
  };
  const metrics: BenchMetric[] = [];
  try {
    const oneThousand = await compare(
      servers,
      { batchSize: 500, count: 1_000, live: true },
      { datachannel: ON_DATACHANNEL },
    );
    const { ferry: ferry1k, plugin: plugin1k } = oneThousand;
    const datachannel1k = oneThousand.variants.datachannel;
    const tenThousand = await compare(
      servers,
      { batchSize: 500, count: 10_000 },
      { uncompressed: { compress: false }, datachannel: ON_DATACHANNEL },
    );
    const { ferry: ferry10k, plugin: plugin10k } = tenThousand;
    const { uncompressed: uncompressed10k, datachannel: datachannel10k } = tenThousand.variants;
    const pluginDefault10k = await runScenario(servers, { system: 'plugin', batchSize: 20, count: 10_000 });
    const { rxdb: floor10k, ferry: replay10k, pushes: pushes10k } = await receivingAlone(servers, 10_000);

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
    rate('initial sync, 10,000 docs, Ferry with compression off', uncompressed10k, plugin10k);
    rate('initial sync, 10,000 docs, Ferry on node-datachannel', datachannel10k, plugin10k);
    metrics.push({
      name: 'RxDB alone storing 10,000 received docs (no network, no sync)',
      value: significant(10_000 / (floor10k.coldMs / 1000)),
      unit: 'docs/s',
    });
    for (const [when, ferry, rxdb] of [
      ['fresh process', replay10k.coldMs, floor10k.coldMs],
      ['again in the same process', replay10k.warmMs, floor10k.warmMs],
    ] as const) {
      metrics.push({
        name: `Ferry applying 10,000 docs' pushes without a network, ${when}`,
        value: significant(ferry),
        unit: 'ms',
        baseline: significant(rxdb),
        ratio: ratio(ferry, rxdb),
      });
    }

    const sorted = (latencies: number[] | undefined) => [...latencies!].sort((a, b) => a - b);
    for (const [what, ferry, plugin, targets] of [
      ['a single write', sorted(ferry1k.latencies), sorted(plugin1k.latencies), ['< 1 ms', '< 2 ms']],
      [
        'a single write, Ferry on node-datachannel',
        sorted(datachannel1k.latencies),
        sorted(plugin1k.latencies),
        [],
      ],
      [
        'writes the two devices make in turns',
        sorted(ferry1k.turnLatencies),
        sorted(plugin1k.turnLatencies),
        [],
      ],
    ] as const) {
      for (const [i, p] of [50, 95].entries()) {
        const value = percentile(ferry, p);
        const baseline = percentile(plugin, p);
        const target = targets[i];
        metrics.push({
          name: `live propagation of ${what}, p${p}`,
          value: significant(value),
          unit: 'ms',
          baseline: significant(baseline),
          ratio: ratio(value, baseline),
          ...(target ? { target } : {}),
        });
      }
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
        'RxDB replication between two Node processes over @roamhq/wrtc on loopback (Ferry also over node-datachannel), ' +
        'memory storage, ~300 B docs: ' +
        'Ferry (replicateFerry over the encrypted WebRTC mesh, batch 500) vs RxDB replication-webrtc',
      baseline:
        "RxDB 17 replication-webrtc plugin (simple-peer, unencrypted, RxDB's signaling server) with pull/push batch size 500, same run",
      metrics,
      notes:
        'Sync time runs from the moment the connection is usable (Ferry: replicateFerry() on a connected ' +
        'mesh; plugin: its peer connect event) until the receiver holds every document; median of ' +
        `${RUNS} fresh process pairs per system, Ferry and plugin runs alternating. Live: ` +
        `${LIVE_WRITES * RUNS} single inserts per system, 5 ms apart, write call to change event on the ` +
        `other process; then ${TURN_WRITES * RUNS} more, the two devices taking turns (each writes once the ` +
        "other's write arrived, as in a conversation, where a device writes after applying the other's). " +
        'First replicate(): Ferry records every existing document in its metadata once ' +
        '(later writes as they happen); the plugin has no such step. Peak RSS: the larger of the two ' +
        'processes (median over runs). RxDB plugin with its default batch size (20), one run: ' +
        `${significant(pluginDefault10k.docsPerSecond)} docs/s for 10,000 docs. 10k sync: Ferry ` +
        `${syncSpread(ferry10k)}, uncompressed ${syncSpread(uncompressed10k)}, on node-datachannel ` +
        `${syncSpread(datachannel10k)}, plugin ${syncSpread(plugin10k)}. ` +
        `Ferry's pushes for the 10,000 documents: ${significant(pushes10k.jsonBytes / MB)} MB of JSON, ` +
        `${significant(pushes10k.deflatedBytes / MB)} MB compressed ` +
        `(${significant(pushes10k.jsonBytes / pushes10k.deflatedBytes)}x; the session compresses messages of 8 KiB or more). ` +
        '"RxDB alone": a fresh ' +
        'receiving process with the same database parses JSON batches of 500, looks them up and bulk-writes them ' +
        'through the collection storage until every change event fired; no replication of either kind can sync faster ' +
        `(median of ${RUNS} processes). "Without a network": the pushes a sending Ferry made for 10,000 documents, ` +
        'recorded once, reach a receiving Ferry through the wire codec (decoded as from a session, no WebRTC, no ' +
        'encryption) three unacknowledged at a time, until every change event fired and the last push was ' +
        'acknowledged; baseline: RxDB alone as above. "Fresh process" is how the sync runs (V8 compiles the receiving ' +
        'code during it); "again" is a second database in the same process, JIT warm. ' +
        `${udpDropNote([
          ['1,000 docs and the live writes', ferry1k, plugin1k],
          ['10,000 docs', ferry10k, plugin10k],
          ['10,000 docs uncompressed', uncompressed10k, plugin10k],
          ['10,000 docs on node-datachannel', datachannel10k, plugin10k],
        ])}`,
    };
  } finally {
    await ferrySignaling.close();
    await pluginSignaling.server.close();
    device.dispose();
    restoreLog();
  }
}

export default { name: 'rxdb', run };
