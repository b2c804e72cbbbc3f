import { pino } from 'pino';
import type SimplePeer from 'simple-peer';
import { deriveSubkey } from '../../packages/core/src/crypto/subkeys.js';
import type { PeerMessage } from '../../packages/core/src/network/types.js';
import { createNodeMesh, nodeChaChaPoly } from '../../packages/core/src/node.js';
import { PeerSession } from '../../packages/core/src/session/peer-session.js';
import { SimplePeerTransport } from '../../packages/core/src/transport/simple-peer.js';
import { connectedSimplePeers } from '../../packages/core/test/support/webrtc.js';
import { createSignalingServer } from '../../packages/server/src/signaling/index.js';
import { MB, MiB, median, percentile, ratio, significant } from '../lib/measure.js';
import type { BenchMetric, BenchReport } from '../lib/types.js';

// Peer sessions over real WebRTC (@roamhq/wrtc, both peers in this process, loopback), against raw
// simple-peer with no encryption and a 1 MiB bufferedAmount window: the best flow control found here.

const WINDOW = 1024 * 1024;
const CHUNK = 16 * 1024;
const BULK = 60 * MiB; // under the 64 MiB session message limit with its JSON envelope

type Channel = RTCDataChannel;
const channelOf = (peer: SimplePeer.Instance) => (peer as unknown as { _channel: Channel })._channel;

/** Raw data-channel sends of `count` messages of `size` bytes with a bufferedAmount window; resolves when all arrived. */
async function rawTransfer(
  a: SimplePeer.Instance,
  b: SimplePeer.Instance,
  size: number,
  count: number,
): Promise<number> {
  const channel = channelOf(a);
  const payload = new Uint8Array(size);
  let received = 0;
  const done = new Promise<void>((resolve) => {
    const onData = () => {
      if (++received === count) {
        b.off('data', onData);
        resolve();
      }
    };
    b.on('data', onData);
  });
  const start = performance.now();
  for (let sent = 0; sent < count; sent++) {
    while (channel.bufferedAmount > WINDOW) await new Promise((r) => setTimeout(r, 1));
    channel.send(payload);
    if (sent % 64 === 63) await new Promise((r) => setImmediate(r)); // let wrtc refresh bufferedAmount
  }
  await done;
  return (performance.now() - start) / 1000;
}

const message = (op: string, data: unknown): PeerMessage => ({
  op,
  data,
  timestamp: Date.now(),
  id: `${Math.random()}`,
});

async function sessionPair(): Promise<[PeerSession, PeerSession, SimplePeer.Instance, SimplePeer.Instance]> {
  const [p, q] = await connectedSimplePeers();
  const psk = deriveSubkey(new Uint8Array(32).fill(1), 'handshakePsk');
  const [a, b] = await Promise.all([
    PeerSession.open(new SimplePeerTransport(p), {
      psk,
      roomId: 'bench',
      initiator: true,
      localClientId: 'a',
      aead: nodeChaChaPoly,
    }),
    PeerSession.open(new SimplePeerTransport(q), {
      psk,
      roomId: 'bench',
      initiator: false,
      localClientId: 'b',
      aead: nodeChaChaPoly,
    }),
  ]);
  return [a, b, p, q];
}

const nextMessage = (session: PeerSession, op: string) =>
  new Promise<PeerMessage>((resolve) => {
    const on = (m: PeerMessage) => {
      if (m.op === op) {
        session.off('message', on);
        resolve(m);
      }
    };
    session.on('message', on);
  });

async function setupTimes(): Promise<{ mesh: number[]; raw: number[] }> {
  const server = await createSignalingServer({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
  });
  const mesh: number[] = [];
  const raw: number[] = [];
  for (let i = 0; i < 7; i++) {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const start = performance.now();
    const a = createNodeMesh({ clientId: 'a', accountKey: key, signalingUrls: [server.url] });
    const b = createNodeMesh({ clientId: 'b', accountKey: key, signalingUrls: [server.url] });
    await Promise.all([a, b].map((n) => new Promise((r) => n.once('peer-connected', r))));
    mesh.push(performance.now() - start);
    await Promise.all([a.close(), b.close()]);
    const rawStart = performance.now();
    const [p, q] = await connectedSimplePeers();
    raw.push(performance.now() - rawStart);
    p.destroy();
    q.destroy();
  }
  await server.close();
  return { mesh, raw };
}

