/**
 * Launch a job: start the embedded server, spawn N ranks with the environment hydra gives, forward
 * their output and our signals, and settle the job's status.
 *
 * Status rules (hydra's, see mpich-4.0.2-interop.md §4 "Lifecycle" and §7):
 * - success: every rank process exited 0, and every rank that started PMI finalized;
 * - PMI abort: the abort's exit code;
 * - a rank exits non-zero, is killed by a signal, or drops its PMI connection before finalize:
 *   the job fails at once with a one-line reason and the other ranks are killed (SIGTERM, then
 *   SIGKILL after a grace period), since they would otherwise wait forever in a barrier.
 * The first failure wins; later ones are consequences and only logged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import type { PmiAddress } from '../protocol/address.js';
import type { JobServer, JobServerOptions } from '../host/job-server.js';
import type { RelayHost } from '../host/relay-host.js';
import type { ObserverBus } from '../host/bus.js';
import type { JobStatus } from '../server/types.js';
import { signalChild } from '../util/signal-child.js';
import { labelStream } from './output-labeler.js';
import { printAttach } from './attach.js';
import { rankEnv, type RankConnection } from './rank-env.js';

export type PmiMode = 'fd' | 'tcp' | 'unix';

export interface LaunchOptions {
  readonly size: number;
  readonly command: readonly string[];
  readonly pmi: PmiMode;
  readonly label?: boolean;
  /** Do not start this rank: print how to start it by hand (debugger) and wait for it. */
  readonly attach?: number;
  /** Host for the TCP listener (loopback unless told otherwise). */
  readonly tcpHost?: string;
  readonly server?: Omit<JobServerOptions, 'size' | 'bus'>;
  readonly bus?: ObserverBus;
  /** Where --attach instructions and the one-line outcome go. */
  readonly stderr?: NodeJS.WritableStream;
  readonly env?: NodeJS.ProcessEnv;
  /** Grace period between SIGTERM and SIGKILL when tearing a failed job down. */
  readonly killGraceMs?: number;
  /**
   * Put a relay between the ranks and the server, which then listens only on its private Unix
   * socket. `holdMs` is the relay's hold time for a disconnected session (null: until the job ends).
   */
  readonly relay?: { readonly holdMs: number | null };
}

export interface LaunchResult extends JobStatus {
  readonly server: JobServer;
}

interface RankProcess {
  readonly rank: number;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive: boolean;
  output: Promise<void>[];
}

