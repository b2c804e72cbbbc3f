// Node-only entry: everything in '@ferry/ai', plus the node-llama-cpp backend and GGUF file writing.
import { writeFile } from 'node:fs/promises';
import { createTinyLlamaGguf, type TinyLlamaOptions } from './tiny-gguf.js';

export * from './backends/llama-cpp.js';
export * from './index.js';

/** Write the tiny random-weight llama model (see tiny-gguf.ts) to `path`. */
export async function writeTinyLlamaGguf(path: string, options: TinyLlamaOptions = {}): Promise<void> {
  await writeFile(path, createTinyLlamaGguf(options));
}
