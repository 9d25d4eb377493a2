/**
 * B1 — request round trip: one lock-step client, `get` of a present key, over a Unix socket, TCP
 * (127.0.0.1) and PMI_FD; pmibridge vs the C epoll baseline. Goal: p50 ≤ 1.3× the baseline.
 *
 * Measured twice: as the scheduler places the two processes (normally on different CPUs: what a
 * job sees), and with server and client pinned to one CPU. On the 2-vCPU VM a cross-CPU wake-up
 * costs ~15-20 µs, twice per round trip and the same for both servers, so the unpinned ratio is
 * mostly that constant; pinned, the ratio shows what each server itself spends per request.
 */
import { compareRuns, latencyFigure, type Transport } from './lib/pmi-load.js';
import type { Benchmark, Figure } from './lib/types.js';

const TRANSPORTS: readonly Transport[] = ['unix', 'tcp', 'fd'];
const LABEL: Record<Transport, string> = { unix: 'Unix socket', tcp: 'TCP 127.0.0.1', fd: 'PMI_FD socketpair' };

export const benchmark: Benchmark = {
  id: 'B1',
  title: 'get round trip, one client',
  async run(ctx) {
    const runs = ctx.quick ? 3 : 7;
    const mode = ctx.quick ? { kind: 'count', iters: 5000, warmup: 2000 } as const : { kind: 'count', iters: 20_000, warmup: 2000 } as const;
    const figures: Figure[] = [];
    const placements: Array<number | undefined> = [undefined];
    if (await ctx.tools.has('taskset')) placements.push(0);
    else ctx.log('B1: taskset not found (util-linux); the one-CPU rows are left out');
    const cases = placements.flatMap((cpu) => TRANSPORTS.map((t) => ({ cpu, t })));
    for (const { cpu, t } of cases) {
      const where = cpu === undefined ? '' : ', one CPU';
      ctx.log(`B1 ${LABEL[t]}${where}: ${runs} runs × ${mode.iters} gets per side`);
      const r = await compareRuns(ctx, t, { clients: 1, connsPerProcess: 1, mode, ...(cpu === undefined ? {} : { cpu }) }, runs);
      figures.push(latencyFigure(`B1 get RTT, ${LABEL[t]}${where}`, r, { op: '<=', ratio: 1.3 }, runs));
    }
    return figures;
  },
};
