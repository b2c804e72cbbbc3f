import { existsSync, readFileSync } from 'node:fs';
// Measurement helpers shared by the bench suites. Numbers from a noisy 2-core machine: prefer medians
// of several passes over single runs, and always measure the baseline in the same process and run.

export const round = (value: number, digits = 2): number => Number(value.toFixed(digits));

/** Rounds to significant digits, so 0.98 and 958.6 both keep three meaningful figures. */
export const significant = (value: number, digits = 3): number => Number(value.toPrecision(digits));

/** value / baseline rounded, or undefined when there is no meaningful baseline. */
export const ratio = (value: number, baseline: number, digits = 3): number | undefined =>
  baseline > 0 && Number.isFinite(value / baseline) ? round(value / baseline, digits) : undefined;

/** Nearest-rank percentile of ascending samples (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no samples');
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export const median = (samples: readonly number[]): number =>
  percentile(
    [...samples].sort((a, b) => a - b),
    50,
  );

export interface Summary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    count: sorted.length,
    min: sorted[0]!,
    mean: sorted.reduce((sum, x) => sum + x, 0) / sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1]!,
  };
}

/** Milliseconds of each of `runs` calls (after `warmup` unmeasured ones), in call order. */
export async function timeRuns(runs: number, fn: () => unknown, { warmup = 0 } = {}): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await fn();
    times.push(performance.now() - start);
  }
  return times;
}

export interface RateOptions {
  /** Each pass runs at least this long (the op count is calibrated to reach it). */
  minPassMs?: number;
  passes?: number;
  warmupMs?: number;
}

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  typeof (value as PromiseLike<unknown> | undefined)?.then === 'function';

/**
 * Operations per second of `fn`, median of several passes. An async `fn` is awaited call after call; a
 * sync one runs in a plain loop, so awaiting costs nothing it would not cost a real caller.
 * Multiply by bytes per operation for a byte throughput.
 */
export async function opsPerSecond(fn: () => unknown, options: RateOptions = {}): Promise<number> {
  const { minPassMs = 300, passes = 5, warmupMs = 100 } = options;
  const probe = fn();
  if (isThenable(probe)) await probe;
  const runBatch: (count: number) => Promise<void> | void = isThenable(probe)
    ? async (count) => {
        for (let i = 0; i < count; i++) await fn();
      }
    : (count) => {
        for (let i = 0; i < count; i++) fn();
      };
  const timeBatch = async (count: number): Promise<number> => {
    const start = performance.now();
    await runBatch(count);
    return performance.now() - start;
  };
  // Calibrate: double the batch until one batch takes a measurable time; this also warms the JIT.
  let batch = 1;
  let warm = 0;
  for (;;) {
    const elapsed = await timeBatch(batch);
    warm += elapsed;
    if (elapsed >= 10 && warm >= warmupMs) {
      batch = Math.max(1, Math.ceil((batch * minPassMs) / elapsed));
      break;
    }
    batch *= 2;
  }
  const rates: number[] = [];
  for (let pass = 0; pass < passes; pass++) rates.push(batch / ((await timeBatch(batch)) / 1000));
  return median(rates);
}

/** Resident set size sampled on a timer; `stop()` also takes a final sample (a busy loop starves timers). */
export function sampleRss(intervalMs = 20): { stop(): { peakBytes: number; samples: number } } {
  let peak = process.memoryUsage.rss();
  let samples = 1;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
    samples++;
  }, intervalMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, process.memoryUsage.rss());
      return { peakBytes: peak, samples: samples + 1 };
    },
  };
}

/** Runs `fn` while sampling RSS; returns its result and the peak RSS seen. */
export async function withPeakRss<T>(
  fn: () => Promise<T>,
  intervalMs = 20,
): Promise<{ result: T; peakBytes: number }> {
  const sampler = sampleRss(intervalMs);
  try {
    const result = await fn();
    return { result, peakBytes: sampler.stop().peakBytes };
  } catch (error) {
    sampler.stop();
    throw error;
  }
}

export const MB = 1e6;
export const MiB = 1024 * 1024;

/**
 * UDP datagrams the kernel dropped because a socket's receive buffer was full, from the text of
 * Linux's /proc/net/snmp (`Udp:` header and value lines) and /proc/net/snmp6 (`Udp6RcvbufErrors`).
 */
export function parseUdpReceiveDrops(snmp: string, snmp6: string): number {
  let drops = 0;
  const udp = snmp.split('\n').filter((line) => line.startsWith('Udp: '));
  if (udp.length >= 2) {
    const column = udp[0]!.split(/\s+/).indexOf('RcvbufErrors');
    if (column > 0) drops += Number(udp[1]!.split(/\s+/)[column] ?? 0);
  }
  const v6 = /^Udp6RcvbufErrors\s+(\d+)/m.exec(snmp6);
  if (v6) drops += Number(v6[1]);
  return drops;
}

/**
 * The kernel's count of UDP receive-buffer drops in this network namespace, or undefined where it
 * cannot be read (not Linux). WebRTC on loopback loses packets this way when a burst meets a busy
 * receiver: SCTP resends them, but a lost tail waits for the retransmission timer (~0.6 s here).
 */
export function udpReceiveDrops(): number | undefined {
  try {
    const snmp6 = existsSync('/proc/net/snmp6') ? readFileSync('/proc/net/snmp6', 'utf8') : '';
    return parseUdpReceiveDrops(readFileSync('/proc/net/snmp', 'utf8'), snmp6);
  } catch {
    return undefined;
  }
}
