/** One measured figure. `ratio` is value / baseline, both measured in the same run. */
export interface BenchMetric {
  name: string;
  value: number;
  unit: string;
  baseline?: number;
  ratio?: number;
  target?: string;
}

/** What a suite returns; bench/run.ts prints it and writes it to bench/results/<name>.json. */
export interface BenchReport {
  name: string;
  description: string;
  /** What the baseline figures are (measured in the same run as the values). */
  baseline: string;
  metrics: BenchMetric[];
  notes?: string;
}

/** The default export of every bench/suites/<name>.ts file. */
export interface BenchSuite {
  name: string;
  run: () => Promise<BenchReport>;
}

export interface MachineInfo {
  node: string;
  platform: string;
  arch: string;
  cpu: string;
  cores: number;
  memoryBytes: number;
  date: string;
}

/** The JSON written per suite: the report plus where and when it was measured. */
export interface BenchResultFile extends BenchReport {
  machine: MachineInfo;
  durationMs: number;
}
