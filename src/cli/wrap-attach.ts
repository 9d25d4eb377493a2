/**
 * `wrap --attach`: this slot's rank is not started by wrap. The user starts it by hand (under a
 * debugger, in another terminal) with the printed environment; it connects to wrap's relay over
 * loopback TCP, and wrap lasts as long as that rank's session does, as it would last as long as
 * its child. Other clients (wrong PMI_ID, another uid) are turned away and wrap keeps waiting.
 */
import type { RelayHost } from '../host/relay-host.js';
import { printAttach } from '../launcher/attach.js';
import { EXIT } from './exit-codes.js';
import { onTermination, signalExitCode } from '../util/termination-signals.js';

export interface AttachSlot {
  readonly host: RelayHost;
  readonly session: number;
  readonly rank: number;
  readonly size: number;
  /** The relay's loopback TCP PMI_PORT. */
  readonly pmiPort: string;
  readonly command: readonly string[];
}

/** Exit status: 0 once the rank finalized; 1 when its session ended without; 128+n on a signal. */
export function attachHandStarted(slot: AttachSlot, stderr: NodeJS.WritableStream = process.stderr): Promise<number> {
  return new Promise((resolve) => {
    const finish = (code: number, message?: string) => {
      off();
      offTermination();
      if (message) stderr.write(`pmibridge wrap: ${message}\n`);
      resolve(code);
    };
    const off = slot.host.onRelayEvent((e) => {
      if (e.type === 'finalized' && e.session === slot.session) finish(EXIT.OK);
      else if (e.type === 'session-closed' && e.session === slot.session) {
        // The upstream sees a failed rank either way (wrap closed, or it closed on us).
        finish(EXIT.FAILURE, `rank ${slot.rank} (started by hand) ended without PMI finalize: ${e.reason}`);
      }
    });
    // Interrupted while waiting: closing the relay (by our caller) shows the upstream a failed rank.
    const offTermination = onTermination((sig) => finish(signalExitCode(sig), `interrupted by ${sig} while waiting for rank ${slot.rank}`));
    printAttach(stderr, { rank: slot.rank, size: slot.size, pmiPort: slot.pmiPort, pmiid: slot.session, command: slot.command });
  });
}
