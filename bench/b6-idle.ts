/**
 * B6 — scale: 10,000 idle client connections held by `pmibridge serve`, and by `pmibridge relay`
 * in front of it, on Unix sockets. Goals (absolute): memory ≤ 4 KiB per connection, accept rate
 * ≥ 1,000 connections/s. The C epoll server (bench/baseline/pmi_echo_server.c) held to the same
 * clients is shown beside the server for comparison; beside the relay, the server's own figure.
 *
 * - Clients: one process (bench/baseline/pmi_idle_client.c) opens the connections as fast as they
 *   are accepted, sends `initack` + `init` on each, and says when every reply has arrived; it then
 *   holds them idle until told to finalize them all (so the server and relay exit 0, checked).
 * - Accept rate: connections / seconds from its first connect to the last init reply (accept,
 *   handshake and init, all of it).
 * - Memory: VmRSS growth of the measured process (/proc/PID/status) from listening, idle, to all
 *   connections up and idle for half a second, divided by the connections. It includes what the
 *   first connections load once (JIT-compiled code, modules loaded on first use) and V8's heap
 *   growth steps, so it is an upper bound; the clients come in two halves, and the growth over
 *   the second half alone (the marginal cost) is in the note. Kernel socket buffers are not in
 *   RSS, for any of the processes.
 * - The relay holds two sockets per session (client, and its own upstream connection). The
 *   descriptor hard limit (RLIMIT_NOFILE, not raisable without CAP_SYS_RESOURCE) may cap its
 *   sessions below 10,000; the figure's name gives the number used.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envWithoutPmi, start, type Started } from './lib/proc.js';
import { median } from './lib/stats.js';
import { figure, type BenchContext, type Benchmark, type Goal } from './lib/types.js';

type Target = 'serve' | 'c' | 'relay';

interface IdleResult {
  /** KiB of RSS per connection. */
  readonly kibPerConn: number;
  /** The same over the second half of the connections only (the marginal cost, once warm). */
  readonly marginalKib: number;
  /** Connections accepted and handshaken (initack + init) per second. */
  readonly acceptPerS: number;
}

const TARGET_CONNS = 10_000;
const LIMIT_MS = 120_000;
/** Descriptors a process needs besides its connections (stdio, listeners, epoll, Node's own). */
const FD_SLACK = 64;
const MEMORY_GOAL: Goal = { op: '<=', value: 4 };
const ACCEPT_GOAL: Goal = { op: '>=', value: 1000 };

/** RLIMIT_NOFILE's hard limit, which every process here can raise its soft limit to. */
function hardFdLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const hard = line?.trim().split(/\s+/)[4];
  return hard === undefined || hard === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(hard);
}

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function mustSucceed(what: string, p: Started): Promise<void> {
  const e = await p.exited;
  if (e.code !== 0) throw new Error(`${what} failed (code ${e.code}, signal ${e.signal}): ${e.stderr.slice(-1500)}`);
}

function portOf(jsonLine: string): string {
  const port = (JSON.parse(jsonLine) as { listeners?: Array<{ PMI_PORT?: string }> }).listeners?.[0]?.PMI_PORT;
  if (!port) throw new Error(`no listener in ${jsonLine}`);
  return port;
}

