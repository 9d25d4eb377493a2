/**
 * The shape every benchmark file follows. A benchmark is one module `bench/bN-name.ts` exporting
 * `benchmark: Benchmark`; run.ts finds the compiled `dist/bench/b*-*.js` files by name, so adding
 * B3, B4, B6 or B7 means adding one file, nothing else.
 */

/** A ratio goal against the baseline measured in the same run: value/baseline `op` ratio. */
export interface RatioGoal {
  readonly op: '<=' | '>=';
  readonly ratio: number;
}

/**
 * An absolute goal on the value itself, in the figure's unit (B6: ≤ 4 KiB per connection,
 * ≥ 1,000 connections/s): met or not whatever the baseline, which is then for information.
 */
export interface AbsoluteGoal {
  readonly op: '<=' | '>=';
  readonly value: number;
}

export type Goal = RatioGoal | AbsoluteGoal;

/** One line of the table and one entry of bench/results.json. */
export interface Figure {
  readonly name: string;
  /** The median over runs (of each run's p50 for latencies). */
  readonly value: number;
  readonly unit: string;
  /** The same figure for the baseline (C server, hydra), or null when there is none. */
  readonly baseline: number | null;
  /** What the baseline is, e.g. "C epoll server", "mpiexec.hydra". */
  readonly baselineName: string | null;
  /** value / baseline. */
  readonly ratio: number | null;
  readonly goal: Goal | null;
  /** Whether the ratio (the value, for an absolute goal) meets the goal; null when there is no goal. */
  readonly met: boolean | null;
  /** Median over runs of each run's p99 (latencies only). */
  readonly p99?: number;
  readonly baselineP99?: number;
  /** Runs (or launches) behind the median, per side. */
  readonly runs: number;
  readonly note?: string;
}

export interface Skip {
  readonly id: string;
  readonly reason: string;
}

export interface Tools {
  /** Compile a C file of bench/baseline/ once per bench run (cc -O2); the path of the binary. */
  cc(name: 'pmi_echo_server' | 'pmi_load_client' | 'pmi_idle_client' | 'pmi_wireup_client'): Promise<string>;
  /** Compile an MPI program with mpicc.mpich once per bench run; the path of the binary. */
  mpicc(source: string, name: string): Promise<string>;
  /** Whether a command is on PATH. */
  has(command: string): Promise<boolean>;
}

export interface BenchContext {
  readonly quick: boolean;
  /** Repository root. */
  readonly root: string;
  /** The built CLI (dist/src/cli/main.js). */
  readonly cli: string;
  /** A private temporary directory for this bench run, removed at the end. */
  readonly tmp: string;
  readonly tools: Tools;
  /** Progress on stderr. */
  log(message: string): void;
  /** A benchmark that cannot run here says why; it is listed, not failed. */
  skip(reason: string): never;
}

export interface Benchmark {
  /** "B1", "B2", … */
  readonly id: string;
  readonly title: string;
  run(ctx: BenchContext): Promise<Figure[]>;
}

/** Thrown by ctx.skip(). */
export class SkipBenchmark extends Error {}

/** Build a figure, deriving ratio and met. */
export function figure(f: Omit<Figure, 'ratio' | 'met'>): Figure {
  const ratio = f.baseline !== null && f.baseline > 0 ? f.value / f.baseline : null;
  const g = f.goal;
  const compared = g === null ? null : 'ratio' in g ? ratio : f.value;
  const bound = g === null ? 0 : 'ratio' in g ? g.ratio : g.value;
  const met = g === null || compared === null || !Number.isFinite(compared) ? null : g.op === '<=' ? compared <= bound : compared >= bound;
  return { ...f, ratio, met };
}
