import { FerryError } from '@ferry/core';
import { EventSourceParserStream } from 'eventsource-parser/stream';
import type { BackendUsage, GenerateRequest, ModelBackend } from '../backend.js';
import { openAiSamplingParams, readChatChunk } from './chat-chunks.js';

export interface OpenAiCompatibleOptions {
  /** Model id peers ask for. */
  id: string;
  /** API root including the version, e.g. http://127.0.0.1:11434/v1 (Ollama), http://127.0.0.1:8080/v1 (llama.cpp server). */
  baseUrl: string;
  /** Model name upstream, when it differs from `id`. */
  model?: string;
  apiKey?: string;
  headers?: Record<string, string>;
  description?: string;
  contextLength?: number;
  /** Requests the upstream server takes at once. Default 1. */
  maxConcurrency?: number;
  /** Custom fetch (proxies, tests). Default: the global fetch. */
  fetch?: typeof fetch;
}

/**
 * Any server speaking OpenAI's streaming chat completions (`POST /chat/completions` with
 * `stream: true`, answered as server-sent events): Ollama, llama.cpp server, LM Studio, vLLM.
 * Aborting the signal, or leaving the iterator early, closes the upstream HTTP request, which those
 * servers take as the order to stop generating.
 */
export function openAiCompatibleBackend(options: OpenAiCompatibleOptions): ModelBackend {
  const url = `${options.baseUrl.replace(/\/+$/, '')}/chat/completions`;
  const doFetch = options.fetch ?? globalThis.fetch;

  async function* generate(
    request: GenerateRequest,
    signal: AbortSignal,
  ): AsyncGenerator<string, BackendUsage> {
    const body = {
      model: options.model ?? options.id,
      messages: request.messages,
      stream: true,
      stream_options: { include_usage: true },
      ...openAiSamplingParams(request.params),
    };
    // Our own controller, so leaving the loop early also closes the request.
    const local = new AbortController();
    const abort = AbortSignal.any([signal, local.signal]);
    let response: Response;
    try {
      response = await doFetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'text/event-stream',
          ...(options.apiKey && { authorization: `Bearer ${options.apiKey}` }),
          ...options.headers,
        },
        body: JSON.stringify(body),
        signal: abort,
      });
    } catch (cause) {
      if (abort.aborted) throw cause;
      throw new FerryError('SERVER', `cannot reach ${url}: ${(cause as Error).message}`, { cause });
    }
    if (!response.ok || !response.body) {
      const text = await response.text().catch(() => '');
      throw new FerryError('SERVER', `${url} answered ${response.status}: ${text.slice(0, 500)}`);
    }

    const events = response.body
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(new EventSourceParserStream())
      .getReader();
    const usage: BackendUsage = {};
    try {
      for (;;) {
        const { done, value: event } = await events.read();
        if (done) throw new FerryError('TRUNCATED', `${url} ended the stream without [DONE]`);
        if (event.data === '[DONE]') return usage;
        const content = readChatChunk(parseJson(event.data), usage, url);
        if (content) yield content;
      }
    } finally {
      local.abort();
      await events.cancel().catch(() => {});
    }
  }

  return {
    id: options.id,
    kind: 'openai-compatible',
    ...(options.description !== undefined && { description: options.description }),
    ...(options.contextLength !== undefined && { contextLength: options.contextLength }),
    maxConcurrency: options.maxConcurrency ?? 1,
    generate,
  };
}

function parseJson(data: string): unknown {
  try {
    return JSON.parse(data);
  } catch (cause) {
    throw new FerryError('BAD_JSON', `upstream sent an event that is not JSON: ${data.slice(0, 200)}`, {
      cause,
    });
  }
}
