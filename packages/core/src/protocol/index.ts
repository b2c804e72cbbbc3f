export * from './check.js';
export * from './envelope.js';
export * from './json-schema.js';
export * from './message.js';
export * from './ops/db.js';
export * from './ops/relay.js';
export * from './ops/session.js';
export * from './registry.js';
