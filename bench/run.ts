import { fork } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineInfo } from './lib/machine.js';
import type { BenchReport, BenchResultFile, BenchSuite } from './lib/types.js';

/**
 * `npm run bench` runs every bench/suites/*.ts; `npm run bench -- crypto handshake` runs those named.
 * Each suite runs in its own child process, so one suite's heap, JIT state or crash cannot skew or stop
 * another. Prints one table and writes bench/results/<name>.json per suite (report + machine info).
 */

// The directories can be moved (the harness's own test points them at fixtures).
const dirFromEnv = (name: string, fallback: string): string =>
  process.env[name] ? `${resolve(process.env[name])}/` : fileURLToPath(new URL(fallback, import.meta.url));
const suitesDir = dirFromEnv('FERRY_BENCH_SUITES_DIR', './suites/');
const resultsDir = dirFromEnv('FERRY_BENCH_RESULTS_DIR', './results/');
const CHILD_FLAG = '--suite-file';
/** A suite that has not reported by then is killed and counted as failed, so one hang cannot stall the run. */
const SUITE_TIMEOUT_MS = Number(process.env.FERRY_BENCH_TIMEOUT_MS ?? 15 * 60_000);

type ChildMessage = { report: BenchReport } | { error: string };

function isBenchReport(value: unknown): value is BenchReport {
  const report = value as BenchReport;
  return (
    typeof report?.name === 'string' &&
    typeof report.description === 'string' &&
    typeof report.baseline === 'string' &&
    Array.isArray(report.metrics) &&
    report.metrics.every(
      (m) => typeof m?.name === 'string' && typeof m.value === 'number' && typeof m.unit === 'string',
    )
  );
}

/** Child side: import one suite, run it, send the report to the parent. */
async function runChild(file: string): Promise<void> {
  const send = (message: ChildMessage) =>
    new Promise<void>((resolve) => {
      process.send!(message, () => resolve());
    });
  try {
    const suite = (await import(file)).default as BenchSuite | undefined;
    if (typeof suite?.run !== 'function') throw new Error(`${file} has no default export { name, run }`);
    const report = await suite.run();
    if (!isBenchReport(report)) throw new Error(`${file} returned something that is not a BenchReport`);
    await send({ report });
  } catch (error) {
    await send({ error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  }
  process.exit(0); // suites may leave handles (servers, timers) open: the report is all we need
}

function runInChild(file: string): Promise<BenchReport> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), [CHILD_FLAG, file], {
      execArgv: [...process.execArgv, '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`no report after ${SUITE_TIMEOUT_MS / 1000} s (FERRY_BENCH_TIMEOUT_MS): killed`));
    }, SUITE_TIMEOUT_MS);
    child.on('message', (message: ChildMessage) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if ('report' in message) resolve(message.report);
      else reject(new Error(message.error));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (!settled)
        reject(new Error(`suite process exited without a report (code ${code}, signal ${signal})`));
      settled = true;
    });
  });
}

const formatNumber = (value: number | undefined): string =>
  value === undefined
    ? ''
    : Math.abs(value) >= 1000
      ? Math.round(value).toLocaleString('en-US')
      : String(value);

function printTable(reports: BenchReport[]): void {
  const header = ['suite', 'metric', 'value', 'unit', 'baseline', 'ratio', 'target'];
  const rows = reports.flatMap((report) =>
    report.metrics.map((m) => [
      report.name,
      m.name,
      formatNumber(m.value),
      m.unit,
      formatNumber(m.baseline),
      m.ratio === undefined ? '' : `${m.ratio}x`,
      m.target ?? '',
    ]),
  );
  const numeric = new Set([2, 4, 5]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (numeric.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
}

async function main(): Promise<void> {
  const childIndex = process.argv.indexOf(CHILD_FLAG);
  if (childIndex >= 0) return runChild(process.argv[childIndex + 1]!);

  const available = readdirSync(suitesDir)
    .filter((file) => file.endsWith('.ts') && !file.endsWith('.test.ts'))
    .map((file) => basename(file, '.ts'))
    .sort();
  const wanted = process.argv.slice(2).filter((arg) => !arg.startsWith('-'));
  const unknown = wanted.filter((name) => !available.includes(name));
  if (unknown.length > 0) {
    console.error(`unknown suite(s): ${unknown.join(', ')}; available: ${available.join(', ')}`);
    process.exit(2);
  }
  const selected = wanted.length > 0 ? wanted : available;
  const machine = machineInfo();
  console.log(
    `ferry bench: ${selected.join(', ')} on ${machine.cpu} (${machine.cores} cores, ` +
      `${(machine.memoryBytes / 2 ** 30).toFixed(1)} GiB), Node ${machine.node}\n`,
  );

  mkdirSync(resultsDir, { recursive: true });
  const reports: BenchReport[] = [];
  const failures: string[] = [];
  for (const name of selected) {
    const started = performance.now();
    console.log(`running ${name}...`);
    try {
      const report = await runInChild(`${suitesDir}${name}.ts`);
      const durationMs = Math.round(performance.now() - started);
      const file: BenchResultFile = {
        ...report,
        machine: { ...machine, date: new Date().toISOString() },
        durationMs,
      };
      writeFileSync(`${resultsDir}${report.name}.json`, `${JSON.stringify(file, null, 2)}\n`);
      reports.push(report);
      console.log(`  done in ${(durationMs / 1000).toFixed(1)} s -> ${resultsDir}${report.name}.json`);
    } catch (error) {
      failures.push(name);
      console.error(`  FAILED: ${(error as Error).message}`);
    }
  }

  console.log('');
  printTable(reports);
  for (const report of reports) {
    if (report.notes) console.log(`\n${report.name}: ${report.notes}`);
  }
  if (failures.length > 0) {
    console.error(`\nfailed suites: ${failures.join(', ')}`);
    process.exit(1);
  }
}

await main();
