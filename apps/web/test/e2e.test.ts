import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNodeMesh, deriveAccount, generatePassphrase, type MeshNetwork } from '@ferry/core/node';
import { type FerryServer, startFerryServer } from '@ferry/server';
import { pino } from 'pino';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type LlamaCppBackend,
  type ModelBackend,
  type ServeHandle,
  serveModels,
  tinyLlamaBackend,
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

/** The whole Ferry server with the built web app on the same origin: what `ferry server --web` runs. */
const startServer = (dataDir: string, webRoot: string): Promise<FerryServer> =>
  startFerryServer({
    port: 0,
    dataDir,
    logger: pino({ level: 'warn' }),
    logRequests: false,
    configure: (app) => registerWebApp(app, { root: webRoot }),
  });

let server: FerryServer;
let browser: Browser;
let workDir: string;
const openContexts = new Set<BrowserContext>();

async function newDevicePage(context?: BrowserContext): Promise<Page> {
  const owned = context ?? (await browser.newContext({ viewport: { width: 1200, height: 820 } }));
  openContexts.add(owned);
  owned.on('close', () => openContexts.delete(owned));
  if (!context) {
    // The page's Content-Security-Policy (index.html) forbids eval: record what it refuses.
    await owned.addInitScript(() => {
      const seen: string[] = [];
      Object.assign(globalThis, { cspViolations: seen });
      document.addEventListener('securitypolicyviolation', (event) =>
        seen.push(`${event.violatedDirective} ${event.blockedURI}`),
      );
    });
  }
  const page = owned.pages()[0] ?? (await owned.newPage());
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (error) => console.error(`[page error] ${error.stack ?? error.message}`));
  if (process.env.FERRY_BROWSER_DEBUG)
    page.on('console', (m) => console.log(`[page ${m.type()}] ${m.text()}`));
  return page;
}

/** Opens the app, enters the passphrase and waits until the device is online. */
async function signIn(page: Page, passphrase: string): Promise<void> {
  await page.goto(`${server.url}/`);
  await page.getByTestId('passphrase').fill(passphrase);
  await page.getByTestId('open').click();
  await page.locator('[data-testid=status-signaling][data-state=online]').waitFor();
}

const waitForPeers = (page: Page, count: number) =>
  page
    .getByTestId('status-peer-count')
    .filter({ hasText: new RegExp(`^${count}$`) })
    .waitFor();

const todo = (page: Page, text: string) =>
  page.getByTestId('todo').filter({ has: page.getByTestId('todo-text').getByText(text, { exact: true }) });

async function addTodo(page: Page, text: string): Promise<void> {
  await page.getByTestId('todo-input').fill(text);
  await page.getByTestId('todo-add').click();
  await todo(page, text).waitFor();
}

async function editTodo(page: Page, from: string, to: string): Promise<void> {
  await todo(page, from).getByTestId('todo-edit').click();
  await page.getByTestId('todo-editor').fill(to);
  await page.getByTestId('todo-editor').press('Enter');
  await todo(page, to).waitFor();
}

const todoTexts = (page: Page) => page.getByTestId('todo-text').allTextContents();

/** A device whose browser profile (IndexedDB, localStorage) lives in `dir` and survives closing it. */
async function launchProfile(dir: string): Promise<Page> {
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1200, height: 820 },
  });
  return newDevicePage(context);
}

/** Closes the device's tab the way a user does (page lifecycle events run), then its browser. */
async function closeDevice(page: Page): Promise<void> {
  const closed = page.waitForEvent('close');
  await page.close({ runBeforeUnload: true });
  await closed;
  await page.context().close();
}

const screenshot = (page: Page, name: string) =>
  page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

