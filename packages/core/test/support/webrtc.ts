import wrtc from '@roamhq/wrtc';
import * as nodeDatachannel from 'node-datachannel/polyfill';
import SimplePeer from 'simple-peer';
import { simplePeerWebRTC, type WebRTCImplementation } from '../../src/transport/simple-peer.js';

/** The Node WebRTC implementations Ferry is tested on: the default, and node-datachannel's polyfill. */
export const nodeWebRTCs: ReadonlyArray<{ name: string; wrtc: WebRTCImplementation }> = [
  { name: '@roamhq/wrtc', wrtc: wrtc as WebRTCImplementation },
  { name: 'node-datachannel', wrtc: simplePeerWebRTC(nodeDatachannel) },
];

/** Two real WebRTC peers in this process (default @roamhq/wrtc; the second on `other` if given), signalled directly, connected. */
export async function connectedSimplePeers(
  implementation: WebRTCImplementation = nodeWebRTCs[0]!.wrtc,
  other = implementation,
): Promise<[SimplePeer.Instance, SimplePeer.Instance]> {
  const config = { iceServers: [] };
  const a = new SimplePeer({ wrtc: implementation, config, initiator: true });
  const b = new SimplePeer({ wrtc: other, config });
  a.on('signal', (data) => b.signal(data));
  b.on('signal', (data) => a.signal(data));
  await Promise.all([new Promise((r) => a.once('connect', r)), new Promise((r) => b.once('connect', r))]);
  return [a, b];
}
