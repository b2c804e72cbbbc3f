import SimplePeer from 'simple-peer';
import { loadNodeWebRTC, NODE_WEBRTC_NAMES } from '../../src/transport/node-webrtc.js';
import type { WebRTCImplementation } from '../../src/transport/simple-peer.js';

/** The Node WebRTC implementations Ferry is tested on: the default, and node-datachannel's polyfill. */
export const nodeWebRTCs: ReadonlyArray<{ name: string; wrtc: WebRTCImplementation }> = await Promise.all(
  NODE_WEBRTC_NAMES.map(async (name) => ({ name, wrtc: await loadNodeWebRTC(name) })),
);

/** Two real WebRTC peers in this process (default @roamhq/wrtc; the second on `other` if given), signalled directly, connected. */
export async function connectedSimplePeers(
  implementation: WebRTCImplementation = nodeWebRTCs[0]!.wrtc,
  other = implementation,
): Promise<[SimplePeer.Instance, SimplePeer.Instance]> {
  // node-datachannel sometimes refuses the answer ("Got a remote candidate without ICE transport",
  // about one connection in 150 here): the attempt fails with an error event, as the mesh sees it
  // too, and is made again, as the mesh does. Only setting up the pair is retried.
  for (let attempt = 1; ; attempt++) {
    const config = { iceServers: [] };
    const a = new SimplePeer({ wrtc: implementation, config, initiator: true });
    const b = new SimplePeer({ wrtc: other, config });
    a.on('signal', (data) => a.destroyed || b.destroyed || b.signal(data));
    b.on('signal', (data) => a.destroyed || b.destroyed || a.signal(data));
    const connected = (peer: SimplePeer.Instance) =>
      new Promise<void>((resolve, reject) => {
        peer.once('connect', resolve);
        peer.once('error', reject);
      });
    try {
      await Promise.all([connected(a), connected(b)]);
      return [a, b];
    } catch (error) {
      a.destroy();
      b.destroy();
      if (attempt === 3) throw error;
    }
  }
}
