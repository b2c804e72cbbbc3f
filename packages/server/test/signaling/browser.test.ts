import { toBase64 } from '@ferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../../testing/browser.js';
import { hasChromium } from '../../../../testing/services.js';
import { Cleanup, newAccountKey, next, peersBecome, startClient, startServer } from './helpers.js';

// The client is isomorphic: bundled for Chromium it uses the page's WebSocket and talks to a Node device.
describe.skipIf(!(await hasChromium()))('SignalingClient in headless Chromium', () => {
  const cleanup = new Cleanup();
  let harness: BrowserHarness;
  beforeAll(async () => {
    harness = await openBrowser({ entry: new URL('./browser-entry.ts', import.meta.url) });
    cleanup.add(() => harness.close(), harness);
  });
  afterAll(() => cleanup.run());

  it('joins with the browser WebSocket and exchanges sealed signals with a Node device both ways', async () => {
    const server = await startServer(cleanup);
    const key = newAccountKey();
    const laptop = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'laptop' });
    await next(laptop, 'connected');

    const peers = await harness.page.evaluate(
      ([url, accountKey]) => signalingPage.start(url, accountKey, 'browser', 'laptop'),
      [server.url, toBase64(key)] as const,
    );
    expect(peers).toEqual(['laptop']);
    await peersBecome(laptop, ['browser']);

    laptop.signal('browser', { type: 'offer', sdp: 'v=0 from node' });
    expect(await harness.page.evaluate(() => signalingPage.nextSignal())).toEqual({
      from: 'laptop',
      data: { type: 'offer', sdp: 'v=0 from node' },
    });
    const answer = next(laptop, 'signal');
    await harness.page.evaluate(() =>
      signalingPage.signal('laptop', { type: 'answer', sdp: 'v=0 from chromium' }),
    );
    expect(await answer).toEqual(['browser', { type: 'answer', sdp: 'v=0 from chromium' }]);

    const left = next(laptop, 'peer-left');
    await harness.page.evaluate(() => signalingPage.close());
    expect(await left).toEqual(['browser']);
    expect(await harness.page.evaluate(() => signalingPage.errors())).toEqual([]);
  });
});