/** One run: a fresh server (and relay), `conns` idle clients, the measured process's figures. */
async function idleRun(ctx: BenchContext, target: Target, conns: number): Promise<IdleResult> {
  const client = await ctx.tools.cc('pmi_idle_client');
  const env = envWithoutPmi();
  const dir = mkdtempSync(join(ctx.tmp, 'idle-'));
  const started: Started[] = [];
  const launch = (cmd: string, args: readonly string[], extraEnv: NodeJS.ProcessEnv = {}) => {
    const p = start(cmd, args, { env: { ...env, ...extraEnv }, limitMs: LIMIT_MS });
    started.push(p);
    return p;
  };
  try {
    let server: Started;
    let port: string;
    if (target === 'c') {
      const echo = await ctx.tools.cc('pmi_echo_server');
      const sock = join(dir, 'echo.sock');
      // Node raises its soft descriptor limit to the hard one by itself; the C server does not.
      server = launch('sh', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', echo, '--size', String(conns), '--unix', sock]);
      await server.waitForLine(/^ready$/);
      port = sock;
    } else {
      server = launch(process.execPath, [ctx.cli, 'serve', '--size', String(conns), '--listen', 'unix', '--json']);
      port = portOf(await server.waitForLine(/^\{/));
    }
    let relay: Started | null = null;
    if (target === 'relay') {
      relay = launch(process.execPath, [ctx.cli, 'relay', '--upstream', port, '--listen', 'unix', '--sessions', String(conns), '--hold', '0', '--json']);
      port = portOf(await relay.waitForLine(/^\{/));
    }
    const measured = (relay ?? server).child.pid;
    if (measured === undefined) throw new Error('no pid for the measured process');
    await sleep(300); // let start-up settle (the listener just printed its address)
    const before = rssKiB(measured);
    // Two client processes, one after the other, each opening half: the RSS in between gives
    // the marginal cost of the second half too.
    const half = Math.floor(conns / 2);
    const first = launch(client, ['--conns', String(half), '--first-id', '0'], { PMI_PORT: port });
    const s1 = Number((await first.waitForLine(/^up \d+ /, LIMIT_MS)).split(' ')[2]);
    await sleep(300);
    const mid = rssKiB(measured);
    const second = launch(client, ['--conns', String(conns - half), '--first-id', String(half)], { PMI_PORT: port });
    const s2 = Number((await second.waitForLine(/^up \d+ /, LIMIT_MS)).split(' ')[2]);
    await sleep(500); // idle: what is held, not what is in flight
    const after = rssKiB(measured);
    for (const c of [first, second]) c.child.kill('SIGUSR1'); // finalize them all
    await mustSucceed('pmi_idle_client (first half)', first);
    await mustSucceed('pmi_idle_client (second half)', second);
    if (relay) await mustSucceed(`pmibridge relay (${conns} sessions)`, relay);
    await mustSucceed(target === 'c' ? `pmi_echo_server (${conns} ranks)` : `pmibridge serve (${conns} ranks)`, server);
    return { kibPerConn: (after - before) / conns, marginalKib: (after - mid) / (conns - half), acceptPerS: conns / (s1 + s2) };
  } finally {
    for (const p of started) p.kill(); // no-ops once they exited
  }
}

export const benchmark: Benchmark = {
  id: 'B6',
  title: '10,000 idle connections: memory and accept rate, server and relay (Unix sockets)',
  async run(ctx) {
    const runs = ctx.quick ? 1 : 3;
    const hard = hardFdLimit();
    const serverConns = Math.min(TARGET_CONNS, hard - FD_SLACK);
    const relayConns = Math.min(TARGET_CONNS, Math.floor((hard - FD_SLACK) / 2));
    if (serverConns < 1000) ctx.skip(`RLIMIT_NOFILE hard limit ${hard} is too low for a scale test`);
    const capped = relayConns < TARGET_CONNS ? `; RLIMIT_NOFILE hard limit ${hard} caps the relay (2 sockets per session) at ${relayConns}` : '';
    const out: Record<Target, IdleResult[]> = { serve: [], c: [], relay: [] };
    const targets: Target[] = ['serve', 'c', 'relay'];
    for (let r = 0; r < runs; r++) {
      for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
        const n = t === 'relay' ? relayConns : serverConns;
        ctx.log(`B6 run ${r + 1}/${runs}: ${n} idle connections to ${t === 'c' ? 'the C epoll server' : t === 'serve' ? 'pmibridge serve' : 'pmibridge relay → serve'}`);
        out[t].push(await idleRun(ctx, t, n));
      }
    }
    const mem = (t: Target) => median(out[t].map((x) => x.kibPerConn));
    const rate = (t: Target) => median(out[t].map((x) => x.acceptPerS));
    const marginal = (t: Target) => median(out[t].map((x) => x.marginalKib)).toFixed(2);
    const memNote = (t: Target, ref: Target) =>
      `VmRSS growth (listening, idle → all connections up and idle 0.5 s) / connections; includes one-off first-use costs and heap growth; over the second half only: ${marginal(t)} KiB/conn (baseline: ${marginal(ref)}); goal absolute, baseline for comparison`;
    const rateNote = 'connections / seconds from the first connect to the last init reply (accept + initack + init), one C client process; goal absolute';
    return [
      figure({ name: `B6 memory per idle connection, pmibridge serve, ${serverConns} conns`, value: mem('serve'), unit: 'KiB/conn', baseline: mem('c'), baselineName: 'C epoll server', goal: MEMORY_GOAL, runs, note: memNote('serve', 'c') }),
      figure({ name: `B6 accept rate, pmibridge serve, ${serverConns} conns`, value: rate('serve'), unit: 'conn/s', baseline: rate('c'), baselineName: 'C epoll server', goal: ACCEPT_GOAL, runs, note: rateNote }),
      figure({ name: `B6 memory per idle session, pmibridge relay, ${relayConns} sessions`, value: mem('relay'), unit: 'KiB/conn', baseline: mem('serve'), baselineName: 'pmibridge serve', goal: MEMORY_GOAL, runs, note: `${memNote('relay', 'serve')}; the relay holds a client and an upstream socket per session${capped}` }),
      figure({ name: `B6 accept rate, pmibridge relay, ${relayConns} sessions`, value: rate('relay'), unit: 'conn/s', baseline: rate('serve'), baselineName: 'pmibridge serve', goal: ACCEPT_GOAL, runs, note: `${rateNote}; each session also opens and handshakes its upstream connection${capped}` }),
    ];
  },
};
