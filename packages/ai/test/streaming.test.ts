import { FerryError, type PeerMessage, toHex } from '@ferry/core';
import { sha256 } from '@noble/hashes/sha2.js';
import { afterEach, describe, expect, it } from 'vitest';
import { functionBackend } from '../src/backend.js';
import { AiRejectedError, askPeer, listPeerModels } from '../src/consumer.js';
import { bucketSize } from '../src/frames.js';
import { type ServeHandle, serveModels } from '../src/host.js';
import { AI_OPS } from '../src/wire.js';
import { CountingEngine, drain, GatedEngine, interceptSends, memoryPair } from './helpers.js';

const handles: ServeHandle[] = [];
const serve = (...args: Parameters<typeof serveModels>) => {
  const handle = serveModels(...args);
  handles.push(handle);
  return handle;
};
afterEach(async () => {
  await Promise.all(handles.splice(0).map((handle) => handle.close()));
});

const sha256Hex = (text: string) => toHex(sha256(new TextEncoder().encode(text)));
const expectFerryError = (error: unknown, code: string) => {
  expect(error).toBeInstanceOf(FerryError);
  expect((error as FerryError).code).toBe(code);
};

describe('a stream from host to consumer', () => {
  it('delivers the whole output with usage and a matching digest', async () => {
    const { host, consumer } = memoryPair();
    const engine = new CountingEngine(40);
    serve(host, { backends: [engine.backend('toy')] });

    const stream = askPeer(consumer, 'host', { modelId: 'toy', prompt: 'hello', params: { seed: 3 } });
    const { deltas, error } = await drain(stream);
    const result = await stream.result;

    const expected = Array.from({ length: 40 }, (_, i) => `tok${i} `).join('');
    expect(error).toBeUndefined();
    expect(deltas.join('')).toBe(expected);
    expect(result.text).toBe(expected);
    expect(result.finishReason).toBe('stop');
    expect(result.usage.completionTokens).toBe(40);
    expect(result.digest).toBe(sha256Hex(expected));
    expect(result.modelId).toBe('toy');
    expect(result.sessionInfo.backend).toBe('function');
    expect(stream.state).toBe('done');
    // The prompt reaches the backend as one user message, with the sampling parameters.
    expect(engine.lastRequest?.messages).toEqual([{ role: 'user', content: 'hello' }]);
    expect(engine.lastRequest?.params).toEqual({ seed: 3 });
  });

  it('batches tokens into fewer frames and pads every frame to a size bucket', async () => {
    const { host, consumer } = memoryPair();
    const sent = interceptSends(host);
    // Tokens of very different lengths, produced faster than the batch window.
    const lengths = [1, 9, 2, 30, 5, 1, 17, 3];
    const backend = functionBackend('burst', async function* () {
      for (let i = 0; i < 200; i++) yield 'x'.repeat(lengths[i % lengths.length]!);
    });
    serve(host, { backends: [backend], batchWindowMs: 5 });
    const stream = askPeer(consumer, 'host', { modelId: 'burst', prompt: 'go' });
    await stream.result;

    const data = sent.filter((m) => m.op === AI_OPS.data);
    expect(data.length).toBeGreaterThan(0);
    expect(data.length).toBeLessThan(200);
    for (const message of sent.filter((m) => m.op !== AI_OPS.models)) {
      if (!('pad' in (message.data as object))) continue;
      const size = new TextEncoder().encode(JSON.stringify(message.data)).length;
      expect(size).toBe(bucketSize(size));
    }
    expect(sent.filter((m) => [AI_OPS.data, AI_OPS.end].includes(m.op as never)).length).toBe(
      data.length + 1,
    );
  });

  it('sends a conversation and stops at maxTokens with finishReason length, even if the backend ignores it', async () => {
    const { host, consumer } = memoryPair();
    let yielded = 0;
    const chatty = functionBackend('chatty', async function* (request) {
      expect(request.messages).toHaveLength(2);
      for (;;) {
        yielded++;
        yield 'a';
      }
    });
    serve(host, { backends: [chatty] });
    const stream = askPeer(consumer, 'host', {
      modelId: 'chatty',
      messages: [
        { role: 'system', content: 'be short' },
        { role: 'user', content: 'hi' },
      ],
      params: { maxTokens: 7 },
    });
    const result = await stream.result;
    expect(result.text).toBe('aaaaaaa');
    expect(result.finishReason).toBe('length');
    expect(result.usage.completionTokens).toBe(7);
    expect(yielded).toBe(8); // the host notices the overshoot on the 8th item and stops the backend
  });

  it('carries characters whose UTF-16 halves arrive as separate tokens', async () => {
    const { host, consumer } = memoryPair();
    const text = 'ferry ⛴️ to 🏝️ and 𝔽𝕖𝕣𝕣𝕪 back';
    const halves = functionBackend('halves', async function* () {
      for (const unit of text.split('')) {
        yield unit;
        await new Promise((resolve) => setImmediate(resolve));
      }
    });
    serve(host, { backends: [halves], batchWindowMs: 0 });
    const result = await askPeer(consumer, 'host', { modelId: 'halves', prompt: 'x' }).result;
    expect(result.text).toBe(text);
    expect(result.digest).toBe(sha256Hex(text));
  });

  it('runs two streams at once on one connection without mixing them', async () => {
    const { host, consumer } = memoryPair();
    const a = new GatedEngine('a');
    const b = new GatedEngine('b');
    serve(host, { backends: [a.backend(), b.backend()], batchWindowMs: 0 });
    const arrivals: string[] = [];
    const read = async (stream: ReturnType<typeof askPeer>, name: string) => {
      for await (const delta of stream) arrivals.push(`${name}:${delta}`);
    };
    const streamA = askPeer(consumer, 'host', { modelId: 'a', prompt: 'x' });
    const streamB = askPeer(consumer, 'host', { modelId: 'b', prompt: 'y' });
    const reading = Promise.all([read(streamA, 'A'), read(streamB, 'B')]);
    await Promise.all([streamA.accepted, streamB.accepted]);

    // Strict alternation: each token must arrive before the next one is released.
    for (let i = 0; i < 5; i++) {
      for (const [engine, name] of [
        [a, 'A'],
        [b, 'B'],
      ] as const) {
        const before = arrivals.length;
        engine.release(`${name}${i}`);
        await expect.poll(() => arrivals.length, { interval: 2 }).toBe(before + 1);
      }
    }
    a.release(null);
    b.release(null);
    await reading;
    expect(arrivals).toEqual(Array.from({ length: 5 }, (_, i) => [`A:A${i}`, `B:B${i}`]).flat());
    expect((await streamA.result).text).toBe('A0A1A2A3A4');
    expect((await streamB.result).text).toBe('B0B1B2B3B4');
  });

  it('lists the models a peer serves with their load', async () => {
    const { host, consumer } = memoryPair();
    const gated = new GatedEngine('busy-model');
    serve(host, {
      backends: [
        new CountingEngine(1).backend('small', { description: 'tiny', contextLength: 256 }),
        gated.backend(),
      ],
      concurrency: { 'busy-model': 2 },
    });
    const stream = askPeer(consumer, 'host', { modelId: 'busy-model', prompt: 'x' });
    await stream.accepted;
    const models = await listPeerModels(consumer, 'host');
    expect(models).toEqual([
      {
        id: 'small',
        backend: 'function',
        description: 'tiny',
        contextLength: 256,
        concurrency: 1,
        active: 0,
        queued: 0,
      },
      { id: 'busy-model', backend: 'function', concurrency: 2, active: 1, queued: 0 },
    ]);
    gated.release(null);
    await stream.result;
  });

  it('times out listing models on a peer that serves none', async () => {
    const { consumer } = memoryPair();
    const error = await listPeerModels(consumer, 'host', { timeoutMs: 50 }).catch((e: unknown) => e);
    expectFerryError(error, 'TIMEOUT');
  });
});

