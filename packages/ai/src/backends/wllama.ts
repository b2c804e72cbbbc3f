import type { BackendUsage, GenerateRequest, ModelBackend } from '../backend.js';
import type { ChatMessage } from '../wire.js';
import { openAiSamplingParams, readChatChunk } from './chat-chunks.js';

/**
 * The part of `@wllama/wllama`'s `Wllama` class (llama.cpp compiled to WebAssembly, v3) this backend
 * calls. Written structurally so `@ferry/ai` does not depend on wllama: pass your loaded instance.
 */
export interface WllamaLike {
  createChatCompletion(options: {
    messages: ChatMessage[];
    stream: true;
    abortSignal?: AbortSignal;
    temperature?: number;
    top_p?: number;
    top_k?: number;
    seed?: number;
    max_tokens?: number;
  }): Promise<AsyncIterable<unknown>>;
}

export interface WllamaBackendOptions {
  /** Model id peers ask for. */
  id: string;
  /** A Wllama instance with its model already loaded (loadModel / loadModelFromUrl). */
  wllama: WllamaLike;
  description?: string;
  contextLength?: number;
  /** Generations at once; wllama runs one per loaded context unless loaded with n_parallel. Default 1. */
  maxConcurrency?: number;
}

/**
 * Serve a model running in the browser through wllama. Aborting stops llama.cpp through wllama's
 * `abortSignal`, between two tokens.
 */
export function wllamaBackend(options: WllamaBackendOptions): ModelBackend {
  async function* generate(
    request: GenerateRequest,
    signal: AbortSignal,
  ): AsyncGenerator<string, BackendUsage> {
    signal.throwIfAborted();
    const local = new AbortController();
    const abortSignal = AbortSignal.any([signal, local.signal]);
    // wllama takes OpenAI's names, except that `stop` is not part of its chat parameters.
    const { stop: _stop, ...sampling } = openAiSamplingParams(request.params);
    const chunks = await options.wllama.createChatCompletion({
      messages: request.messages,
      stream: true,
      abortSignal,
      ...sampling,
    });
    const usage: BackendUsage = {};
    try {
      for await (const chunk of chunks) {
        const content = readChatChunk(chunk, usage, `wllama model ${options.id}`);
        if (content) yield content;
        if (abortSignal.aborted) break;
      }
    } finally {
      local.abort();
    }
    return usage;
  }

  return {
    id: options.id,
    kind: 'wllama',
    ...(options.description !== undefined && { description: options.description }),
    ...(options.contextLength !== undefined && { contextLength: options.contextLength }),
    maxConcurrency: options.maxConcurrency ?? 1,
    generate,
  };
}
