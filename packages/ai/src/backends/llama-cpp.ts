import { availableParallelism } from 'node:os';
import { FerryError } from '@ferry/core';
// Type-only: erased at runtime. node-llama-cpp is an optional peer dependency, loaded on first use.
import type { ChatHistoryItem, Llama, LlamaContext, LlamaModel } from 'node-llama-cpp';
import { AsyncQueue } from '../async-queue.js';
import type { BackendUsage, GenerateRequest, ModelBackend } from '../backend.js';

export interface LlamaCppBackendOptions {
  /** Model id peers ask for. */
  id: string;
  /** Path of a GGUF file. */
  modelPath: string;
  description?: string;
  /** Tokens per sequence; default: what the model was trained with. */
  contextSize?: number;
  /** Generations run at once (llama.cpp context sequences). Default 1. */
  parallel?: number;
  /**
   * CPU threads. Default: cores - 1 (at least 1). More threads than free cores slows llama.cpp down
   * badly (measured ~1000x with 4 threads on 2 cores).
   */
  threads?: number;
  /** System prompt when the request has none. Keep it short for small contexts. */
  systemPrompt?: string;
  /** Passed to getLlama(); default 'auto'. `false` forces the CPU build. */
  gpu?: false | 'auto' | 'cuda' | 'vulkan' | 'metal';
  /** Share one loaded llama.cpp binding between backends. */
  llama?: Llama;
}

export interface LlamaCppBackend extends ModelBackend {
  /** Engine counters: tokens sampled by llama.cpp (all generations) and generations running now. */
  readonly engine: { generatedTokens: number; activeGenerations: number };
  /** Load the model now instead of on the first request. */
  load(): Promise<void>;
  /** Free the context and the model (a later request loads them again). */
  close(): Promise<void>;
}

const DEFAULT_SYSTEM_PROMPT = 'You are a helpful assistant.';

async function importNodeLlamaCpp(): Promise<typeof import('node-llama-cpp')> {
  try {
    return await import('node-llama-cpp');
  } catch (cause) {
    // The app chose this backend without installing its engine: a setup to fix, not a fault to retry.
    throw new FerryError(
      'BAD_ARGUMENT',
      'the llama.cpp backend needs the optional peer dependency node-llama-cpp: npm install node-llama-cpp',
      { cause },
    );
  }
}

const llamas = new Map<string, Promise<Llama>>();
/** One binding per GPU choice and process: loading it twice wastes memory and startup time. */
function sharedLlama(gpu: LlamaCppBackendOptions['gpu']): Promise<Llama> {
  const key = String(gpu);
  let llama = llamas.get(key);
  if (!llama) {
    llama = importNodeLlamaCpp().then(({ getLlama }) => getLlama({ gpu: gpu ?? 'auto' }));
    llamas.set(key, llama);
    llama.catch(() => llamas.delete(key));
  }
  return llama;
}

