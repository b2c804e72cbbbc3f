import { FerryError } from '@ferry/core';
import { type Static, Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { EventSourceParserStream } from 'eventsource-parser/stream';
import type { BackendUsage, GenerateRequest, ModelBackend } from '../backend.js';

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

/** The parts of an OpenAI `chat.completion.chunk` this backend reads; anything else is ignored. */
const CompletionChunkSchema = Type.Object({
  choices: Type.Optional(
    Type.Array(
      Type.Object({
        delta: Type.Optional(
          Type.Object({ content: Type.Optional(Type.Union([Type.String(), Type.Null()])) }),
        ),
        finish_reason: Type.Optional(Type.Union([Type.String(), Type.Null()])),
      }),
    ),
  ),
  usage: Type.Optional(
    Type.Union([
      Type.Object({
        prompt_tokens: Type.Optional(Type.Integer({ minimum: 0 })),
        completion_tokens: Type.Optional(Type.Integer({ minimum: 0 })),
      }),
      Type.Null(),
    ]),
  ),
  error: Type.Optional(Type.Union([Type.String(), Type.Object({ message: Type.Optional(Type.String()) })])),
});
type CompletionChunk = Static<typeof CompletionChunkSchema>;
const checkChunk = TypeCompiler.Compile(CompletionChunkSchema);

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
    const { params } = request;
    const body = {
      model: options.model ?? options.id,
      messages: request.messages,
      stream: true,
      stream_options: { include_usage: true },
      ...(params.temperature !== undefined && { temperature: params.temperature }),
      ...(params.topP !== undefined && { top_p: params.topP }),
      ...(params.topK !== undefined && { top_k: params.topK }),
      ...(params.seed !== undefined && { seed: params.seed }),
      ...(params.maxTokens !== undefined && { max_tokens: params.maxTokens }),
      ...(params.stop && { stop: params.stop }),
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
        const chunk = parseChunk(event.data);
        if (chunk.error !== undefined) {
          const message =
            typeof chunk.error === 'string' ? chunk.error : (chunk.error.message ?? 'unknown error');
          throw new FerryError('SERVER', `${url} failed mid-stream: ${message}`);
        }
        if (chunk.usage?.prompt_tokens !== undefined) usage.promptTokens = chunk.usage.prompt_tokens;
        if (chunk.usage?.completion_tokens !== undefined)
          usage.completionTokens = chunk.usage.completion_tokens;
        const choice = chunk.choices?.[0];
        if (choice?.finish_reason) usage.finishReason = choice.finish_reason === 'length' ? 'length' : 'stop';
        const content = choice?.delta?.content;
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

function parseChunk(data: string): CompletionChunk {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch (cause) {
    throw new FerryError('BAD_JSON', `upstream sent an event that is not JSON: ${data.slice(0, 200)}`, {
      cause,
    });
  }
  if (!checkChunk.Check(parsed)) {
    throw new FerryError(
      'SCHEMA_MISMATCH',
      `upstream sent an event that is not a completion chunk: ${data.slice(0, 200)}`,
    );
  }
  return parsed;
}
