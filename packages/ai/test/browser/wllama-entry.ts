// Runs in headless Chromium: loads the tiny GGUF into wllama (llama.cpp in WebAssembly) and exposes
// the Ferry wllama backend to the Node test, which drives it through page.evaluate.
import { Wllama } from '@wllama/wllama';
import type { GenerateRequest } from '../../src/backend.js';
import { wllamaBackend } from '../../src/backends/wllama.js';

const running = new Map<number, { iterator: AsyncIterator<string, unknown>; controller: AbortController }>();
let nextId = 0;
let active = 0;
let backend: ReturnType<typeof wllamaBackend> | undefined;

async function* tracked(iterable: AsyncIterable<string, unknown>) {
  active++;
  try {
    return yield* iterable;
  } finally {
    active--;
  }
}

Object.assign(globalThis, {
  ferryWllama: {
    async load() {
      const wllama = new Wllama({ default: '/wllama.wasm' }, { suppressNativeLog: true });
      wllama.setCompat(null); // never fetch assets from a CDN
      const model = await (await fetch('/tiny.gguf')).blob();
      await wllama.loadModel([model], { n_ctx: 256, n_threads: 1, n_gpu_layers: 0 });
      backend = wllamaBackend({ id: 'tiny-wasm', wllama, contextLength: 256 });
    },
    start(request: GenerateRequest, abortedAlready = false): number {
      const controller = new AbortController();
      if (abortedAlready) controller.abort();
      const id = nextId++;
      running.set(id, {
        iterator: tracked(backend!.generate(request, controller.signal))[Symbol.asyncIterator](),
        controller,
      });
      return id;
    },
    async next(id: number) {
      try {
        return await running.get(id)!.iterator.next();
      } catch (error) {
        return { error: String(error) };
      }
    },
    async return(id: number) {
      await running.get(id)!.iterator.return?.();
    },
    abort(id: number) {
      running.get(id)!.controller.abort();
    },
    active: () => active,
  },
});
