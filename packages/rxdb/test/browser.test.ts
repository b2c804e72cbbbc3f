import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeMesh, deriveAccount, MINIMUM_ACCOUNT_DESCRIPTOR, toBase64 } from '@ferry/core/node';
import { startFerryServer } from '@ferry/server';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { openBrowser } from '../../../testing/browser.js';
import { hasChromium } from '../../../testing/services.js';
import { replicateFerry } from '../src/index.js';
import { newDisk, openDb } from './support.js';

// A browser device (Chromium, RxDB on Dexie/IndexedDB, native WebRTC) and a Node device (memory
// storage, @roamhq/wrtc) converge through the real signaling server. The page runs under a strict
// Content-Security-Policy (no 'unsafe-eval'), as production apps often do: Ferry's schema checks are
// interpreted there, and nothing else in the stack needs to generate code.

describe.skipIf(!(await hasChromium()))('a browser device and a Node device', () => {
  it('converge: initial sync both ways, live edits, a delete and a concurrent edit', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'ferry-rxdb-browser-'));
    const server = await startFerryServer({
      port: 0,
      dataDir,
      logger: pino({ level: 'silent' }),
      logRequests: false,
    });
    const key = (await deriveAccount('browser rxdb passphrase', MINIMUM_ACCOUNT_DESCRIPTOR)).key;
    const harness = await openBrowser({
      entry: new URL('./browser/device-entry.ts', import.meta.url),
      strictCsp: true,
    });
    const db = await openDb(newDisk());
    const mesh = createNodeMesh({
      clientId: 'node-dev',
      accountKey: key,
      signalingUrls: [server.signalingUrl],
    });
    mesh.on('error', () => {});
    try {
      await db.todos.bulkInsert(Array.from({ length: 100 }, (_, i) => ({ id: `n${i}`, title: `node ${i}` })));
      const node = await replicateFerry({ collections: { todos: db.todos }, network: mesh });
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
      const nodeDocs = async () =>
        (await db.todos.find().exec()).map((d) => d.toMutableJSON()).sort((a, b) => a.id.localeCompare(b.id));
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
      expect(await page.evaluate(() => globalThis.ferryDevice.codeGeneration())).toBe(false);
      // The one refusal is Ferry asking whether it may compile (canGenerateCode), made once.
      const violations = await page.evaluate(
        () => (globalThis as { cspViolations?: string[] }).cspViolations,
      );
      expect(violations).toHaveLength(1);
      expect(violations![0]).toMatch(/^script-src eval /);
      await node.cancel();
    } finally {
      await harness.page.evaluate(() => globalThis.ferryDevice.close()).catch(() => undefined);
      await harness.close();
      await mesh.close();
      await db.close();
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});
