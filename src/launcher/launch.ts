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
 * - a rank that cannot be started (program missing, out of fds or processes): the launch stops at
 *   once — every further rank would fail alike or make it worse — and the job fails with 127.
 * The first failure wins; later ones are consequences and only logged.
 *
 * Each rank leads a process group of its own (setsid, as hydra does), and signals go to the
 * whole group: a rank started through a wrapper script, or one that starts helpers, goes with
 * everything it started. The terminal's signals reach only us, so we pass them on: SIGINT,
 * SIGTERM, SIGHUP, SIGQUIT end the job; Ctrl-Z (SIGTSTP) stops the ranks with us, SIGCONT
 * resumes them. Rank 0 reads our stdin directly, as before (a tty it does not control: reading
 * it is no job-control matter).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import type { PmiAddress } from '../protocol/address.js';
import type { JobServer, JobServerOptions } from '../host/job-server.js';
import type { RelayHost } from '../host/relay-host.js';
import type { ObserverBus } from '../host/bus.js';
import type { JobStatus } from '../server/types.js';
import { leftoverGroups, signalGroup } from '../util/signal-child.js';
import { onTermination, signalExitCode } from '../util/termination-signals.js';
import { programProblem, readSpawnLimits, spawnFailure } from './spawn-error.js';
import { fdShortfall } from './fd-budget.js';
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
  /** The job's server; none when the job failed before it was needed (a rank could not start). */
  readonly server?: JobServer;
}

interface RankProcess {
  readonly rank: number;
  readonly child: ChildProcess;
  /** The rank's process group: its pid (it leads the group setsid made). */
  readonly pgid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive: boolean;
  output: Promise<void>[];
}

