import { MemoryHub, type MemoryNetwork } from '../../src/network/memory.js';
import { runNetworkConformance } from '../network-conformance.js';

runNetworkConformance('MemoryNetwork', async () => {
  const hub = new MemoryHub();
  const devices: MemoryNetwork[] = [];
  return {
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
