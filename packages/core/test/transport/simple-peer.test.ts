import wrtc from '@roamhq/wrtc';
import * as nodeDatachannel from 'node-datachannel/polyfill';
import SimplePeer from 'simple-peer';
import { describe, expect, it, vi } from 'vitest';
import { SimplePeerTransport, sdpFingerprint } from '../../src/transport/simple-peer.js';
import { connectedSimplePeers, nodeWebRTCs } from '../support/webrtc.js';
import { runTransportConformance } from '../transport-conformance.js';

for (const { name, wrtc: implementation } of nodeWebRTCs) {
  runTransportConformance(`SimplePeerTransport (${name})`, async () => {
    const [a, b] = await connectedSimplePeers(implementation);
    return [new SimplePeerTransport(a), new SimplePeerTransport(b)];
  });
}

describe('SimplePeerTransport', () => {
  it('refuses a simple-peer instance that is not connected', () => {
    const peer = new SimplePeer({ wrtc: wrtc as SimplePeer.Options['wrtc'], initiator: true });
    expect(() => new SimplePeerTransport(peer)).toThrowError(expect.objectContaining({ code: 'TRANSPORT' }));
    peer.destroy();
  });

  it.each(nodeWebRTCs)(
    'sends messages as large as the connection negotiated (256 KiB at most), or as the option says ($name)',
    async ({ wrtc: implementation }) => {
      const [a, b] = await connectedSimplePeers(implementation);
      try {
        // Both, like Chromium, announce a=max-message-size:262144.
        expect(new SimplePeerTransport(a).maxMessageSize).toBe(256 * 1024);
        expect(new SimplePeerTransport(b, { maxMessageSize: 16 * 1024 }).maxMessageSize).toBe(16 * 1024);
      } finally {
        a.destroy();
        b.destroy();
      }
    },
  );

  it("takes each side's DTLS fingerprint from the descriptions, equal across the two sides (node-datachannel)", async () => {
    const [a, b] = await connectedSimplePeers(nodeWebRTCs[1]!.wrtc);
    try {
      const [ta, tb] = [new SimplePeerTransport(a), new SimplePeerTransport(b)];
      expect(ta.localFingerprint).toMatch(/^sha-256 [0-9A-F:]+$/);
      expect(ta.localFingerprint).toBe(tb.remoteFingerprint);
      expect(tb.localFingerprint).toBe(ta.remoteFingerprint);
      expect(ta.localFingerprint).not.toBe(tb.localFingerprint);
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it("hands node-datachannel's ICE candidates on in the standard form: @roamhq/wrtc takes them all", async () => {
    const [wrtcSide, datachannelSide] = [nodeWebRTCs[0]!.wrtc, nodeWebRTCs[1]!.wrtc];
    const warn = vi.spyOn(console, 'warn');
    const refused: string[] = [];
    // The WebRTC typings give addIceCandidate legacy callback overloads: one signature is enough here.
    type AddCandidate = (this: RTCPeerConnection, candidate?: RTCIceCandidateInit | null) => Promise<void>;
    const prototype = wrtcSide.RTCPeerConnection.prototype as unknown as { addIceCandidate: AddCandidate };
    const add = prototype.addIceCandidate;
    const spy = vi.spyOn(prototype, 'addIceCandidate').mockImplementation(async function (
      this: RTCPeerConnection,
      candidate?: RTCIceCandidateInit | null,
    ) {
      try {
        return await add.call(this, candidate);
      } catch (error) {
        refused.push(`${candidate?.candidate}: ${(error as Error).message}`);
        throw error;
      }
    });
    try {
      // Both ways round: the offer from either implementation.
      for (const [first, second] of [
        [wrtcSide, datachannelSide],
        [datachannelSide, wrtcSide],
      ] as const) {
        const [a, b] = await connectedSimplePeers(first, second);
        a.destroy();
        b.destroy();
      }
      expect(spy).toHaveBeenCalled();
      expect(refused).toEqual([]);
      expect(warn).not.toHaveBeenCalledWith('Ignoring unsupported ICE candidate.');
    } finally {
      spy.mockRestore();
      warn.mockRestore();
    }
  });

  it('bad input: a polyfill used without simplePeerWebRTC fails at the first offer (read-only sdp)', async () => {
    const errors: Error[] = [];
    const peer = new SimplePeer({
      wrtc: nodeDatachannel as never,
      initiator: true,
      config: { iceServers: [] },
    });
    peer.on('error', (error) => errors.push(error));
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    peer.destroy();
  });

  it('reads the native bufferedAmount only once small sends add up to 4 KiB, at most once per turn', async () => {
    const [a, b] = await connectedSimplePeers();
    try {
      const transport = new SimplePeerTransport(a);
      const channel = (a as unknown as { _channel: RTCDataChannel })._channel;
      const native = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(channel), 'bufferedAmount')!;
      let reads = 0;
      Object.defineProperty(channel, 'bufferedAmount', {
        get() {
          reads++;
          return native.get!.call(this);
        },
      });
      const turn = () => new Promise((resolve) => setTimeout(resolve, 5));
      // Ten 300-byte messages in ten turns: 3,000 bytes at most queued, no native read needed.
      for (let i = 0; i < 10; i++) {
        transport.send(new Uint8Array(300));
        expect(transport.bufferedAmount).toBeLessThanOrEqual(300 * (i + 1));
        await turn();
      }
      expect(reads).toBe(0);
      // Past 4 KiB the figure is read (once in this turn, however often it is asked for).
      transport.send(new Uint8Array(2000));
      for (let i = 0; i < 5; i++) expect(transport.bufferedAmount).toBeGreaterThanOrEqual(2000);
      expect(reads).toBe(1);
      // A large send is read again on a later turn (the native figure lags by one turn).
      transport.send(new Uint8Array(8000));
      await turn();
      expect(transport.bufferedAmount).toBeLessThanOrEqual(3000 + 2000 + 8000);
      expect(reads).toBe(2);
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