export async function launch(opts: LaunchOptions): Promise<LaunchResult> {
  const stderr = opts.stderr ?? process.stderr;
  const env = opts.env ?? process.env;
  const [prog, ...args] = opts.command;
  if (!prog) throw new TypeError('no program to launch');

  // The server's modules (engine, protocol, transports) are a good part of our start-up. With
  // PMI_FD the ranks do not need the server to exist when they start, only when they first
  // write, ~30 ms later (exec, the loader, MPI_Init up to its first PMI call): so they are
  // spawned first and the server is loaded while they start. A rank's channel buffers what it
  // writes until it is attached. A listener's PMI_PORT, though, must be known before spawning.
  const serverModule = import('../host/job-server.js');
  const newServer = async () => new (await serverModule).JobServer({ ...opts.server, size: opts.size, ...(opts.bus ? { bus: opts.bus } : {}) });
  const early = opts.pmi === 'fd' && opts.attach === undefined && !opts.relay;
  let server: JobServer | null = early ? null : await newServer();

  // With --relay the ranks talk to a relay, and only the relay talks to the server.
  let relay: RelayHost | null = null;
  if (opts.relay && server) {
    // Imported here: the relay's engine and host are start-up time that plain jobs do not need.
    const { RelayHost } = await import('../host/relay-host.js');
    const upstream = (await server.listen('private-unix')).address;
    relay = new RelayHost({ upstream: { kind: 'address', address: upstream }, holdMs: opts.relay.holdMs, bus: server.bus });
  }

  // A listener when ranks connect by address, or when a rank is started by hand: a debugger
  // (lldb) closes inherited fds, so an attached rank always uses PMI_PORT + PMI_ID.
  let pmiPort: string | undefined;
  if (server && (opts.pmi !== 'fd' || opts.attach !== undefined)) {
    const where: PmiAddress | 'private-unix' = opts.pmi === 'unix' ? 'private-unix' : { kind: 'tcp', host: opts.tcpHost ?? '127.0.0.1', port: 0 };
    pmiPort = (await (relay ?? server).listen(where)).pmiPort;
  }

  let failure: JobStatus | null = null;
  let settle!: () => void;
  const failed = new Promise<void>((resolve) => (settle = resolve));
  const ranks: RankProcess[] = [];
  const killGrace = opts.killGraceMs ?? 1000;

  const killOthers = () => {
    const victims = ranks.filter((r) => r.alive);
    for (const r of victims) signalRank(r, 'SIGTERM');
    if (victims.length) {
      setTimeout(() => {
        for (const r of victims) if (r.alive) signalRank(r, 'SIGKILL');
      }, killGrace).unref();
    }
  };

  const failJob = (status: JobStatus) => {
    if (failure) return;
    failure = status;
    server?.fail(status); // else told when it exists (below)
    killOthers();
    settle();
  };

  // PMI_FD channels, attached to the server (or relay) as soon as it exists.
  const channels: Array<{ rank: number; channel: Socket; peer: string }> = [];
  const attach = (to: JobServer, c: { rank: number; channel: Socket; peer: string }) => {
    if (relay) relay.attachClient(c.channel, { transport: 'fd', pmiid: c.rank, peer: c.peer });
    else to.attach(c.channel, { transport: 'fd', rank: c.rank, peer: c.peer });
  };

  for (let rank = 0; rank < opts.size; rank++) {
    if (rank === opts.attach) continue;
    const conn: RankConnection = opts.pmi === 'fd' ? { mode: 'fd', fd: 3 } : { mode: 'port', pmiPort: pmiPort as string };
    const out = opts.label ? 'pipe' : 'inherit';
    const child = spawn(prog, args, {
      // hydra forwards stdin to rank 0 only
      stdio: [rank === 0 ? 'inherit' : 'ignore', out, out, ...(opts.pmi === 'fd' ? (['pipe'] as const) : [])],
      env: rankEnv(env, rank, opts.size, conn),
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (err: NodeJS.ErrnoException) => {
        rp.alive = false; // never started: there is nothing to signal (see signalRank)
        const why = err.code === 'ENOENT' ? 'not found' : err.code === 'EACCES' ? 'not executable' : err.message;
        failJob({ ok: false, exitCode: 127, reason: `cannot start ${prog}: ${why}`, rank });
        resolve({ code: 127, signal: null });
      });
    });
    const rp: RankProcess = { rank, child, exited, alive: true, output: [] };
    ranks.push(rp);
    if (opts.label && child.stdout && child.stderr) {
      rp.output.push(labelStream(child.stdout, process.stdout, `[${rank}] `), labelStream(child.stderr, process.stderr, `[${rank}] `));
    }
    if (opts.pmi === 'fd') {
      const c = { rank, channel: child.stdio[3] as Socket, peer: `pid ${child.pid ?? '?'}` };
      if (server) attach(server, c);
      else {
        c.channel.on('error', ignore); // until attached: the server reports what happens after
        channels.push(c);
      }
    }
    void exited.then(({ code, signal }) => {
      rp.alive = false;
      if (code !== 0 || signal) failJob(exitStatus(rank, code, signal, ''));
    });
  }

  if (opts.attach !== undefined) printAttach(stderr, { rank: opts.attach, size: opts.size, pmiPort: pmiPort as string, command: opts.command });

  const onSignal = (sig: NodeJS.Signals) => {
    if (failure) {
      for (const r of ranks) if (r.alive) signalRank(r, 'SIGKILL'); // second signal: no more grace
      return;
    }
    for (const r of ranks) if (r.alive) signalRank(r, sig);
    failJob({ ok: false, exitCode: 128 + (osConstants.signals[sig] ?? 1), reason: `interrupted by ${sig}; sent it to the ranks` });
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);

  try {
    if (!server) {
      // In the order of the direct path: channels attached, then a failure seen meanwhile told.
      let s: JobServer;
      try {
        s = server = await newServer();
      } catch (err) {
        for (const r of ranks) if (r.alive) signalRank(r, 'SIGKILL'); // bad server options: no job
        throw err;
      }
      for (const c of channels.splice(0)) {
        c.channel.off('error', ignore);
        // Closed already: the rank closed PMI_FD without a word (a channel with input cannot
        // end before the input is read), as a program that is not an MPI rank does. A rank that
        // never spoke PMI counts for nothing; the server would only log the connection.
        if (c.channel.destroyed || c.channel.readableEnded) c.channel.destroy();
        else attach(s, c);
      }
      if (failure) s.fail(failure);
    }
    const job = server;

    // The engine's verdicts: abort, or a rank that dropped PMI. For a dropped connection, wait a
    // moment for that rank's exit status: "exited with code 5" says more than "closed its socket".
    void job.done.then(async (status) => {
      if (status.ok) return;
      const r = status.rank !== undefined ? ranks.find((p) => p.rank === status.rank) : undefined;
      if (r?.alive && /closed its PMI connection/.test(status.reason)) {
        const timeout = new Promise<null>((res) => setTimeout(() => res(null), 500).unref());
        const exit = await Promise.race([r.exited, timeout]);
        if (exit && (exit.code !== 0 || exit.signal)) return failJob(exitStatus(r.rank, exit.code, exit.signal, ' before finalizing PMI'));
      }
      failJob(status);
    });

    // Done when every spawned rank has exited and, with --attach, the hand-started rank is through.
    const allExited = Promise.all(ranks.map((r) => r.exited));
    const attached = opts.attach !== undefined ? attachedRankDone(job, opts.attach) : Promise.resolve();
    await Promise.race([Promise.all([allExited, attached]), failed]);
    // A rank's exit and the EOF on its PMI socket race in the event loop: let the sockets of
    // exited ranks close, so a rank that quit without finalize is seen as the failure it is.
    if (!failure) await Promise.race([job.ranksDisconnected(), failed, delay(2000)]);
    if (failure) await allExited; // killed ranks are reaped before we report
    await Promise.all(ranks.flatMap((r) => r.output));
    const status: JobStatus = failure ?? job.engine.finished ?? { ok: true, exitCode: 0, reason: `all ${opts.size} ranks exited 0` };
    return { ...status, server: job };
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    for (const c of channels) c.channel.destroy(); // only if the server never came
    await relay?.close();
    await server?.close();
  }
}

function signalRank(r: RankProcess, sig: NodeJS.Signals): void {
  signalChild(r.child, sig);
}

function ignore(): void {}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function exitStatus(rank: number, code: number | null, signal: NodeJS.Signals | null, when: string): JobStatus {
  if (signal) {
    return { ok: false, exitCode: 128 + (osConstants.signals[signal] ?? 1), reason: `rank ${rank} was killed by ${signal}${when}`, rank };
  }
  return { ok: false, exitCode: code ?? 1, reason: `rank ${rank} exited with code ${code ?? '?'}${when}`, rank };
}

/** Resolves when the attached rank finalized (or the job ended). */
function attachedRankDone(server: JobServer, rank: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      const state = server.engine.rankStates()[rank]?.state;
      if (state === 'finalized' || server.engine.finished) {
        unsubscribe();
        resolve();
      }
    };
    const unsubscribe = server.bus.subscribe((ev) => {
      if (ev.type === 'engine') check();
    });
    check();
  });
}
