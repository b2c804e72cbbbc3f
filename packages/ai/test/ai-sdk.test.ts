import { generateText, streamText } from 'ai';
import { afterEach, describe, expect, it } from 'vitest';
import { ferryModel } from '../src/ai-sdk.js';
import { type ServeHandle, serveModels } from '../src/host.js';
import { CountingEngine, GatedEngine, memoryPair } from './helpers.js';

const handles: ServeHandle[] = [];
afterEach(async () => {
  await Promise.all(handles.splice(0).map((handle) => handle.close()));
});

function servedPair(...backends: Parameters<typeof serveModels>[1]['backends']) {
  const { host, consumer } = memoryPair();
  handles.push(serveModels(host, { backends }));
  return consumer;
}

describe('Vercel AI SDK provider', () => {
  it('streamText runs on a peer model, with the call settings carried over', async () => {
    const engine = new CountingEngine(50);
    const consumer = servedPair(engine.backend('toy'));
    const result = streamText({
      model: ferryModel(consumer, 'host', 'toy'),
      system: 'be terse',
      prompt: 'count',
      temperature: 0.3,
      seed: 9,
      maxOutputTokens: 6,
    });
    const deltas: string[] = [];
    for await (const delta of result.textStream) deltas.push(delta);
    expect(deltas.join('')).toBe('tok0 tok1 tok2 tok3 tok4 tok5 ');
    expect(await result.text).toBe('tok0 tok1 tok2 tok3 tok4 tok5 ');
    expect(await result.finishReason).toBe('length');
    expect((await result.usage).outputTokens).toBe(6);
    expect(engine.lastRequest?.messages).toEqual([
      { role: 'system', content: 'be terse' },
      { role: 'user', content: 'count' },
    ]);
    expect(engine.lastRequest?.params).toEqual({ temperature: 0.3, seed: 9, maxTokens: 6 });
  });

  it('generateText returns the whole answer', async () => {
    const consumer = servedPair(new CountingEngine(3).backend('toy'));
    const { text, finishReason } = await generateText({
      model: ferryModel(consumer, 'host', 'toy'),
      prompt: 'x',
    });
    expect(text).toBe('tok0 tok1 tok2 ');
    expect(finishReason).toBe('stop');
  });

  it('a host error reaches streamText as an error', async () => {
    const gated = new GatedEngine('flaky');
    const consumer = servedPair(gated.backend());
    const errors: unknown[] = [];
    const result = streamText({
      model: ferryModel(consumer, 'host', 'flaky'),
      prompt: 'x',
      onError: ({ error }) => {
        errors.push(error);
      },
    });
    gated.release('half ');
    gated.release(new Error('engine crashed'));
    let text = '';
    for await (const delta of result.textStream) text += delta;
    expect(text).toBe('half ');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'SERVER' });
    expect((errors[0] as Error).message).toContain('engine crashed');
  });

  it('an abortSignal given to streamText stops the engine on the host', async () => {
    const engine = new CountingEngine();
    const consumer = servedPair(engine.backend('endless'));
    const controller = new AbortController();
    const result = streamText({
      model: ferryModel(consumer, 'host', 'endless'),
      prompt: 'x',
      abortSignal: controller.signal,
      onError: () => {},
    });
    let text = '';
    for await (const delta of result.textStream) {
      text += delta;
      if (text.length > 20) controller.abort();
    }
    await engine.whenStopped(1);
    expect(engine.lastSignal?.aborted).toBe(true);
  });
});
