import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeMesh, type MeshNetwork, toBase64 } from '@ferry/core/node';
import { createSignalingServer, type SignalingServer } from '@ferry/server';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../testing/browser.js';
import { hasChromium } from '../../../testing/services.js';
import { type ServeHandle, serveModels } from '../src/host.js';
import { type LlamaCppBackend, tinyLlamaBackend, writeTinyLlamaGguf } from '../src/node.js';

// A page in headless Chromium (native WebRTC) streams from a Node device serving llama.cpp, through
// a real signaling server and an encrypted peer session.
describe.skipIf(!(await hasChromium()))('a browser page consumes a stream from a Node host', () => {
  let harness: BrowserHarness;
  let server: SignalingServer;
  let host: MeshNetwork;
  let handle: ServeHandle;
  let backend: LlamaCppBackend;
  let dir: string;

  beforeAll(async () => {
    server = await createSignalingServer({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }) });
    dir = await mkdtemp(join(tmpdir(), 'ferry-ai-browser-'));
    await writeTinyLlamaGguf(join(dir, 'tiny.gguf'), { seed: 11 });
    backend = tinyLlamaBackend({ id: 'tiny', modelPath: join(dir, 'tiny.gguf') });
    await backend.load();
    const key = crypto.getRandomValues(new Uint8Array(32));
    host = createNodeMesh({ clientId: 'node-desktop', accountKey: key, signalingUrls: [server.url] });
    host.on('error', () => {});
    handle = serveModels(host, { backends: [backend] });
    harness = await openBrowser({ entry: new URL('./browser/consumer-entry.ts', import.meta.url) });
    // 'browser-phone' < 'node-desktop': the page dials, Node answers.
    await harness.page.evaluate(
      ([url, accountKey]) => aiPage.start(url, accountKey, 'browser-phone', 'node-desktop'),
      [server.url, toBase64(key)] as const,
    );
  }, 90_000);

  afterAll(async () => {
    await harness?.page.evaluate(() => aiPage.close()).catch(() => {});
    await handle?.close();
    await host?.close();
    await harness?.close();
    await server?.close();
    await backend?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('lists the model and streams the text llama.cpp produces for the same seed', async () => {
    expect(await harness.page.evaluate(() => aiPage.models('node-desktop'))).toMatchObject([
      { id: 'tiny', backend: 'llama-cpp' },
    ]);
    const request = { modelId: 'tiny', prompt: 'hi', params: { seed: 42, temperature: 0.8, maxTokens: 64 } };
    const answer = await harness.page.evaluate((r) => aiPage.ask('node-desktop', r), request);

    let reference = '';
    const direct = {
      modelId: 'tiny',
      messages: [{ role: 'user' as const, content: 'hi' }],
      params: request.params,
    };
    for await (const chunk of backend.generate(direct, new AbortController().signal)) reference += chunk;
    expect(answer.deltas.length).toBeGreaterThan(1);
    expect(answer.deltas.join('')).toBe(reference);
    expect(answer.text).toBe(reference);
    expect(answer.usage.completionTokens).toBe(64);
    expect(answer.finishReason).toBe('length');
  });

  it('a page that stops reading stops llama.cpp on the Node host', async () => {
    const before = backend.engine.generatedTokens;
    const outcome = await harness.page.evaluate(() =>
      aiPage.askAndLeave('node-desktop', {
        modelId: 'tiny',
        prompt: 'go',
        params: { seed: 3, maxTokens: 20_000 },
      }),
    );
    expect(outcome).toBe('CANCELLED');
    await expect.poll(() => backend.engine.activeGenerations).toBe(0);
    await expect.poll(() => handle.stats()[0]?.cancelled).toBe(1);
    // Stopped long before the 20,000 tokens it was asked for.
    expect(backend.engine.generatedTokens - before).toBeLessThan(20_000);
  });
});
