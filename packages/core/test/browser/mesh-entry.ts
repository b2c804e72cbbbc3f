// Bundled for Chromium by mesh.browser.test.ts: a MeshNetwork on the browser's native WebRTC and
// WebSocket, driven through a page global. Large payloads are generated and hashed on each side so
// only digests cross the Node/page boundary.
import { fromBase64, MeshNetwork, type PeerMessage, toHex } from '@ferry/core';

// simple-peer's streams (readable-stream) call process.nextTick at run time: browser bundles need
// this shim (Vite apps use a node-polyfills plugin instead, see apps/web).
(globalThis as { process?: unknown }).process ??= {
  env: {},
  nextTick: (fn: (...args: unknown[]) => void, ...args: unknown[]) => queueMicrotask(() => fn(...args)),
};

let mesh: MeshNetwork | undefined;
const inbox: PeerMessage[] = [];
const waiting: Array<(message: PeerMessage) => void> = [];

const sha256 = async (text: string) =>
  toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))));

const api = {
  start(url: string, accountKey: string, clientId: string, peerId: string): Promise<void> {
    mesh = new MeshNetwork({ clientId, accountKey: fromBase64(accountKey), signalingUrls: [url] });
    mesh.on('message', (_from, message) => {
      const waiter = waiting.shift();
      if (waiter) waiter(message);
      else inbox.push(message);
    });
    return new Promise((resolve) => {
      const check = (id: string) => id === peerId && resolve();
      mesh!.on('peer-connected', check);
    });
  },
  /** Sends `size` bytes of text built from `seed` and returns its SHA-256. */
  async sendBig(peerId: string, size: number, seed: string): Promise<string> {
    const text = seed.repeat(Math.ceil(size / seed.length)).slice(0, size);
    await mesh!.send(peerId, { op: 'TEST_BIG', data: text, timestamp: Date.now(), id: crypto.randomUUID() });
    return sha256(text);
  },
  /** Waits for the next message and returns its op and the SHA-256 of its text data. */
  async receiveDigest(): Promise<{ op: string; digest: string; length: number }> {
    const message = inbox.shift() ?? (await new Promise<PeerMessage>((resolve) => waiting.push(resolve)));
    const text = message.data as string;
    return { op: message.op, digest: await sha256(text), length: text.length };
  },
  close: (): Promise<void> => mesh?.close() ?? Promise.resolve(),
};

declare global {
  // eslint-disable-next-line no-var
  var meshPage: typeof api;
}
globalThis.meshPage = api;
