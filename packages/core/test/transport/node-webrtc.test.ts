import wrtc from '@roamhq/wrtc';
import { describe, expect, it } from 'vitest';
import { loadNodeWebRTC, NODE_WEBRTC_NAMES } from '../../src/node.js';

// Picking Node's WebRTC by name (the CLI's --webrtc, the tests' and the bench's variants): each name gives an
// implementation simple-peer can use; anything else is refused before a connection is tried.
describe('loadNodeWebRTC', () => {
  it('gives @roamhq/wrtc with its descriptions read as set, and node-datachannel wrapped for simple-peer', async () => {
    expect(NODE_WEBRTC_NAMES).toEqual(['@roamhq/wrtc', 'node-datachannel']);
    const roam = await loadNodeWebRTC('@roamhq/wrtc');
    expect(roam.RTCSessionDescription).toBe(wrtc.RTCSessionDescription);
    const [offerer, answerer] = [new roam.RTCPeerConnection(), new roam.RTCPeerConnection()];
    expect(offerer).toBeInstanceOf(wrtc.RTCPeerConnection);
    offerer.createDataChannel('x');
    const offer = await offerer.createOffer();
    expect(offerer.localDescription).toBeNull();
    await offerer.setLocalDescription(offer);
    // The description as set (candidates are trickled), not one serialized by the native side.
    expect(offerer.localDescription).toEqual({ type: 'offer', sdp: offer.sdp });
    expect(offerer.currentLocalDescription).toBe(offerer.localDescription);
    expect(answerer.remoteDescription).toBeNull();
    await answerer.setRemoteDescription(new roam.RTCSessionDescription(offer));
    expect(answerer.remoteDescription).toEqual({ type: 'offer', sdp: offer.sdp });
    const answer = await answerer.createAnswer();
    await answerer.setLocalDescription(answer);
    await offerer.setRemoteDescription(answer);
    expect(offerer.remoteDescription).toEqual({ type: 'answer', sdp: answer.sdp });
    expect(offerer.signalingState).toBe('stable');
    offerer.close();
    answerer.close();
    const datachannel = await loadNodeWebRTC('node-datachannel');
    const polyfill = await import('node-datachannel/polyfill');
    expect(datachannel.RTCPeerConnection).not.toBe(polyfill.RTCPeerConnection);
    const connection = new datachannel.RTCPeerConnection();
    expect(connection).toBeInstanceOf(polyfill.RTCPeerConnection);
    connection.close();
    // That both connect, to each other too, the transport and network conformance suites show.
  });

  it('bad input: an unknown name is refused with BAD_ARGUMENT listing the names it takes', async () => {
    for (const name of ['wrtc', 'node-webrtc', '', 'NODE-DATACHANNEL']) {
      await expect(loadNodeWebRTC(name)).rejects.toMatchObject({
        name: 'FerryError',
        code: 'BAD_ARGUMENT',
        message: `unknown Node WebRTC implementation "${name}": one of @roamhq/wrtc, node-datachannel`,
      });
    }
  });
});
