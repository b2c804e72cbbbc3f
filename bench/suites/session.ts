import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import wrtc from '@roamhq/wrtc';
import { pino } from 'pino';
import SimplePeer from 'simple-peer';
import { deriveSubkey } from '../../packages/core/src/crypto/subkeys.js';
import type { PeerMessage } from '../../packages/core/src/network/types.js';
import { createNodeMesh, nodeChaChaPoly } from '../../packages/core/src/node.js';
import { performHandshake } from '../../packages/core/src/session/handshake.js';
import { Multiplexer } from '../../packages/core/src/session/mux.js';
import { PeerSession } from '../../packages/core/src/session/peer-session.js';
import { SimplePeerTransport } from '../../packages/core/src/transport/simple-peer.js';
import { fromHex, toHex } from '../../packages/core/src/util/bytes.js';
import { createSignalingServer } from '../../packages/server/src/signaling/index.js';
import { MB, MiB, median, percentile, ratio, significant } from '../lib/measure.js';
import type { BenchMetric, BenchReport } from '../lib/types.js';

// Peer sessions over real WebRTC (@roamhq/wrtc, loopback) between two processes: this one measures,
// a child process forked from this same file answers, so each end has its own event loop as two
// devices would. Baseline: raw simple-peer between the same two processes, no encryption, with a
// 1 MiB bufferedAmount window (the best flow control found for @roamhq/wrtc; NOTES.md).

const PEER_FLAG = 'FERRY_SESSION_BENCH_PEER';
const WINDOW = MiB;
const FRAME = 16 * 1024;
/** Raw messages of a bulk transfer: the size Ferry's frames take on this connection (its negotiated maximum). */
const BULK_MESSAGE = 256 * 1024;
const SMALL = 300;
const BATCH = MiB;
const TRANSFER_BATCHES = 50; // 50 MiB
const psk = deriveSubkey(new Uint8Array(32).fill(1), 'handshakePsk');
// Uncompressed: these figures are framing, encryption and transport, and the payloads (zeros, one
// letter repeated) would deflate to almost nothing.
const sessionOptions = { psk, roomId: 'bench-room', aead: nodeChaChaPoly, compressMinBytes: false as const };
const rtcOptions = { wrtc: wrtc as SimplePeer.Options['wrtc'], config: { iceServers: [] }, trickle: true };

/** raw: bare data channel; frames: handshake + encrypted framing only; session: PeerSession (JSON PeerMessages). */
type Mode = 'raw' | 'frames' | 'session';
type ToPeer =
  | { t: 'rtc'; id: number; mode: Mode }
  | { t: 'signal'; id: number; data: SimplePeer.SignalData }
  | { t: 'mesh'; url: string; key: string };
type FromPeer = { t: 'signal'; id: number; data: SimplePeer.SignalData } | { t: 'mesh-ready' };

const message = (op: string, data: unknown): PeerMessage => ({
  op,
  data,
  timestamp: Date.now(),
  id: `${op}-${Math.random()}`,
});

// ---- the answering process ----

/** Encrypted framing without the PeerMessage layer: what the framing costs on its own. */
async function openFrames(peer: SimplePeer.Instance, initiator: boolean): Promise<Multiplexer> {
  const transport = new SimplePeerTransport(peer);
  const channel = await performHandshake(transport, {
    ...sessionOptions,
    initiator,
    localClientId: initiator ? 'peer-a' : 'peer-b',
  });
  const mux = new Multiplexer(transport, channel, { compressMinBytes: false });
  transport.on('message', (frame) => mux.receive(frame));
  for (const frame of channel.takeEarlyFrames()) mux.receive(frame);
  return mux;
}

/**
 * Raw and frames: answer a message whose first byte is 0xff (the last of a run) with one byte; raw
 * also echoes 32-byte messages (round trips). Session: answers BENCH_PING / AI_BENCH_TOKEN with
 * BENCH_PONG / AI_BENCH_ECHO, and the last message of a run (op *_LAST) with BENCH_ACK.
 */