describe('admission', () => {
  it('refuses concurrency, queue, window and frame options that would stall or spin, naming them', () => {
    const { host } = memoryPair();
    const backends = [new CountingEngine(1).backend('m')];
    for (const [bad, name] of [
      [{ concurrency: 0 }, 'concurrency'],
      [{ concurrency: { m: Number.NaN } }, 'm'],
      [{ queueLength: -1 }, 'queueLength'],
      [{ batchWindowMs: Number.NaN }, 'batchWindowMs'],
      [{ maxFrameChars: 0 }, 'maxFrameChars'],
      [{ maxFrameChars: 1 }, 'maxFrameChars'],
    ] as const) {
      expect(() => serve(host, { backends, ...bad })).toThrow(
        expect.objectContaining({
          code: 'BAD_ARGUMENT',
          message: expect.stringContaining(`${name} must be`),
        }),
      );
    }
    expect(() => serve(host, { backends, queueLength: 0, batchWindowMs: 0, maxFrameChars: 2 })).not.toThrow();
  });

  it('rejects an unknown model', async () => {
    const { host, consumer } = memoryPair();
    serve(host, { backends: [new CountingEngine(1).backend('known')] });
    const stream = askPeer(consumer, 'host', { modelId: 'other', prompt: 'x' });
    const error = await stream.result.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AiRejectedError);
    expect((error as AiRejectedError).reason).toBe('unknown-model');
    expectFerryError(error, 'REJECTED');
    expect(stream.state).toBe('failed');
  });

  it('asks the policy hook with the request and the peer, and reports its refusal', async () => {
    const { host, consumer } = memoryPair();
    const seen: string[] = [];
    serve(host, {
      backends: [new CountingEngine(2).backend('m')],
      policy: (request, peerId) => {
        seen.push(`${peerId}:${request.prompt}`);
        return request.prompt === 'nice' ? true : { accept: false, message: 'not that prompt' };
      },
    });
    expect((await askPeer(consumer, 'host', { modelId: 'm', prompt: 'nice' }).result).text).toBe(
      'tok0 tok1 ',
    );
    const error = await askPeer(consumer, 'host', { modelId: 'm', prompt: 'rude' }).result.catch(
      (e: unknown) => e,
    );
    expect((error as AiRejectedError).reason).toBe('refused');
    expect((error as Error).message).toContain('not that prompt');
    expect(seen).toEqual(['consumer:nice', 'consumer:rude']);
  });

  it('refuses when the policy throws', async () => {
    const { host, consumer } = memoryPair();
    serve(host, {
      backends: [new CountingEngine(2).backend('m')],
      policy: () => {
        throw new Error('policy store offline');
      },
    });
    const error = await askPeer(consumer, 'host', { modelId: 'm', prompt: 'x' }).result.catch(
      (e: unknown) => e,
    );
    expect((error as AiRejectedError).reason).toBe('refused');
  });

  it('queues when all slots are busy, then rejects as busy once the queue is full', async () => {
    const { host, consumer } = memoryPair();
    const gated = new GatedEngine('one');
    const handle = serve(host, { backends: [gated.backend()], concurrency: 1, queueLength: 1 });

    const first = askPeer(consumer, 'host', { modelId: 'one', prompt: '1' });
    await first.accepted;
    const positions: number[] = [];
    const second = askPeer(
      consumer,
      'host',
      { modelId: 'one', prompt: '2' },
      { onQueued: (p) => positions.push(p) },
    );
    await expect.poll(() => second.state).toBe('queued');
    expect(positions).toEqual([1]);
    expect(handle.stats()[0]).toMatchObject({ active: 1, queued: 1 });

    const third = askPeer(consumer, 'host', { modelId: 'one', prompt: '3' });
    const error = await third.result.catch((e: unknown) => e);
    expect((error as AiRejectedError).reason).toBe('busy');

    gated.release('first');
    gated.release(null);
    expect((await first.result).text).toBe('first');
    await second.accepted; // the queued request starts once the slot frees
    expect(second.state).toBe('streaming');
    gated.release('second');
    gated.release(null);
    const result = await second.result;
    expect(result.text).toBe('second');
    expect(result.usage.queuedMs).toBeGreaterThan(0);
    await expect
      .poll(() => handle.stats()[0])
      .toMatchObject({ completed: 2, rejected: 1, active: 0, queued: 0 });
  });

  it('rejects a malformed request and ignores frames it cannot attribute', async () => {
    const { host, consumer } = memoryPair();
    const handle = serve(host, { backends: [new CountingEngine(1).backend('m')] });
    const replies: PeerMessage[] = [];
    consumer.on('message', (_peer, message) => replies.push(message));
    const raw = (op: string, data: unknown) =>
      consumer.send('host', { op, data, timestamp: Date.now(), id: op });

    await raw(AI_OPS.request, { streamId: 'stream-0001', modelId: 'm', prompt: 42 }); // wrong type
    await raw(AI_OPS.request, { streamId: 'stream-0002', modelId: 'm' }); // neither prompt nor messages
    await raw(AI_OPS.request, { modelId: 'm', prompt: 'no stream id' });
    await raw(AI_OPS.request, null);
    await raw(AI_OPS.cancel, { streamId: 'nope' });
    await raw('AI_SOMETHING_NEW', { streamId: 'stream-0003' });
    await expect.poll(() => replies.length).toBe(2);
    expect(replies.map((m) => [m.op, (m.data as { streamId: string; reason: string }).reason])).toEqual([
      [AI_OPS.reject, 'invalid-request'],
      [AI_OPS.reject, 'invalid-request'],
    ]);
    // The host still serves after the garbage.
    expect((await askPeer(consumer, 'host', { modelId: 'm', prompt: 'x' }).result).text).toBe('tok0 ');
    expect(handle.stats()[0]).toMatchObject({ completed: 1 });
  });

  it('refuses an invalid request locally, before it reaches the host', async () => {
    const { host, consumer } = memoryPair();
    const sent = interceptSends(consumer);
    serve(host, { backends: [new CountingEngine(1).backend('m')] });
    const stream = askPeer(consumer, 'host', { modelId: 'm', prompt: 'x', params: { temperature: 50 } });
    const error = await stream.result.catch((e: unknown) => e);
    expectFerryError(error, 'SCHEMA_MISMATCH');
    expect((error as Error).message).toContain('/params/temperature');
    expect(sent).toEqual([]);
  });

  it('times out when the peer never answers a request', async () => {
    const { consumer } = memoryPair();
    const error = await askPeer(
      consumer,
      'host',
      { modelId: 'm', prompt: 'x' },
      { responseTimeoutMs: 30 },
    ).result.catch((e: unknown) => e);
    expectFerryError(error, 'TIMEOUT');
  });
});

