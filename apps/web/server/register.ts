import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import { FerryError } from '@ferry/core';
import type { FastifyInstance } from 'fastify';

/**
 * Serves the built web app (`vite build` output) from a Ferry server's own Fastify instance, so the
 * page, the signaling WebSocket (/signal) and the diff server share one origin and the page needs no
 * configuration: it connects back to wherever it was loaded from.
 */

/** Where `npm run build -w @ferry/web` writes the app. Source and compiled file both sit one level below the package. */
export const WEB_APP_DIST = fileURLToPath(new URL('../dist/', import.meta.url));

export interface WebAppOptions {
  /** Directory holding index.html and assets/; default the package's own build output. */
  root?: string;
}

/** True once the app has been built into `root`. */
export const isWebAppBuilt = (root: string = WEB_APP_DIST): boolean => existsSync(join(root, 'index.html'));

/**
 * Registers the static web app on `app` (call before `listen`). Only GET/HEAD of files under `root`
 * are answered; every other route (signaling, diff server) keeps working, since Fastify matches
 * their exact paths before this plugin's wildcard.
 */
export async function registerWebApp(app: FastifyInstance, options: WebAppOptions = {}): Promise<void> {
  const root = options.root ?? WEB_APP_DIST;
  if (!isWebAppBuilt(root)) {
    throw new FerryError(
      'SERVER',
      `the web app is not built (no ${join(root, 'index.html')}): run \`npm run build -w @ferry/web\` first`,
    );
  }
  const assets = join(root, 'assets');
  await app.register(fastifyStatic, {
    root,
    index: ['index.html'],
    // Vite fingerprints everything under assets/, so those files can be cached for good; index.html
    // must be revalidated or a new deployment would keep loading old asset names.
    setHeaders(reply, path) {
      reply.header(
        'cache-control',
        path.startsWith(assets) ? 'public, max-age=31536000, immutable' : 'no-cache',
      );
    },
  });
}
