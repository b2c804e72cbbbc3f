import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createNodeMesh,
  deriveAccount,
  type MeshNetwork,
  MINIMUM_ACCOUNT_DESCRIPTOR,
} from '@ferry/core/node';
import { createSignalingServer, type SignalingServer } from '@ferry/server';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { askPeer, listPeerModels } from '../src/consumer.js';
import { type ServeHandle, serveModels } from '../src/host.js';
import { type LlamaCppBackend, tinyLlamaBackend, writeTinyLlamaGguf } from '../src/node.js';
import { CountingEngine, drain, GatedEngine, generateDirect } from './helpers.js';

// Two Node devices of one account over real WebRTC data channels, found through the real signaling
// server, sessions authenticated and encrypted by the Noise handshake; one serves llama.cpp.
let server: SignalingServer;
let dir: string;
let backend: LlamaCppBackend;
let host: MeshNetwork;
let consumer: MeshNetwork;
let handle: ServeHandle;
const endless = new CountingEngine();
const gatedA = new GatedEngine('gated-a');
const gatedB = new GatedEngine('gated-b');

const connected = (mesh: MeshNetwork, peerId: string) =>
  new Promise<void>((resolve) => {
    if (mesh.connectedPeers().includes(peerId)) return resolve();
    const onPeer = (id: string) => {
      if (id !== peerId) return;
      mesh.off('peer-connected', onPeer);
      resolve();
    };
    mesh.on('peer-connected', onPeer);
  });

beforeAll(async () => {
  server = await createSignalingServer({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }) });
  const { key } = await deriveAccount('ai mesh test passphrase', MINIMUM_ACCOUNT_DESCRIPTOR);
  const device = (clientId: string) => {
    const mesh = createNodeMesh({ clientId, accountKey: key, signalingUrls: [server.url] });
    mesh.on('error', () => {});
    return mesh;
  };
  dir = await mkdtemp(join(tmpdir(), 'ferry-ai-mesh-'));
  await writeTinyLlamaGguf(join(dir, 'tiny.gguf'), { seed: 11 });
  backend = tinyLlamaBackend({ id: 'tiny', modelPath: join(dir, 'tiny.gguf') });
  [host, consumer] = [device('desktop'), device('phone')];
  handle = serveModels(host, {
    backends: [backend, endless.backend('endless'), gatedA.backend(), gatedB.backend()],
  });
  await Promise.all([backend.load(), connected(host, 'phone'), connected(consumer, 'desktop')]);
});

afterAll(async () => {
  await handle?.close();
  await Promise.all([host?.close(), consumer?.close()]);
  await server?.close();
  await backend?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('AI streams over a real WebRTC session', () => {
  it('lists the models the desktop serves', async () => {
    const models = await listPeerModels(consumer, 'desktop');
    expect(models.map((m) => m.id)).toEqual(['tiny', 'endless', 'gated-a', 'gated-b']);
    expect(models[0]).toMatchObject({ backend: 'llama-cpp', concurrency: 1 });
  });

  it('the phone receives exactly the text llama.cpp produced for the same seed', async () => {
    const stream = askPeer(consumer, 'desktop', {
      modelId: 'tiny',
      prompt: 'hi',
      params: { seed: 42, temperature: 0.8, maxTokens: 64 },
    });
    let received = '';
    for await (const delta of stream) received += delta;
    const result = await stream.result;
    expect(received).toBe(await generateDirect(backend, 42, 64));
    expect(result.usage.completionTokens).toBe(64);
    expect(result.finishReason).toBe('length');
  });

  it('a cancel from the phone stops llama.cpp on the desktop', async () => {
    const stream = askPeer(consumer, 'desktop', {
      modelId: 'tiny',
      prompt: 'go',
      params: { seed: 2, maxTokens: 20_000 },
    });
    for await (const _delta of stream) break;
    await expect(stream.result).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect.poll(() => backend.engine.activeGenerations).toBe(0);
    const atStop = backend.engine.generatedTokens;
    await generateDirect(backend, 5, 3);
    expect(backend.engine.generatedTokens).toBe(atStop + 3);
  });

  it('two streams interleave on the one connection', async () => {
    const a = askPeer(consumer, 'desktop', { modelId: 'gated-a', prompt: 'a' });
    const b = askPeer(consumer, 'desktop', { modelId: 'gated-b', prompt: 'b' });
    const arrivals: string[] = [];
    const read = async (stream: typeof a) => {
      for await (const delta of stream) arrivals.push(delta);
    };
    const reading = Promise.all([read(a), read(b)]);
    await Promise.all([a.accepted, b.accepted]);
    for (let i = 0; i < 4; i++) {
      for (const [engine, name] of [
        [gatedA, 'a'],
        [gatedB, 'b'],
      ] as const) {
        const before = arrivals.length;
        engine.release(`${name}${i}`);
        await expect.poll(() => arrivals.length, { interval: 2 }).toBe(before + 1);
      }
    }
    gatedA.release(null);
    gatedB.release(null);
    await reading;
    expect(arrivals).toEqual(['a0', 'b0', 'a1', 'b1', 'a2', 'b2', 'a3', 'b3']);
    expect((await a.result).text).toBe('a0a1a2a3');
    expect((await b.result).text).toBe('b0b1b2b3');
  });

  it('the desktop going away mid-stream ends the phone stream with CLOSED and stops the engine', async () => {
    const stream = askPeer(consumer, 'desktop', { modelId: 'endless', prompt: 'x' });
    await stream.accepted;
    await expect.poll(() => endless.produced).toBeGreaterThan(3);
    host.session('phone')!.close('simulated drop');
    const { error } = await drain(stream);
    expect(error).toMatchObject({ code: 'CLOSED' });
    await endless.whenStopped(1);
  });
});