function answer(peer: SimplePeer.Instance, mode: Mode): void {
  if (mode === 'raw') {
    peer.on('data', (data: Uint8Array) => {
      if (data.length === 32) peer.send(data);
      else if (data[0] === 0xff) peer.send(new Uint8Array(1));
    });
    return;
  }
  if (mode === 'frames') {
    void openFrames(peer, false).then((mux) =>
      mux.on('message', (_lane, data) => {
        if (data[0] === 0xff) void mux.send('control', new Uint8Array(1));
      }),
    );
    return;
  }
  void PeerSession.open(new SimplePeerTransport(peer), {
    ...sessionOptions,
    initiator: false,
    localClientId: 'peer-b',
  }).then((session) => {
    session.on('message', (m) => {
      if (m.op === 'BENCH_PING') void session.send(message('BENCH_PONG', m.data));
      else if (m.op === 'AI_BENCH_TOKEN') void session.send(message('AI_BENCH_ECHO', m.data));
      else if (m.op.endsWith('_LAST')) void session.send(message('BENCH_ACK', null));
    });
  });
}

function runPeer(): void {
  const peers = new Map<number, SimplePeer.Instance>();
  const toParent = (m: FromPeer) => process.send!(m);
  process.on('disconnect', () => process.exit(0));
  process.on('message', (m: ToPeer) => {
    if (m.t === 'rtc') {
      const peer = new SimplePeer(rtcOptions);
      peers.set(m.id, peer);
      peer.on('signal', (data) => toParent({ t: 'signal', id: m.id, data }));
      peer.once('connect', () => answer(peer, m.mode));
      peer.on('error', () => {});
    } else if (m.t === 'signal') {
      peers.get(m.id)?.signal(m.data);
    } else {
      const mesh = createNodeMesh({ clientId: 'mesh-b', accountKey: fromHex(m.key), signalingUrls: [m.url] });
      mesh.signaling.once('connected', () => toParent({ t: 'mesh-ready' }));
      mesh.on('peer-disconnected', () => void mesh.close());
    }
  });
}

// ---- the measuring process ----

class Peer {
  private nextId = 0;
  private readonly signals = new Map<number, SimplePeer.Instance>();
  constructor(readonly child: ChildProcess) {
    child.on('message', (m: FromPeer) => {
      if (m.t === 'signal') this.signals.get(m.id)?.signal(m.data);
    });
  }

  /** A WebRTC connection to the other process, connected. */
  async connect(mode: Mode): Promise<SimplePeer.Instance> {
    const id = this.nextId++;
    this.child.send({ t: 'rtc', id, mode } satisfies ToPeer);
    const peer = new SimplePeer({ ...rtcOptions, initiator: true });
    this.signals.set(id, peer);
    peer.on('signal', (data) => this.child.send({ t: 'signal', id, data } satisfies ToPeer));
    await new Promise((resolve) => peer.once('connect', resolve));
    return peer;
  }

  async session(): Promise<{ session: PeerSession; handshakeMs: number }> {
    const rtc = await this.connect('session');
    const start = performance.now();
    const session = await PeerSession.open(new SimplePeerTransport(rtc), {
      ...sessionOptions,
      initiator: true,
      localClientId: 'peer-a',
    });
    return { session, handshakeMs: performance.now() - start };
  }
}

const channelOf = (peer: SimplePeer.Instance) => (peer as unknown as { _channel: RTCDataChannel })._channel;
const tick = (ms = 1) => new Promise((resolve) => setTimeout(resolve, ms));

/** Seconds to send `count` raw messages of `size` bytes with a bufferedAmount window, until acknowledged. */
async function rawRun(peer: SimplePeer.Instance, size: number, count: number): Promise<number> {
  const channel = channelOf(peer);
  const payload = new Uint8Array(size);
  const last = new Uint8Array(size).fill(0xff);
  const acked = new Promise((resolve) => peer.once('data', resolve));
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    while (channel.bufferedAmount > WINDOW) await tick();
    channel.send(i === count - 1 ? last : payload);
    if (i % 64 === 63) await new Promise((resolve) => setImmediate(resolve)); // wrtc refreshes bufferedAmount
  }
  await acked;
  return (performance.now() - start) / 1000;
}

/** Seconds to send `count` messages of `size` bytes through the framing, until acknowledged. */
async function framesRun(mux: Multiplexer, size: number, count: number): Promise<number> {
  const acked = new Promise((resolve) => mux.once('message', resolve));
  const payload = new Uint8Array(size);
  const last = new Uint8Array(size).fill(0xff);
  const start = performance.now();
  const sends: Promise<void>[] = [];
  for (let i = 0; i < count; i++) sends.push(mux.send('sync', i === count - 1 ? last : payload));
  await Promise.all(sends);
  await acked;
  return (performance.now() - start) / 1000;
}

