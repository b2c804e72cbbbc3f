import { pino } from 'pino';
import { functionBackend, type ModelBackend } from '../../packages/ai/src/backend.js';
import { askPeer } from '../../packages/ai/src/consumer.js';
import { serveModels } from '../../packages/ai/src/host.js';
import type { PeerNetwork } from '../../packages/core/src/network/types.js';
import { createNodeMesh, deriveAccount, MINIMUM_ACCOUNT_DESCRIPTOR } from '../../packages/core/src/node.js';
import { createSignalingServer } from '../../packages/server/src/index.js';
import { ratio, significant, summarize } from '../lib/measure.js';
import type { BenchMetric, BenchReport, BenchSuite } from '../lib/types.js';

/**
 * AI streaming over a peer session: the latency a token gains between the engine emitting it and the
 * consumer receiving it (baseline: the same engine consumed in-process), token throughput for 1 and
 * 8 streams, and both again while a 50 MiB sync transfer shares the connection.
 *
 * The engine is synthetic (tokens of 4-12 characters, paced or as fast as possible), so the figures
 * measure Ferry's streaming path (batching, padding, framing, network) and not a model.
 */

interface Pair {
  host: PeerNetwork;
  consumer: PeerNetwork;
  hostId: string;
  close(): Promise<void>;
  /** What the pair is, for the report. */
  transport: string;
}

/** Two devices of one account over real WebRTC on loopback, found through a real signaling server. */
async function openPair(): Promise<Pair> {
  const server = await createSignalingServer({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
  });
  const { key } = await deriveAccount('ferry ai bench passphrase', MINIMUM_ACCOUNT_DESCRIPTOR);
  const device = (clientId: string) => {
    // Uncompressed: the sync load below repeats one letter, and compressed it would be no load at all.
    const mesh = createNodeMesh({
      clientId,
      accountKey: key,
      signalingUrls: [server.url],
      session: { compressMinBytes: false },
    });
    mesh.on('error', () => {});
    return mesh;
  };
  const host = device('bench-host');
  const consumer = device('bench-consumer');
  await new Promise<void>((resolve) => {
    const check = () => {
      if (
        consumer.connectedPeers().includes('bench-host') &&
        host.connectedPeers().includes('bench-consumer')
      ) {
        resolve();
      }
    };
    host.on('peer-connected', check);
    consumer.on('peer-connected', check);
    check();
  });
  return {
    host,
    consumer,
    hostId: 'bench-host',
    transport: 'MeshNetwork: WebRTC data channel (@roamhq/wrtc) on loopback, Noise session encryption, lanes',
    close: async () => {
      await Promise.all([host.close(), consumer.close()]);
      await server.close();
    },
  };
}

const token = (i: number) => `t${i.toString(36)}${'_'.repeat(i % 9)} `;

/** Emits `count` tokens, one per `pace` call, recording when each left the engine. */
function pacedEngine(count: number, pace: () => Promise<void>) {
  const emittedAt: number[] = [];
  const backend: ModelBackend = functionBackend('paced', async function* (_request, signal) {
    for (let i = 0; i < count && !signal.aborted; i++) {
      await pace();
      emittedAt.push(performance.now());
      yield token(i);
    }
  });
  return { backend, emittedAt };
}

const everyMs = () => new Promise<void>((resolve) => setTimeout(resolve, 1));
const immediately = () => Promise.resolve();

/** Per-token latency: map received text back to token indices by their cumulative lengths. */
function latencies(emittedAt: number[], arrivals: Array<{ at: number; length: number }>): number[] {
  const ends: number[] = [];
  let total = 0;
  for (let i = 0; i < emittedAt.length; i++) {
    total += token(i).length;
    ends.push(total);
  }
  const out: number[] = [];
  let received = 0;
  let next = 0;
  for (const { at, length } of arrivals) {
    received += length;
    while (next < ends.length && ends[next]! <= received) out.push(at - emittedAt[next++]!);
  }
  return out;
}

async function directLatency(count: number): Promise<number[]> {
  const { backend, emittedAt } = pacedEngine(count, everyMs);
  const arrivals: Array<{ at: number; length: number }> = [];
  const request = { modelId: 'paced', messages: [{ role: 'user' as const, content: 'x' }], params: {} };
  for await (const text of backend.generate(request, new AbortController().signal)) {
    arrivals.push({ at: performance.now(), length: text.length });
  }
  return latencies(emittedAt, arrivals);
}

async function peerLatency(pair: Pair, count: number, batchWindowMs?: number): Promise<number[]> {
  const { backend, emittedAt } = pacedEngine(count, everyMs);
  const handle = serveModels(pair.host, {
    backends: [backend],
    ...(batchWindowMs !== undefined && { batchWindowMs }),
  });
  const arrivals: Array<{ at: number; length: number }> = [];
  for await (const text of askPeer(pair.consumer, pair.hostId, { modelId: 'paced', prompt: 'x' })) {
    arrivals.push({ at: performance.now(), length: text.length });
  }
  await handle.close();
  return latencies(emittedAt, arrivals);
}

async function directThroughput(count: number): Promise<number> {
  const { backend } = pacedEngine(count, immediately);
  const start = performance.now();
  let n = 0;
  const request = { modelId: 'paced', messages: [{ role: 'user' as const, content: 'x' }], params: {} };
  for await (const _ of backend.generate(request, new AbortController().signal)) n++;
  return (n / (performance.now() - start)) * 1000;
}

