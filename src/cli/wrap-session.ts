/**
 * Wait for one wrap session to end when no child of ours tells us: the rank was started by hand
 * (`--attach`), or the child was killed by a checkpoint and lives on restored (`--checkpoint`).
 * The session's PMI outcome is then the only status there is: finalized → 0; closed without
 * finalize → `failure` with the reason on stderr; a signal to wrap → 128+n.
 */
import type { RelayHost } from '../host/relay-host.js';
import { EXIT } from './exit-codes.js';
import { onTermination, signalExitCode } from '../util/termination-signals.js';

export interface SessionWait {
  readonly host: RelayHost;
  readonly session: number;
  /** Who, in messages: `rank 2 (started by hand)`. */
  readonly who: string;
  /** Exit status when the session closes without finalize. */
  readonly failure: number;
  readonly stderr?: NodeJS.WritableStream;
}

export function untilSessionEnds(w: SessionWait): Promise<number> {
  const stderr = w.stderr ?? process.stderr;
  return new Promise((resolve) => {
    const finish = (code: number, message?: string) => {
      off();
      offTermination();
      if (message) stderr.write(`pmibridge wrap: ${message}\n`);
      resolve(code);
    };
    const off = w.host.onRelayEvent((e) => {
      if (e.type === 'finalized' && e.session === w.session) finish(EXIT.OK);
      // The upstream sees a failed rank either way (wrap closed it, or it closed on us).
      else if (e.type === 'session-closed' && e.session === w.session) finish(w.failure, `${w.who} ended without PMI finalize: ${e.reason}`);
    });
    // Interrupted while waiting: closing the relay (by our caller) shows the upstream a failed rank.
    const offTermination = onTermination((sig) => finish(signalExitCode(sig), `interrupted by ${sig} while waiting for ${w.who}`));
    // Already over (the events went by before we listened)?
    const state = w.host.engine.sessionStates().find((s) => s.session === w.session)?.state;
    if (state === 'finalized') finish(EXIT.OK);
    else if (state === 'closed') finish(w.failure, `${w.who} ended without PMI finalize`);
  });
}
