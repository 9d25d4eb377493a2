/**
 * Server-side load runs shared by the request benchmarks (B1, B2, B3, B7, and later B4): start a
 * server (pmibridge or the C baseline, or pmibridge behind `pmibridge relay`) on one transport,
 * start the lock-step load clients (bench/baseline/pmi_load_client.c) as separate processes, and
 * merge what they measured.
 *
 * Both servers get exactly the same treatment: the same client binary, the same lines (initack
 * on sockets, init, barrier_in — untimed — then timed `cmd=get kvsname=kvs_bench_0
 * key=PMI_process_mapping`, then finalize), the same job size, and each side's server is started
 * fresh per run and must exit 0 (every client finalized).
 *
 * With `pmi: 2` the same in PMI-2 on both sides (load client --pmi-version 2): the init line, then
 * frames — fullinit, kvs-fence (untimed), timed `cmd=kvs-get;jobid=kvs_bench_0;srcid=-1;
 * key=PMI_process_mapping;`, finalize — answered by pmibridge's server (`--pmi-version any`, its
 * default) and by the C server's PMI-2 mode (one canned kvs-get-response frame, the same bytes).
 *
 * - unix / tcp: `pmibridge serve --size N --listen unix|tcp://127.0.0.1:0` vs
 *   `pmi_echo_server --size N --unix PATH|--tcp`; clients get PMI_PORT + PMI_ID.
 * - fd: `pmibridge run -n N -- client` vs `pmi_echo_server --spawn N -- client`: each client is
 *   a child holding one end of a socketpair on fd 3 with PMI_FD=3 (both launchers alike).
 * - relay (unix / tcp: the relay's listener): `pmibridge serve --listen unix` as above, and
 *   `pmibridge relay --upstream <its socket> --sessions N --hold 0` in front of it; the clients
 *   talk to the relay. Both must exit 0.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envWithoutPmi, start as startProcess, type Started } from './proc.js';
import { Histogram, median } from './stats.js';
import { figure, type BenchContext, type Figure, type Goal } from './types.js';

export type Side = 'pmibridge' | 'c' | 'relay';
export type Transport = 'unix' | 'tcp' | 'fd';

export const SIDE_NAME: Record<Side, string> = { pmibridge: 'pmibridge', c: 'C epoll server', relay: 'pmibridge relay' };

/** The timed request when it is not the default `get` of PMI_process_mapping (load client --cmd). */
export interface Request {
  /**
   * The request line, without `\n`. `{id}` stands for the PMI_ID of the client process's first
   * connection (socket transports only), so that each client can ask something of its own.
   */
  readonly line: string;
  /** What every reply must start with. */
  readonly expect: string;
}

/** What the relay side adds (B7: the tap and its observers). */
export interface RelayHooks {
  /** More `pmibridge relay` arguments. */
  readonly args?: readonly string[];
  /**
   * Called once the relay listens, before the clients start; the function it resolves to is
   * called (and awaited) after the run, also when the run failed.
   */
  readonly attach?: () => Promise<() => Promise<void>>;
}

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
  /**
   * The wire: 1 (PMI-1 lines, the default) or 2 (PMI-2 frames after the init line). With 2 the
   * request line is a frame body, e.g. `cmd=kvs-get;jobid=…;srcid=-1;key=…;`.
   */
  readonly pmi?: 1 | 2;
  /** The timed request (default: `get` of PMI_process_mapping, present in every server). */
  readonly request?: Request;
  /** Side `relay` only. */
  readonly relay?: RelayHooks;
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

/**
 * A `get` that stays a round trip to the server whatever the relay caches (src/relay/kvs-cache.ts):
 * only found keys are remembered, since a missing one may still be put before the next barrier,
 * so only the server can answer it (rc 4, not found). Each client asks a key of its own: the relay
 * coalesces concurrent misses of one key (a second asker waits for the first's answer, then asks
 * itself), which would add a wait that no single-key-per-rank pattern has.
 */
export const FORWARDED_GET: Request = { line: `cmd=get kvsname=${KVSNAME} key=bench_missing_{id}`, expect: 'cmd=get_result rc=4' };

