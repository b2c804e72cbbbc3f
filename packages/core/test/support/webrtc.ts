import wrtc from '@roamhq/wrtc';
import SimplePeer from 'simple-peer';

/** Two real WebRTC peers (@roamhq/wrtc) in this process, signalled directly, connected. */
export async function connectedSimplePeers(): Promise<[SimplePeer.Instance, SimplePeer.Instance]> {
  const options = { wrtc: wrtc as SimplePeer.Options['wrtc'], config: { iceServers: [] } };
  const a = new SimplePeer({ ...options, initiator: true });
  const b = new SimplePeer(options);
  a.on('signal', (data) => b.signal(data));
  b.on('signal', (data) => a.signal(data));
  await Promise.all([new Promise((r) => a.once('connect', r)), new Promise((r) => b.once('connect', r))]);
  return [a, b];
}
