// Node-only entry: everything in '@ferry/ai', plus the node-llama-cpp backend and GGUF file writing.
import { writeFile } from 'node:fs/promises';
import { type LlamaCppBackend, llamaCppBackend } from './backends/llama-cpp.js';
import { createTinyLlamaGguf, type TinyLlamaOptions } from './tiny-gguf.js';

export * from './backends/llama-cpp.js';
export * from './index.js';

/** Write the tiny random-weight llama model (see tiny-gguf.ts) to `path`. */
export async function writeTinyLlamaGguf(path: string, options: TinyLlamaOptions = {}): Promise<void> {
  await writeFile(path, createTinyLlamaGguf(options));
}

/**
 * A node-llama-cpp backend for the tiny model, with the settings it needs on a small CPU: one thread
 * (more threads than free cores slow llama.cpp down badly), its own 256-token context, and a short
 * system prompt (the default chat template alone overflows 256 tokens).
 */
export const tinyLlamaBackend = (options: { id: string; modelPath: string }): LlamaCppBackend =>
  llamaCppBackend({ ...options, gpu: false, threads: 1, contextSize: 256, systemPrompt: 'Be brief.' });
