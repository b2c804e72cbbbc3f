import { describeBackendConformance } from './backend-conformance.js';
import { CountingEngine } from './helpers.js';

// The plain async-iterator backend, driven by a toy engine that records whether it still runs.
const engine = new CountingEngine();
describeBackendConformance('function', () => ({
  backend: engine.backend('toy'),
  idle: () => engine.generations === engine.stopped,
  deterministic: true,
}));
