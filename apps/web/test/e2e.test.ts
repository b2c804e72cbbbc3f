import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNodeMesh, deriveAccount, generatePassphrase, type MeshNetwork } from '@ferry/core/node';
import { createDiffServer, createSignalingServer, createSqliteStorage } from '@ferry/server';
import { pino } from 'pino';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type LlamaCppBackend,
  llamaCppBackend,
  type ModelBackend,
  type ServeHandle,
  serveModels,
  writeTinyLlamaGguf,
} from '../../../packages/ai/src/node.js';
import { CHROMIUM_ARGS } from '../../../testing/browser.js';
import { CHROMIUM_PATH, hasChromium } from '../../../testing/services.js';
import { registerWebApp } from '../server/register.js';
import { ensureWebAppBuilt } from './build-app.js';

/**
 * The web app as a person uses it: a real Ferry server (diff server + signaling) serving the built
 * app, headless Chromium pages signing in with passphrases, and a Node device serving a real model.
 */
const artifacts = fileURLToPath(new URL('../../../test-artifacts/web/', import.meta.url));

interface TestServer {
  url: string;
  signalingUrl: string;
  close(): Promise<void>;
}

/** Diff server, signaling on the same port, and the built web app: what `ferry server --web` runs. */
async function startServer(dataDir: string, webRoot: string): Promise<TestServer> {
  const logger = pino({ level: 'warn' });
  const diff = await createDiffServer({
    storage: createSqliteStorage({ dataDir }),
    logger,
    logRequests: false,
  });
  await registerWebApp(diff.app, { root: webRoot });
  const signaling = await createSignalingServer({ server: diff.app.server, logger });
  await diff.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = diff.app.server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    signalingUrl: signaling.url,
    close: async () => {
      await signaling.close();
      await diff.close();
    },
  };
}

let server: TestServer;
let browser: Browser;
let workDir: string;
const openContexts = new Set<BrowserContext>();

async function newDevicePage(context?: BrowserContext): Promise<Page> {
  const owned = context ?? (await browser.newContext({ viewport: { width: 1200, height: 820 } }));
  openContexts.add(owned);
  owned.on('close', () => openContexts.delete(owned));
  const page = owned.pages()[0] ?? (await owned.newPage());
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (error) => console.error(`[page error] ${error.stack ?? error.message}`));
  return page;
}

/** Opens the app, enters the passphrase and waits until the device is online. */
async function signIn(page: Page, passphrase: string): Promise<void> {
  await page.goto(server.url);
  await page.getByTestId('passphrase').fill(passphrase);
  await page.getByTestId('open').click();
  await page.locator('[data-testid=status-signaling][data-state=online]').waitFor();
}

const waitForPeers = (page: Page, count: number) =>
  page
    .getByTestId('status-peer-count')
    .filter({ hasText: new RegExp(`^${count}$`) })
    .waitFor();

const screenshot = (page: Page, name: string) =>
  page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

describe.skipIf(!(await hasChromium()))('web app end to end', () => {
  beforeAll(async () => {
    const webRoot = await ensureWebAppBuilt();
    workDir = await mkdtemp(join(tmpdir(), 'ferry-web-e2e-'));
    await mkdir(artifacts, { recursive: true });
    server = await startServer(join(workDir, 'data'), webRoot);
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
  }, 180_000);

  afterAll(async () => {
    await Promise.all([...openContexts].map((context) => context.close().catch(() => undefined)));
    await browser?.close();
    await server?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  describe('chat with a Node device that serves a model', () => {
    let host: MeshNetwork;
    let handle: ServeHandle;
    let backend: LlamaCppBackend;
    const produced: string[] = [];
    const passphrase = generatePassphrase();

    beforeAll(async () => {
      const modelPath = join(workDir, 'tiny.gguf');
      await writeTinyLlamaGguf(modelPath, { seed: 7 });
      backend = llamaCppBackend({
        id: 'tiny-llama',
        modelPath,
        gpu: false,
        threads: 1,
        contextSize: 256,
        systemPrompt: 'Be brief.',
      });
      // Records what the engine generated, to compare with what the page shows.
      const recording: ModelBackend = {
        ...backend,
        async *generate(request, signal) {
          let text = '';
          try {
            for await (const token of backend.generate(request, signal)) {
              text += token;
              yield token;
            }
          } finally {
            produced.push(text);
          }
        },
      };
      const account = await deriveAccount(passphrase);
      host = createNodeMesh({
        clientId: 'node-host',
        accountKey: account.key,
        signalingUrls: [server.signalingUrl],
      });
      handle = serveModels(host, { backends: [recording] });
    }, 120_000);

    afterAll(async () => {
      await handle?.close();
      await host?.close();
      await backend?.close();
    });

    it('lists the host model and streams its reply into the chat panel', async () => {
      const page = await newDevicePage();
      await signIn(page, passphrase);
      await waitForPeers(page, 1);
      await page
        .locator('[data-testid=chat-model] option', { hasText: 'tiny-llama' })
        .waitFor({ state: 'attached' });
      await page.getByTestId('chat-prompt').fill('Tell me a story');
      await page.getByTestId('chat-send').click();
      await page.locator('[data-testid=chat-state][data-state=done]').waitFor();
      await screenshot(page, 'chat');

      const shown = await page.getByTestId('chat-output').textContent();
      expect(produced).toHaveLength(1);
      expect(shown).toBe(produced[0]);
      expect(shown!.length).toBeGreaterThan(20);
      expect(await page.getByTestId('chat-state').textContent()).toMatch(/^Done: \d+ tokens from node-hos/);
    });
  });
});
