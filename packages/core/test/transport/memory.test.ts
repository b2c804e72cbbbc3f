import { createMemoryTransportPair } from '../../src/transport/memory.js';
import { runTransportConformance } from '../transport-conformance.js';

runTransportConformance('MemoryTransport', async () => createMemoryTransportPair());