describe('cancel and failure', () => {
  it('a consumer that stops reading stops the engine on the host', async () => {
    const { host, consumer } = memoryPair();
    const engine = new CountingEngine();
    const handle = serve(host, { backends: [engine.backend('endless')] });
    const stream = askPeer(consumer, 'host', { modelId: 'endless', prompt: 'go' });
    let received = '';
    for await (const delta of stream) {
      received += delta;
      if (received.length > 30) break;
    }
    await engine.whenStopped(1);
    expect(engine.lastSignal?.aborted).toBe(true);
    const producedAtStop = engine.produced;
    await expect(stream.result).rejects.toMatchObject({ code: 'CANCELLED' });
    // The engine's loop has exited: nothing can add tokens any more.
    await new Promise((resolve) => setImmediate(resolve));
    expect(engine.produced).toBe(producedAtStop);
    await expect.poll(() => handle.stats()[0]?.cancelled).toBe(1);
    expect(handle.stats()[0]?.active).toBe(0);
  });

  it('an AbortSignal cancels the stream and the engine', async () => {
    const { host, consumer } = memoryPair();
    const engine = new CountingEngine();
    serve(host, { backends: [engine.backend('endless')] });
    const controller = new AbortController();
    const stream = askPeer(
      consumer,
      'host',
      { modelId: 'endless', prompt: 'go' },
      { signal: controller.signal },
    );
    await stream.accepted;
    await expect.poll(() => engine.produced).toBeGreaterThan(3);
    controller.abort(new Error('user pressed stop'));
    const { error } = await drain(stream);
    expectFerryError(error, 'CANCELLED');
    expect((error as Error).message).toContain('user pressed stop');
    await engine.whenStopped(1);
  });

  it('a cancelled queued request never starts', async () => {
    const { host, consumer } = memoryPair();
    const gated = new GatedEngine('one');
    const handle = serve(host, { backends: [gated.backend()], queueLength: 4 });
    const first = askPeer(consumer, 'host', { modelId: 'one', prompt: '1' });
    await first.accepted;
    const second = askPeer(consumer, 'host', { modelId: 'one', prompt: '2' });
    await expect.poll(() => second.state).toBe('queued');
    second.cancel();
    await expect.poll(() => handle.stats()[0]?.queued).toBe(0);
    gated.release(null);
    await first.result;
    await expect.poll(() => handle.stats()[0]).toMatchObject({ completed: 1, cancelled: 1, active: 0 });
  });

  it('an engine error mid-stream reaches the consumer after the text produced so far', async () => {
    const { host, consumer } = memoryPair();
    const gated = new GatedEngine('flaky');
    const handle = serve(host, { backends: [gated.backend()], batchWindowMs: 0 });
    const stream = askPeer(consumer, 'host', { modelId: 'flaky', prompt: 'x' });
    const reading = drain(stream);
    gated.release('partial ');
    gated.release('answer');
    gated.release(new Error('GPU fell off the bus'));
    const { deltas, error } = await reading;
    expect(deltas.join('')).toBe('partial answer');
    expectFerryError(error, 'SERVER');
    expect((error as Error).message).toContain('GPU fell off the bus');
    await expect(stream.result).rejects.toBe(error);
    expect(handle.stats()[0]).toMatchObject({ failed: 1, active: 0 });
  });

  it('closing the host cancels running and queued streams on the consumer', async () => {
    const { host, consumer } = memoryPair();
    const engine = new CountingEngine();
    const handle = serve(host, { backends: [engine.backend('endless')] });
    const running = askPeer(consumer, 'host', { modelId: 'endless', prompt: '1' });
    await running.accepted;
    const queued = askPeer(consumer, 'host', { modelId: 'endless', prompt: '2' });
    await expect.poll(() => queued.state).toBe('queued');
    await handle.close();
    await expect(running.result).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(queued.result).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(engine.stopped).toBe(1);
    expect(engine.generations).toBe(1);
  });

  it('a peer disconnect mid-stream fails the consumer with CLOSED and stops the engine', async () => {
    const { hub, host, consumer } = memoryPair();
    const engine = new CountingEngine();
    serve(host, { backends: [engine.backend('endless')] });
    const stream = askPeer(consumer, 'host', { modelId: 'endless', prompt: 'x' });
    await stream.accepted;
    hub.setLinked('host', 'consumer', false);
    const { error } = await drain(stream);
    expectFerryError(error, 'CLOSED');
    await engine.whenStopped(1);
  });
});

