import { fromUtf8, toBase64, utf8 } from '@ferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../../testing/browser.js';
import { hasChromium } from '../../../../testing/services.js';
import { newAccount, relayClient, startRelay, useCleanup } from '../../../server/test/relay/helpers.js';

// `browserRelay` (declared global in browser-entry.ts) exists only inside the page.
const defer = useCleanup();

describe.skipIf(!(await hasChromium()))('RelayClient in headless Chromium', () => {
  let harness: BrowserHarness;
  beforeAll(async () => {
    harness = await openBrowser({ entry: new URL('./browser-entry.ts', import.meta.url) });
  });
  afterAll(() => harness?.close());

  // The long texts are compressed inside the seal: by zlib in Node, by fflate in the page.
  const long = (from: string) => `from ${from}, compressed ✓ `.repeat(2000);

  it('pushes to and pulls from a Node device through a diff server on another origin', async () => {
    const relay = await startRelay('sqlite', defer);
    const account = newAccount();
    const key = toBase64(account.key);
    const node = relayClient(relay.url, account.key, 'laptop');
    await node.register();
    // The page registers as "phone" with its first request; the laptop then writes to it.
    expect(
      await harness.page.evaluate(([u, k]) => browserRelay.pullAndAck(u, k, 'phone'), [
        relay.url,
        key,
      ] as const),
    ).toEqual([]);
    await node.push(['phone'], utf8('from Node ✓'));
    await node.push(['phone'], utf8(long('Node')));
    expect(
      await harness.page.evaluate(([u, k]) => browserRelay.pullAndAck(u, k, 'phone'), [
        relay.url,
        key,
      ] as const),
    ).toEqual([
      ['laptop', 1, 'from Node ✓'],
      ['laptop', 2, long('Node')],
    ]);
    for (const text of ['from Chromium ✓', long('Chromium')]) {
      await harness.page.evaluate(([u, k, t]) => browserRelay.push(u, k, 'phone', 'laptop', t), [
        relay.url,
        key,
        text,
      ] as const);
    }
    const pulled = await node.pull();
    expect(pulled.map((d) => [d.senderClientId, d.sequence, fromUtf8(d.payload)])).toEqual([
      ['phone', 1, 'from Chromium ✓'],
      ['phone', 2, long('Chromium')],
    ]);
  });
});
