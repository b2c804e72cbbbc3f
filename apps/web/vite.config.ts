import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import { nodePolyfills } from 'vite-plugin-node-polyfills';
import { DEFAULT_SIGNALING_PATH } from '../../packages/core/src/protocol/signaling.js';
import { RELAY_PATHS } from '../../packages/core/src/relay/wire.js';

/** `npm run dev` proxies signaling and the diff server to this Ferry server, so the page keeps one origin. */
const ferryServer = process.env.FERRY_SERVER_URL ?? 'http://127.0.0.1:8787';

const packageSource = (pkg: string) =>
  fileURLToPath(new URL(`../../packages/${pkg}/src/index.ts`, import.meta.url));

export default defineConfig({
  // Relative asset URLs, so the built app works under any path prefix a reverse proxy gives it.
  base: './',
  resolve: {
    // Like the root vitest config: the workspace libraries are bundled from their TypeScript sources,
    // so the app needs no separate library build.
    alias: [
      { find: /^@ferry\/core$/, replacement: packageSource('core') },
      { find: /^@ferry\/rxdb$/, replacement: packageSource('rxdb') },
      { find: /^@ferry\/ai$/, replacement: packageSource('ai') },
    ],
  },
  plugins: [
    // simple-peer (and its readable-stream) is CommonJS written for Node: it requires `events` and
    // `buffer` and uses the `process` and `global` globals. This plugin maps exactly those to their
    // browser packages, in the dev server's pre-bundling and in the production build alike.
    nodePolyfills({ include: ['events', 'buffer'], globals: { Buffer: true, global: true, process: true } }),
  ],
  server: {
    proxy: {
      [DEFAULT_SIGNALING_PATH]: { target: ferryServer, ws: true },
      ...Object.fromEntries(Object.values(RELAY_PATHS).map((path) => [path, ferryServer])),
    },
  },
  build: {
    target: 'es2022',
    sourcemap: true,
    // One app with RxDB, noble and simple-peer inside: a few hundred KiB is expected.
    chunkSizeWarningLimit: 1500,
  },
});
