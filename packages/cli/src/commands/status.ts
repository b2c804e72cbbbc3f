import type { NodeWebRTCName } from '@ferry/core/node';
import { readConfig } from '../config.js';
import { openDevice, waitForPeers } from '../device.js';

export interface StatusOptions {
  config: string;
  webrtc: NodeWebRTCName;
  /** How long to listen for devices coming online. */
  waitMs: number;
  out: (line: string) => void;
}

/** `ferry status`: this device, the server, the account's devices and what waits in the mailbox. */
export async function status(options: StatusOptions): Promise<void> {
  const config = await readConfig(options.config);
  const server = config.servers[0]!;
  options.out(`device     ${config.clientId}`);
  options.out(`account    ${config.accountId}`);
  const health = await fetch(new URL('/health', server))
    .then((response) => (response.ok ? 'reachable' : `answered ${response.status}`))
    .catch((error: Error) => `unreachable (${error.message})`);
  options.out(`server     ${server}: ${health}`);
  if (health !== 'reachable') return;

  const device = await openDevice(config, options.config, options.webrtc);
  try {
    // Pulling (without acknowledging) registers this device and shows what waits for it.
    const pending = await device.relay.pull({ limit: 100 });
    const registered = await device.relay.listDevices();
    const online = () => device.network.signaling.peers();
    // Done early once every device in the room has a session with us.
    await waitForPeers(
      device.network,
      options.waitMs,
      (peers) => peers.length > 0 && online().every((id) => peers.includes(id)),
    );
    const connected = device.network.connectedPeers();
    const devices = [...new Set([config.clientId, ...registered, ...online()])];
    options.out(
      `devices    ${devices.length} known (${registered.length} registered on the diff server, ${online().length} other(s) online)`,
    );
    for (const id of devices) {
      const state =
        id === config.clientId
          ? 'this device'
          : connected.includes(id)
            ? 'connected (encrypted session)'
            : online().includes(id)
              ? 'online, connecting'
              : 'offline';
      options.out(`  ${id}  ${state}`);
    }
    options.out(
      `mailbox    ${pending.length === 100 ? 'at least 100' : pending.length} diff(s) waiting for this device on the diff server`,
    );
    options.out('last sync  kept by the app that syncs (the CLI holds no database)');
  } finally {
    await device.close();
  }
}
