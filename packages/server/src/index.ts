export type { FerryServer, FerryServerOptions } from './ferry-server.js';
export { startFerryServer } from './ferry-server.js';
export * from './relay/index.js';
export * from './signaling/index.js';
