// Node-only entry point: everything in core, plus Node's WebRTC implementation for simple-peer.
// Browser bundles import '@ferry/core' and never reach this file.
export * from './index.js';
