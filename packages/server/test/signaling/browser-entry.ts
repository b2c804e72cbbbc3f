// Bundled for Chromium by browser.test.ts: the SignalingClient on the page's own WebSocket (no `ws`),
// driven through a page global; bytes cross the Node/page boundary as base64.
import { fromBase64, SignalingClient } from '@ferry/core';

let client: SignalingClient | undefined;
type Received = { from: string; data: unknown };
const signals: Received[] = [];
const waiting: Array<(signal: Received) => void> = [];
const errors: string[] = [];

const api = {
  /** Joins and resolves once the room's peer list contains `expectPeer`. */
  start(url: string, accountKey: string, clientId: string, expectPeer: string): Promise<string[]> {
    const joining = new SignalingClient({ urls: [url], accountKey: fromBase64(accountKey), clientId });
    client = joining;
    joining.on('signal', (from, data) => {
      const waiter = waiting.shift();
      if (waiter) waiter({ from, data });
      else signals.push({ from, data });
    });
    joining.on('error', (error) => errors.push(error.message));
    return new Promise((resolve) => {
      const check = () => {
        if (joining.connected && joining.peers().includes(expectPeer)) resolve(joining.peers());
      };
      joining.on('connected', check);
      joining.on('peer-joined', check);
    });
  },
  /** Resolves with the first signal received (now or later). */
  nextSignal(): Promise<Received> {
    const first = signals.shift();
    return first ? Promise.resolve(first) : new Promise((resolve) => waiting.push(resolve));
  },
  signal(to: string, data: unknown): void {
    client?.signal(to, data);
  },
  errors: (): string[] => errors,
  close: (): Promise<void> => client?.close() ?? Promise.resolve(),
};

export type SignalingPage = typeof api;
declare global {
  // Exists only inside the page: use it from page.evaluate callbacks.
  var signalingPage: SignalingPage;
}
globalThis.signalingPage = api;
