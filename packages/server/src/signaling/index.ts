export type { DirectoryEvents, JoinResult, LocalMembership, RoomDirectory } from './directory.js';
export { MemoryDirectory } from './directory.js';
export type { FrameTap, SignalingLimits, SignalingStats } from './hub.js';
export { DEFAULT_LIMITS } from './hub.js';
export type { RedisDirectoryOptions } from './redis-directory.js';
export { createRedisDirectory } from './redis-directory.js';
export type { SignalingServer, SignalingServerOptions } from './server.js';
export { createSignalingServer } from './server.js';
