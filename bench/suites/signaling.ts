import { once } from 'node:events';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { SignalingClient } from '../../packages/core/src/signaling/client.js';
import { randomBytes, toHex } from '../../packages/core/src/util/bytes.js';
import { createSignalingServer, type SignalingServer } from '../../packages/server/src/signaling/index.js';
import { TEST_REDIS_URL } from '../../testing/services.js';
import { median, ratio, round, summarize } from '../lib/measure.js';
import type { BenchMetric, BenchReport } from '../lib/types.js';

/**
 * Ferry signaling (join proof, schema validation, sealed bodies, presence) against a bare WebSocket
 * relay that forwards `{to, body}` frames by client id with no auth, validation or encryption: the
 * cheapest thing that could carry the same offers and answers. Both run in this process on loopback.
 */

const ROUND_TRIPS = 400;
const BURST = 3_000;
const JOINERS = 100;
/** A trickle-ICE-sized payload: an SDP answer is ~1-3 KB, a candidate ~200 B. */
const SIGNAL = {
  type: 'answer',
  sdp: `v=0\r\n${'a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n'.repeat(12)}`,
};

const logger = pino({ level: 'silent' });
const UNLIMITED = { messagesPerSecond: 1e9, burst: 1e9, maxPeersPerRoom: 1_000, maxBufferedBytes: 1e9 };

// ---- the baseline: a bare relay ----

