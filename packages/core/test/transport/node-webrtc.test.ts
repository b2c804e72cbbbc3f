import wrtc from '@roamhq/wrtc';
import { describe, expect, it } from 'vitest';
import { loadNodeWebRTC, NODE_WEBRTC_NAMES } from '../../src/node.js';

// Picking Node's WebRTC by name (the CLI's --webrtc, the tests' and the bench's variants): each name gives an
// implementation simple-peer can use; anything else is refused before a connection is tried.
describe('loadNodeWebRTC', () => {
  it('gives @roamhq/wrtc as it is, and node-datachannel wrapped for simple-peer', async () => {
    expect(NODE_WEBRTC_NAMES).toEqual(['@roamhq/wrtc', 'node-datachannel']);
    expect(await loadNodeWebRTC('@roamhq/wrtc')).toBe(wrtc);
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
