/**
 * B1 — request round trip: one lock-step client, `get` of a present key, over a Unix socket, TCP
 * (127.0.0.1) and PMI_FD; pmibridge vs the C epoll baseline. Goal: p50 ≤ 1.3× the baseline.
 *
 * Measured twice: as the scheduler places the two processes (normally on different CPUs: what a
 * job sees), and with server and client pinned to one CPU. On the 2-vCPU VM a cross-CPU wake-up
 * costs ~15-20 µs, twice per round trip and the same for both servers, so the unpinned ratio is
 * mostly that constant; pinned, the ratio shows what each server itself spends per request.
 *
 * PMI-2 rows (measured only, no goal): the same lock-step round trip in PMI-2 frames, a
 * `cmd=kvs-get;jobid=…;srcid=-1;key=PMI_process_mapping;` after fullinit and a kvs-fence, on the
 * same transports and placements; the baseline is the C server's PMI-2 mode, which answers with
 * one canned kvs-get-response frame (the same bytes as pmibridge), so the ratio compares alike.
 */
import { compareRuns, latencyFigure, latencyVs, SIDE_NAME, type Transport } from './lib/pmi-load.js';
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
    for (const pmi of [1, 2] as const) {
      for (const { cpu, t } of cases) {
        const where = cpu === undefined ? '' : ', one CPU';
        const what = pmi === 1 ? 'get' : 'PMI-2 kvs-get';
        ctx.log(`B1 ${what} ${LABEL[t]}${where}: ${runs} runs × ${mode.iters} ${pmi === 1 ? 'gets' : 'kvs-gets'} per side`);
        const r = await compareRuns(ctx, t, { clients: 1, connsPerProcess: 1, mode, pmi, ...(cpu === undefined ? {} : { cpu }) }, runs);
        figures.push(
          pmi === 1
            ? latencyFigure(`B1 get RTT, ${LABEL[t]}${where}`, r, { op: '<=', ratio: 1.3 }, runs)
            : latencyVs(`B1 PMI-2 kvs-get RTT, ${LABEL[t]}${where}`, r.pmibridge, r.c, `${SIDE_NAME.c}, PMI-2`, null, runs, 'measured only, no goal; both servers answer PMI-2 frames'),
        );
      }
    }
    return figures;
  },
};
