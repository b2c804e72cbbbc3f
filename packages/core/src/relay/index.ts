export * from './client.js';
export * from './envelope.js';
export * from './signature.js';
export * from './state.js';
export type * from './types.js';
export * from './wire.js';
