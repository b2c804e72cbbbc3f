import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeMesh, deriveAccount, MINIMUM_ACCOUNT_DESCRIPTOR, toBase64 } from '@ferry/core/node';
import { type FerryServer, startFerryServer } from '@ferry/server';
import { pino } from 'pino';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../testing/browser.js';
import { hasChromium } from '../../../testing/services.js';
import { type DiffPush, replicateFerry } from '../src/index.js';
import { newDisk, openDb } from './support.js';

// A browser device (Chromium, RxDB on Dexie/IndexedDB, native WebRTC) and a Node device (memory
// storage, @roamhq/wrtc) converge through the real signaling server. The page runs under a strict
// Content-Security-Policy (no 'unsafe-eval'), as production apps often do: Ferry's schema checks are
// interpreted there, and nothing else in the stack needs to generate code.

describe.skipIf(!(await hasChromium()))('a browser device and a Node device', () => {
  let dataDir: string;
  let server: FerryServer;
  let key: Uint8Array;
  let harness: BrowserHarness;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'ferry-rxdb-browser-'));
    server = await startFerryServer({
      port: 0,
      dataDir,
      logger: pino({ level: 'silent' }),
      logRequests: false,
    });
    key = (await deriveAccount('browser rxdb passphrase', MINIMUM_ACCOUNT_DESCRIPTOR)).key;
    harness = await openBrowser({
      entry: new URL('./browser/device-entry.ts', import.meta.url),
      strictCsp: true,
    });
  });
  afterAll(async () => {
    await harness?.close();
    await server?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** The Node device: memory storage, @roamhq/wrtc, replicating `todos` with the page. */
  async function nodeDevice(clientId: string) {
    const db = await openDb(newDisk());
    const mesh = createNodeMesh({ clientId, accountKey: key, signalingUrls: [server.signalingUrl] });
    mesh.on('error', () => {});
    const replication = await replicateFerry({ collections: { todos: db.todos }, network: mesh });
    const docs = async () =>
      (await db.todos.find().exec()).map((d) => d.toMutableJSON()).sort((a, b) => a.id.localeCompare(b.id));
    const close = async () => {
      await replication.cancel();
      await mesh.close();
      await db.close();
    };
    return { db, mesh, replication, docs, close };
  }

  it('converge: initial sync both ways, live edits, a delete, a concurrent edit and attachments', async () => {
    const { db, mesh, replication: node, docs: nodeDocs, close } = await nodeDevice('node-dev');
    try {
      await db.todos.bulkInsert(Array.from({ length: 100 }, (_, i) => ({ id: `n${i}`, title: `node ${i}` })));
      const page = harness.page;
      await page.evaluate(
        ([url, k]) => globalThis.ferryDevice.start(url!, k!, 'page-dev', 'node-dev'),
        [server.signalingUrl, toBase64(key)],
      );
      await page.evaluate(() =>
        globalThis.ferryDevice.insert(
          Array.from({ length: 100 }, (_, i) => ({ id: `p${i}`, title: `page ${i}` })),
        ),
      );
      const converged = async () => {
        for (let round = 0; round < 40; round++) {
          await Promise.all([node.awaitInSync(), page.evaluate(() => globalThis.ferryDevice.awaitInSync())]);
          const [here, there] = [await nodeDocs(), await page.evaluate(() => globalThis.ferryDevice.docs())];
          if (JSON.stringify(here) === JSON.stringify(there)) return here;
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        throw new Error('browser and Node did not converge');
      };
      expect(await converged()).toHaveLength(200);
      // The initial pushes went compressed both ways: DEFLATE from fflate in the page, from zlib in Node.
      expect(
        await page.evaluate(() => globalThis.ferryDevice.messagesCompressed('node-dev')),
      ).toBeGreaterThan(0);
      expect(mesh.session('page-dev')?.stats.messagesCompressed).toBeGreaterThan(0);

      await page.evaluate(() => globalThis.ferryDevice.setTitle('n1', 'edited in the page'));
      await page.evaluate(() => globalThis.ferryDevice.remove('n2'));
      await (await db.todos.findOne('p1').exec())!.incrementalPatch({ title: 'edited in node', done: true });
      await Promise.all([
        page.evaluate(() => globalThis.ferryDevice.setTitle('p0', 'page wins?')),
        db.todos
          .findOne('p0')
          .exec()
          .then((d) => d!.incrementalPatch({ title: 'node wins?' })),
      ]);
      const final = await converged();
      expect(final).toHaveLength(199);
      expect(final.find((d) => d.id === 'n1')?.title).toBe('edited in the page');
      expect(final.find((d) => d.id === 'p1')).toEqual({ id: 'p1', title: 'edited in node', done: true });
      expect(['page wins?', 'node wins?']).toContain(final.find((d) => d.id === 'p0')?.title);

      // Attachments both ways: Blob data from Dexie reaches Node's memory storage and the reverse.
      await page.evaluate(() => globalThis.ferryDevice.attach('n3', 'from-page.txt', 'written in Chromium'));
      await (await db.todos.findOne('p3').exec())!.putAttachment({
        id: 'from-node.txt',
        type: 'text/plain',
        data: new Blob(['written in Node'], { type: 'text/plain' }),
      });
      const attachmentsAt = async (id: string) => {
        const doc = await db.todos.findOne(id).exec();
        return Promise.all(doc!.allAttachments().map(async (a) => [a.id, await a.getStringData()]));
      };
      for (let round = 0; round < 40; round++) {
        await converged();
        const [pageHas, nodeHas] = [
          await page.evaluate(() => globalThis.ferryDevice.attachments('p3')),
          await attachmentsAt('n3'),
        ];
        if (pageHas.length > 0 && nodeHas.length > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      expect(await attachmentsAt('n3')).toEqual([['from-page.txt', 'written in Chromium']]);
      expect(await page.evaluate(() => globalThis.ferryDevice.attachments('p3'))).toEqual([
        ['from-node.txt', 'written in Node'],
      ]);
      // Renaming a document with an attachment each way: the data is not sent again, and stays.
      const fromPage: Array<{ title: unknown; data: boolean }> = [];
      mesh.on('message', (from, message) => {
        if (from !== 'page-dev' || message.op !== 'DB_DIFF_PUSH') return;
        for (const change of (message.data as DiffPush).changes) {
          if (change.id === 'n3') fromPage.push({ title: change.doc?.title, data: change.att !== undefined });
        }
      });
      await page.evaluate(() => globalThis.ferryDevice.setTitle('n3', 'renamed in the page'));
      await (await db.todos.findOne('p3').exec())!.incrementalPatch({ title: 'renamed in node' });
      const renamed = await converged();
      expect(renamed.find((d) => d.id === 'n3')?.title).toBe('renamed in the page');
      expect(renamed.find((d) => d.id === 'p3')?.title).toBe('renamed in node');
      expect(fromPage).toEqual([{ title: 'renamed in the page', data: false }]);
      expect(await attachmentsAt('n3')).toEqual([['from-page.txt', 'written in Chromium']]);
      expect(await page.evaluate(() => globalThis.ferryDevice.attachments('p3'))).toEqual([
        ['from-node.txt', 'written in Node'],
      ]);
      expect(await page.evaluate(() => globalThis.ferryDevice.codeGeneration())).toBe(false);
      // The page called useInterpretedChecks(): nothing tried to generate code, so the CSP refused nothing.
      expect(await page.evaluate(() => (globalThis as { cspViolations?: string[] }).cspViolations)).toEqual(
        [],
      );
    } finally {
      await harness.page.evaluate(() => globalThis.ferryDevice.close()).catch(() => undefined);
      await close();
    }
  }, 90_000);

  it('a page killed in the middle of a large initial sync resumes from its checkpoint in IndexedDB and converges', async () => {
    const node = await nodeDevice('node-crash');
    const COUNT = 3000;
    const args = [server.signalingUrl, toBase64(key), 'page-crash', 'node-crash'] as const;
    let again: Page | undefined;
    try {
      await node.db.todos.bulkInsert(
        Array.from({ length: COUNT }, (_, i) => ({
          id: `big${String(i).padStart(4, '0')}`,
          title: 'x'.repeat(200),
        })),
      );
      await node.replication.awaitInSync();
      const page = await harness.newPage();
      const cdp = await harness.context.newCDPSession(page);
      // A slower page, so that the kill lands mid-sync on any machine.
      await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 });
      await page.evaluate((a) => globalThis.ferryDevice.start(...a), args);
      await page.evaluate(() => globalThis.ferryDevice.received(1));
      // A little later: the next push is on its way or being written.
      await new Promise((resolve) => setTimeout(resolve, 40));
      // The renderer dies at once: no page lifecycle, no goodbye to the peer, IndexedDB as it was.
      const crashed = new Promise((resolve) => page.once('crash', resolve));
      void cdp.send('Page.crash').catch(() => undefined);
      await crashed;
      await page.close();

      again = await harness.newPage();
      const kept = await again.evaluate(() => globalThis.ferryDevice.stored('page-crash', 'node-crash'));
      expect(kept.docs).toBeGreaterThan(0);
      expect(kept.docs).toBeLessThan(COUNT);
      // The checkpoint is saved in the same write as the last metadata of its batch, after the documents.
      expect(kept.checkpoint).toBeGreaterThan(0);
      expect(kept.checkpoint).toBeLessThanOrEqual(kept.docs);

      const sentBefore = node.replication.sent$.value;
      await again.evaluate((a) => globalThis.ferryDevice.start(...a), args);
      for (let round = 0; ; round++) {
        await node.replication.awaitInSync();
        const there = await again.evaluate(() => globalThis.ferryDevice.docs());
        if (there.length === COUNT && JSON.stringify(there) === JSON.stringify(await node.docs())) break;
        if (round === 400) throw new Error(`the restarted page holds ${there.length} of ${COUNT} documents`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      // Node sent exactly what came after the page's persisted checkpoint, not everything again.
      expect(node.replication.sent$.value - sentBefore).toBe(COUNT - kept.checkpoint);
    } finally {
      await again?.evaluate(() => globalThis.ferryDevice.close()).catch(() => undefined);
      await again?.close();
      await node.close();
    }
  }, 120_000);

  it('two tabs of one app: only the leader replicates, the other takes over on the same metadata when it closes', async () => {
    const node = await nodeDevice('node-tabs');
    const [first, second] = [await harness.newPage(), await harness.newPage()];
    const args = [server.signalingUrl, toBase64(key), 'page-tabs', 'node-tabs'] as const;
    const inSync = async (page: Page, count: number) => {
      for (let round = 0; round < 80; round++) {
        await node.replication.awaitInSync();
        const [here, there] = [await node.docs(), await page.evaluate(() => globalThis.ferryDevice.docs())];
        if (here.length === count && JSON.stringify(here) === JSON.stringify(there)) return;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      throw new Error(`tab and Node did not converge on ${count} documents`);
    };
    try {
      await first.evaluate(() => globalThis.ferryDevice.open('page-tabs', true));
      await first.evaluate((a) => globalThis.ferryDevice.replicate(...a), args);
      await second.evaluate(() => globalThis.ferryDevice.open('page-tabs', true));
      // The second tab waits for leadership: not awaited here.
      await second.evaluate((a) => {
        void globalThis.ferryDevice.replicate(...a).then(() => Object.assign(globalThis, { leading: true }));
      }, args);
      await second.evaluate(() =>
        globalThis.ferryDevice.insert([{ id: 'from-second', title: 'follower tab' }]),
      );
      await first.evaluate(() => globalThis.ferryDevice.insert([{ id: 'from-first', title: 'leader tab' }]));
      await node.db.todos.insert({ id: 'from-node', title: 'node' });
      await inSync(second, 3); // the follower's write went out through the leader; it sees the node's
      expect(await second.evaluate(() => (globalThis as { leading?: boolean }).leading ?? false)).toBe(false);
      const sentBefore = node.replication.sent$.value;

      await first.close(); // the leader tab goes without a goodbye
      await second.waitForFunction(() => (globalThis as { leading?: boolean }).leading, undefined, {
        timeout: 30_000,
      });
      await node.db.todos.insert({ id: 'after', title: 'written after the takeover' });
      await second.evaluate(() =>
        globalThis.ferryDevice.insert([{ id: 'second-after', title: 'new leader' }]),
      );
      await inSync(second, 5);
      // The new leader resumed from the stored checkpoint: the node sent it only the one new document.
      expect(node.replication.sent$.value - sentBefore).toBe(1);
    } finally {
      await second.evaluate(() => globalThis.ferryDevice.close()).catch(() => undefined);
      await second.close();
      await node.close();
    }
  }, 90_000);
});
