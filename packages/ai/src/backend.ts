import type { ChatMessage, SamplingParams } from './wire.js';

/** What a backend is asked to generate: prompts are already turned into messages by the host. */
export interface GenerateRequest {
  modelId: string;
  messages: ChatMessage[];
  params: SamplingParams;
}

/** What a backend may report when it finishes (the return value of its iterator). */
export interface BackendUsage {
  promptTokens?: number;
  completionTokens?: number;
  /** 'length' when the engine stopped at maxTokens. */
  finishReason?: 'stop' | 'length';
}

/**
 * What a backend's iterator returns. `void` is allowed so a plain `async function*` that returns
 * nothing is a valid backend.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: the return type of an async generator without `return`
export type BackendResult = BackendUsage | undefined | void;

/**
 * One model engine. Every backend passes the same conformance suite (test/backend-conformance.ts).
 *
 * Contract of `generate`:
 * - yields the output as it is produced, one token's text per item (several tokens per item are
 *   allowed; the item count then stands in for the token count unless usage says otherwise);
 * - honours `signal`: once it is aborted the engine stops producing, and the iterator ends or throws;
 * - honours `params.maxTokens` and `params.seed` when the engine can;
 * - may return a `BackendUsage` as the iterator's return value.
 */
export interface ModelBackend {
  readonly id: string;
  /** Kind shown to peers, e.g. 'llama-cpp', 'openai-compatible', 'function', 'web-llm'. */
  readonly kind: string;
  readonly description?: string;
  readonly contextLength?: number;
  /** Generations the engine can run at once (e.g. llama.cpp context sequences); default 1. */
  readonly maxConcurrency?: number;
  generate(request: GenerateRequest, signal: AbortSignal): AsyncIterable<string, BackendResult>;
  /** Release the engine (unload models, close connections). */
  close?(): Promise<void>;
}

/**
 * A backend from a plain async-iterator function: for apps that drive their own engine.
 * The function must stop when `signal` aborts.
 */
export function functionBackend(
  id: string,
  generate: ModelBackend['generate'],
  info: Pick<ModelBackend, 'description' | 'contextLength' | 'maxConcurrency'> = {},
): ModelBackend {
  return { id, kind: 'function', ...info, generate };
}
