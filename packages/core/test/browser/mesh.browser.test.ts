import { createHash } from 'node:crypto';
import { createNodeMesh, type MeshNetwork, type PeerMessage, toBase64 } from '@ferry/core/node';
import { createSignalingServer, type SignalingServer } from '@ferry/server';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../../testing/browser.js';
import { hasChromium } from '../../../../testing/services.js';
import { whenConnected } from '../network-conformance.js';
import { nodeWebRTCs } from '../support/webrtc.js';

const SIZE = 10 * 1024 * 1024;

// A Node device (@roamhq/wrtc, then node-datachannel) and a page in headless Chromium (native WebRTC)
// form a session through a real signaling server and exchange 10 MiB both ways, checked by SHA-256.
describe.skipIf(!(await hasChromium()))('Node device and Chromium page over WebRTC', () => {
  let harness: BrowserHarness;
  let server: SignalingServer;
  let node: MeshNetwork | undefined;

  beforeAll(async () => {
    server = await createSignalingServer({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }) });
    harness = await openBrowser({ entry: new URL('./mesh-entry.ts', import.meta.url) });
  });
  afterAll(async () => {
    await harness?.page.evaluate(() => meshPage.close()).catch(() => {});
    await node?.close();
    await harness?.close();
    await server?.close();
  });

  it.each(nodeWebRTCs)(
    'exchanges a 10 MiB message both ways intact (Node on $name)',
    async ({ wrtc }) => {
      const key = crypto.getRandomValues(new Uint8Array(32)); // a room of its own
      // 'browser' < 'node-device': the page dials, Node answers.
      await harness.page.evaluate(() => meshPage.close());
      await node?.close();
      node = createNodeMesh({ wrtc, clientId: 'node-device', accountKey: key, signalingUrls: [server.url] });
      const device = node;
      const pageConnected = harness.page.evaluate(
        ([url, accountKey]) => meshPage.start(url, accountKey, 'browser', 'node-device'),
        [server.url, toBase64(key)] as const,
      );
      await Promise.all([pageConnected, whenConnected(device, 'browser')]);

      const fromPage = new Promise<PeerMessage>((resolve) =>
        device.once('message', (_from, message) => resolve(message)),
      );
      const sentDigest = await harness.page.evaluate(
        (size) => meshPage.sendBig('node-device', size, 'from chromium '),
        SIZE,
      );
      const atNode = (await fromPage).data as string;
      expect(atNode.length).toBe(SIZE);
      expect(createHash('sha256').update(atNode).digest('hex')).toBe(sentDigest);

      const text = 'from node '.repeat(Math.ceil(SIZE / 10)).slice(0, SIZE);
      const atPage = harness.page.evaluate(() => meshPage.receiveDigest());
      await device.send('browser', {
        op: 'TEST_BIG',
        data: text,
        timestamp: Date.now(),
        id: crypto.randomUUID(),
      });
      expect(await atPage).toEqual({
        op: 'TEST_BIG',
        digest: createHash('sha256').update(text).digest('hex'),
        length: SIZE,
      });
    },
    90_000,
  );
});
