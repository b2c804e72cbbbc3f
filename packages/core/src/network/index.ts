export * from './memory.js';
export * from './mesh.js';
export * from './types.js';
