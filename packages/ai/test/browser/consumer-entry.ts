// Bundled for Chromium by consumer.browser.test.ts: the page is a device of the account (native
// WebRTC and WebSocket) that asks a Node device's model and reads the answer as a stream.
import { type AskRequest, askPeer, listPeerModels } from '@ferry/ai';
import { fromBase64, MeshNetwork } from '@ferry/core';

// simple-peer's streams call process.nextTick at run time: browser bundles need this shim.
(globalThis as { process?: unknown }).process ??= {
  env: {},
  nextTick: (fn: (...args: unknown[]) => void, ...args: unknown[]) => queueMicrotask(() => fn(...args)),
};

let mesh: MeshNetwork | undefined;

const api = {
  start(url: string, accountKey: string, clientId: string, peerId: string): Promise<void> {
    mesh = new MeshNetwork({ clientId, accountKey: fromBase64(accountKey), signalingUrls: [url] });
    return new Promise((resolve) => {
      if (mesh!.connectedPeers().includes(peerId)) return resolve();
      mesh!.on('peer-connected', (id) => id === peerId && resolve());
    });
  },
  models: (peerId: string) => listPeerModels(mesh!, peerId),
  /** Streams an answer; returns the deltas as they arrived and the final result. */
  async ask(peerId: string, request: AskRequest) {
    const stream = askPeer(mesh!, peerId, request);
    const deltas: string[] = [];
    for await (const delta of stream) deltas.push(delta);
    const result = await stream.result;
    return { deltas, text: result.text, usage: result.usage, finishReason: result.finishReason };
  },
  /** Reads one delta, then stops reading (which cancels the stream on the host). */
  async askAndLeave(peerId: string, request: AskRequest) {
    const stream = askPeer(mesh!, peerId, request);
    for await (const _delta of stream) break;
    return stream.result.then(
      () => 'finished',
      (error: { code?: string }) => error.code ?? 'unknown',
    );
  },
  close: (): Promise<void> => mesh?.close() ?? Promise.resolve(),
};

declare global {
  // eslint-disable-next-line no-var
  var aiPage: typeof api;
}
globalThis.aiPage = api;
