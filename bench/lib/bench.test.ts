import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  median,
  opsPerSecond,
  parseUdpReceiveDrops,
  percentile,
  ratio,
  significant,
  summarize,
  timeRuns,
  withPeakRss,
} from './measure.js';

describe('bench/lib/measure', () => {
  it('nearest-rank percentiles, median and summary', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(sorted, 50)).toBe(5);
    expect(percentile(sorted, 90)).toBe(9);
    expect(percentile(sorted, 99)).toBe(10);
    expect(percentile(sorted, 0)).toBe(1);
    expect(median([9, 1, 5])).toBe(5);
    expect(summarize([3, 1, 2])).toEqual({ count: 3, min: 1, mean: 2, p50: 2, p90: 3, p99: 3, max: 3 });
    expect(() => percentile([], 50)).toThrow();
  });

  it('reads UDP receive-buffer drops from both of Linux counter files', () => {
    const snmp = [
      'Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors',
      'Udp: 1819 0 3 1820 3 0',
      'UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors',
      'UdpLite: 0 0 0 0 9 0',
    ].join('\n');
    const snmp6 = 'Udp6InDatagrams                 \t1000966\nUdp6RcvbufErrors                \t15075\n';
    expect(parseUdpReceiveDrops(snmp, snmp6)).toBe(15_078);
    expect(parseUdpReceiveDrops(snmp, '')).toBe(3);
    expect(parseUdpReceiveDrops('', '')).toBe(0);
  });

  it('ratio and significant rounding', () => {
    expect(ratio(1, 4)).toBe(0.25);
    expect(ratio(1, 0)).toBeUndefined();
    expect(significant(958.64)).toBe(959);
    expect(significant(0.123456)).toBe(0.123);
  });

  it('opsPerSecond runs sync and async functions and counts their calls', async () => {
    let syncCalls = 0;
    const syncRate = await opsPerSecond(() => syncCalls++, { minPassMs: 5, passes: 2, warmupMs: 5 });
    let asyncCalls = 0;
    const asyncRate = await opsPerSecond(async () => asyncCalls++, { minPassMs: 5, passes: 2, warmupMs: 5 });
    for (const rate of [syncRate, asyncRate]) {
      expect(Number.isFinite(rate)).toBe(true);
      expect(rate).toBeGreaterThan(0);
    }
    expect(syncCalls).toBeGreaterThan(2);
    expect(asyncCalls).toBeGreaterThan(2);
  });

  it('timeRuns returns one duration per measured run, after the warm-up ones', async () => {
    let calls = 0;
    const times = await timeRuns(4, () => calls++, { warmup: 2 });
    expect(times).toHaveLength(4);
    expect(calls).toBe(6);
    expect(times.every((t) => t >= 0)).toBe(true);
  });

  it('withPeakRss sees memory the function holds', async () => {
    const before = process.memoryUsage.rss();
    const { result, peakBytes } = await withPeakRss(async () => {
      const block = new Uint8Array(64 * 1024 * 1024).fill(1); // touched, so resident
      return block.length;
    });
    expect(result).toBe(64 * 1024 * 1024);
    expect(peakBytes).toBeGreaterThan(before + 32 * 1024 * 1024);
  });
});

describe('bench/run.ts', () => {
  const runBench = (args: string[], env: Record<string, string> = {}) =>
    promisify(execFile)('npx', ['tsx', 'bench/run.ts', ...args], {
      cwd: new URL('../..', import.meta.url),
      env: { ...process.env, ...env },
    });

  it('refuses an unknown suite name and lists the available ones', async () => {
    await expect(runBench(['no-such-suite'])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/unknown suite.*available:.*crypto/s),
    });
  });

  it('runs each suite in its own process: writes results, prints the table, reports failures and hangs', async () => {
    const results = mkdtempSync(join(tmpdir(), 'ferry-bench-'));
    try {
      const failure = await runBench([], {
        FERRY_BENCH_SUITES_DIR: fileURLToPath(new URL('./fixtures/', import.meta.url)),
        FERRY_BENCH_RESULTS_DIR: results,
        FERRY_BENCH_TIMEOUT_MS: '5000',
      }).then(
        () => undefined,
        (error: { code: number; stdout: string; stderr: string }) => error,
      );
      expect(failure?.code).toBe(1);
      expect(failure?.stderr).toMatch(/fixture suite failed on purpose/);
      expect(failure?.stderr).toMatch(/no report after 5 s/);
      expect(failure?.stderr).toMatch(/failed suites: broken, hangs/);
      expect(failure?.stdout).toMatch(/suite\s+metric\s+value\s+unit\s+baseline\s+ratio\s+target/);
      expect(failure?.stdout).toMatch(/good\s+answer\s+42\s+things\s+21\s+2x\s+> 1/);
      expect(readdirSync(results)).toEqual(['good.json']);
      const written = JSON.parse(readFileSync(join(results, 'good.json'), 'utf8'));
      expect(written).toMatchObject({ name: 'good', metrics: [{ name: 'answer', value: 42 }] });
      expect(written.machine).toMatchObject({ node: process.version, cores: expect.any(Number) });
      expect(typeof written.machine.cpu).toBe('string');
      expect(written.machine.memoryBytes).toBeGreaterThan(0);
      expect(Date.parse(written.machine.date)).not.toBeNaN();
    } finally {
      rmSync(results, { recursive: true, force: true });
    }
  });
});

describe('npm run bench:compare', () => {
  const compare = (args: string[]) =>
    promisify(execFile)('npx', ['tsx', 'bench/compare-builds.ts', ...args], {
      cwd: fileURLToPath(new URL('../../', import.meta.url)),
    }).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    );

  it('refuses a missing revision, one that is not a commit, missing flags, an unknown WebRTC and a bad pair count, before building anything', async () => {
    const [none, unknown, pairs, noFlags, flagPairs, webrtc] = await Promise.all([
      compare([]),
      compare(['no-such-revision-anywhere']),
      compare(['HEAD', '0']),
      compare(['--node-flags', ' ']),
      compare(['--node-flags', '--no-opt', 'x']),
      compare(['--webrtc', 'node-webrtc']),
    ]);
    expect(webrtc).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(
        /unknown WebRTC implementation node-webrtc\n.*--webrtc <@roamhq\/wrtc\|node-datachannel>/s,
      ),
    });
    expect(noFlags).toMatchObject({ code: 2, stderr: expect.stringMatching(/no flags given\nusage:/) });
    expect(flagPairs).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/pairs must be a positive integer, not x/),
    });
    expect(none).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/no revision given\nusage: npm run bench:compare/),
    });
    expect(unknown).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/no-such-revision-anywhere is not a commit of this repository/),
    });
    expect(pairs).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/pairs must be a positive integer, not 0/),
    });
  });
});
