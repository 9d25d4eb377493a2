/**
 * B5 — whole-job launch: `pmibridge run -n N ./hello` vs `mpiexec.hydra -n N ./hello` (Debian's
 * MPICH 4.0.2; hello.c is test/fixtures/c/hello.c: MPI_Init, a ring Sendrecv, Allreduce,
 * Barrier, Finalize), N = 1, 2, 8. Wall time from spawn to exit, launches interleaved, median.
 * Goals: ≤ 1.0× hydra at 8 ranks, ≤ 1.3× at 2. For reference, `./hello` alone (MPICH singleton
 * init, no launcher and no PMI server) is timed too: what no launcher can go below; and
 * `node -e 0`: what no launcher written for Node can go below, on top of its ranks.
 */
import { dirname, join } from 'node:path';
import { envWithoutPmi, start } from './lib/proc.js';
import { median, percentile } from './lib/stats.js';
import { figure, type BenchContext, type Benchmark, type Figure, type Goal } from './lib/types.js';

const SIZES = [1, 2, 8] as const;
const GOAL: Partial<Record<number, Goal>> = { 2: { op: '<=', ratio: 1.3 }, 8: { op: '<=', ratio: 1.0 } };

/** One launch; returns its wall time in ms after checking that every rank printed OK. */
async function launch(what: string, cmd: string, args: readonly string[], cwd: string, ranks: number): Promise<number> {
  const e = await start(cmd, args, { cwd, env: envWithoutPmi(), limitMs: 60_000 }).exited;
  const oks = e.stdout.split('\n').filter((l) => / OK$/.test(l)).length;
  if (e.code !== 0 || oks !== ranks) {
    throw new Error(`${what} failed (code ${e.code}, signal ${e.signal}, ${oks}/${ranks} OK lines): ${e.stderr.slice(-1500)}`);
  }
  return e.ms;
}

async function hello(ctx: BenchContext): Promise<string> {
  for (const tool of ['mpicc.mpich', 'mpiexec.hydra']) {
    if (!(await ctx.tools.has(tool))) ctx.skip(`${tool} is not installed (Debian: apt-get install mpich libmpich-dev)`);
  }
  return ctx.tools.mpicc(join(ctx.root, 'test/fixtures/c/hello.c'), 'hello');
}

export const benchmark: Benchmark = {
  id: 'B5',
  title: 'launch: pmibridge run vs mpiexec.hydra, MPICH hello',
  async run(ctx) {
    const prog = await hello(ctx);
    const cwd = dirname(prog);
    const reps = ctx.quick ? 3 : 15;
    const warmup = ctx.quick ? 1 : 2;
    const figures: Figure[] = [];

    const alone: number[] = [];
    for (let i = 0; i < warmup + reps; i++) {
      const ms = await launch('./hello (singleton)', prog, [], cwd, 1);
      if (i >= warmup) alone.push(ms);
    }
    figures.push(figure({ name: 'B5 ./hello alone (singleton, reference)', value: median(alone), p99: percentile(alone, 99), unit: 'ms', baseline: null, baselineName: null, goal: null, runs: reps }));

    const node: number[] = [];
    for (let i = 0; i < warmup + reps; i++) {
      const e = await start(process.execPath, ['-e', '0'], { cwd, env: envWithoutPmi(), limitMs: 60_000 }).exited;
      if (e.code !== 0) throw new Error(`node -e 0 failed (code ${e.code}): ${e.stderr.slice(-500)}`);
      if (i >= warmup) node.push(e.ms);
    }
    figures.push(figure({ name: 'B5 node -e 0 (Node start-up, reference)', value: median(node), p99: percentile(node, 99), unit: 'ms', baseline: null, baselineName: null, goal: null, runs: reps }));

    for (const n of SIZES) {
      ctx.log(`B5 n=${n}: ${reps} launches per side (+${warmup} warm-up)`);
      const ours: number[] = [];
      const hydra: number[] = [];
      for (let i = 0; i < warmup + reps; i++) {
        // Alternate which goes first, so that neither always runs on a just-warmed cache.
        const pair = [
          async () => {
            const ms = await launch(`pmibridge run -n ${n}`, process.execPath, [ctx.cli, 'run', '-n', String(n), './hello'], cwd, n);
            if (i >= warmup) ours.push(ms);
          },
          async () => {
            const ms = await launch(`mpiexec.hydra -n ${n}`, 'mpiexec.hydra', ['-n', String(n), './hello'], cwd, n);
            if (i >= warmup) hydra.push(ms);
          },
        ];
        if (i % 2) pair.reverse();
        for (const step of pair) await step();
      }
      figures.push(
        figure({
          name: `B5 launch, ${n} rank${n > 1 ? 's' : ''}`,
          value: median(ours),
          p99: percentile(ours, 99),
          unit: 'ms',
          baseline: median(hydra),
          baselineP99: percentile(hydra, 99),
          baselineName: 'mpiexec.hydra',
          goal: GOAL[n] ?? null,
          runs: reps,
        }),
      );
    }
    return figures;
  },
};
