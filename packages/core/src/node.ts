// Node-only entry point: everything in core, plus Node's WebRTC (@roamhq/wrtc), WebSocket (ws), zlib
// for compressed messages, and OpenSSL for session frames (ChaCha20-Poly1305), signing keys and
// signatures (Ed25519) and handshakes (X25519). Browser bundles import '@ferry/core' and never reach this file.
//
// The adapters take the `node:crypto` module typed structurally; Node accepts any Uint8Array as a DER
// key where its type declarations say Buffer, hence the casts.
import * as crypto from 'node:crypto';
import * as zlib from 'node:zlib';
import { WebSocket } from 'ws';
import { useDeflate } from './compression/deflate.js';
import { deflateFromNodeZlib } from './compression/node-zlib.js';
import { ed25519SigningFromNodeCrypto, type NodeCryptoEd25519 } from './crypto/node-ed25519.js';
import { useEd25519Signing } from './crypto/sign.js';
import { MeshNetwork, type MeshNetworkOptions } from './network/mesh.js';
import { chaChaPolyFromNodeCrypto } from './session/noise/node-chachapoly.js';
import { type NodeCryptoX25519, x25519FromNodeCrypto } from './session/noise/node-x25519.js';
import { useX25519 } from './session/noise.js';
import type { WebSocketConstructor } from './signaling/websocket.js';
import { defaultNodeWebRTC } from './transport/node-webrtc.js';
import type { WebRTCImplementation } from './transport/simple-peer.js';

export * from './index.js';
export { loadNodeWebRTC, NODE_WEBRTC_NAMES, type NodeWebRTCName } from './transport/node-webrtc.js';

/** Ed25519 on OpenSSL (same keys and signatures as the default; see Ed25519Signing). */
export const nodeEd25519Signing = ed25519SigningFromNodeCrypto(crypto as unknown as NodeCryptoEd25519);
useEd25519Signing(nodeEd25519Signing);

/** X25519 on OpenSSL, for the Noise handshake (same keys and secrets as the default; see X25519). */
export const nodeX25519 = x25519FromNodeCrypto(crypto as unknown as NodeCryptoX25519);
useX25519(nodeX25519);

/** Raw DEFLATE on native zlib, for compressed session messages (same bytes on the wire as the default). */
export const nodeDeflate = deflateFromNodeZlib(zlib);
useDeflate(nodeDeflate);

/** ChaCha20-Poly1305 on OpenSSL: about 10x the pure-JS speed for session frames. */
export const nodeChaChaPoly = chaChaPolyFromNodeCrypto(crypto);

/** A MeshNetwork wired with Node's WebRTC, WebSocket and OpenSSL. */
export function createNodeMesh(
  options: Omit<MeshNetworkOptions, 'wrtc' | 'WebSocket' | 'aead'> & {
    /**
     * Node's WebRTC. Default @roamhq/wrtc. node-datachannel: `await loadNodeWebRTC('node-datachannel')`;
     * another W3C polyfill goes through simplePeerWebRTC (see the README's "How it works").
     */
    wrtc?: WebRTCImplementation;
  },
): MeshNetwork {
  return new MeshNetwork({
    ...options,
    wrtc: options.wrtc ?? defaultNodeWebRTC,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    aead: nodeChaChaPoly,
  });
}
