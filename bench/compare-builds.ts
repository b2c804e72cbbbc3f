import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { createSignalingServer } from '../packages/server/src/signaling/index.js';
import { machineInfo } from './lib/machine.js';
import { median } from './lib/measure.js';
import { buildDevice, runScenario, type Servers } from './suites/rxdb.js';

/**
 * `npm run bench:compare -- <git revision> [pairs]`: Ferry's 10,000-document sync built from the
 * working tree against the same sync built from <git revision>, in alternating fresh process pairs
 * (default 10 of each). The machines here are shared and their load drifts between runs of
 * `npm run bench`, so a change worth a few percent shows only in one run that alternates the two.
 * The revision is checked out once into a git worktree under bench/.build, given the repository's
 * node_modules (with its own packages linked to the worktree's) and built there; each side runs its
 * own device program (bench/devices/rxdb-device.ts of that revision). Prints both medians and every
 * run, of the sync time and of the peak RSS of the larger process, and writes
 * bench/results/compare.json.
 */

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const COUNT = 10_000;

function usage(message: string): never {
  console.error(`${message}\nusage: npm run bench:compare -- <git revision> [pairs]`);
  process.exit(2);
}

/** `path` becomes a link to `target` unless something is there already (a run that stopped midway is resumed). */
function link(target: string, path: string): void {
  if (!existsSync(path)) symlinkSync(target, path);
}

/** A worktree of `sha` that resolves every dependency from this checkout, and `@ferry/*` from itself. */
function baselineCheckout(sha: string): string {
  const dir = join(ROOT, 'bench/.build', `baseline-${sha.slice(0, 12)}`);
  if (!existsSync(dir)) {
    execFileSync('git', ['worktree', 'add', '--detach', dir, sha], { cwd: ROOT, stdio: 'inherit' });
  }
  const modules = join(ROOT, 'node_modules');
  mkdirSync(join(dir, 'node_modules/@ferry'), { recursive: true });
  for (const entry of readdirSync(modules)) {
    if (entry !== '@ferry') link(join(modules, entry), join(dir, 'node_modules', entry));
  }
  // npm links each workspace package (../../packages/core): the same path inside the worktree.
  for (const name of readdirSync(join(modules, '@ferry'))) {
    const target = resolve(join(modules, '@ferry'), readlinkSync(join(modules, '@ferry', name)));
    link(join(dir, relative(ROOT, target)), join(dir, 'node_modules/@ferry', name));
  }
  // Packages with dependencies of their own (npm installs those beside them).
  for (const parent of ['packages', 'apps']) {
    for (const name of readdirSync(join(ROOT, parent))) {
      const own = join(ROOT, parent, name, 'node_modules');
      if (existsSync(own) && existsSync(join(dir, parent, name))) {
        link(own, join(dir, parent, name, 'node_modules'));
      }
    }
  }
  return dir;
}

async function main(): Promise<void> {
  const [revision, pairsArg] = process.argv.slice(2);
  if (!revision) usage('no revision given');
  const pairs = pairsArg === undefined ? 10 : Number(pairsArg);
  if (!Number.isInteger(pairs) || pairs < 1) usage(`pairs must be a positive integer, not ${pairsArg}`);
  let sha: string;
  try {
    sha = execFileSync('git', ['rev-parse', '--verify', `${revision}^{commit}`], {
      cwd: ROOT,
      encoding: 'utf8',
    }).trim();
  } catch {
    usage(`${revision} is not a commit of this repository`);
  }

  const signaling = await createSignalingServer({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
  });
  const tree = await buildDevice();
  const baseline = await buildDevice(baselineCheckout(sha));
  const servers = (deviceScript: string): Servers => ({
    ferryUrl: signaling.url,
    pluginUrl: '',
    deviceScript,
  });
  const times = { tree: [] as number[], baseline: [] as number[] };
  const peaksMb = { tree: [] as number[], baseline: [] as number[] };
  try {
    for (let i = 0; i < pairs; i++) {
      // Each side goes first in every other pair.
      const order = i % 2 === 0 ? (['tree', 'baseline'] as const) : (['baseline', 'tree'] as const);
      for (const side of order) {
        const script = side === 'tree' ? tree.script : baseline.script;
        const result = await runScenario(servers(script), { system: 'ferry', batchSize: 500, count: COUNT });
        times[side].push(result.syncMs);
        peaksMb[side].push(result.peakBytes / 1e6);
      }
      console.log(
        `pair ${i + 1}: working tree ${times.tree.at(-1)!.toFixed(0)} ms (${peaksMb.tree.at(-1)!.toFixed(0)} MB), ` +
          `${revision} ${times.baseline.at(-1)!.toFixed(0)} ms (${peaksMb.baseline.at(-1)!.toFixed(0)} MB)`,
      );
    }
  } finally {
    tree.dispose();
    baseline.dispose();
    await signaling.close();
  }
  const runs = (values: number[]) =>
    [...values]
      .sort((a, b) => a - b)
      .map((value) => value.toFixed(0))
      .join(' ');
  const sides = [
    ['working tree', 'tree'],
    [`${revision} (${sha.slice(0, 12)})`, 'baseline'],
  ] as const;
  console.log(`\n10,000-document sync, ${pairs} alternating pairs of fresh processes`);
  for (const [label, side] of sides) {
    const ms = median(times[side]);
    console.log(
      `${label.padEnd(24)} median ${ms.toFixed(0)} ms (${(COUNT / (ms / 1000)).toFixed(0)} docs/s), runs ${runs(times[side])}`,
    );
  }
  console.log(`ratio of medians: ${(median(times.tree) / median(times.baseline)).toFixed(3)}`);
  console.log('\npeak RSS of the larger device process');
  for (const [label, side] of sides) {
    console.log(
      `${label.padEnd(24)} median ${median(peaksMb[side]).toFixed(1)} MB, runs ${runs(peaksMb[side])}`,
    );
  }
  const file = join(ROOT, 'bench/results/compare.json');
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(
    file,
    `${JSON.stringify({ revision, sha, count: COUNT, pairs, syncMs: times, peakMb: peaksMb, machine: machineInfo() }, null, 2)}\n`,
  );
  console.log(`-> ${file}`);
  process.exit(0);
}

await main();
