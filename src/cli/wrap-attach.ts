/**
 * `wrap --attach`: this slot's rank is not started by wrap. The user starts it by hand (under a
 * debugger, in another terminal) with the printed environment; it connects to wrap's relay over
 * loopback TCP, and wrap lasts as long as that rank's session does, as it would last as long as
 * its child. Other clients (wrong PMI_ID, another uid) are turned away and wrap keeps waiting.
 */
import type { RelayHost } from '../host/relay-host.js';
import { printAttach } from '../launcher/attach.js';
import { EXIT } from './exit-codes.js';
import { untilSessionEnds } from './wrap-session.js';

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
  const done = untilSessionEnds({ host: slot.host, session: slot.session, who: `rank ${slot.rank} (started by hand)`, failure: EXIT.FAILURE, stderr });
  printAttach(stderr, { rank: slot.rank, size: slot.size, pmiPort: slot.pmiPort, pmiid: slot.session, command: slot.command });
  return done;
}