async function startBareRelay(): Promise<{ url: string; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await once(wss, 'listening');
  const byId = new Map<string, WebSocket>();
  wss.on('connection', (socket, request) => {
    const id = new URL(request.url ?? '/', 'http://x').searchParams.get('id') ?? '';
    byId.set(id, socket);
    socket.send('ready');
    socket.on('message', (data) => {
      const { to, body } = JSON.parse(data.toString()) as { to: string; body: unknown };
      byId.get(to)?.send(JSON.stringify({ from: id, body }));
    });
  });
  const { port } = wss.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${port}/`,
    close: () => new Promise((resolve) => wss.close(() => resolve())),
  };
}

interface Endpoint {
  send(to: string, data: unknown): void;
  onSignal(listener: (from: string, data: unknown) => void): void;
  close(): Promise<void>;
}

async function bareEndpoint(url: string, id: string): Promise<Endpoint> {
  const socket = new WebSocket(`${url}?id=${id}`);
  const listeners: Array<(from: string, data: unknown) => void> = [];
  await new Promise<void>((resolve) =>
    socket.once('message', () => {
      socket.on('message', (data) => {
        const { from, body } = JSON.parse(data.toString()) as { from: string; body: unknown };
        for (const listener of listeners) listener(from, body);
      });
      resolve();
    }),
  );
  return {
    send: (to, data) => socket.send(JSON.stringify({ to, body: data })),
    onSignal: (listener) => listeners.push(listener),
    close: async () => socket.close(),
  };
}

async function ferryEndpoint(
  url: string,
  accountKey: Uint8Array,
  id: string,
  expectPeer?: string,
): Promise<Endpoint> {
  const client = new SignalingClient({ urls: [url], accountKey, clientId: id, WebSocket });
  await new Promise<void>((resolve) => {
    const check = () => {
      if (client.connected && (!expectPeer || client.peers().includes(expectPeer))) resolve();
    };
    client.on('connected', check);
    client.on('peer-joined', check);
  });
  return {
    send: (to, data) => client.signal(to, data),
    onSignal: (listener) => client.on('signal', listener),
    close: () => client.close(),
  };
}

// ---- measurements, identical for both ----

/** Milliseconds of each A -> B -> A exchange (B echoes), one at a time. */
async function roundTrips(a: Endpoint, b: Endpoint): Promise<number[]> {
  b.onSignal((from, data) => b.send(from, data));
  let answered: (() => void) | undefined;
  a.onSignal(() => answered?.());
  const times: number[] = [];
  for (let i = 0; i < ROUND_TRIPS + 20; i++) {
    const start = performance.now();
    await new Promise<void>((resolve) => {
      answered = resolve;
      a.send('b', SIGNAL);
    });
    if (i >= 20) times.push(performance.now() - start); // the first few warm the JIT
  }
  return times;
}

/** Signals per second from A to B when A sends a burst as fast as it can. */
async function burstRate(a: Endpoint, b: Endpoint): Promise<number> {
  let received = 0;
  let done: (() => void) | undefined;
  b.onSignal(() => {
    if (++received === BURST) done?.();
  });
  const start = performance.now();
  const all = new Promise<void>((resolve) => (done = resolve));
  for (let i = 0; i < BURST; i++) a.send('b', SIGNAL);
  await all;
  return BURST / ((performance.now() - start) / 1000);
}

async function pair(make: (id: string, expect?: string) => Promise<Endpoint>): Promise<[Endpoint, Endpoint]> {
  const a = await make('a');
  const b = await make('b', 'a');
  return [a, b];
}

/** Median milliseconds from opening a socket to being able to signal, for JOINERS clients joining together. */
async function concurrentJoins(
  make: (id: string) => Promise<Endpoint>,
): Promise<{ total: number; each: number }> {
  const start = performance.now();
  const joined = await Promise.all(
    Array.from({ length: JOINERS }, async (_, i) => {
      const t0 = performance.now();
      const endpoint = await make(`joiner-${i}`);
      return { endpoint, ms: performance.now() - t0 };
    }),
  );
  const total = performance.now() - start;
  await Promise.all(joined.map(({ endpoint }) => endpoint.close()));
  return { total, each: median(joined.map(({ ms }) => ms)) };
}

async function redisAvailable(): Promise<boolean> {
  const redis = new Redis(TEST_REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => {});
  try {
    await redis.connect();
    await redis.quit();
    return true;
  } catch {
    return false;
  }
}

export default {
  name: 'signaling',
  async run(): Promise<BenchReport> {
    const metrics: BenchMetric[] = [];
    const bare = await startBareRelay();
    const ferry = await createSignalingServer({ logger, limits: UNLIMITED });
    const key = randomBytes(32);

    // Round trips.
    const [bareA, bareB] = await pair((id) => bareEndpoint(bare.url, id));
    const bareRtt = summarize(await roundTrips(bareA, bareB));
    const [ferryA, ferryB] = await pair((id, expect) => ferryEndpoint(ferry.url, key, id, expect));
    const ferryRtt = summarize(await roundTrips(ferryA, ferryB));
    for (const p of ['p50', 'p99'] as const) {
      metrics.push({
        name: `signal round trip ${p} (A->B->A, ~1.1 KB signal)`,
        value: round(ferryRtt[p], 3),
        unit: 'ms',
        baseline: round(bareRtt[p], 3),
        ratio: ratio(ferryRtt[p], bareRtt[p]),
      });
    }

    // Burst throughput (fresh pairs so earlier listeners do not echo).
    const bareBurst = await pair((id) => bareEndpoint(bare.url, `${id}`));
    const bareRate = await burstRate(...bareBurst);
    const burstKey = randomBytes(32);
    const ferryBurst = await pair((id, expect) => ferryEndpoint(ferry.url, burstKey, id, expect));
    const ferryRate = await burstRate(...ferryBurst);
    metrics.push({
      name: `signal burst rate (${BURST} signals, one sender)`,
      value: Math.round(ferryRate),
      unit: 'signals/s',
      baseline: Math.round(bareRate),
      ratio: ratio(ferryRate, bareRate),
    });

    // Joins: Ferry pays an Ed25519 verify per join; the bare relay only opens a socket.
    const joinKey = randomBytes(32);
    const bareJoins = await concurrentJoins((id) => bareEndpoint(bare.url, id));
    const ferryJoins = await concurrentJoins((id) => ferryEndpoint(ferry.url, joinKey, id));
    metrics.push({
      name: `join latency median (${JOINERS} clients at once)`,
      value: round(ferryJoins.each, 2),
      unit: 'ms',
      baseline: round(bareJoins.each, 2),
      ratio: ratio(ferryJoins.each, bareJoins.each),
    });
    metrics.push({
      name: `join rate (${JOINERS} clients at once)`,
      value: Math.round(JOINERS / (ferryJoins.total / 1000)),
      unit: 'joins/s',
      baseline: Math.round(JOINERS / (bareJoins.total / 1000)),
      ratio: ratio(JOINERS / ferryJoins.total, JOINERS / bareJoins.total),
    });

    let notes = 'All on loopback in one process; the client seals and opens every body (XChaCha20-Poly1305).';
    const sockets: Endpoint[] = [bareA, bareB, ferryA, ferryB, ...bareBurst, ...ferryBurst];
    const servers: SignalingServer[] = [ferry];
    if (await redisAvailable()) {
      const prefix = `ferry-bench:${toHex(randomBytes(4))}:`;
      const one = await createSignalingServer({
        logger,
        limits: UNLIMITED,
        redisUrl: TEST_REDIS_URL,
        redisKeyPrefix: prefix,
      });
      const two = await createSignalingServer({
        logger,
        limits: UNLIMITED,
        redisUrl: TEST_REDIS_URL,
        redisKeyPrefix: prefix,
      });
      servers.push(one, two);
      const redisKey = randomBytes(32);
      const a = await ferryEndpoint(one.url, redisKey, 'a');
      const b = await ferryEndpoint(two.url, redisKey, 'b', 'a');
      sockets.push(a, b);
      const redisRtt = summarize(await roundTrips(a, b));
      for (const p of ['p50', 'p99'] as const) {
        metrics.push({
          name: `signal round trip ${p} across two instances via Redis`,
          value: round(redisRtt[p], 3),
          unit: 'ms',
          baseline: round(ferryRtt[p], 3),
          ratio: ratio(redisRtt[p], ferryRtt[p]),
        });
      }
      notes += ' Redis rows use single-instance Ferry as their baseline.';
    } else {
      notes += ' Redis not reachable: cross-instance rows skipped.';
    }

    await Promise.all(sockets.map((endpoint) => endpoint.close()));
    await Promise.all(servers.map((server) => server.close()));
    await bare.close();
    return {
      name: 'signaling',
      description:
        'Ferry signaling server + client: relay latency, burst rate, joins; Redis scale-out latency',
      baseline: 'bare ws relay forwarding {to, body} by id (no auth, validation or sealing), same run',
      metrics,
      notes,
    };
  },
};
