/**
 * Will the job's connections fit under our fd limit? Each rank holds fds here for the whole job:
 * its PMI connection (the PMI_FD channel, or the socket we accepted), two pipes with --label,
 * and two more with --relay (the relay's upstream socket and the server's end of it). A PMI_FD
 * channel or a pipe is made when the rank is spawned, so running out then is seen at once (see
 * launch.ts). An accepted connection is not: out of fds, the kernel's accept fails, libuv
 * closes the pending connection to make room and reports nothing, and the rank dies of a reset
 * connection ("killed by SIGPIPE") with no word of why. So such a job is refused up front.
 */
import { readdirSync } from 'node:fs';
import type { SpawnLimits } from './spawn-error.js';

/** fds for what is not per rank: listeners, the tap, files read while loading modules. */
const HEADROOM = 16;

export interface FdNeeds {
  readonly size: number;
  /** Ranks reach us by connecting (tcp, unix, --relay), not only through PMI_FD. */
  readonly connecting: boolean;
  readonly label: boolean;
  readonly relay: boolean;
}

/** Why the job cannot fit, or undefined when it can (or when we cannot tell). */
export function fdShortfall(needs: FdNeeds, limits: SpawnLimits): string | undefined {
  if (!needs.connecting) return undefined; // spawning finds out, at the rank that does not fit
  const limit = Number(limits.openFiles);
  if (!Number.isSafeInteger(limit)) return undefined; // "unlimited", or unknown
  let inUse: number;
  try {
    inUse = readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
  const perRank = 1 + (needs.label ? 2 : 0) + (needs.relay ? 2 : 0);
  const need = needs.size * perRank + inUse + HEADROOM;
  if (need <= limit) return undefined;
  const fit = Math.max(0, Math.floor((limit - inUse - HEADROOM) / perRank));
  return `cannot start ${needs.size} ranks: their connections need about ${need} open files here, and the fd limit is ${limit} (raise it with ulimit -n, or start at most ${fit} ranks)`;
}
