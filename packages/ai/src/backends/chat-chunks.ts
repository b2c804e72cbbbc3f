import { compileCheck, FerryError } from '@ferry/core';
import { Type } from '@sinclair/typebox';
import type { BackendUsage } from '../backend.js';
import type { SamplingParams } from '../wire.js';

// OpenAI's chat-completion chunk is the lingua franca of streaming engines: HTTP servers (Ollama,
// llama.cpp server, vLLM) send it as SSE, in-browser engines (wllama, WebLLM) yield it as objects.

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
const checkChunk = compileCheck(CompletionChunkSchema);

/** Our sampling parameters in OpenAI's names. */
export function openAiSamplingParams(params: SamplingParams) {
  return {
    ...(params.temperature !== undefined && { temperature: params.temperature }),
    ...(params.topP !== undefined && { top_p: params.topP }),
    ...(params.topK !== undefined && { top_k: params.topK }),
    ...(params.seed !== undefined && { seed: params.seed }),
    ...(params.maxTokens !== undefined && { max_tokens: params.maxTokens }),
    ...(params.stop && { stop: params.stop }),
  };
}

/**
 * Check one chunk, fold its usage and finish reason into `usage`, and return its text. An error
 * chunk becomes FerryError('SERVER'); anything that is not a chunk, SCHEMA_MISMATCH.
 */
export function readChatChunk(chunk: unknown, usage: BackendUsage, source: string): string | undefined {
  if (!checkChunk.Check(chunk)) {
    throw new FerryError(
      'SCHEMA_MISMATCH',
      `${source} sent something that is not a completion chunk: ${JSON.stringify(chunk)?.slice(0, 200)}`,
    );
  }
  if (chunk.error !== undefined) {
    const message = typeof chunk.error === 'string' ? chunk.error : (chunk.error.message ?? 'unknown error');
    throw new FerryError('SERVER', `${source} failed mid-stream: ${message}`);
  }
  if (chunk.usage?.prompt_tokens !== undefined) usage.promptTokens = chunk.usage.prompt_tokens;
  if (chunk.usage?.completion_tokens !== undefined) usage.completionTokens = chunk.usage.completion_tokens;
  const choice = chunk.choices?.[0];
  if (choice?.finish_reason) usage.finishReason = choice.finish_reason === 'length' ? 'length' : 'stop';
  return choice?.delta?.content ?? undefined;
}