/** Serve a GGUF model through node-llama-cpp (llama.cpp bindings for Node). */
export function llamaCppBackend(options: LlamaCppBackendOptions): LlamaCppBackend {
  const parallel = Math.max(1, options.parallel ?? 1);
  const threads = options.threads ?? Math.max(1, availableParallelism() - 1);
  const engine = { generatedTokens: 0, activeGenerations: 0 };
  let loading:
    | Promise<{
        model: LlamaModel;
        context: LlamaContext;
        LlamaChatSession: typeof import('node-llama-cpp').LlamaChatSession;
      }>
    | undefined;

  const load = () => {
    loading ??= (async () => {
      const [{ LlamaChatSession }, llama] = await Promise.all([
        importNodeLlamaCpp(),
        options.llama ?? sharedLlama(options.gpu),
      ]);
      const model = await llama.loadModel({ modelPath: options.modelPath });
      const context = await model.createContext({
        sequences: parallel,
        threads,
        ...(options.contextSize !== undefined && { contextSize: options.contextSize }),
      });
      return { model, context, LlamaChatSession };
    })();
    loading.catch(() => {
      loading = undefined;
    });
    return loading;
  };

  async function* generate(
    request: GenerateRequest,
    signal: AbortSignal,
  ): AsyncGenerator<string, BackendUsage> {
    const { context, LlamaChatSession } = await load();
    signal.throwIfAborted();
    const { systemPrompt, history, prompt } = toChatHistory(
      request,
      options.systemPrompt ?? DEFAULT_SYSTEM_PROMPT,
    );
    const sequence = context.getSequence();
    const session = new LlamaChatSession({
      contextSequence: sequence,
      systemPrompt,
      autoDisposeSequence: false,
    });
    if (history.length > 1) session.setChatHistory(history);
    // Our own controller, so leaving the loop early (maxTokens at the host, a consumer gone) stops the engine too.
    const stop = new AbortController();
    const onAbort = () => stop.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const output = new AsyncQueue<string, BackendUsage>();
    let completionTokens = 0;
    const { params } = request;
    engine.activeGenerations++;
    const generation = session
      .promptWithMeta(prompt, {
        signal: stop.signal,
        stopOnAbortSignal: true,
        ...(params.maxTokens !== undefined && { maxTokens: params.maxTokens }),
        ...(params.temperature !== undefined && { temperature: params.temperature }),
        ...(params.topK !== undefined && { topK: params.topK }),
        ...(params.topP !== undefined && { topP: params.topP }),
        ...(params.seed !== undefined && { seed: params.seed }),
        ...(params.stop && { customStopTriggers: params.stop }),
        onToken: (tokens) => {
          completionTokens += tokens.length;
          engine.generatedTokens += tokens.length;
        },
        onTextChunk: (text) => {
          if (text.length > 0) output.push(text);
        },
      })
      .then(({ stopReason }) =>
        output.end({
          promptTokens: sequence.tokenMeter.usedInputTokens,
          completionTokens,
          finishReason: stopReason === 'maxTokens' ? 'length' : 'stop',
        }),
      )
      .catch((error: unknown) => output.fail(error))
      .finally(() => {
        engine.activeGenerations--;
      });
    try {
      for (;;) {
        const next = await output.next();
        if (next.done) return next.value ?? { completionTokens };
        yield next.value;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      stop.abort();
      await generation;
      session.dispose({ disposeSequence: false });
      sequence.dispose();
    }
  }

  return {
    id: options.id,
    kind: 'llama-cpp',
    ...(options.description !== undefined && { description: options.description }),
    ...(options.contextSize !== undefined && { contextLength: options.contextSize }),
    maxConcurrency: parallel,
    engine,
    generate,
    load: async () => {
      await load();
    },
    async close() {
      const loaded = await loading?.catch(() => undefined);
      loading = undefined;
      if (!loaded) return;
      await loaded.context.dispose();
      await loaded.model.dispose();
    },
  };
}

/** Map chat messages onto node-llama-cpp's history: the last user message is the prompt. */
function toChatHistory(
  request: GenerateRequest,
  defaultSystemPrompt: string,
): { systemPrompt: string; history: ChatHistoryItem[]; prompt: string } {
  const messages = [...request.messages];
  const last = messages.pop();
  if (last?.role !== 'user') {
    throw new FerryError('SCHEMA_MISMATCH', 'the last message for a llama.cpp model must be from the user');
  }
  const system = messages.filter((m) => m.role === 'system').map((m) => m.content);
  const systemPrompt = system.length > 0 ? system.join('\n') : defaultSystemPrompt;
  const history: ChatHistoryItem[] = [{ type: 'system', text: systemPrompt }];
  for (const message of messages) {
    if (message.role === 'user') history.push({ type: 'user', text: message.content });
    else if (message.role === 'assistant') history.push({ type: 'model', response: [message.content] });
  }
  return { systemPrompt, history, prompt: last.content };
}
