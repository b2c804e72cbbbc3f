// The wire frames live in protocol/ with the other schemas; they are re-exported here too because the
// signaling client and server are their only users (re-exporting the same bindings twice is harmless).
export * from '../protocol/signaling.js';
export * from './client.js';
export * from './credentials.js';
export * from './websocket.js';
