import { beforeAll, describe, expect, it } from 'vitest';
import type { BackendResult, GenerateRequest, ModelBackend } from '../src/backend.js';
import type { SamplingParams } from '../src/wire.js';

export interface ConformanceTarget {
  backend: ModelBackend;
  /** True when the engine behind the backend runs no generation (checks that a stop reached it). */
  idle(): boolean | Promise<boolean>;
  /** The engine gives the same text for the same seed. */
  deterministic: boolean;
}

/** A generation far longer than any test waits for: only a working stop ends it in time. */
const ENDLESS = 100_000;

/**
 * The contract every ModelBackend keeps (see backend.ts), run against each real backend: llama.cpp,
 * OpenAI-compatible HTTP, plain functions.
 */
export function describeBackendConformance(
  name: string,
  setup: () => ConformanceTarget | Promise<ConformanceTarget>,
) {
  describe(`${name}: backend conformance`, () => {
    let target: ConformanceTarget;
    beforeAll(async () => {
      target = await setup();
    });

    const request = (params: SamplingParams): GenerateRequest => ({
      modelId: target.backend.id,
      messages: [{ role: 'user', content: 'Say something.' }],
      params,
    });

    async function collect(params: SamplingParams, signal = new AbortController().signal) {
      const items: string[] = [];
      const iterator = target.backend.generate(request(params), signal)[Symbol.asyncIterator]();
      let returned: BackendResult;
      for (;;) {
        const next = await iterator.next();
        if (next.done) {
          returned = next.value;
          break;
        }
        items.push(next.value);
      }
      return { items, returned };
    }

    it('streams string items, at most maxTokens of them, and usage that agrees', async () => {
      const { items, returned } = await collect({ maxTokens: 8, seed: 1, temperature: 0.7 });
      expect(items.length).toBeGreaterThan(0);
      expect(items.length).toBeLessThanOrEqual(8);
      for (const item of items) expect(typeof item).toBe('string');
      if (returned?.completionTokens !== undefined) expect(returned.completionTokens).toBeLessThanOrEqual(8);
      expect(await target.idle()).toBe(true);
    });

    it('gives the same text for the same seed (when the engine is deterministic)', async (context) => {
      if (!target.deterministic) context.skip();
      const a = await collect({ maxTokens: 12, seed: 7, temperature: 0.9 });
      const b = await collect({ maxTokens: 12, seed: 7, temperature: 0.9 });
      expect(a.items.join('')).toBe(b.items.join(''));
    });

    it('stops the engine when the signal aborts mid-stream', async () => {
      const controller = new AbortController();
      const iterator = target.backend
        .generate(request({ maxTokens: ENDLESS }), controller.signal)
        [Symbol.asyncIterator]();
      for (let i = 0; i < 3; i++) expect((await iterator.next()).done).toBe(false);
      controller.abort();
      // After the abort the iterator must finish (end or throw) rather than run to maxTokens.
      let extra = 0;
      try {
        while (!(await iterator.next()).done) extra++;
      } catch {
        // throwing is an allowed way to end
      }
      expect(extra).toBeLessThan(ENDLESS - 3);
      await expect.poll(() => target.idle()).toBe(true);
    });

    it('stops the engine when the caller leaves the loop early', async () => {
      let seen = 0;
      for await (const _item of target.backend.generate(
        request({ maxTokens: ENDLESS }),
        new AbortController().signal,
      )) {
        if (++seen === 2) break;
      }
      await expect.poll(() => target.idle()).toBe(true);
    });

    it('produces nothing when the signal is already aborted', async () => {
      const controller = new AbortController();
      controller.abort();
      const items: string[] = [];
      try {
        for await (const item of target.backend.generate(request({ maxTokens: 8 }), controller.signal))
          items.push(item);
      } catch {
        // throwing is an allowed way to refuse
      }
      expect(items).toEqual([]);
      await expect.poll(() => target.idle()).toBe(true);
    });
  });
}
