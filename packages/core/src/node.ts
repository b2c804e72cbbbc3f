// Node-only entry point: everything in core, plus Node's WebRTC (@roamhq/wrtc), WebSocket (ws) and
// OpenSSL's ChaCha20-Poly1305 for session frames. Browser bundles import '@ferry/core' and never
// reach this file.
import * as crypto from 'node:crypto';
import wrtc from '@roamhq/wrtc';
import { WebSocket } from 'ws';
import { MeshNetwork, type MeshNetworkOptions } from './network/mesh.js';
import { chaChaPolyFromNodeCrypto } from './session/noise/node-chachapoly.js';
import type { WebSocketConstructor } from './signaling/websocket.js';

export * from './index.js';

/** ChaCha20-Poly1305 on OpenSSL: about 10x the pure-JS speed for session frames. */
export const nodeChaChaPoly = chaChaPolyFromNodeCrypto(crypto);

/** A MeshNetwork wired with Node's WebRTC, WebSocket and OpenSSL. */
export function createNodeMesh(
  options: Omit<MeshNetworkOptions, 'wrtc' | 'WebSocket' | 'aead'>,
): MeshNetwork {
  return new MeshNetwork({
    ...options,
    wrtc: wrtc as MeshNetworkOptions['wrtc'],
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    aead: nodeChaChaPoly,
  });
}
