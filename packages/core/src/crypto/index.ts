export * from './aead.js';
export * from './sign.js';
export * from './subkeys.js';
