import { describe, expect, it, vi } from 'vitest';
import { llamaCppBackend } from '../src/node.js';

// An app that picks the llama.cpp backend without installing node-llama-cpp (an optional peer
// dependency) gets a typed error saying what to install, when the backend first loads.
vi.mock('node-llama-cpp', () => {
  throw new Error("Cannot find package 'node-llama-cpp'");
});

describe('llamaCppBackend without node-llama-cpp installed', () => {
  it('fails to load with BAD_ARGUMENT naming the package to install', async () => {
    const backend = llamaCppBackend({ id: 'missing', modelPath: '/nowhere/model.gguf' });
    await expect(backend.load()).rejects.toMatchObject({
      name: 'FerryError',
      code: 'BAD_ARGUMENT',
      message: expect.stringContaining('npm install node-llama-cpp'),
    });
    await backend.close();
  });
});
