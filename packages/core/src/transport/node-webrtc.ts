import wrtc from '@roamhq/wrtc';
import { FerryError } from '../errors.js';
import { simplePeerWebRTC, type WebRTCImplementation } from './simple-peer.js';

/** The Node WebRTC implementations Ferry runs on, by package name; the first is the default. */
export const NODE_WEBRTC_NAMES = ['@roamhq/wrtc', 'node-datachannel'] as const;
export type NodeWebRTCName = (typeof NODE_WEBRTC_NAMES)[number];

/**
 * An implementation whose peer connections answer `localDescription` and `remoteDescription` (and
 * their `current` forms) from the descriptions set on them, without asking the native side.
 *
 * Why: @roamhq/wrtc reads a description by serializing it on the JavaScript thread, while WebRTC's
 * signaling thread may be adding ICE candidates to it (gathered, or handed in by addIceCandidate),
 * and now and then the two collide: a segmentation fault in `webrtc::SdpSerialize` (core dump from
 * `rxdb/test/webrtc.test.ts`, in 2 of about 55 runs on one machine). simple-peer reads them just as
 * candidates come in: the local one right after setting it, to signal it, and the remote one for
 * every candidate it receives. What it and Ferry read is there as set: the type, and the DTLS
 * fingerprint (candidates travel separately, trickled).
 */
function withDescriptionsAsSet(implementation: WebRTCImplementation): WebRTCImplementation {
  const Native = implementation.RTCPeerConnection as unknown as new (
    configuration?: RTCConfiguration,
  ) => RTCPeerConnection;
  function PeerConnection(configuration?: RTCConfiguration): RTCPeerConnection {
    const pc = new Native(configuration);
    let local: RTCSessionDescriptionInit | null = null;
    let remote: RTCSessionDescriptionInit | null = null;
    // Without a description (the implicit form, which simple-peer does not use) the native one is read once.
    const plain = (
      description: RTCSessionDescriptionInit | undefined,
      native: () => RTCSessionDescription | null,
    ) => {
      const { type, sdp } = description ?? native() ?? {};
      return type ? { type, sdp } : null;
    };
    const setLocal = async (description?: RTCSessionDescriptionInit) => {
      await pc.setLocalDescription(description);
      local = plain(description, () => pc.localDescription);
    };
    const setRemote = async (description: RTCSessionDescriptionInit) => {
      await pc.setRemoteDescription(description);
      remote = plain(description, () => pc.remoteDescription);
    };
    return new Proxy(pc, {
      get(target, key) {
        switch (key) {
          case 'localDescription':
          case 'currentLocalDescription':
            return local;
          case 'remoteDescription':
          case 'currentRemoteDescription':
            return remote;
          case 'setLocalDescription':
            return setLocal;
          case 'setRemoteDescription':
            return setRemote;
          default:
            return Reflect.get(target, key);
        }
      },
    });
  }
  // Its instances are the native class's (behind the proxy): the same prototype and statics.
  PeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(PeerConnection, Native);
  return { ...implementation, RTCPeerConnection: PeerConnection } as unknown as WebRTCImplementation;
}

/** @roamhq/wrtc (libwebrtc, as in browsers): Node's default, its descriptions read as set. */
export const defaultNodeWebRTC = withDescriptionsAsSet(wrtc as WebRTCImplementation);

/**
 * A Node WebRTC implementation by name, ready for simple-peer (node-datachannel through
 * simplePeerWebRTC). node-datachannel is an optional peer dependency: loaded only when asked for.
 */
export async function loadNodeWebRTC(name: string): Promise<WebRTCImplementation> {
  switch (name) {
    case '@roamhq/wrtc':
      return defaultNodeWebRTC;
    case 'node-datachannel': {
      let polyfill: typeof import('node-datachannel/polyfill');
      try {
        polyfill = await import('node-datachannel/polyfill');
      } catch (cause) {
        // The app asked for it without installing it: a setup to fix, not a fault to retry.
        throw new FerryError(
          'BAD_ARGUMENT',
          'node-datachannel is an optional peer dependency of @ferry/core: npm install node-datachannel',
          { cause },
        );
      }
      return simplePeerWebRTC(polyfill);
    }
    default:
      throw new FerryError(
        'BAD_ARGUMENT',
        `unknown Node WebRTC implementation "${name}": one of ${NODE_WEBRTC_NAMES.join(', ')}`,
      );
  }
}
