import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/**
 * Builds apps/web with Vite unless dist/ already holds a build of exactly the current sources, so
 * `npm test` works on a fresh clone and repeated runs skip the ~15 s build.
 */
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const appRoot = join(repoRoot, 'apps/web');
const distDir = join(appRoot, 'dist');
const stampFile = join(distDir, '.source-hash');

const INPUTS = [
  'apps/web/src',
  'apps/web/index.html',
  'apps/web/vite.config.ts',
  'packages/core/src',
  'packages/rxdb/src',
  'packages/ai/src',
  'package-lock.json',
];

function* files(path: string): Generator<string> {
  if (!existsSync(path)) return;
  if (statSync(path).isFile()) {
    yield path;
    return;
  }
  for (const entry of readdirSync(path).sort()) yield* files(join(path, entry));
}

function sourceHash(): string {
  const hash = createHash('sha256');
  for (const input of INPUTS) {
    for (const file of files(join(repoRoot, input))) {
      hash.update(relative(repoRoot, file)).update('\0').update(readFileSync(file)).update('\0');
    }
  }
  return hash.digest('hex');
}

/** Returns the dist directory, building it first if the sources changed since the last build. */
export async function ensureWebAppBuilt(): Promise<string> {
  const hash = sourceHash();
  if (existsSync(stampFile) && readFileSync(stampFile, 'utf8') === hash) return distDir;
  // A child process keeps this Vite build apart from the Vite instance vitest itself runs on.
  await promisify(execFile)(process.execPath, [join(repoRoot, 'node_modules/vite/bin/vite.js'), 'build'], {
    cwd: appRoot,
    maxBuffer: 16 * 1024 * 1024,
  });
  writeFileSync(stampFile, hash);
  return distDir;
}
