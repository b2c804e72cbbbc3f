// Bundled for Chromium by browser.test.ts: a RelayClient in a page, talking to a diff server on
// another origin (so CORS is exercised), with bytes crossing the Node/page boundary as base64.
import { fromBase64, fromUtf8, RelayClient, utf8 } from '@ferry/core';

const clients = new Map<string, RelayClient>();
const client = (url: string, accountKeyBase64: string, clientId: string) => {
  const key = `${url} ${clientId}`;
  let relay = clients.get(key);
  if (!relay) {
    relay = new RelayClient({ url, accountKey: fromBase64(accountKeyBase64), clientId });
    clients.set(key, relay);
  }
  return relay;
};

const api = {
  async push(url: string, key: string, from: string, to: string, text: string): Promise<string> {
    return (await client(url, key, from).push([to], utf8(text))).diffId;
  },
  async pullAndAck(url: string, key: string, clientId: string): Promise<Array<[string, number, string]>> {
    const relay = client(url, key, clientId);
    const diffs = await relay.pull();
    await relay.ack(diffs.map((d) => d.diffId));
    return diffs.map((d) => [d.senderClientId, d.sequence, fromUtf8(d.payload)]);
  },
};

declare global {
  var browserRelay: typeof api;
}
globalThis.browserRelay = api;
