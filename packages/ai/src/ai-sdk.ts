import type {
  LanguageModelV3,
  LanguageModelV3CallOptions,
  LanguageModelV3FinishReason,
  LanguageModelV3Prompt,
  LanguageModelV3StreamPart,
  LanguageModelV3Usage,
  SharedV3Warning,
} from '@ai-sdk/provider';
import type { PeerNetwork } from '@ferry/core';
import { type AskOptions, type AskResult, askPeer } from './consumer.js';
import type { ChatMessage, SamplingParams } from './wire.js';

export interface FerryModelOptions extends Pick<AskOptions, 'responseTimeoutMs' | 'onQueued'> {}

/**
 * A Vercel AI SDK language model (specification v3, the one `ai` 6 calls) that runs on a peer's
 * model over the Ferry session: `streamText({ model: ferryModel(network, peerId, 'llama3') })`.
 * Text in, text out: tool calls, files and JSON mode are not carried, and are reported as warnings.
 */
export function ferryModel(
  network: PeerNetwork,
  peerId: string,
  modelId: string,
  options: FerryModelOptions = {},
): LanguageModelV3 {
  async function doStream(call: LanguageModelV3CallOptions) {
    const { messages, params, warnings } = toFerryRequest(call);
    const stream = askPeer(
      network,
      peerId,
      { modelId, messages, params },
      { ...options, signal: call.abortSignal },
    );
    const textId = '0';
    const parts = new ReadableStream<LanguageModelV3StreamPart>({
      async start(controller) {
        controller.enqueue({ type: 'stream-start', warnings });
      },
      async pull(controller) {
        // One pull drives the whole stream: the AI SDK reads it to the end anyway.
        try {
          const init = await stream.accepted;
          controller.enqueue({
            type: 'response-metadata',
            id: stream.streamId,
            modelId: init.modelId,
            timestamp: new Date(),
          });
          controller.enqueue({ type: 'text-start', id: textId });
          for await (const delta of stream) controller.enqueue({ type: 'text-delta', id: textId, delta });
          controller.enqueue({ type: 'text-end', id: textId });
          const result = await stream.result;
          controller.enqueue({
            type: 'finish',
            usage: toUsage(result),
            finishReason: toFinishReason(result),
          });
        } catch (error) {
          controller.enqueue({ type: 'error', error });
          controller.enqueue({
            type: 'finish',
            usage: toUsage(undefined),
            finishReason: { unified: 'error', raw: (error as { code?: string }).code },
          });
        }
        controller.close();
      },
      cancel(reason) {
        stream.cancel(typeof reason === 'string' ? reason : 'the AI SDK stream was cancelled');
      },
    });
    return { stream: parts, request: { body: { modelId, messages, params } } };
  }

  return {
    specificationVersion: 'v3',
    provider: 'ferry',
    modelId,
    supportedUrls: {},
    doStream,
    async doGenerate(call) {
      const { stream } = await doStream(call);
      let text = '';
      let warnings: SharedV3Warning[] = [];
      let finish: Extract<LanguageModelV3StreamPart, { type: 'finish' }> | undefined;
      const reader = stream.getReader();
      for (let next = await reader.read(); !next.done; next = await reader.read()) {
        const part = next.value;
        if (part.type === 'stream-start') warnings = part.warnings;
        else if (part.type === 'text-delta') text += part.delta;
        else if (part.type === 'error') throw part.error;
        else if (part.type === 'finish') finish = part;
      }
      return {
        content: [{ type: 'text', text }],
        finishReason: finish?.finishReason ?? { unified: 'other', raw: undefined },
        usage: finish?.usage ?? toUsage(undefined),
        warnings,
      };
    },
  };
}

function toFerryRequest(call: LanguageModelV3CallOptions): {
  messages: ChatMessage[];
  params: SamplingParams;
  warnings: SharedV3Warning[];
} {
  const warnings: SharedV3Warning[] = [];
  const unsupported = (feature: string, details?: string) =>
    warnings.push({ type: 'unsupported', feature, ...(details !== undefined && { details }) });
  if (call.tools?.length) unsupported('tools', 'peer models stream text only');
  if (call.responseFormat?.type === 'json')
    unsupported('responseFormat', 'JSON mode is not carried to the peer');
  if (call.presencePenalty !== undefined) unsupported('presencePenalty');
  if (call.frequencyPenalty !== undefined) unsupported('frequencyPenalty');

  const params: SamplingParams = {
    ...(call.temperature !== undefined && { temperature: call.temperature }),
    ...(call.topP !== undefined && { topP: call.topP }),
    ...(call.topK !== undefined && { topK: call.topK }),
    ...(call.seed !== undefined && { seed: call.seed }),
    ...(call.maxOutputTokens !== undefined && { maxTokens: call.maxOutputTokens }),
    ...(call.stopSequences?.length && { stop: call.stopSequences }),
  };
  return { messages: toMessages(call.prompt, unsupported), params, warnings };
}

function toMessages(prompt: LanguageModelV3Prompt, unsupported: (feature: string) => void): ChatMessage[] {
  const messages: ChatMessage[] = [];
  for (const message of prompt) {
    if (message.role === 'system') {
      messages.push({ role: 'system', content: message.content });
    } else if (message.role === 'user' || message.role === 'assistant') {
      let content = '';
      for (const part of message.content) {
        if (part.type === 'text') content += part.text;
        else if (part.type !== 'reasoning') unsupported(`${part.type} parts`);
      }
      messages.push({ role: message.role, content });
    } else {
      unsupported('tool messages');
    }
  }
  return messages;
}

function toUsage(result: AskResult | undefined): LanguageModelV3Usage {
  return {
    inputTokens: {
      total: result?.usage.promptTokens,
      noCache: undefined,
      cacheRead: undefined,
      cacheWrite: undefined,
    },
    outputTokens: {
      total: result?.usage.completionTokens,
      text: result?.usage.completionTokens,
      reasoning: undefined,
    },
  };
}

function toFinishReason(result: AskResult): LanguageModelV3FinishReason {
  const { finishReason } = result;
  return { unified: finishReason === 'cancelled' ? 'other' : finishReason, raw: finishReason };
}
