import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';

const src = (pkg: string, file = 'index.ts') =>
  fileURLToPath(new URL(`./packages/${pkg}/src/${file}`, import.meta.url));

// Tests run against the TypeScript sources, so no build step is needed before `npm test`.
export default defineConfig({
  resolve: {
    alias: [
      { find: /^@ferry\/core\/node$/, replacement: src('core', 'node.ts') },
      { find: /^@ferry\/core$/, replacement: src('core') },
      { find: /^@ferry\/server$/, replacement: src('server') },
      { find: /^@ferry\/rxdb$/, replacement: src('rxdb') },
      { find: /^@ferry\/ai\/node$/, replacement: src('ai', 'node.ts') },
      { find: /^@ferry\/ai$/, replacement: src('ai') },
      { find: /^@ferry\/cli$/, replacement: src('cli') },
      {
        find: /^@ferry\/web\/server$/,
        replacement: fileURLToPath(new URL('./apps/web/server/register.ts', import.meta.url)),
      },
    ],
  },
  test: {
    // bench/.build holds scratch builds and `npm run bench:compare`'s worktrees of other revisions.
    exclude: [...configDefaults.exclude, 'bench/.build/**'],
    projects: [
      {
        extends: true,
        test: {
          name: 'ferry',
          include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'bench/**/*.test.ts'],
        },
      },
      {
        // The RxDB sync suites again on a second storage (support.ts: FERRY_TEST_STORAGE) and under
        // RxDB's dev-mode, as apps run while they are developed; the browser test runs Dexie.
        extends: true,
        test: {
          name: 'rxdb on localstorage, dev-mode',
          include: ['packages/rxdb/test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'packages/rxdb/test/browser.test.ts'],
          env: { FERRY_TEST_STORAGE: 'localstorage', FERRY_TEST_DEV_MODE: '1' },
        },
      },
      {
        // And on RxDB's remote storage (support.ts serves one): a storage in another process, whose
        // change feed is its own (getChangedDocumentsSince), reached asynchronously over a socket.
        extends: true,
        test: {
          name: 'rxdb on remote storage',
          include: ['packages/rxdb/test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'packages/rxdb/test/browser.test.ts'],
          env: { FERRY_TEST_STORAGE: 'remote' },
        },
      },
    ],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
