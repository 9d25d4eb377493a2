/**
 * One run of B4's business-card wire-up: start a fresh server side (the C floor, pmibridge
 * direct, or pmibridge behind R relays), drive N ranks with bench/baseline/pmi_wireup_client.c
 * (a few processes of many lock-step connections each), and read the job's phases from the
 * clients' CLOCK_MONOTONIC timestamps.
 *
 * Every side gets the same client binary, the same lines and the same job size; every server
 * and relay must exit 0 (all ranks finalized), and every get answer is checked by the client.
 * pmibridge direct also runs in PMI-2 (`{ kind: 'direct', pmi: 2 }`): the same client in its
 * --pmi-version 2 mode (fullinit, kvs-put, kvs-fence, kvs-get frames), the same server.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envWithoutPmi, start, type Started } from './proc.js';
import type { BenchContext } from './types.js';

/**
 * Where the ranks connect: the C floor, pmibridge's server (in PMI-1, or with `pmi: 2` in PMI-2),
 * its server behind `relays` relays, or (a reference only) mpiexec.hydra with one client process
 * per rank over PMI_FD.
 */
export type WireupSide =
  | { readonly kind: 'c' }
  | { readonly kind: 'direct'; readonly pmi?: 1 | 2 }
  | { readonly kind: 'relays'; readonly relays: number }
  | { readonly kind: 'hydra' };

export function sideName(s: WireupSide): string {
  if (s.kind === 'c') return 'C epoll server (no KVS)';
  if (s.kind === 'direct') return s.pmi === 2 ? 'pmibridge direct, PMI-2' : 'pmibridge direct';
  if (s.kind === 'hydra') return 'mpiexec.hydra (one process per rank)';
  return `pmibridge + ${s.relays} relays`;
}

/** Milliseconds from the start barrier's release (the first a client saw) to the end of each phase. */
export interface WireupResult {
  /** Put + barrier: the last rank released from the barrier after the puts. */
  readonly putBarrierMs: number;
  /** Get-all: the last rank's last get answered. */
  readonly getsMs: number;
  /** Final barrier: the last rank released. */
  readonly finalBarrierMs: number;
  /** Total: the last rank's finalize_ack. */
  readonly totalMs: number;
  /** Mean round trip of a get, over all ranks (µs). */
  readonly meanGetUs: number;
}

const KVSNAME = 'kvs_bench_0';

interface ClientFile {
  size: number;
  start_ns: number;
  put_barrier_ns: number;
  gets_ns: number;
  final_barrier_ns: number;
  finalize_ns: number;
  gets: number;
  get_sum_ns: number;
}

async function mustSucceed(what: string, p: Started): Promise<void> {
  const e = await p.exited;
  if (e.code !== 0) throw new Error(`${what} failed (code ${e.code}, signal ${e.signal}): ${e.stderr.slice(-1500)}`);
}

