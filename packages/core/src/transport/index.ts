export * from './memory.js';
export * from './simple-peer.js';
export type * from './types.js';
