import wrtc from '@roamhq/wrtc';
import SimplePeer from 'simple-peer';
import { describe, expect, it } from 'vitest';
import { SimplePeerTransport, sdpFingerprint } from '../../src/transport/simple-peer.js';
import { connectedSimplePeers } from '../support/webrtc.js';
import { runTransportConformance } from '../transport-conformance.js';

runTransportConformance('SimplePeerTransport (@roamhq/wrtc)', async () => {
  const [a, b] = await connectedSimplePeers();
  return [new SimplePeerTransport(a), new SimplePeerTransport(b)];
});

describe('SimplePeerTransport', () => {
  it('refuses a simple-peer instance that is not connected', () => {
    const peer = new SimplePeer({ wrtc: wrtc as SimplePeer.Options['wrtc'], initiator: true });
    expect(() => new SimplePeerTransport(peer)).toThrowError(expect.objectContaining({ code: 'TRANSPORT' }));
    peer.destroy();
  });

  it('sends messages as large as the connection negotiated (256 KiB at most), or as the option says', async () => {
    const [a, b] = await connectedSimplePeers();
    try {
      // @roamhq/wrtc, like Chromium, announces a=max-message-size:262144.
      expect(new SimplePeerTransport(a).maxMessageSize).toBe(256 * 1024);
      expect(new SimplePeerTransport(b, { maxMessageSize: 16 * 1024 }).maxMessageSize).toBe(16 * 1024);
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it('reads the sha-256 fingerprint of an SDP and refuses one without', () => {
    const sdp = 'v=0\r\na=fingerprint:SHA-256 ab:cd:EF\r\na=setup:actpass\r\n';
    expect(sdpFingerprint(sdp)).toBe('sha-256 AB:CD:EF');
    expect(() => sdpFingerprint('v=0\r\n')).toThrowError(expect.objectContaining({ code: 'TRANSPORT' }));
  });
});