const next = (session: PeerSession, op: string) =>
  new Promise<PeerMessage>((resolve) => {
    const on = (m: PeerMessage) => {
      if (m.op !== op) return;
      session.off('message', on);
      resolve(m);
    };
    session.on('message', on);
  });

/**
 * Seconds to send `count` messages until acknowledged. Small messages are queued all at once (flow
 * control paces them); large ones one after another, as a sync engine sends batches, so encoding the
 * next overlaps sending the last.
 */
async function sessionRun(session: PeerSession, op: string, data: unknown, count: number): Promise<number> {
  const acked = next(session, 'BENCH_ACK');
  const start = performance.now();
  const sequential = typeof data === 'string' && data.length >= FRAME;
  const sends: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const sent = session.send(message(i === count - 1 ? `${op}_LAST` : op, data));
    if (sequential) await sent;
    else sends.push(sent);
  }
  await Promise.all(sends);
  await acked;
  return (performance.now() - start) / 1000;
}

async function roundTrips(send: () => Promise<unknown>, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await send();
    times.push(performance.now() - start);
  }
  return times.sort((x, y) => x - y);
}

/** Median over `rounds` of alternating baseline and session passes, so both see the same machine load. */
async function alternate(
  rounds: number,
  baseline: () => Promise<number>,
  value: () => Promise<number>,
): Promise<{ baseline: number; value: number }> {
  const b: number[] = [];
  const v: number[] = [];
  for (let i = 0; i < rounds; i++) {
    b.push(await baseline());
    v.push(await value());
  }
  return { baseline: median(b), value: median(v) };
}

const compare = (
  name: string,
  unit: string,
  { baseline, value }: { baseline: number; value: number },
  target?: string,
): BenchMetric => ({
  name,
  value: significant(value),
  unit,
  baseline: significant(baseline),
  ratio: ratio(value, baseline),
  ...(target ? { target } : {}),
});

async function meshSetup(peer: Peer): Promise<number> {
  const server = await createSignalingServer({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
  });
  const key = crypto.getRandomValues(new Uint8Array(32));
  peer.child.send({ t: 'mesh', url: server.url, key: toHex(key) } satisfies ToPeer);
  await new Promise<void>((resolve) => {
    const on = (m: FromPeer) => {
      if (m.t !== 'mesh-ready') return;
      peer.child.off('message', on);
      resolve();
    };
    peer.child.on('message', on);
  });
  const start = performance.now();
  const mesh = createNodeMesh({ clientId: 'mesh-a', accountKey: key, signalingUrls: [server.url] });
  await new Promise((resolve) => mesh.once('peer-connected', resolve));
  const ms = performance.now() - start;
  await mesh.close();
  await server.close();
  return ms;
}

