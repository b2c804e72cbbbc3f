export * from './account.js';
export * from './aead.js';
export * from './node-ed25519.js';
export * from './replay.js';
export * from './rfc8410.js';
export * from './sign.js';
export * from './subkeys.js';