async function run(): Promise<BenchReport> {
  const metrics: BenchMetric[] = [];
  const setup = await setupTimes();
  metrics.push({
    name: 'connection setup: signaling join to handshake done (2 devices)',
    value: significant(median(setup.mesh)),
    unit: 'ms',
    baseline: significant(median(setup.raw)),
    ratio: ratio(median(setup.mesh), median(setup.raw)),
    target: 'handshake < 50 ms on loopback',
  });

  // Bulk throughput: one 60 MiB sync message, chunked into 16 KiB encrypted frames.
  const [p, q] = await connectedSimplePeers();
  const rawSeconds = await rawTransfer(p, q, CHUNK, BULK / CHUNK);
  p.destroy();
  q.destroy();
  const [a, b] = await sessionPair();
  const bulk = new Uint8Array(BULK).fill(97);
  const text = new TextDecoder().decode(bulk);
  const start = performance.now();
  const arrived = nextMessage(b, 'DB_BULK');
  await a.send(message('DB_BULK', text));
  await arrived;
  const sessionSeconds = (performance.now() - start) / 1000;
  const rawRate = BULK / MB / rawSeconds;
  const sessionRate = BULK / MB / sessionSeconds;
  metrics.push({
    name: 'throughput, one 60 MiB message in 16 KiB frames',
    value: significant(sessionRate),
    unit: 'MB/s',
    baseline: significant(rawRate),
    ratio: ratio(sessionRate, rawRate),
    target: '>= 0.8 of raw',
  });

  // Small messages: 300 B each, all sent then all awaited.
  const small = 'm'.repeat(300);
  const count = 20_000;
  const [p2, q2] = await connectedSimplePeers();
  const rawSmall = count / (await rawTransfer(p2, q2, 300, count));
  let got = 0;
  const allSmall = new Promise<void>((resolve) => {
    const on = () => {
      if (++got === count) {
        b.off('message', on);
        resolve();
      }
    };
    b.on('message', on);
  });
  const smallStart = performance.now();
  const sends: Promise<void>[] = [];
  for (let i = 0; i < count; i++) sends.push(a.send(message('DB_SMALL', small)));
  await Promise.all(sends);
  await allSmall;
  const sessionSmall = count / ((performance.now() - smallStart) / 1000);
  metrics.push({
    name: 'small messages (300 B)',
    value: significant(sessionSmall),
    unit: 'msg/s',
    baseline: significant(rawSmall),
    ratio: ratio(sessionSmall, rawSmall),
  });

  // Round trips: ping-pong, one at a time.
  const rtts: number[] = [];
  b.on('message', (m) => {
    if (m.op === 'AI_PING') void b.send(message('AI_PONG', null));
  });
  for (let i = 0; i < 2000; i++) {
    const t0 = performance.now();
    const pong = nextMessage(a, 'AI_PONG');
    await a.send(message('AI_PING', null));
    await pong;
    rtts.push(performance.now() - t0);
  }
  const rawRtts: number[] = [];
  q2.on('data', (d: Uint8Array) => q2.send(d));
  for (let i = 0; i < 2000; i++) {
    const t0 = performance.now();
    const echoed = new Promise((r) => p2.once('data', r));
    p2.send(new Uint8Array(32));
    await echoed;
    rawRtts.push(performance.now() - t0);
  }
  rtts.sort((x, y) => x - y);
  rawRtts.sort((x, y) => x - y);
  for (const p of [50, 99]) {
    metrics.push({
      name: `round trip p${p}`,
      value: significant(percentile(rtts, p)),
      unit: 'ms',
      baseline: significant(percentile(rawRtts, p)),
      ratio: ratio(percentile(rtts, p), percentile(rawRtts, p)),
    });
  }
  p2.destroy();
  q2.destroy();

  // Priority: delay of small AI frames while a 50 MiB sync transfer (50 batches of 1 MiB, as the sync
  // engine sends them) runs on the same session.
  const delays: number[] = [];
  const batch = text.slice(0, MiB);
  const transfer = (async () => {
    for (let i = 0; i < 50; i++) await a.send(message('DB_BATCH', batch));
  })();
  let batches = 0;
  const transferDone = new Promise<void>((resolve) => {
    const on = (m: PeerMessage) => {
      if (m.op === 'DB_BATCH' && ++batches === 50) {
        b.off('message', on);
        resolve();
      }
    };
    b.on('message', on);
  });
  let running = true;
  void transferDone.then(() => (running = false));
  while (running && delays.length < 500) {
    const t0 = performance.now();
    const token = nextMessage(b, 'AI_TOKEN');
    await a.send(message('AI_TOKEN', 'tok'));
    await token;
    delays.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 2));
  }
  await transfer;
  await transferDone;
  delays.sort((x, y) => x - y);
  metrics.push({
    name: `AI frame delivery during a 50 MiB transfer, p99 (${delays.length} frames, p50 ${significant(percentile(delays, 50))} ms)`,
    value: significant(percentile(delays, 99)),
    unit: 'ms',
    baseline: significant(percentile(rtts, 99) / 2),
    ratio: ratio(percentile(delays, 99), percentile(rtts, 99) / 2),
    target: 'AI p99 < 20 ms during a transfer',
  });
  a.close();
  return {
    name: 'session',
    description:
      'Ferry peer sessions (Noise NNpsk0 handshake, ChaCha20-Poly1305 frames on OpenSSL, lane multiplexer) over @roamhq/wrtc data channels, both peers in one process on loopback',
    baseline:
      'raw simple-peer data channel, no encryption, 1 MiB bufferedAmount window (setup: direct in-process signalling, no signaling server; AI-delay baseline: half the idle round trip)',
    metrics,
    notes: 'One process does both ends, so crypto and WebRTC work of both peers share 2 cores.',
  };
}

export default { name: 'session', run };
