import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../testing/browser.js';
import { hasChromium } from '../../../testing/services.js';
import type { BackendResult, GenerateRequest, ModelBackend } from '../src/backend.js';
import { createTinyLlamaGguf } from '../src/tiny-gguf.js';
import { describeBackendConformance } from './backend-conformance.js';

/**
 * The wllama backend with a real in-browser engine: llama.cpp compiled to WebAssembly, running the
 * tiny GGUF in headless Chromium. A thin Node proxy drives the page, so the shared backend
 * conformance suite runs unchanged against it.
 */
const chromium = await hasChromium();
let harness: BrowserHarness;

interface PageApi {
  ferryWllama: {
    load(): Promise<void>;
    start(request: GenerateRequest, abortedAlready?: boolean): number;
    next(id: number): Promise<IteratorResult<string, BackendResult> | { error: string }>;
    return(id: number): Promise<void>;
    abort(id: number): void;
    active(): number;
  };
}

/** A ModelBackend in Node whose engine is the page's wllama backend. */
const pageBackend: ModelBackend = {
  id: 'tiny-wasm',
  kind: 'wllama',
  generate(request, signal) {
    const page = harness.page;
    let id: Promise<number> | undefined;
    return {
      [Symbol.asyncIterator]() {
        return {
          async next() {
            id ??= page.evaluate(
              ([r, aborted]) => (globalThis as unknown as PageApi).ferryWllama.start(r, aborted),
              [request, signal.aborted] as const,
            );
            const streamId = await id;
            const onAbort = () =>
              void page.evaluate((i) => (globalThis as unknown as PageApi).ferryWllama.abort(i), streamId);
            signal.addEventListener('abort', onAbort, { once: true });
            const result = await page.evaluate(
              (i) => (globalThis as unknown as PageApi).ferryWllama.next(i),
              streamId,
            );
            signal.removeEventListener('abort', onAbort);
            if ('error' in result) throw new Error(result.error);
            return result;
          },
          async return() {
            if (id)
              await page.evaluate(
                async (i) => (globalThis as unknown as PageApi).ferryWllama.return(i),
                await id,
              );
            return { done: true, value: undefined };
          },
        };
      },
    };
  },
};

describe.skipIf(!chromium)('wllama backend in headless Chromium', () => {
  beforeAll(async () => {
    const require = createRequire(import.meta.url);
    const wasm = await readFile(require.resolve('@wllama/wllama/esm/wasm/wllama.wasm'));
    harness = await openBrowser({
      entry: new URL('./browser/wllama-entry.ts', import.meta.url),
      routes: {
        '/wllama.wasm': { body: new Uint8Array(wasm), type: 'application/wasm' },
        '/tiny.gguf': { body: createTinyLlamaGguf({ seed: 11 }) },
      },
    });
    await harness.page.evaluate(() => (globalThis as unknown as PageApi).ferryWllama.load());
  }, 120_000);
  afterAll(async () => {
    await harness?.close();
  });

  describeBackendConformance('wllama (WebAssembly llama.cpp in Chromium)', () => ({
    backend: pageBackend,
    idle: async () =>
      (await harness.page.evaluate(() => (globalThis as unknown as PageApi).ferryWllama.active())) === 0,
    deterministic: true,
  }));
});
