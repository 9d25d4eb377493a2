/**
 * B2 — throughput: 1, 16 and 64 lock-step clients (one connection each) hammering `get` on a
 * Unix socket for a fixed window; pmibridge vs the C epoll baseline. Goal: ≥ 1.0× at 16 clients.
 *
 * The clients start together (a PMI barrier), warm up, then count the gets completed inside the
 * same window; a tail keeps every client loading the server until all windows have closed.
 */
import { compareRuns, latencyFigure, SIDE_NAME } from './lib/pmi-load.js';
import { median } from './lib/stats.js';
import { figure, type Benchmark, type Figure, type Goal } from './lib/types.js';

const CLIENTS = [1, 16, 64] as const;
const GOAL: Partial<Record<number, Goal>> = { 16: { op: '>=', ratio: 1.0 } };
/**
 * One process per client, as MPICH runs one rank per process: the realistic shape, and the one
 * the goal was set against (performance-anchors.md §6.2). With 64 processes on 2 cores
 * the scheduler is part of what is measured, for both servers alike.
 */
const CONNS_PER_PROCESS = 1;

export const benchmark: Benchmark = {
  id: 'B2',
  title: 'get throughput, 1/16/64 clients (Unix socket)',
  async run(ctx) {
    const runs = ctx.quick ? 2 : 5;
    const mode = ctx.quick
      ? ({ kind: 'window', warmupMs: 100, windowMs: 400, tailMs: 100 } as const)
      : ({ kind: 'window', warmupMs: 300, windowMs: 2000, tailMs: 200 } as const);
    const figures: Figure[] = [];
    for (const n of CLIENTS) {
      ctx.log(`B2 ${n} client(s): ${runs} runs × ${mode.windowMs} ms per side`);
      const r = await compareRuns(ctx, 'unix', { clients: n, connsPerProcess: CONNS_PER_PROCESS, mode }, runs);
      figures.push(
        figure({
          name: `B2 throughput, ${n} client${n > 1 ? 's' : ''}`,
          value: median(r.pmibridge.map((x) => x.throughput)),
          unit: 'req/s',
          baseline: median(r.c.map((x) => x.throughput)),
          baselineName: SIDE_NAME.c,
          goal: GOAL[n] ?? null,
          runs,
        }),
        latencyFigure(`B2 get RTT under load, ${n} client${n > 1 ? 's' : ''}`, r, null, runs),
      );
    }
    return figures;
  },
};
