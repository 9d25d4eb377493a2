/**
 * B3 — the relay's cost: the same lock-step requests sent to `pmibridge serve` directly and
 * through `pmibridge relay` in front of that server (Unix sockets on both legs, so only the hop
 * differs), with 1 and 16 clients. Goals (relay/direct p50): ≤ 1.5× for requests the relay must
 * forward, ≤ 1.0× for invariant queries it answers from the session.
 *
 * - forwarded: `get` of a key nobody put, one key per client (lib/pmi-load.ts FORWARDED_GET): the
 *   relay's KVS cache keeps found keys only, so every such get is a round trip to the server.
 *   (A present key would be answered from the cache after the first fetch; a repeated identical
 *   `put` is acknowledged by the relay itself; a missing key shared by all clients would have
 *   concurrent askers wait for each other's miss.)
 * - invariant: `get_maxes`, answered by the relay from the session after the first time
 *   (src/relay/engine.ts INVARIANT); direct, the server answers it.
 *
 * One client: count mode, as B1 (unpinned: three processes on 2 CPUs cannot share one). 16
 * clients: window mode, as B2, one process per client; the throughput is reported too.
 */
import { FORWARDED_GET, interleave, latencyVs, runLoad, throughputVs, type LoadMode, type LoadSpec, type Request } from './lib/pmi-load.js';
import type { Benchmark, Figure, Goal } from './lib/types.js';

interface Kind {
  readonly label: string;
  readonly request: Request;
  readonly goal: Goal;
  readonly note: string;
}

const BASELINE = 'baseline: the same requests straight to pmibridge serve; all legs Unix sockets';
const KINDS: readonly Kind[] = [
  {
    label: 'forwarded get (missing key)',
    request: FORWARDED_GET,
    goal: { op: '<=', ratio: 1.5 },
    note: `get of a key nobody put, one per client (rc 4): the relay's KVS cache keeps found keys only, so each one is forwarded; ${BASELINE}`,
  },
  {
    label: 'invariant get_maxes',
    request: { line: 'cmd=get_maxes', expect: 'cmd=maxes rc=0' },
    goal: { op: '<=', ratio: 1.0 },
    note: `get_maxes: the relay answers it from the session after the first; ${BASELINE}`,
  },
];

export const benchmark: Benchmark = {
  id: 'B3',
  title: 'relay vs direct, forwarded and invariant requests, 1/16 clients (Unix sockets)',
  async run(ctx) {
    const runs1 = ctx.quick ? 2 : 5;
    const runs16 = ctx.quick ? 2 : 5;
    // Every run starts a fresh relay and server: the warm-up lets their JIT settle first.
    const count: LoadMode = ctx.quick ? { kind: 'count', iters: 2000, warmup: 1000 } : { kind: 'count', iters: 10_000, warmup: 3000 };
    const window: LoadMode = ctx.quick ? { kind: 'window', warmupMs: 250, windowMs: 300, tailMs: 100 } : { kind: 'window', warmupMs: 500, windowMs: 1500, tailMs: 200 };
    const figures: Figure[] = [];
    for (const k of KINDS) {
      for (const n of [1, 16]) {
        const runs = n === 1 ? runs1 : runs16;
        const spec: LoadSpec = { clients: n, connsPerProcess: 1, mode: n === 1 ? count : window, request: k.request };
        ctx.log(`B3 ${k.label}, ${n} client(s): ${runs} runs per side`);
        const r = await interleave(runs, { relay: () => runLoad(ctx, 'relay', 'unix', spec), direct: () => runLoad(ctx, 'pmibridge', 'unix', spec) });
        const clients = `${n} client${n > 1 ? 's' : ''}`;
        figures.push(latencyVs(`B3 relay RTT, ${k.label}, ${clients}`, r.relay, r.direct, 'direct to serve', k.goal, runs, k.note));
        if (n > 1) figures.push(throughputVs(`B3 relay throughput, ${k.label}, ${clients}`, r.relay, r.direct, 'direct to serve', null, runs, k.note));
      }
    }
    return figures;
  },
};
