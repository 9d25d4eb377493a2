/**
 * Server-side load runs shared by the request benchmarks (B1, B2, and later B3/B4): start a
 * server (pmibridge or the C baseline) on one transport, start the lock-step load clients
 * (bench/baseline/pmi_load_client.c) as separate processes, and merge what they measured.
 *
 * Both servers get exactly the same treatment: the same client binary, the same lines (initack
 * on sockets, init, barrier_in — untimed — then timed `cmd=get kvsname=kvs_bench_0
 * key=PMI_process_mapping`, then finalize), the same job size, and each side's server is started
 * fresh per run and must exit 0 (every client finalized).
 *
 * - unix / tcp: `pmibridge serve --size N --listen unix|tcp://127.0.0.1:0` vs
 *   `pmi_echo_server --size N --unix PATH|--tcp`; clients get PMI_PORT + PMI_ID.
 * - fd: `pmibridge run -n N -- client` vs `pmi_echo_server --spawn N -- client`: each client is
 *   a child holding one end of a socketpair on fd 3 with PMI_FD=3 (both launchers alike).
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envWithoutPmi, start as startProcess, type Started } from './proc.js';
import { Histogram, median } from './stats.js';
import { figure, type BenchContext, type Figure, type Goal } from './types.js';

export type Side = 'pmibridge' | 'c';
export type Transport = 'unix' | 'tcp' | 'fd';

export const SIDE_NAME: Record<Side, string> = { pmibridge: 'pmibridge', c: 'C epoll server' };

export type LoadMode =
  | { readonly kind: 'count'; readonly iters: number; readonly warmup: number }
  | { readonly kind: 'window'; readonly warmupMs: number; readonly windowMs: number; readonly tailMs: number };

export interface LoadSpec {
  /** Connections in the job (= ranks). */
  readonly clients: number;
  /** Connections per client process (1: one process per rank, like MPICH). */
  readonly connsPerProcess: number;
  readonly mode: LoadMode;
  /**
   * Pin the server and every client to this CPU (`taskset -c`). Unpinned, the scheduler puts
   * client and server on different CPUs, and on a VM each cross-CPU wake-up costs more than the
   * whole request; on one CPU the round trip is mostly the two processes' own work.
   */
  readonly cpu?: number;
}

export interface LoadResult {
  readonly hist: Histogram;
  /** Requests measured (all clients). */
  readonly count: number;
  /** Window mode: requests per second over the window, summed over the clients. */
  readonly throughput: number;
  readonly p50us: number;
  readonly p99us: number;
}

const KVSNAME = 'kvs_bench_0';
const LIMIT_MS = 120_000;

interface ClientFile {
  count: number;
  span_ns: number;
  bucket_ns: number;
  max_ns: number;
  overflow: number;
  hist: Array<[number, number]>;
}

function clientArgs(spec: LoadSpec, outDir: string): string[] {
  const m = spec.mode;
  const modeArgs =
    m.kind === 'count'
      ? ['--iters', String(m.iters), '--warmup', String(m.warmup)]
      : ['--warmup-ms', String(m.warmupMs), '--window-ms', String(m.windowMs), '--tail-ms', String(m.tailMs)];
  return [...modeArgs, '--conns', String(spec.connsPerProcess), '--kvsname', KVSNAME, '--out', outDir];
}

async function mustSucceed(what: string, p: Started): Promise<void> {
  const e = await p.exited;
  if (e.code !== 0) throw new Error(`${what} failed (code ${e.code}, signal ${e.signal}): ${e.stderr.slice(-1500)}`);
}