async function run(): Promise<BenchReport> {
  const child = fork(fileURLToPath(import.meta.url), [], {
    env: { ...process.env, [PEER_FLAG]: '1' },
    execArgv: process.execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const peer = new Peer(child);
  const metrics: BenchMetric[] = [];
  try {
    // Setup: the second device's signaling join to an authenticated session, vs a bare WebRTC connect.
    await meshSetup(peer); // warm-up: module and JIT
    const setup = await alternate(
      5,
      async () => {
        const start = performance.now();
        (await peer.connect('raw')).destroy();
        return performance.now() - start;
      },
      () => meshSetup(peer),
    );
    metrics.push(
      compare('connection setup: signaling join to handshake done', 'ms', setup, 'handshake < 50 ms'),
    );
    const handshakes: number[] = [];
    for (let i = 0; i < 7; i++) {
      const { session, handshakeMs } = await peer.session();
      handshakes.push(handshakeMs);
      session.close();
    }
    metrics.push({
      name: 'Noise handshake over a connected data channel (median of 7)',
      value: significant(median(handshakes)),
      unit: 'ms',
      target: '< 50 ms',
    });

    const raw = await peer.connect('raw');
    const { session } = await peer.session();

    // Bulk, 32 MiB per pass: 256 KiB raw messages vs 1 MiB messages in encrypted frames of the same
    // size (as large as the connection takes), bare (frames) and as JSON PeerMessages (session, which
    // adds the codec's encode and parse).
    const frames = await openFrames(await peer.connect('frames'), true);
    const bulkMiB = 32;
    const rawBulk = async () =>
      (bulkMiB * MiB) / MB / (await rawRun(raw, BULK_MESSAGE, (bulkMiB * MiB) / BULK_MESSAGE));
    const framed = await alternate(
      7,
      rawBulk,
      async () => (bulkMiB * MiB) / MB / (await framesRun(frames, BATCH, bulkMiB)),
    );
    metrics.push(
      compare(
        'throughput: encrypted frames of up to 256 KiB (1 MiB messages)',
        'MB/s',
        framed,
        '>= 0.8 of raw',
      ),
    );
    const batch = 'b'.repeat(BATCH);
    const bulk = await alternate(
      3,
      rawBulk,
      async () => (bulkMiB * MiB) / MB / (await sessionRun(session, 'DB_BENCH_BATCH', batch, bulkMiB)),
    );
    metrics.push(compare('throughput: 1 MiB PeerMessages (JSON)', 'MB/s', bulk));

    // Small messages: 300 B of data each.
    const count = 10_000;
    const small = 's'.repeat(SMALL);
    const rate = await alternate(
      3,
      async () => count / (await rawRun(raw, SMALL, count)),
      async () => count / (await sessionRun(session, 'DB_BENCH_SMALL', small, count)),
    );
    metrics.push(compare('small messages (300 B)', 'msg/s', rate));

    // Round trips, one at a time.
    const ping = new Uint8Array(32);
    const rawRtt = await roundTrips(() => {
      const echoed = new Promise((resolve) => raw.once('data', resolve));
      raw.send(ping);
      return echoed;
    }, 2000);
    const rtt = await roundTrips(() => {
      const pong = next(session, 'BENCH_PONG');
      void session.send(message('BENCH_PING', null));
      return pong;
    }, 2000);
    for (const p of [50, 99]) {
      metrics.push(
        compare(`round trip p${p}`, 'ms', { baseline: percentile(rawRtt, p), value: percentile(rtt, p) }),
      );
    }

    // Priority: round trip of a small AI frame every 5 ms while 50 MiB of sync data flows the same way.
    const idle = await roundTrips(() => {
      const echo = next(session, 'AI_BENCH_ECHO');
      void session.send(message('AI_BENCH_TOKEN', 'tok'));
      return echo;
    }, 200);
    const start = performance.now();
    let transferring = true;
    const transfer = sessionRun(session, 'DB_BENCH_BATCH', batch, TRANSFER_BATCHES).finally(
      () => (transferring = false),
    );
    const busy: number[] = [];
    while (transferring) {
      const t0 = performance.now();
      const echo = next(session, 'AI_BENCH_ECHO');
      await session.send(message('AI_BENCH_TOKEN', 'tok'));
      await echo;
      busy.push(performance.now() - t0);
      await tick(5);
    }
    await transfer;
    const transferRate = (TRANSFER_BATCHES * MiB) / MB / ((performance.now() - start) / 1000);
    busy.sort((x, y) => x - y);
    metrics.push(
      compare(
        `AI frame round trip during a 50 MiB sync transfer, p99 (${busy.length} frames; p50 ${significant(percentile(busy, 50))} ms; sync meanwhile ${significant(transferRate)} MB/s)`,
        'ms',
        { baseline: percentile(idle, 99), value: percentile(busy, 99) },
        'near the idle round trip: sync stays <= 2 frames ahead of AI',
      ),
    );
    session.close();
    raw.destroy();
  } finally {
    child.kill();
  }
  return {
    name: 'session',
    description:
      'Ferry peer sessions (Noise NNpsk0, ChaCha20-Poly1305 frames on OpenSSL, lanes, JSON PeerMessages) over @roamhq/wrtc data channels between two processes on loopback',
    baseline:
      'raw simple-peer between the same two processes: no encryption, 1 MiB bufferedAmount window, 256 KiB messages (bulk) or 300 B ones; setup: WebRTC connect signalled over IPC, no signaling server; AI frame: the same round trip with no transfer running',
    metrics,
    notes:
      'Medians of alternating raw/session passes (the machine is shared: expect noise). Small messages: the session packs messages queued in the same turn into shared frames; raw sends one data-channel message each. The AI figure is a round trip: the token goes out behind the sync data, the echo comes back on the idle direction.',
  };
}

if (process.env[PEER_FLAG]) runPeer();

export default { name: 'session', run };
