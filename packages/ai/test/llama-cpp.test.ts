import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { equalBytes } from '@ferry/core';
import { streamText } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferryModel } from '../src/ai-sdk.js';
import { askPeer } from '../src/consumer.js';
import { serveModels } from '../src/host.js';
import { type LlamaCppBackend, tinyLlamaBackend, writeTinyLlamaGguf } from '../src/node.js';
import { createTinyLlamaGguf } from '../src/tiny-gguf.js';
import { describeBackendConformance } from './backend-conformance.js';
import { generateDirect, memoryPair } from './helpers.js';

// Real inference: a random-weight llama model written by the test, run by llama.cpp on the CPU.
let dir: string;
let modelPath: string;
let backend: LlamaCppBackend;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-ai-llama-'));
  modelPath = join(dir, 'tiny.gguf');
  await writeTinyLlamaGguf(modelPath, { seed: 11 });
  backend = tinyLlamaBackend({ id: 'tiny', modelPath });
  await backend.load();
});

afterAll(async () => {
  await backend?.close();
  await rm(dir, { recursive: true, force: true });
});

describeBackendConformance('node-llama-cpp', () => ({
  backend,
  idle: () => backend.engine.activeGenerations === 0,
  deterministic: true,
}));

describe('the tiny GGUF writer', () => {
  it('is deterministic per seed and has the GGUF v3 header', async () => {
    const a = createTinyLlamaGguf({ seed: 11 });
    expect(equalBytes(a, new Uint8Array(await readFile(modelPath)))).toBe(true);
    expect(equalBytes(createTinyLlamaGguf({ seed: 12 }), a)).toBe(false);
    expect(new TextDecoder().decode(a.subarray(0, 4))).toBe('GGUF');
    expect(new DataView(a.buffer).getUint32(4, true)).toBe(3);
    expect(a.length).toBeGreaterThan(400_000);
    expect(a.length).toBeLessThan(550_000);
  });
});

describe('node-llama-cpp backend served to a peer', () => {
  it('streams the text the engine produces for the same seed', async () => {
    const { host, consumer } = memoryPair();
    const handle = serveModels(host, { backends: [backend] });
    try {
      const stream = askPeer(consumer, 'host', {
        modelId: 'tiny',
        prompt: 'hi',
        params: { seed: 42, temperature: 0.8, maxTokens: 48 },
      });
      let received = '';
      for await (const delta of stream) received += delta;
      const result = await stream.result;

      const reference = await generateDirect(backend, 42, 48);
      expect(received.length).toBeGreaterThan(20);
      expect(received).toBe(reference);
      expect(result.text).toBe(reference);
      expect(result.finishReason).toBe('length');
      expect(result.usage.completionTokens).toBe(48);
      expect(result.usage.promptTokens).toBeGreaterThan(0);
      expect(result.sessionInfo.backend).toBe('llama-cpp');
      // The seed matters: another one gives another text.
      expect(await generateDirect(backend, 43, 48)).not.toBe(reference);
      // The bias channel keeps the random model on printable ASCII.
      expect(reference).toMatch(/^[\x20-\x7e]+$/);
    } finally {
      await handle.close();
    }
  });

  it('streamText from the AI SDK runs on the peer model', async () => {
    const { host, consumer } = memoryPair();
    const handle = serveModels(host, { backends: [backend] });
    try {
      const result = streamText({
        model: ferryModel(consumer, 'host', 'tiny'),
        prompt: 'hi',
        seed: 42,
        temperature: 0.8,
        maxOutputTokens: 48,
      });
      let text = '';
      for await (const delta of result.textStream) text += delta;
      expect(text).toBe(await generateDirect(backend, 42, 48));
      expect((await result.usage).outputTokens).toBe(48);
    } finally {
      await handle.close();
    }
  });

  it('a consumer cancel stops llama.cpp: its token count stops growing', async () => {
    const { host, consumer } = memoryPair();
    const handle = serveModels(host, { backends: [backend] });
    try {
      const before = backend.engine.generatedTokens;
      // Far more tokens than the 256-token context: the engine would run for seconds if not stopped.
      const stream = askPeer(consumer, 'host', {
        modelId: 'tiny',
        prompt: 'go',
        params: { seed: 1, maxTokens: 20_000 },
      });
      for await (const _delta of stream) break; // stop after the first delta
      await expect(stream.result).rejects.toMatchObject({ code: 'CANCELLED' });
      await expect.poll(() => backend.engine.activeGenerations).toBe(0);
      const atStop = backend.engine.generatedTokens;
      expect(atStop - before).toBeLessThan(20_000);
      // A fresh generation proves the engine is idle and usable; the cancelled one added nothing since.
      await generateDirect(backend, 5, 4);
      expect(backend.engine.generatedTokens).toBe(atStop + 4);
      await expect.poll(() => handle.stats()[0]?.cancelled).toBe(1);
    } finally {
      await handle.close();
    }
  });
});