export async function launch(opts: LaunchOptions): Promise<LaunchResult> {
  const stderr = opts.stderr ?? process.stderr;
  const env = opts.env ?? process.env;
  const [prog, ...args] = opts.command;
  if (!prog) throw new TypeError('no program to launch');
  // Read now: once the ranks took every fd, /proc/self/limits cannot be opened to say which.
  const limits = readSpawnLimits();
  // The program first: missing, it is the one thing to say, however many ranks were asked for.
  const problem = programProblem(prog, env['PATH']);
  const found = problem === undefined && (prog.includes('/') || env['PATH'] !== undefined);
  if (problem) return { ok: false, exitCode: 127, reason: spawnFailure(Object.assign(new Error(problem), { code: problem }), prog, limits) };
  const short = fdShortfall({ size: opts.size, connecting: opts.pmi !== 'fd' || opts.attach !== undefined || Boolean(opts.relay), label: Boolean(opts.label), relay: Boolean(opts.relay) }, limits);
  if (short) return { ok: false, exitCode: 127, reason: short };

  let failure: JobStatus | null = null;
  let settle!: () => void;
  const failed = new Promise<void>((resolve) => (settle = resolve));
  const ranks: RankProcess[] = [];
  const killGrace = opts.killGraceMs ?? 1000;
  let server: JobServer | null = null;

  // Every rank's group, including those whose leader exited but left something running.
  const signalRanks = (sig: NodeJS.Signals) => {
    for (const r of ranks) if (r.alive) signalGroup(r.pgid, sig);
    for (const g of leftoverGroups(ranks.filter((r) => !r.alive).map((r) => r.pgid))) signalGroup(g, sig);
  };
  let killTimer: NodeJS.Timeout | undefined;
  const stopRanks = (sig: NodeJS.Signals) => {
    signalRanks(sig);
    killTimer ??= setTimeout(() => signalRanks('SIGKILL'), killGrace).unref();
  };

  // A failure ends the job: the ranks get `sig` (SIGTERM, or the signal we were sent), and
  // SIGKILL after the grace period, since they would otherwise wait forever in a barrier.
  const failJob = (status: JobStatus, sig: NodeJS.Signals = 'SIGTERM') => {
    if (failure) return;
    failure = status;
    server?.fail(status); // else told when it exists (below)
    stopRanks(sig);
    settle();
  };

  // From the start: a signal that comes while the listeners are set up must still remove them.
  const offTermination = onTermination((sig) => {
    if (failure) return signalRanks('SIGKILL'); // a second signal: no more grace
    failJob({ ok: false, exitCode: signalExitCode(sig), reason: `interrupted by ${sig}; sent it to the ranks` }, sig);
  });
  // Ctrl-Z stops us: stop the ranks (in groups the terminal does not know) with us, and resume
  // them with us. SIGSTOP, since a group without a parent in its session ignores SIGTSTP.
  const onStop = () => {
    for (const r of ranks) if (r.alive) signalGroup(r.pgid, 'SIGSTOP');
    process.kill(process.pid, 'SIGSTOP');
  };
  const onContinue = () => {
    for (const r of ranks) if (r.alive) signalGroup(r.pgid, 'SIGCONT');
  };
  process.on('SIGTSTP', onStop);
  process.on('SIGCONT', onContinue);

  // PMI_FD channels, attached to the server (or relay) as soon as it exists.
  const channels: Array<{ rank: number; channel: Socket; peer: string }> = [];
  let relay: RelayHost | null = null;
  try {
    // The server's modules (engine, protocol, transports) are a good part of our start-up. With
    // PMI_FD the ranks do not need the server to exist when they start, only when they first
    // write, ~30 ms later (exec, the loader, MPI_Init up to its first PMI call): so they are
    // spawned first and the server is loaded while they start. A rank's channel buffers what it
    // writes until it is attached. A listener's PMI_PORT, though, must be known before spawning.
    const serverModule = import('../host/job-server.js');
    serverModule.catch(ignore); // a job that fails to start never awaits it (and that is no error)
    const newServer = async () => new (await serverModule).JobServer({ ...opts.server, size: opts.size, ...(opts.bus ? { bus: opts.bus } : {}) });
    const early = opts.pmi === 'fd' && opts.attach === undefined && !opts.relay;
    if (!early) server = await newServer();

    // With --relay the ranks talk to a relay, and only the relay talks to the server.
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

    const attach = (to: JobServer, c: { rank: number; channel: Socket; peer: string }) => {
      if (relay) relay.attachClient(c.channel, { transport: 'fd', pmiid: c.rank, peer: c.peer });
      else to.attach(c.channel, { transport: 'fd', rank: c.rank, peer: c.peer });
    };
    let notStarted = false;
    const startFailed = (rank: number, err: NodeJS.ErrnoException) => {
      notStarted = true;
      failJob({ ok: false, exitCode: 127, reason: spawnFailure(err, prog, limits, rank, found), rank });
    };

    let startError: Promise<void> | undefined;
    for (let rank = 0; rank < opts.size && !failure; rank++) {
      if (rank === opts.attach) continue;
      const conn: RankConnection = opts.pmi === 'fd' ? { mode: 'fd', fd: 3 } : { mode: 'port', pmiPort: pmiPort as string };
      const out = opts.label ? 'pipe' : 'inherit';
      let child: ChildProcess;
      try {
        child = spawn(prog, args, {
          // hydra forwards stdin to rank 0 only
          stdio: [rank === 0 ? 'inherit' : 'ignore', out, out, ...(opts.pmi === 'fd' ? (['pipe'] as const) : [])],
          env: rankEnv(env, rank, opts.size, conn),
          detached: true, // its own session and process group: see the top of this file
        });
      } catch (err) {
        startFailed(rank, err as NodeJS.ErrnoException); // what Node throws rather than reports (EPERM…)
        break;
      }
      const pid = child.pid;
      if (pid === undefined) {
        // Not started (ENOENT, EACCES, EAGAIN, EMFILE…; after EMFILE it has no stdio either). The
        // reason comes as an 'error' event. Stop here: every further rank fails alike.
        startError = new Promise((resolve) => child.once('error', (err) => resolve(startFailed(rank, err))));
        break;
      }
      const rp: RankProcess = {
        rank,
        child,
        pgid: pid,
        alive: true,
        output: [],
        exited: new Promise((resolve) => {
          child.once('exit', (code, signal) => {
            rp.alive = false; // reaped: from now on its group number may be reused (leftoverGroups)
            resolve({ code, signal });
          });
        }),
      };
      child.on('error', ignore); // once started, only ChildProcess.kill() reports errors, which we do not use
      ranks.push(rp);
      if (opts.label && child.stdout && child.stderr) {
        rp.output.push(labelStream(child.stdout, process.stdout, `[${rank}] `), labelStream(child.stderr, process.stderr, `[${rank}] `));
      }
      if (opts.pmi === 'fd') {
        const c = { rank, channel: child.stdio[3] as Socket, peer: `pid ${pid}` };
        if (server) attach(server, c);
        else {
          c.channel.on('error', ignore); // until attached: the server reports what happens after
          channels.push(c);
        }
      }
      void rp.exited.then(({ code, signal }) => {
        if (code !== 0 || signal) failJob(exitStatus(rank, code, signal, ''));
      });
    }
    await startError;

    if (opts.attach !== undefined && !failure) printAttach(stderr, { rank: opts.attach, size: opts.size, pmiPort: pmiPort as string, command: opts.command });

    // A job whose ranks could not all start gets no server: out of fds, it could not even be
    // loaded, and there is nothing left to serve.
    if (!server && !notStarted) {
      // In the order of the direct path: channels attached, then a failure seen meanwhile told.
      let s: JobServer;
      try {
        s = server = await newServer();
      } catch (err) {
        signalRanks('SIGKILL'); // bad server options: no job
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
    void job?.done.then(async (status) => {
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
    const attached = opts.attach !== undefined && job ? attachedRankDone(job, opts.attach) : Promise.resolve();
    await Promise.race([Promise.all([allExited, attached]), failed]);
    // A rank's exit and the EOF on its PMI socket race in the event loop: let the sockets of
    // exited ranks close, so a rank that quit without finalize is seen as the failure it is.
    if (!failure && job) await Promise.race([job.ranksDisconnected(), failed, delay(2000)]);
    if (failure) {
      await allExited; // killed ranks are reaped before we report
      // and what they started is gone too: SIGKILL comes after the grace period
      await leftoversGone(ranks.map((r) => r.pgid), killGrace + 2000);
    }
    await Promise.all(ranks.flatMap((r) => r.output));
    const status: JobStatus = failure ?? job?.engine.finished ?? { ok: true, exitCode: 0, reason: `all ${opts.size} ranks exited 0` };
    return { ...status, ...(job ? { server: job } : {}) };
  } finally {
    offTermination();
    process.off('SIGTSTP', onStop);
    process.off('SIGCONT', onContinue);
    clearTimeout(killTimer);
    for (const c of channels) c.channel.destroy(); // only if the server never came
    await relay?.close();
    await server?.close();
  }
}

/** Wait until no group in `pgids` has a living member left, for at most `ms`. */
async function leftoversGone(pgids: readonly number[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  // A timer that holds the event loop: nothing else may, and the SIGKILL timer does not.
  while (leftoverGroups(pgids).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
}

function ignore(): void {}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function exitStatus(rank: number, code: number | null, signal: NodeJS.Signals | null, when: string): JobStatus {
  if (signal) {
    return { ok: false, exitCode: signalExitCode(signal), reason: `rank ${rank} was killed by ${signal}${when}`, rank };
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
