export * from './account.js';
export * from './aead.js';
export * from './replay.js';
export * from './sign.js';
export * from './subkeys.js';
