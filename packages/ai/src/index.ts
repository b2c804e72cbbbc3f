// Isomorphic entry: host, consumer, wire schemas, backends that need no Node APIs, and the AI SDK
// provider. Node-only pieces (node-llama-cpp backend, GGUF file writing) live in '@ferry/ai/node'.
export * from './ai-sdk.js';
export * from './backend.js';
export * from './backends/openai-compatible.js';
export * from './backends/wllama.js';
export {
  AiRejectedError,
  AiStream,
  type AiStreamState,
  type AskOptions,
  type AskRequest,
  type AskResult,
  askPeer,
  listPeerModels,
} from './consumer.js';
export { bucketSize } from './frames.js';
export * from './host.js';
export * from './tiny-gguf.js';
export * from './wire.js';
