export * from './deflate.js';
export * from './node-zlib.js';
