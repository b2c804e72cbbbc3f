export type { FrameTap, MailboxAuthorizer, MailboxId, SignalingLimits, SignalingStats } from './hub.js';
export { DEFAULT_LIMITS } from './hub.js';
export type { SignalingServer, SignalingServerOptions } from './server.js';
export { createSignalingServer } from './server.js';