const LIMIT_MS = 120_000;

interface ClientFile {
  count: number;
  span_ns: number;
  bucket_ns: number;
  max_ns: number;
  overflow: number;
  hist: Array<[number, number]>;
}

function clientArgs(spec: LoadSpec, outDir: string, firstId: number | null): string[] {
  const m = spec.mode;
  const modeArgs =
    m.kind === 'count'
      ? ['--iters', String(m.iters), '--warmup', String(m.warmup)]
      : ['--warmup-ms', String(m.warmupMs), '--window-ms', String(m.windowMs), '--tail-ms', String(m.tailMs)];
  const line = spec.request?.line;
  if (line?.includes('{id}') && firstId === null) throw new RangeError('a request line with {id} needs a socket transport (one PMI_ID per process)');
  const req = spec.request ? ['--cmd', (line ?? '').replaceAll('{id}', String(firstId)), '--expect', spec.request.expect] : [];
  const wire = spec.pmi === 2 ? ['--pmi-version', '2'] : [];
  return [...modeArgs, ...req, ...wire, '--conns', String(spec.connsPerProcess), '--kvsname', KVSNAME, '--out', outDir];
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
  if (side === 'relay' && spec.pmi === 2) throw new RangeError('the relay forwards PMI-1 lines, not PMI-2 frames');
  const client = await ctx.tools.cc('pmi_load_client');
  const echo = await ctx.tools.cc('pmi_echo_server');
  const outDir = mkdtempSync(join(ctx.tmp, 'run-'));
  const env = envWithoutPmi();
  const pinned = spec.cpu;
  const start = (cmd: string, argv: readonly string[], opts: Parameters<typeof startProcess>[2]) =>
    pinned === undefined ? startProcess(cmd, argv, opts) : startProcess('taskset', ['-c', String(pinned), cmd, ...argv], opts);

  if (transport === 'fd') {
    if (side === 'relay') throw new RangeError('the relay side serves sockets (unix, tcp), not PMI_FD');
    if (connsPerProcess !== 1) throw new RangeError('PMI_FD is one connection per process');
    const args = clientArgs(spec, outDir, null);
    const launcher =
      side === 'pmibridge'
        ? start(process.execPath, [ctx.cli, 'run', '-n', String(clients), '--kvsname', KVSNAME, '--', client, ...args], { env, limitMs: LIMIT_MS })
        : start(echo, ['--spawn', String(clients), '--', client, ...args], { env, limitMs: LIMIT_MS });
    await mustSucceed(`${SIDE_NAME[side]} (PMI_FD, ${clients} ranks)`, launcher);
  } else {
    let server: Started;
    let pmiPort: string;
    let relay: Started | null = null;
    let detach: (() => Promise<void>) | null = null;
    if (side === 'pmibridge' || side === 'relay') {
      // Behind the relay, the server listens on a Unix socket: only the clients' leg changes.
      const listen = transport === 'unix' || side === 'relay' ? 'unix' : 'tcp://127.0.0.1:0';
      server = start(process.execPath, [ctx.cli, 'serve', '--size', String(clients), '--listen', listen, '--kvsname', KVSNAME, '--json'], { env, limitMs: LIMIT_MS });
      pmiPort = firstPort(await server.waitForLine(/^\{/));
      if (side === 'relay') {
        const listenRelay = transport === 'unix' ? 'unix' : 'tcp://127.0.0.1:0';
        const relayArgs = ['relay', '--upstream', pmiPort, '--listen', listenRelay, '--sessions', String(clients), '--hold', '0', '--json', ...(spec.relay?.args ?? [])];
        relay = start(process.execPath, [ctx.cli, ...relayArgs], { env, limitMs: LIMIT_MS });
        try {
          pmiPort = firstPort(await relay.waitForLine(/^\{/));
          if (spec.relay?.attach) detach = await spec.relay.attach();
        } catch (err) {
          relay.kill();
          server.kill();
          throw err;
        }
      }
    } else {
      const where = transport === 'unix' ? ['--unix', join(outDir, 'echo.sock')] : ['--tcp'];
      server = start(echo, ['--size', String(clients), ...where], { env, limitMs: LIMIT_MS });
      const line = await server.waitForLine(/^(unix|tcp) /);
      pmiPort = line.slice(line.indexOf(' ') + 1);
    }
    try {
      const procs: Started[] = [];
      for (let p = 0; p < processes; p++) {
        const id = p * connsPerProcess;
        procs.push(start(client, clientArgs(spec, outDir, id), { env: { ...env, PMI_PORT: pmiPort, PMI_ID: String(id) }, limitMs: LIMIT_MS }));
      }
      await Promise.all(procs.map((p, i) => mustSucceed(`load client ${i}`, p)));
      if (relay) await mustSucceed(`pmibridge relay (${transport}, ${clients} sessions)`, relay);
      await mustSucceed(`${side === 'c' ? SIDE_NAME.c : 'pmibridge serve'} (${transport}, ${clients} ranks)`, server);
    } finally {
      // No-ops once they exited; on a failure nothing is left behind.
      relay?.kill();
      server.kill();
      await detach?.();
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

function firstPort(jsonLine: string): string {
  const info = JSON.parse(jsonLine) as { listeners?: Array<{ PMI_PORT?: string }> };
  const port = info.listeners?.[0]?.PMI_PORT;
  if (!port) throw new Error(`no listener in ${jsonLine}`);
  return port;
}

/**
 * `runs` runs of each variant, interleaved (A, B, B, A, …) so that drift in a noisy VM hits every
 * variant alike.
 */
export async function interleave<K extends string>(runs: number, variants: Readonly<Record<K, () => Promise<LoadResult>>>): Promise<Record<K, LoadResult[]>> {
  const keys = Object.keys(variants) as K[];
  const out = Object.fromEntries(keys.map((k) => [k, [] as LoadResult[]])) as Record<K, LoadResult[]>;
  for (let r = 0; r < runs; r++) {
    for (const k of r % 2 === 0 ? keys : [...keys].reverse()) out[k].push(await variants[k]());
  }
  return out;
}

/** `runs` runs each of pmibridge and the C baseline, interleaved. */
export function compareRuns(ctx: BenchContext, transport: Transport, spec: LoadSpec, runs: number): Promise<Record<'pmibridge' | 'c', LoadResult[]>> {
  return interleave(runs, { pmibridge: () => runLoad(ctx, 'pmibridge', transport, spec), c: () => runLoad(ctx, 'c', transport, spec) });
}

/** A round-trip figure: median of the runs' p50 (and p99), against a baseline's. */
export function latencyVs(name: string, value: readonly LoadResult[], baseline: readonly LoadResult[], baselineName: string, goal: Goal | null, runs: number, note?: string): Figure {
  return figure({
    name,
    value: median(value.map((x) => x.p50us)),
    p99: median(value.map((x) => x.p99us)),
    unit: 'us',
    baseline: median(baseline.map((x) => x.p50us)),
    baselineP99: median(baseline.map((x) => x.p99us)),
    baselineName,
    goal,
    runs,
    ...(note === undefined ? {} : { note }),
  });
}

/** A throughput figure: median of the runs' requests per second, against a baseline's. */
export function throughputVs(name: string, value: readonly LoadResult[], baseline: readonly LoadResult[], baselineName: string, goal: Goal | null, runs: number, note?: string): Figure {
  return figure({
    name,
    value: median(value.map((x) => x.throughput)),
    unit: 'req/s',
    baseline: median(baseline.map((x) => x.throughput)),
    baselineName,
    goal,
    runs,
    ...(note === undefined ? {} : { note }),
  });
}

/** The round-trip figure (median of the runs' p50 and p99) of a pmibridge-vs-C comparison. */
export function latencyFigure(name: string, r: Record<'pmibridge' | 'c', LoadResult[]>, goal: Goal | null, runs: number): Figure {
  return latencyVs(name, r.pmibridge, r.c, SIDE_NAME.c, goal, runs);
}
