import { MemoryHub, type MemoryNetwork } from '../../src/network/memory.js';
import { runNetworkConformance } from '../network-conformance.js';

runNetworkConformance('MemoryNetwork', async () => {
  const maxMessageBytes = 4 * 1024 * 1024;
  const hub = new MemoryHub({ maxMessageBytes });
  const devices: MemoryNetwork[] = [];
  return {
    maxMessageBytes,
    addDevice: async (clientId) => {
      const device = hub.join(clientId);
      devices.push(device);
      return device;
    },
    dropDevice: async (network) => hub.leave(network.clientId),
    close: async () => {
      await Promise.all(devices.map((d) => d.close()));
    },
  };
});
