import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FerryError } from '@ferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAiCompatibleBackend } from '../src/backends/openai-compatible.js';
import { askPeer } from '../src/consumer.js';
import { serveModels } from '../src/host.js';
import { describeBackendConformance } from './backend-conformance.js';
import { memoryPair } from './helpers.js';

/**
 * A local server speaking OpenAI's streaming chat-completions wire format, the way Ollama, the
 * llama.cpp server and vLLM answer: `data: {chunk}` events, a usage chunk, then `data: [DONE]`.
 * Its "model" writes words chosen by the request seed, one per event, every 2 ms.
 */
class FakeUpstream {
  readonly requests: Array<Record<string, unknown>> = [];
  open = 0;
  /** Responses the client closed before the server finished them. */
  closedEarly = 0;
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = '';
    for await (const part of req) raw += part;
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      res.writeHead(404).end();
      return;
    }
    const body = JSON.parse(raw) as { model: string; seed?: number; max_tokens?: number };
    this.requests.push(body);
    if (body.model === 'fail-500') {
      res
        .writeHead(500, { 'content-type': 'application/json' })
        .end('{"error":{"message":"model not loaded"}}');
      return;
    }
    this.open++;
    res.on('close', () => {
      this.open--;
      if (!res.writableFinished) this.closedEarly++;
    });
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (data: unknown) =>
      res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    const chunk = (content: string, finish: string | null = null) =>
      send({
        object: 'chat.completion.chunk',
        choices: [{ index: 0, delta: { content }, finish_reason: finish }],
      });

    const words = ['sun', 'moon', 'tide', 'ferry', 'peer', 'glow'];
    let state = (body.seed ?? 0) + 1;
    const limit = body.max_tokens ?? 16;
    for (let i = 0; i < limit; i++) {
      if (res.destroyed) return;
      if (body.model === 'fail-mid' && i === 2)
        return void res.end(`data: {"error":{"message":"upstream exploded"}}\n\n`);
      if (body.model === 'garbage' && i === 2) return void res.end('data: this is not json\n\n');
      if (body.model === 'cut' && i === 2) return void res.end();
      state = (state * 1103515245 + 12345) % 2147483648;
      chunk(`${words[state % words.length]} `);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    chunk('', 'length');
    send({
      object: 'chat.completion.chunk',
      choices: [],
      usage: { prompt_tokens: 5, completion_tokens: limit },
    });
    send('[DONE]');
    res.end();
  }
}

const upstream = new FakeUpstream();
beforeAll(() => upstream.start());
afterAll(() => upstream.stop());

const backendFor = (model: string) =>
  openAiCompatibleBackend({ id: `peer-${model}`, baseUrl: upstream.url, model, apiKey: 'sk-local' });

describeBackendConformance('openai-compatible', () => ({
  backend: backendFor('echo'),
  idle: () => upstream.open === 0,
  deterministic: true,
}));

describe('OpenAI-compatible backend', () => {
  it('maps the request onto the wire format and reads text, finish reason and usage', async () => {
    const backend = backendFor('echo');
    const iterator = backend
      .generate(
        {
          modelId: 'peer-echo',
          messages: [{ role: 'user', content: 'hello' }],
          params: { temperature: 0.5, topP: 0.9, topK: 40, seed: 3, maxTokens: 4, stop: ['\n'] },
        },
        new AbortController().signal,
      )
      [Symbol.asyncIterator]();
    const items: string[] = [];
    let next = await iterator.next();
    for (; !next.done; next = await iterator.next()) items.push(next.value);
    expect(items).toHaveLength(4);
    expect(next.value).toEqual({ promptTokens: 5, completionTokens: 4, finishReason: 'length' });
    expect(upstream.requests.at(-1)).toEqual({
      model: 'echo',
      messages: [{ role: 'user', content: 'hello' }],
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.5,
      top_p: 0.9,
      top_k: 40,
      seed: 3,
      max_tokens: 4,
      stop: ['\n'],
    });
  });

  it.each([
    ['fail-500', 'SERVER', '500'],
    ['fail-mid', 'SERVER', 'upstream exploded'],
    ['garbage', 'BAD_JSON', 'not JSON'],
    ['cut', 'TRUNCATED', '[DONE]'],
  ])('reports upstream failure %s as %s', async (model, code, text) => {
    const items: string[] = [];
    let error: unknown;
    try {
      for await (const item of backendFor(model).generate(
        { modelId: model, messages: [{ role: 'user', content: 'x' }], params: { maxTokens: 10 } },
        new AbortController().signal,
      )) {
        items.push(item);
      }
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FerryError);
    expect((error as FerryError).code).toBe(code);
    expect((error as Error).message).toContain(text);
    expect(items.length).toBe(model === 'fail-500' ? 0 : 2);
  });

  it('reports an unreachable server as SERVER', async () => {
    const backend = openAiCompatibleBackend({ id: 'x', baseUrl: 'http://127.0.0.1:9/v1' });
    const iterator = backend.generate(
      { modelId: 'x', messages: [], params: {} },
      new AbortController().signal,
    );
    await expect(iterator[Symbol.asyncIterator]().next()).rejects.toMatchObject({ code: 'SERVER' });
  });

  it('a consumer cancel over the peer session closes the upstream request', async () => {
    const { host, consumer } = memoryPair();
    const handle = serveModels(host, { backends: [backendFor('echo')] });
    try {
      const closedBefore = upstream.closedEarly;
      const stream = askPeer(consumer, 'host', {
        modelId: 'peer-echo',
        prompt: 'talk',
        params: { maxTokens: 100_000 },
      });
      let received = '';
      for await (const delta of stream) {
        received += delta;
        if (received.split(' ').length > 5) break;
      }
      await expect.poll(() => upstream.closedEarly).toBe(closedBefore + 1);
      await expect.poll(() => upstream.open).toBe(0);
      await expect(stream.result).rejects.toMatchObject({ code: 'CANCELLED' });
    } finally {
      await handle.close();
    }
  });
});
