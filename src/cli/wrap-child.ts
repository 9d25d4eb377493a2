/**
 * Start wrap's program as the rank and wait for it: its connection to wrap's relay is what
 * `--pmi` chose (see wrap.ts), its exit status becomes wrap's.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import type { RelayHost } from '../host/relay-host.js';
import { rankEnv } from '../launcher/rank-env.js';
import { signalChild } from '../util/signal-child.js';
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
  const child = spawn(prog, args, {
    stdio: conn.mode === 'fd' ? ['inherit', 'inherit', 'inherit', 'pipe'] : 'inherit',
    env,
  });
  if (conn.mode === 'fd') slot.host.attachClient(child.stdio[3] as Socket, { transport: 'fd', pmiid: slot.session, peer: `pid ${child.pid ?? '?'}` });
  const forward = (sig: NodeJS.Signals) => signalChild(child, sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    return await new Promise<number>((resolve) => {
      child.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'ENOENT' ? 'not found' : err.code === 'EACCES' ? 'not executable' : err.message;
        process.stderr.write(`pmibridge wrap: cannot start ${prog}: ${why}\n`);
        resolve(EXIT.CANNOT_START);
      });
      child.once('exit', (c, sig) => {
        if (sig === 'SIGKILL' && slot.afterKill) resolve(slot.afterKill(child.pid));
        else resolve(sig ? EXIT.SIGNAL_BASE + (osConstants.signals[sig] ?? 1) : (c ?? EXIT.FAILURE));
      });
    });
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}
