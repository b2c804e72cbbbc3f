export * from './handshake.js';
export * from './mux.js';
export * from './noise/node-chachapoly.js';
export * from './noise/node-x25519.js';
export * from './peer-session.js';
export * from './secure-channel.js';
export * from './wire.js';
