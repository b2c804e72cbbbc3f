import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import {
  createNodeMesh,
  fromBase64,
  loadNodeWebRTC,
  type MeshNetwork,
  type NodeWebRTCName,
  RelayClient,
  type RelayState,
  type RelayStateStore,
} from '@ferry/core/node';
import type { DeviceConfig } from './config.js';

/** The relay client's state next to the config (it holds this device's relay key: mode 0600). */
class FileRelayStateStore implements RelayStateStore {
  constructor(private readonly path: string) {}

  async load(): Promise<RelayState | undefined> {
    try {
      return JSON.parse(await readFile(this.path, 'utf8')) as RelayState;
    } catch {
      return undefined;
    }
  }

  async save(state: RelayState): Promise<void> {
    const temporary = `${this.path}.${process.pid}.tmp`;
    await writeFile(temporary, JSON.stringify(state), { mode: 0o600 });
    await chmod(temporary, 0o600);
    await rename(temporary, this.path);
  }
}

/** `http://host:port` -> `ws://host:port/signal` (https -> wss): one server serves both. */
function signalingUrl(serverUrl: string): string {
  const url = new URL(serverUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/$/, '')}/signal`;
  return url.toString();
}

export interface CliDevice {
  network: MeshNetwork;
  relay: RelayClient;
  close(): Promise<void>;
}

/** This machine as a device of its account, from the config `ferry init` wrote, on the WebRTC named. */
export async function openDevice(
  config: DeviceConfig,
  configPath: string,
  webrtc: NodeWebRTCName,
): Promise<CliDevice> {
  const accountKey = fromBase64(config.accountKey);
  const network = createNodeMesh({
    wrtc: await loadNodeWebRTC(webrtc),
    clientId: config.clientId,
    accountKey,
    signalingUrls: config.servers.map(signalingUrl),
  });
  network.on('error', () => {}); // the mesh retries; commands report what they observe
  const relay = new RelayClient({
    url: config.servers[0]!,
    accountKey,
    clientId: config.clientId,
    state: new FileRelayStateStore(`${configPath}.relay-state.json`),
  });
  return { network, relay, close: () => network.close() };
}

/** Resolves once `predicate` holds for the network's peers, or after `ms` (whichever first). */
export function waitForPeers(
  network: MeshNetwork,
  ms: number,
  predicate: (peers: string[]) => boolean,
): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (!predicate(network.connectedPeers())) return;
      clearTimeout(timer);
      network.off('peer-connected', check);
      resolve();
    };
    const timer = setTimeout(() => {
      network.off('peer-connected', check);
      resolve();
    }, ms);
    network.on('peer-connected', check);
    check();
  });
}