// Generous per-test limit: only hang protection, the tests take seconds (page loads, Argon2id, WebRTC setup).
describe.skipIf(!(await hasChromium()))('web app end to end', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    const webRoot = await ensureWebAppBuilt();
    workDir = await mkdtemp(join(tmpdir(), 'ferry-web-e2e-'));
    await mkdir(artifacts, { recursive: true });
    server = await startServer(join(workDir, 'data'), webRoot);
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
  }, 180_000);

  // A failed test leaves a picture of every open page, to see what the user would have seen.
  afterEach(async (context) => {
    if (context.task.result?.state !== 'fail') return;
    const pages = [...openContexts].flatMap((owned) => owned.pages());
    await Promise.all(
      pages.map((page, index) =>
        screenshot(page, `failed-${context.task.name.replace(/\W+/g, '-')}-${index}`),
      ),
    );
  });

  afterAll(async () => {
    await Promise.all([...openContexts].map((context) => context.close().catch(() => undefined)));
    await browser?.close();
    await server?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  describe('two browsers with the same passphrase', () => {
    const passphrase = generatePassphrase();
    let a: Page;
    let b: Page;

    it('sync a todo both ways, edits and ticks included', async () => {
      a = await newDevicePage();
      b = await newDevicePage();
      await signIn(a, passphrase);
      await signIn(b, passphrase);
      await Promise.all([waitForPeers(a, 1), waitForPeers(b, 1)]);

      await addTodo(a, 'Buy oat milk');
      await todo(b, 'Buy oat milk').waitFor();
      await addTodo(b, 'Call the plumber');
      await todo(a, 'Call the plumber').waitFor();

      await editTodo(b, 'Buy oat milk', 'Buy oat milk and bread');
      await todo(a, 'Buy oat milk and bread').waitFor();
      await todo(a, 'Call the plumber').getByTestId('todo-done').check();
      await todo(b, 'Call the plumber').and(b.locator('li.done')).waitFor();

      expect(await todoTexts(a)).toEqual(['Buy oat milk and bread', 'Call the plumber']);
      expect(await todoTexts(b)).toEqual(await todoTexts(a));
      // All of it under a CSP without 'unsafe-eval', which refused nothing: the app told Ferry
      // (useInterpretedChecks), so nothing tried to generate code.
      expect(await a.evaluate(() => (globalThis as { cspViolations?: string[] }).cspViolations)).toEqual([]);
      await screenshot(a, 'sync-device-a');
      await screenshot(b, 'sync-device-b');
    });

    it('a device with another passphrase sees none of it', async () => {
      const stranger = await newDevicePage();
      await signIn(stranger, generatePassphrase());
      // A change made while the stranger is online still reaches only the account's own devices.
      await addTodo(a, 'Private note');
      await todo(b, 'Private note').waitFor();

      expect(await todoTexts(stranger)).toEqual([]);
      expect(await stranger.getByTestId('status-peer-count').textContent()).toBe('0');
      expect(await stranger.getByTestId('status-device').count()).toBe(0);
      expect(await a.getByTestId('status-peer-count').textContent()).toBe('1');
      expect(await stranger.getByTestId('identity').getAttribute('title')).not.toBe(
        await a.getByTestId('identity').getAttribute('title'),
      );
      await screenshot(stranger, 'other-passphrase');
      await stranger.context().close();
    });
  });

  describe('a device that was away', () => {
    it('catches up through the diff server when no other device is online', async () => {
      const passphrase = generatePassphrase();
      const profileA = join(workDir, 'profile-a');
      const profileB = join(workDir, 'profile-b');
      let a = await launchProfile(profileA);
      const b = await launchProfile(profileB);
      await signIn(a, passphrase);
      await signIn(b, passphrase);
      await Promise.all([waitForPeers(a, 1), waitForPeers(b, 1)]);
      await addTodo(a, 'Water the plants');
      await todo(b, 'Water the plants').waitFor();

      // A goes away; B edits while A is gone, then goes away too, so only the diff server holds B's edits.
      await closeDevice(a);
      await waitForPeers(b, 0);
      await b.locator('[data-testid=status-device][data-state=away]').waitFor();
      await editTodo(b, 'Water the plants', 'Water the plants (and the cactus)');
      await addTodo(b, 'Pay the rent');
      await b.getByTestId('status-pending-relay').filter({ hasText: /^0$/ }).waitFor();
      await screenshot(b, 'away-editor');
      await closeDevice(b);

      a = await launchProfile(profileA);
      await signIn(a, passphrase);
      await todo(a, 'Pay the rent').waitFor();
      expect(await todoTexts(a)).toEqual(['Water the plants (and the cactus)', 'Pay the rent']);
      expect(await a.getByTestId('status-peer-count').textContent()).toBe('0');
      await screenshot(a, 'away-returned');
    });
  });

  describe('two devices that edited the same todo apart', () => {
    it('settle on one version and show the conflict with both versions', async () => {
      const passphrase = generatePassphrase();
      const profileA = join(workDir, 'conflict-a');
      const profileB = join(workDir, 'conflict-b');
      let a = await launchProfile(profileA);
      let b = await launchProfile(profileB);
      await signIn(a, passphrase);
      await signIn(b, passphrase);
      await Promise.all([waitForPeers(a, 1), waitForPeers(b, 1)]);
      await addTodo(a, 'Book flights');
      await todo(b, 'Book flights').waitFor();

      await closeDevice(a);
      await waitForPeers(b, 0);
      await editTodo(b, 'Book flights', 'Book flights to Lisbon');
      await closeDevice(b);

      // A comes back while its mailbox cannot be read (a flaky network), so it edits without B's change.
      a = await launchProfile(profileA);
      await a.context().route('**/pullDiff', (route) => route.abort());
      await signIn(a, passphrase);
      await editTodo(a, 'Book flights', 'Book flights to Porto');

      b = await launchProfile(profileB);
      await signIn(b, passphrase);
      await Promise.all([waitForPeers(a, 1), waitForPeers(b, 1)]);
      // The device that meets the other's concurrent edit settles it and shows the conflict. Which one
      // does depends on timing: if B reads A's edit from its mailbox before the two connect, A then
      // receives only B's settled version, which already includes its own edit (nothing to settle).
      await Promise.any([a, b].map((page) => page.getByTestId('conflict').waitFor()));
      let shown = 0;
      for (const page of [a, b]) {
        const conflict = page.getByTestId('conflict');
        if ((await conflict.count()) === 0) continue;
        shown++;
        const versions = [
          await conflict.getByTestId('conflict-local').textContent(),
          await conflict.getByTestId('conflict-remote').textContent(),
        ].join('\n');
        expect(versions).toContain('Book flights to Lisbon');
        expect(versions).toContain('Book flights to Porto');
      }
      expect(shown).toBeGreaterThan(0);
      // Both devices hold the same winner, and it is one of the two edits.
      await todo(a, 'Book flights to Lisbon').or(todo(a, 'Book flights to Porto')).waitFor();
      const winner = (await todoTexts(a))[0];
      await todo(b, winner!).waitFor();
      expect(['Book flights to Lisbon', 'Book flights to Porto']).toContain(winner);
      expect(await todoTexts(b)).toEqual(await todoTexts(a));
      await screenshot(b, 'conflict');
    });
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
      backend = tinyLlamaBackend({ id: 'tiny-llama', modelPath });
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
