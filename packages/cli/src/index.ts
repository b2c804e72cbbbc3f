export * from './config.js';
export { createProgram } from './program.js';
