/**
 * `wrap --checkpoint`: a rank that may be checkpointed with CRIU while wrap stands in its launcher
 * slot. `criu dump` ends the rank with SIGKILL — all its parent sees — and `criu restore` brings it
 * back later, with the same pid but as another process's child. So a SIGKILL of a rank that has
 * not finalized PMI is not its end: wrap keeps the rank's session and its relay (the frozen
 * connection too: `restore --tcp-established` continues on it; a client that reconnects uses
 * PMI_PORT and PMI_ID, with `--hold` covering the gap), and ends when the session does: 0 once
 * the restored rank finalized, 137 (the SIGKILL) when the session closed without finalize — which
 * is what happens at once for a rank that really died, since its connection then closes (with
 * the default `--hold 0`).
 */
import type { RelayHost } from '../host/relay-host.js';
import { EXIT } from './exit-codes.js';
import { untilSessionEnds } from './wrap-session.js';

const KILLED = EXIT.SIGNAL_BASE + 9;

export interface CheckpointSlot {
  readonly host: RelayHost;
  readonly session: number;
  readonly rank: number;
  readonly pmiPort: string;
}

export function outliveDump(slot: CheckpointSlot, pid: number | undefined, stderr: NodeJS.WritableStream = process.stderr): Promise<number> {
  const state = slot.host.engine.sessionStates().find((s) => s.session === slot.session)?.state;
  if (state === 'closed') {
    stderr.write(`pmibridge wrap: rank ${slot.rank} (pid ${pid ?? '?'}) was killed by SIGKILL and its PMI connection closed: it died, it was not checkpointed\n`);
    return Promise.resolve(KILLED);
  }
  if (state === undefined || state === 'finalized') return Promise.resolve(KILLED); // its PMI part was over: just the kill
  stderr.write(
    `pmibridge wrap: rank ${slot.rank} (pid ${pid ?? '?'}) was killed by SIGKILL before it finalized PMI; --checkpoint: keeping its session ` +
      `for a restored process (criu restore --tcp-established goes on on its connection; a client that reconnects uses PMI_PORT=${slot.pmiPort} PMI_ID=${slot.session}). ` +
      'wrap ends when the session does.\n',
  );
  return untilSessionEnds({ host: slot.host, session: slot.session, who: `rank ${slot.rank} (killed, checkpoint?)`, failure: KILLED, stderr });
}
