/**
 * Start wrap's program as the rank and wait for it: its connection to wrap's relay is what
 * `--pmi` chose (see wrap.ts), its exit status becomes wrap's.
 *
 * Unlike `run`'s ranks, the child stays in wrap's process group: whoever started wrap (hydra,
 * `run`) made wrap the leader of a group of its own and kills that group — with SIGKILL at the
 * end, which wrap could not pass on to a child in a group of its own. The signals wrap itself
 * is sent are passed to the child.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import type { RelayHost } from '../host/relay-host.js';
import { rankEnv } from '../launcher/rank-env.js';
import { signalChild } from '../util/signal-child.js';
import { onTermination, signalExitCode } from '../util/termination-signals.js';
import { readSpawnLimits, spawnFailure } from '../launcher/spawn-error.js';
import { EXIT } from './exit-codes.js';

export type WrapConnection =
  /** socketpair at fd 3 (PMI_FD), plus a fallback PMI_PORT (private Unix socket) and PMI_ID. */
  | { readonly mode: 'fd'; readonly fallbackPort: string }
  /** PMI_PORT (loopback TCP or a private Unix socket) and PMI_ID; no PMI_FD. */
  | { readonly mode: 'port'; readonly pmiPort: string };

export interface ChildSlot {
  readonly host: RelayHost;
  readonly session: number;
  readonly rank: number;
  readonly size: number;
  readonly conn: WrapConnection;
  /**
   * `--checkpoint`: the child may be dumped by CRIU, which kills it with SIGKILL and restores it
   * later as nobody's child of ours. Called when SIGKILL ended it before it finalized PMI; wrap's
   * status is then what this resolves to (wrap-checkpoint.ts).
   */
  readonly afterKill?: (pid: number | undefined) => Promise<number>;
}

export async function runChild(slot: ChildSlot, prog: string, args: readonly string[]): Promise<number> {
  const { conn } = slot;
  const env =
    conn.mode === 'fd'
      ? // PMI_PORT/PMI_ID next to PMI_FD: MPICH ignores them, pmibridge's client falls back to them.
        { ...rankEnv(process.env, slot.rank, slot.size, { mode: 'fd', fd: 3 }), PMI_PORT: conn.fallbackPort, PMI_ID: String(slot.session) }
      : rankEnv(process.env, slot.rank, slot.size, { mode: 'port', pmiPort: conn.pmiPort, pmiid: slot.session });
  const limits = readSpawnLimits(); // now: out of fds, /proc cannot be read to say which limit
  const cannotStart = (err: NodeJS.ErrnoException) => {
    process.stderr.write(`pmibridge wrap: ${spawnFailure(err, prog, limits)}\n`);
    return EXIT.CANNOT_START;
  };
  let child;
  try {
    child = spawn(prog, args, {
      stdio: conn.mode === 'fd' ? ['inherit', 'inherit', 'inherit', 'pipe'] : 'inherit',
      env,
    });
  } catch (err) {
    return cannotStart(err as NodeJS.ErrnoException); // what Node throws rather than reports (EPERM…)
  }
  // Not started (ENOENT, EACCES, EMFILE…; after EMFILE it has no stdio): the reason follows as an 'error' event.
  if (child.pid === undefined) return new Promise<number>((resolve) => child.once('error', (err) => resolve(cannotStart(err))));
  child.on('error', () => {}); // once started, only ChildProcess.kill() reports errors, which we do not use
  if (conn.mode === 'fd') slot.host.attachClient(child.stdio[3] as Socket, { transport: 'fd', pmiid: slot.session, peer: `pid ${child.pid}` });
  const started = child;
  const offTermination = onTermination((sig) => signalChild(started, sig));
  try {
    return await new Promise<number>((resolve) => {
      started.once('exit', (c, sig) => {
        if (sig === 'SIGKILL' && slot.afterKill) resolve(slot.afterKill(started.pid));
        else resolve(sig ? signalExitCode(sig) : (c ?? EXIT.FAILURE));
      });
    });
  } finally {
    offTermination();
  }
}
