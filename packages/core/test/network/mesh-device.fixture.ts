// A device in its own process, for mesh.test.ts to kill (SIGKILL: no goodbye reaches its peers).
// Run as `node --import tsx <this file> <signaling url> <account key hex> <client id> <peer id>`;
// prints "connected" once it holds a session with the peer.
import { createNodeMesh, fromHex } from '../../src/node.js';

const [url, keyHex, clientId, peerId] = process.argv.slice(2) as [string, string, string, string];
const mesh = createNodeMesh({ clientId, accountKey: fromHex(keyHex), signalingUrls: [url] });
mesh.on('error', () => {});
mesh.on('peer-connected', (id) => {
  if (id === peerId) process.stdout.write('connected\n');
});
