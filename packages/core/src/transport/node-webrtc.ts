import wrtc from '@roamhq/wrtc';
import { FerryError } from '../errors.js';
import { simplePeerWebRTC, type WebRTCImplementation } from './simple-peer.js';

/** The Node WebRTC implementations Ferry runs on, by package name; the first is the default. */
export const NODE_WEBRTC_NAMES = ['@roamhq/wrtc', 'node-datachannel'] as const;
export type NodeWebRTCName = (typeof NODE_WEBRTC_NAMES)[number];

/** @roamhq/wrtc (libwebrtc, as in browsers): Node's default. */
export const defaultNodeWebRTC = wrtc as WebRTCImplementation;

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
