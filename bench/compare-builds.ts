import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { NODE_WEBRTC_NAMES, type NodeWebRTCName } from '../packages/core/src/transport/node-webrtc.js';
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
 * own device program (bench/devices/rxdb-device.ts of that revision).
 *
 * `npm run bench:compare -- --node-flags "<flags>" [pairs]`: the working tree's sync with those
 * Node/V8 flags on both device processes against the same without them (what an app's choice of
 * flags, such as `--min-semi-space-size=16`, does to a sync).
 *
 * `npm run bench:compare -- --webrtc node-datachannel [pairs]`: the working tree's sync with both
 * devices on that Node WebRTC implementation against the same on the default, @roamhq/wrtc.
 *
 * Prints both medians and every run, of the sync time and of the peak RSS of the larger process,
 * and writes bench/results/compare.json.
 */

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const COUNT = 10_000;

function usage(message: string): never {
  console.error(
    `${message}\nusage: npm run bench:compare -- <git revision> [pairs]\n` +
      '       npm run bench:compare -- --node-flags "<flags>" [pairs]\n' +
      `       npm run bench:compare -- --webrtc <${NODE_WEBRTC_NAMES.join('|')}> [pairs]`,
  );
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

/** One side of a comparison: a device program, run with these Node flags (FERRY_BENCH_NODE_FLAGS). */
interface Side {
  label: string;
  script: string;
  nodeFlags: string;
  webrtc?: NodeWebRTCName;
}

function pairCount(value: string | undefined): number {
  const pairs = value === undefined ? 10 : Number(value);
  if (!Number.isInteger(pairs) || pairs < 1) usage(`pairs must be a positive integer, not ${value}`);
  return pairs;
}

function commitOf(revision: string): string {
  try {
    return execFileSync('git', ['rev-parse', '--verify', `${revision}^{commit}`], {
      cwd: ROOT,
      encoding: 'utf8',
    }).trim();
  } catch {
    usage(`${revision} is not a commit of this repository`);
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flagsMode = args[0] === '--node-flags';
  const webrtcMode = args[0] === '--webrtc';
  if (flagsMode && !args[1]?.trim()) usage('no flags given');
  if (webrtcMode && !NODE_WEBRTC_NAMES.includes(args[1] as NodeWebRTCName))
    usage(`unknown WebRTC implementation ${args[1]}`);
  if (!flagsMode && !webrtcMode && !args[0]) usage('no revision given');
  const optionMode = flagsMode || webrtcMode;
  const pairs = pairCount(optionMode ? args[2] : args[1]);
  const sha = optionMode ? undefined : commitOf(args[0]!);
  const baseFlags = process.env.FERRY_BENCH_NODE_FLAGS ?? '';
  const signaling = await createSignalingServer({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
  });
  const tree = await buildDevice();
  const baseline = sha ? await buildDevice(baselineCheckout(sha)) : undefined;
  const sides: [Side, Side] = flagsMode
    ? [
        { label: `with ${args[1]}`, script: tree.script, nodeFlags: `${baseFlags} ${args[1]}` },
        { label: 'without', script: tree.script, nodeFlags: baseFlags },
      ]
    : webrtcMode
      ? [
          {
            label: `on ${args[1]}`,
            script: tree.script,
            nodeFlags: baseFlags,
            webrtc: args[1] as NodeWebRTCName,
          },
          { label: 'on @roamhq/wrtc', script: tree.script, nodeFlags: baseFlags },
        ]
      : [
          { label: 'working tree', script: tree.script, nodeFlags: baseFlags },
          { label: `${args[0]} (${sha!.slice(0, 12)})`, script: baseline!.script, nodeFlags: baseFlags },
        ];
  const times: [number[], number[]] = [[], []];
  const peaksMb: [number[], number[]] = [[], []];
  try {
    for (let i = 0; i < pairs; i++) {
      // Each side goes first in every other pair.
      for (const side of i % 2 === 0 ? [0, 1] : [1, 0]) {
        const { script, nodeFlags, webrtc } = sides[side]!;
        process.env.FERRY_BENCH_NODE_FLAGS = nodeFlags;
        const servers: Servers = { ferryUrl: signaling.url, pluginUrl: '', deviceScript: script };
        const result = await runScenario(servers, {
          system: 'ferry',
          batchSize: 500,
          count: COUNT,
          ...(webrtc ? { webrtc } : {}),
        });
        times[side]!.push(result.syncMs);
        peaksMb[side]!.push(result.peakBytes / 1e6);
      }
      const last = (side: 0 | 1) =>
        `${sides[side].label} ${times[side].at(-1)!.toFixed(0)} ms (${peaksMb[side].at(-1)!.toFixed(0)} MB)`;
      console.log(`pair ${i + 1}: ${last(0)}, ${last(1)}`);
    }
  } finally {
    process.env.FERRY_BENCH_NODE_FLAGS = baseFlags;
    tree.dispose();
    baseline?.dispose();
    await signaling.close();
  }
  const runs = (values: number[]) =>
    [...values]
      .sort((a, b) => a - b)
      .map((value) => value.toFixed(0))
      .join(' ');
  const width = Math.max(24, ...sides.map((side) => side.label.length));
  console.log(`\n10,000-document sync, ${pairs} alternating pairs of fresh processes`);
  for (const [i, side] of sides.entries()) {
    const ms = median(times[i]!);
    console.log(
      `${side.label.padEnd(width)} median ${ms.toFixed(0)} ms (${(COUNT / (ms / 1000)).toFixed(0)} docs/s), runs ${runs(times[i]!)}`,
    );
  }
  console.log(`ratio of medians: ${(median(times[0]) / median(times[1])).toFixed(3)}`);
  console.log('\npeak RSS of the larger device process');
  for (const [i, side] of sides.entries()) {
    console.log(
      `${side.label.padEnd(width)} median ${median(peaksMb[i]!).toFixed(1)} MB, runs ${runs(peaksMb[i]!)}`,
    );
  }
  const file = join(ROOT, 'bench/results/compare.json');
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const compared = flagsMode
    ? { nodeFlags: args[1] }
    : webrtcMode
      ? { webrtc: args[1] }
      : { revision: args[0], sha };
  writeFileSync(
    file,
    `${JSON.stringify({ ...compared, count: COUNT, pairs, sides: sides.map((side) => side.label), syncMs: times, peakMb: peaksMb, machine: machineInfo() }, null, 2)}\n`,
  );
  console.log(`-> ${file}`);
  process.exit(0);
}

await main();