/** PMI_PORT of a `--json` listener line (serve and relay print the same shape). */
async function jsonPort(p: Started, what: string): Promise<string> {
  const info = JSON.parse(await p.waitForLine(/^\{/)) as { listeners?: Array<{ PMI_PORT?: string }> };
  const port = info.listeners?.[0]?.PMI_PORT;
  if (!port) throw new Error(`${what} printed no PMI_PORT`);
  return port;
}

/** Split `n` ranks starting at `first` into `parts` contiguous groups (sizes differ by at most one). */
function split(first: number, n: number, parts: number): Array<{ id: number; conns: number }> {
  const out: Array<{ id: number; conns: number }> = [];
  let id = first;
  for (let i = 0; i < parts; i++) {
    const conns = Math.floor(n / parts) + (i < n % parts ? 1 : 0);
    if (conns > 0) out.push({ id, conns });
    id += conns;
  }
  return out;
}

export interface WireupOptions {
  /** Load processes for the C floor and pmibridge direct (relays: one per relay). */
  readonly processes: number;
  /** Hard limit on every process of the run (ms). */
  readonly limitMs: number;
}

/** One wire-up of `n` ranks on a fresh `side`. */
export async function runWireup(ctx: BenchContext, side: WireupSide, n: number, opts: WireupOptions): Promise<WireupResult> {
  const client = await ctx.tools.cc('pmi_wireup_client');
  const outDir = mkdtempSync(join(ctx.tmp, 'wireup-'));
  const env = envWithoutPmi();
  const limitMs = opts.limitMs;
  const servers: Array<{ what: string; p: Started }> = [];
  try {
    // Who listens where, and which ranks each load process drives there.
    const groups: Array<{ port: string; id: number; conns: number }> = [];
    let expectFiles = 0;
    if (side.kind === 'hydra') {
      // hydra's own PMI_FD: the client asks its kvsname (get_my_kvsname) during the untimed set-up.
      const p = start('mpiexec.hydra', ['-n', String(n), client, '--size', String(n), '--out', outDir], { env, limitMs });
      servers.push({ what: 'mpiexec.hydra', p });
      expectFiles = n;
    } else if (side.kind === 'c') {
      const echo = await ctx.tools.cc('pmi_echo_server');
      const p = start(echo, ['--size', String(n), '--unix', join(outDir, 'echo.sock')], { env, limitMs });
      servers.push({ what: 'C server', p });
      const line = await p.waitForLine(/^unix /);
      const port = line.slice(line.indexOf(' ') + 1);
      for (const g of split(0, n, opts.processes)) groups.push({ port, ...g });
    } else {
      const p = start(process.execPath, [ctx.cli, 'serve', '--size', String(n), '--listen', 'unix', '--kvsname', KVSNAME, '--json'], { env, limitMs });
      servers.push({ what: 'pmibridge serve', p });
      const port = await jsonPort(p, 'pmibridge serve');
      if (side.kind === 'direct') {
        for (const g of split(0, n, opts.processes)) groups.push({ port, ...g });
      } else {
        // One relay per simulated node, each with a contiguous slice of the ranks. Clients send
        // their job-wide PMI_ID, so the relays map ids 1:1 (no --id-offset). --hold 0: a failure
        // ends the run at once instead of holding the session for reconnection.
        const slices = split(0, n, side.relays);
        const relays = slices.map((s, r) => {
          const rp = start(process.execPath, [ctx.cli, 'relay', '--upstream', port, '--listen', 'unix', '--sessions', String(s.conns), '--hold', '0', '--json'], { env, limitMs });
          servers.push({ what: `pmibridge relay ${r}`, p: rp });
          return rp;
        });
        const ports = await Promise.all(relays.map((rp, r) => jsonPort(rp, `pmibridge relay ${r}`)));
        slices.forEach((s, r) => groups.push({ port: ports[r] ?? '', ...s }));
      }
    }

    const wire = side.kind === 'direct' && side.pmi === 2 ? ['--pmi-version', '2'] : [];
    const procs = groups.map((g) =>
      start(client, ['--conns', String(g.conns), '--size', String(n), '--kvsname', KVSNAME, ...wire, '--out', outDir], {
        env: { ...env, PMI_PORT: g.port, PMI_ID: String(g.id) },
        limitMs,
      }),
    );
    await Promise.all(procs.map((p, i) => mustSucceed(`wire-up client ${i} (${sideName(side)}, ${n} ranks)`, p)));
    for (const s of servers) await mustSucceed(`${s.what} (${n} ranks)`, s.p);

    expectFiles ||= groups.length;
    const files = readdirSync(outDir).filter((f) => f.startsWith('wireup-') && f.endsWith('.json'));
    if (files.length !== expectFiles) throw new Error(`expected ${expectFiles} client results, found ${files.length}`);
    const rs = files.map((f) => JSON.parse(readFileSync(join(outDir, f), 'utf8')) as ClientFile);
    const t0 = Math.min(...rs.map((r) => r.start_ns));
    const end = (k: keyof ClientFile) => (Math.max(...rs.map((r) => r[k])) - t0) / 1e6;
    const gets = rs.reduce((a, r) => a + r.gets, 0);
    if (gets !== n * n) throw new Error(`expected ${n * n} gets, the clients made ${gets}`);
    return {
      putBarrierMs: end('put_barrier_ns'),
      getsMs: end('gets_ns'),
      finalBarrierMs: end('final_barrier_ns'),
      totalMs: end('finalize_ns'),
      meanGetUs: rs.reduce((a, r) => a + r.get_sum_ns, 0) / gets / 1000,
    };
  } finally {
    for (const s of servers) s.p.kill(); // no-op once exited; nothing is left behind on a failure
  }
}