describe('integrity', () => {
  const dropping = (shouldDrop: (message: PeerMessage) => boolean) => {
    const { host, consumer } = memoryPair();
    interceptSends(host, (message) => (shouldDrop(message) ? undefined : message));
    return { host, consumer };
  };
  const seqOf = (message: PeerMessage) => (message.data as { seq?: number }).seq;

  /** Stream tokens one frame each from a gated engine, while frames with the given seqs are dropped. */
  async function streamDropping(tokens: string[], droppedSeqs: number[]) {
    let framesOut = 0;
    const { host, consumer } = dropping((m) => {
      if (m.op !== AI_OPS.data) return false;
      framesOut++;
      return droppedSeqs.includes(seqOf(m)!);
    });
    const gated = new GatedEngine('g');
    serve(host, { backends: [gated.backend()], batchWindowMs: 0 });
    const stream = askPeer(consumer, 'host', { modelId: 'g', prompt: 'x' });
    const reading = drain(stream);
    await stream.accepted;
    for (const [seq, token] of tokens.entries()) {
      gated.release(token);
      // One frame per token: wait until this one has left before releasing the next. A consumer
      // that saw a gap cancels the stream, and the host then stops sending.
      await expect.poll(() => framesOut === seq + 1 || stream.state === 'failed').toBe(true);
      if (stream.state === 'failed') break;
    }
    gated.release(null);
    return reading;
  }

  it('detects a frame lost in the middle (sequence gap)', async () => {
    const { deltas, error } = await streamDropping(['a', 'b', 'c', 'd'], [1]);
    expect(deltas.join('')).toBe('a');
    expectFerryError(error, 'TRUNCATED');
    expect((error as Error).message).toContain('frame 1 is missing');
  });

  it('detects a lost last frame (frame count in the end frame)', async () => {
    const { deltas, error } = await streamDropping(['a', 'b', 'c'], [2]);
    expect(deltas.join('')).toBe('ab');
    expectFerryError(error, 'TRUNCATED');
    expect((error as Error).message).toContain('sent 3 frames, 2 arrived');
  });

  it('detects altered text (digest mismatch)', async () => {
    const { host, consumer } = memoryPair();
    interceptSends(host, (m) =>
      m.op === AI_OPS.data && seqOf(m) === 0 ? { ...m, data: { ...(m.data as object), token: 'forged' } } : m,
    );
    serve(host, { backends: [new CountingEngine(5).backend('c')] });
    const error = await askPeer(consumer, 'host', { modelId: 'c', prompt: 'x' }).result.catch(
      (e: unknown) => e,
    );
    expectFerryError(error, 'TRUNCATED');
    expect((error as Error).message).toContain('digest');
  });

  it('fails a stream whose frames do not match the schema, and tells the host to stop', async () => {
    const { host, consumer } = memoryPair();
    const engine = new CountingEngine();
    interceptSends(host, (m) =>
      m.op === AI_OPS.data && seqOf(m) === 2 ? { ...m, data: { ...(m.data as object), seq: 'two' } } : m,
    );
    serve(host, { backends: [engine.backend('c')] });
    const error = await askPeer(consumer, 'host', { modelId: 'c', prompt: 'x' }).result.catch(
      (e: unknown) => e,
    );
    expectFerryError(error, 'SCHEMA_MISMATCH');
    await engine.whenStopped(1);
  });
});