/** One run: a fresh server, the clients, the merged measurements. */
export async function runLoad(ctx: BenchContext, side: Side, transport: Transport, spec: LoadSpec): Promise<LoadResult> {
  const { clients, connsPerProcess } = spec;
  if (clients % connsPerProcess !== 0) throw new RangeError(`${clients} clients do not split into processes of ${connsPerProcess}`);
  const processes = clients / connsPerProcess;
  const client = await ctx.tools.cc('pmi_load_client');
  const echo = await ctx.tools.cc('pmi_echo_server');
  const outDir = mkdtempSync(join(ctx.tmp, 'run-'));
  const args = clientArgs(spec, outDir);
  const env = envWithoutPmi();
  const pinned = spec.cpu;
  const start = (cmd: string, argv: readonly string[], opts: Parameters<typeof startProcess>[2]) =>
    pinned === undefined ? startProcess(cmd, argv, opts) : startProcess('taskset', ['-c', String(pinned), cmd, ...argv], opts);

  if (transport === 'fd') {
    if (connsPerProcess !== 1) throw new RangeError('PMI_FD is one connection per process');
    const launcher =
      side === 'pmibridge'
        ? start(process.execPath, [ctx.cli, 'run', '-n', String(clients), '--kvsname', KVSNAME, '--', client, ...args], { env, limitMs: LIMIT_MS })
        : start(echo, ['--spawn', String(clients), '--', client, ...args], { env, limitMs: LIMIT_MS });
    await mustSucceed(`${SIDE_NAME[side]} (PMI_FD, ${clients} ranks)`, launcher);
  } else {
    let server: Started;
    let pmiPort: string;
    if (side === 'pmibridge') {
      const listen = transport === 'unix' ? 'unix' : 'tcp://127.0.0.1:0';
      server = start(process.execPath, [ctx.cli, 'serve', '--size', String(clients), '--listen', listen, '--kvsname', KVSNAME, '--json'], { env, limitMs: LIMIT_MS });
      const info = JSON.parse(await server.waitForLine(/^\{/)) as { listeners: Array<{ PMI_PORT: string }> };
      pmiPort = info.listeners[0]?.PMI_PORT ?? '';
    } else {
      const where = transport === 'unix' ? ['--unix', join(outDir, 'echo.sock')] : ['--tcp'];
      server = start(echo, ['--size', String(clients), ...where], { env, limitMs: LIMIT_MS });
      const line = await server.waitForLine(/^(unix|tcp) /);
      pmiPort = line.slice(line.indexOf(' ') + 1);
    }
    try {
      const procs: Started[] = [];
      for (let p = 0; p < processes; p++) {
        procs.push(start(client, args, { env: { ...env, PMI_PORT: pmiPort, PMI_ID: String(p * connsPerProcess) }, limitMs: LIMIT_MS }));
      }
      await Promise.all(procs.map((p, i) => mustSucceed(`load client ${i}`, p)));
      await mustSucceed(`${SIDE_NAME[side]} (${transport}, ${clients} ranks)`, server);
    } finally {
      server.kill(); // no-op once it exited; on a failure nothing is left behind
    }
  }

  const files = readdirSync(outDir).filter((f) => f.startsWith('client-') && f.endsWith('.json'));
  if (files.length !== processes) throw new Error(`expected ${processes} client results, found ${files.length}`);
  let hist: Histogram | null = null;
  let count = 0;
  let throughput = 0;
  for (const f of files) {
    const r = JSON.parse(readFileSync(join(outDir, f), 'utf8')) as ClientFile;
    hist ??= new Histogram(r.bucket_ns);
    hist.add(r.hist, r.overflow, r.max_ns);
    count += r.count;
    if (spec.mode.kind === 'window') throughput += r.count / (spec.mode.windowMs / 1000);
    else throughput += r.count / (r.span_ns / 1e9);
  }
  if (!hist || count === 0) throw new Error('the clients measured nothing');
  return { hist, count, throughput, p50us: hist.percentileNs(50) / 1000, p99us: hist.percentileNs(99) / 1000 };
}

/**
 * `runs` runs of each side, interleaved (pmibridge, C, C, pmibridge, …) so that drift in a noisy
 * VM hits both sides alike.
 */
export async function compareRuns(ctx: BenchContext, transport: Transport, spec: LoadSpec, runs: number): Promise<Record<Side, LoadResult[]>> {
  const out: Record<Side, LoadResult[]> = { pmibridge: [], c: [] };
  for (let r = 0; r < runs; r++) {
    const order: Side[] = r % 2 === 0 ? ['pmibridge', 'c'] : ['c', 'pmibridge'];
    for (const side of order) out[side].push(await runLoad(ctx, side, transport, spec));
  }
  return out;
}

/** The round-trip figure (median of the runs' p50 and p99) of a pmibridge-vs-C comparison. */
export function latencyFigure(name: string, r: Record<Side, LoadResult[]>, goal: Goal | null, runs: number): Figure {
  return figure({
    name,
    value: median(r.pmibridge.map((x) => x.p50us)),
    p99: median(r.pmibridge.map((x) => x.p99us)),
    unit: 'us',
    baseline: median(r.c.map((x) => x.p50us)),
    baselineP99: median(r.c.map((x) => x.p99us)),
    baselineName: SIDE_NAME.c,
    goal,
    runs,
  });
}
