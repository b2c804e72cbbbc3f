import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { type BuildOptions, build, type Plugin } from 'esbuild';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { CHROMIUM_PATH } from './services.js';

/**
 * Shared browser harness: bundles a TypeScript entry for the browser, serves it with a blank page from
 * a throwaway loopback HTTP server, and opens that page in headless Chromium. Tests then drive the
 * page with `page.evaluate(...)`, calling whatever the entry put on `globalThis`.
 *
 *   const h = await openBrowser({ entry: new URL('./entry.ts', import.meta.url) });
 *   try { await h.page.evaluate(() => globalThis.myApi.doThing()) } finally { await h.close() }
 *
 * Guard the describe with `describe.skipIf(!(await hasChromium()))` from testing/services.ts.
 */

/** Flags checked on this machine (NOTES.md). The last one keeps real host ICE candidates, not mDNS names. */
export const CHROMIUM_ARGS = [
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

export type RouteHandler = (request: IncomingMessage, response: ServerResponse) => void;
/**
 * A static answer (content type defaults from the body: text/html for strings, octet-stream for
 * bytes; `headers` are added) or a handler.
 */
export type Route =
  | { body: string | Uint8Array; type?: string; headers?: Record<string, string> }
  | RouteHandler;

export interface BrowserHarnessOptions {
  /** TypeScript/JavaScript entry to bundle (path or file URL); it runs as a module when the page loads. */
  entry?: string | URL;
  /** Extra routes by exact path (e.g. '/worker.js'); '/' and '/bundle.js' are the harness's own. */
  routes?: Record<string, Route>;
  /** JSON-serialisable values set on `globalThis` before any script of the page runs (every page). */
  globals?: Record<string, unknown>;
  /** Extra esbuild options, merged over the defaults (e.g. `define`, `inject`, more `alias`). */
  esbuild?: BuildOptions;
  /** Forward the page's console and errors to this process's console (also on with FERRY_BROWSER_DEBUG=1). */
  debug?: boolean;
  /**
   * Serve the page under a strict Content-Security-Policy, as many production apps are: scripts only
   * from the page's origin, no `eval` or `new Function` (no 'unsafe-eval'). Violations are collected
   * in `globalThis.cspViolations` (directive and source of each), from before the bundle loads.
   */
  strictCsp?: boolean;
}

export interface BrowserHarness {
  /** The first page, already loaded, with the entry's top-level code finished. */
  readonly page: Page;
  readonly browser: Browser;
  readonly context: BrowserContext;
  /** Base URL of the loopback server, e.g. http://127.0.0.1:41234/ */
  readonly url: string;
  /** Console lines and uncaught errors of every page, for assertions and failure messages. */
  readonly logs: string[];
  /** Opens one more page on the same bundle (e.g. a second device for page-to-page tests). */
  newPage(): Promise<Page>;
  close(): Promise<void>;
}

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const READY_FLAG = '__ferryHarness';

/** `@ferry/<pkg>` resolves to that workspace package's TypeScript source, like the vitest aliases. */
function workspaceAliases(): Record<string, string> {
  const aliases: Record<string, string> = {};
  for (const pkg of readdirSync(`${repoRoot}packages`)) {
    aliases[`@ferry/${pkg}`] = `${repoRoot}packages/${pkg}/src/index.ts`;
  }
  return aliases;
}

function workspacePlugin(): Plugin {
  const aliases = workspaceAliases();
  return {
    name: 'ferry-workspace',
    setup(pluginBuild) {
      pluginBuild.onResolve({ filter: /^@ferry\/[^/]+$/ }, (args) => {
        const path = aliases[args.path];
        return path ? { path } : undefined;
      });
    },
  };
}

/** Bundles one entry for the browser (ESM, in memory) and returns the JavaScript. */
async function bundleForBrowser(entry: string | URL, extra: BuildOptions = {}): Promise<string> {
  const entryPath = entry instanceof URL ? fileURLToPath(entry) : entry;
  const result = await build({
    entryPoints: [entryPath],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    write: false,
    sourcemap: 'inline',
    logLevel: 'silent',
    absWorkingDir: repoRoot,
    ...extra,
    define: { global: 'globalThis', ...extra.define },
    plugins: [workspacePlugin(), ...(extra.plugins ?? [])],
  });
  const output = result.outputFiles?.[0];
  if (!output) throw new Error(`esbuild produced no output for ${entryPath}`);
  return output.text;
}

// The page imports the bundle itself, so a failing import (or a rejected top-level await) is reported
// to the harness instead of leaving it waiting. Under a strict CSP this loader carries the nonce.
const PAGE_HTML = (withBundle: boolean, nonce?: string) => `<!doctype html>
<html><head><meta charset="utf-8"><title>ferry test</title></head><body>
<script type="module"${nonce ? ` nonce="${nonce}"` : ''}>
${
  nonce
    ? `globalThis.cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  globalThis.cspViolations.push(event.violatedDirective + ' ' + (event.blockedURI || '') + ' ' + (event.sourceFile || '') + ':' + event.lineNumber);
});`
    : ''
}
${
  withBundle
    ? `import('/bundle.js').then(
  () => { globalThis.${READY_FLAG} = { ready: true }; },
  (error) => { globalThis.${READY_FLAG} = { error: String((error && error.stack) || error) }; });`
    : `globalThis.${READY_FLAG} = { ready: true };`
}
</script></body></html>`;