/** Tokens per second over all `streams` streams running at once. */
async function peerThroughput(pair: Pair, streams: number, perStream: number): Promise<number> {
  const backends = Array.from({ length: streams }, (_, i) => ({
    ...pacedEngine(perStream, immediately).backend,
    id: `fast-${i}`,
  }));
  const handle = serveModels(pair.host, { backends });
  const start = performance.now();
  const results = await Promise.all(
    backends.map((b) => askPeer(pair.consumer, pair.hostId, { modelId: b.id, prompt: 'x' }).result),
  );
  const elapsed = performance.now() - start;
  await handle.close();
  const tokens = results.reduce((sum, r) => sum + r.usage.completionTokens, 0);
  return (tokens / elapsed) * 1000;
}

/** Sends 50 MiB in 64 KiB 'sync' lane messages, again and again until stopped; returns MiB/s. */
function syncTransfer(pair: Pair): { stop: () => Promise<number> } {
  let running = true;
  let bytes = 0;
  const chunk = 'x'.repeat(64 * 1024);
  const start = performance.now();
  const loop = (async () => {
    let seq = 0;
    while (running) {
      for (let sent = 0; sent < 50 * 1024 * 1024 && running; sent += chunk.length) {
        await pair.host.send(
          'bench-consumer',
          { op: 'DB_DIFF_PUSH', data: { seq, chunk }, timestamp: Date.now(), id: `sync-${seq++}` },
          { lane: 'sync' },
        );
        bytes += chunk.length;
        // Let other tasks run between chunks, as a real sync engine awaiting storage would.
        if (seq % 16 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return bytes / (1024 * 1024) / ((performance.now() - start) / 1000);
    },
  };
}

async function run(): Promise<BenchReport> {
  const LATENCY_TOKENS = 2000;
  const FAST_TOKENS = 50_000;
  const metrics: BenchMetric[] = [];
  const pair = await openPair();
  try {
    const direct = summarize(await directLatency(LATENCY_TOKENS));
    const idle = summarize(await peerLatency(pair, LATENCY_TOKENS));
    const added = (value: number, base: number) => significant(Math.max(0, value - base));
    metrics.push(
      { name: 'token latency p50, direct (in-process)', value: significant(direct.p50), unit: 'ms' },
      { name: 'token latency p99, direct (in-process)', value: significant(direct.p99), unit: 'ms' },
      { name: 'added latency p50, idle', value: added(idle.p50, direct.p50), unit: 'ms' },
      { name: 'added latency p99, idle', value: added(idle.p99, direct.p99), unit: 'ms', target: '< 5 ms' },
    );
    // The same without batching, to tell the session's share from the batch window's.
    const unbatched = summarize(await peerLatency(pair, LATENCY_TOKENS, 0));
    metrics.push(
      { name: 'added latency p50, idle, no batching', value: added(unbatched.p50, direct.p50), unit: 'ms' },
      { name: 'added latency p99, idle, no batching', value: added(unbatched.p99, direct.p99), unit: 'ms' },
    );

    const directRate = await directThroughput(FAST_TOKENS);
    const one = await peerThroughput(pair, 1, FAST_TOKENS);
    const eight = await peerThroughput(pair, 8, FAST_TOKENS / 8);
    metrics.push(
      {
        name: 'tokens/s, 1 stream',
        value: significant(one),
        unit: 'tok/s',
        baseline: significant(directRate),
        ratio: ratio(one, directRate),
      },
      {
        name: 'tokens/s, 8 streams (total)',
        value: significant(eight),
        unit: 'tok/s',
        baseline: significant(directRate),
        ratio: ratio(eight, directRate),
      },
    );

    const transfer = syncTransfer(pair);
    const busy = summarize(await peerLatency(pair, LATENCY_TOKENS));
    const oneBusy = await peerThroughput(pair, 1, FAST_TOKENS);
    const eightBusy = await peerThroughput(pair, 8, FAST_TOKENS / 8);
    const syncRate = await transfer.stop();
    metrics.push(
      { name: 'added latency p50, during 50 MiB sync', value: added(busy.p50, direct.p50), unit: 'ms' },
      {
        name: 'added latency p99, during 50 MiB sync',
        value: added(busy.p99, direct.p99),
        unit: 'ms',
        target: '< 20 ms',
      },
      {
        name: 'tokens/s, 1 stream, during sync',
        value: significant(oneBusy),
        unit: 'tok/s',
        baseline: significant(one),
        ratio: ratio(oneBusy, one),
      },
      {
        name: 'tokens/s, 8 streams, during sync',
        value: significant(eightBusy),
        unit: 'tok/s',
        baseline: significant(eight),
        ratio: ratio(eightBusy, eight),
      },
      { name: 'sync transfer rate alongside', value: significant(syncRate), unit: 'MiB/s' },
    );
  } finally {
    await pair.close();
  }
  return {
    name: 'ai',
    description:
      'AI token streaming host -> consumer: added per-token latency (engine emit -> consumer receive), tokens/s for 1 and 8 streams, idle and during a 50 MiB sync transfer',
    baseline:
      'the same synthetic engine consumed in-process (latency: its own emit->receive; throughput: direct tokens/s); "during sync" throughput is compared with the idle figure',
    metrics,
    notes: `Session: ${pair.transport}. Engine paced at ~1 token/ms for latency, unpaced for throughput; default 2 ms batch window. The sync load is 64 KiB messages on the 'sync' lane, repeated in 50 MiB rounds while the AI figures are taken.`,
  };
}

export default { name: 'ai', run } satisfies BenchSuite;