function startServer(routes: Record<string, Route>): Promise<Server> {
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname;
    const route = routes[path];
    if (!route) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end(`no route ${path}`);
    } else if (typeof route === 'function') {
      route(request, response);
    } else {
      const type =
        route.type ??
        (typeof route.body === 'string' ? 'text/html; charset=utf-8' : 'application/octet-stream');
      response
        .writeHead(200, { 'content-type': type, 'cache-control': 'no-store', ...route.headers })
        .end(route.body);
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const closeServer = (server: Server): Promise<void> =>
  new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });

export async function openBrowser(options: BrowserHarnessOptions = {}): Promise<BrowserHarness> {
  const bundle = options.entry ? await bundleForBrowser(options.entry, options.esbuild) : undefined;
  const nonce = options.strictCsp ? randomBytes(16).toString('base64') : undefined;
  const routes: Record<string, Route> = {
    ...options.routes,
    '/': {
      body: PAGE_HTML(bundle !== undefined, nonce),
      ...(nonce && {
        headers: {
          'content-security-policy': `script-src 'self' 'nonce-${nonce}'; object-src 'none'; base-uri 'none'`,
        },
      }),
    },
    ...(bundle === undefined
      ? {}
      : { '/bundle.js': { body: bundle, type: 'text/javascript; charset=utf-8' } }),
  };
  const server = await startServer(routes);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const logs: string[] = [];
  const debug = options.debug ?? process.env.FERRY_BROWSER_DEBUG === '1';

  let browser: Browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
  } catch (error) {
    await closeServer(server);
    throw error;
  }
  const context = await browser.newContext();
  if (options.globals) {
    await context.addInitScript((globals) => Object.assign(globalThis, globals), options.globals);
  }

  const close = async (): Promise<void> => {
    await browser.close().catch(() => undefined);
    await closeServer(server);
  };

  const newPage = async (): Promise<Page> => {
    const page = await context.newPage();
    page.on('console', (message) => {
      const line = `[page ${message.type()}] ${message.text()}`;
      logs.push(line);
      if (debug) console.log(line);
    });
    page.on('pageerror', (error) => {
      const line = `[page error] ${error.stack ?? error.message}`;
      logs.push(line);
      if (debug) console.error(line);
    });
    await page.goto(url);
    // A function, not a string: a string is evaluated with `eval`, which a strict CSP refuses.
    const handle = await page.waitForFunction(
      (flag) => (globalThis as Record<string, unknown>)[flag],
      READY_FLAG,
      {
        timeout: 30_000,
      },
    );
    const state = (await handle.jsonValue()) as { ready?: true; error?: string };
    if (state.error) throw new Error(`browser bundle failed to load: ${state.error}`);
    return page;
  };

  try {
    const page = await newPage();
    return { page, browser, context, url, logs, newPage, close };
  } catch (error) {
    await close();
    throw error;
  }
}
