/**
 * What a client request *is*, whatever wire carried it: the relay's rules (rules.ts) are written
 * per kind, so that a PMI-1 line and a PMI-2 frame asking the same thing meet the same rule.
 *
 * Only names are mapped here; attributes (a put's kvsname/key/value, a get's cache key) are read by
 * the engine, because they are spelled differently on each wire.
 */

export type RequestKind =
  | 'handshake'
  | 'init'
  | 'query'
  | 'kvs-put'
  | 'kvs-get'
  | 'barrier'
  | 'finalize'
  | 'abort'
  | 'name-publish'
  | 'name-lookup'
  | 'spawn'
  | 'other';

export interface KindInfo {
  /**
   * Changes nothing upstream: it may pass a kept reply without voiding it (a restarted MPICH rank
   * reads PMI_process_mapping before it re-sends its barrier).
   */
  readonly read: boolean;
  /**
   * Part of a client's start-up (or a read): it does not end a takeover's catch-up, because a
   * restarted rank re-runs its start-up before it re-sends anything (replay.ts).
   */
  readonly keepsCatchUp: boolean;
  readonly meaning: string;
}

/** In the order the README lists them. */
export const KINDS: Readonly<Record<RequestKind, KindInfo>> = {
  handshake: { read: false, keepsCatchUp: true, meaning: 'binds the connection to its session' },
  init: { read: false, keepsCatchUp: true, meaning: 'starts PMI (PMI-2 clients too: `cmd=init pmi_version=2` is a PMI-1 line)' },
  query: { read: true, keepsCatchUp: true, meaning: 'a question whose answer never changes during a job' },
  'kvs-put': { read: false, keepsCatchUp: false, meaning: 'stores a key (visible after the next barrier)' },
  'kvs-get': { read: true, keepsCatchUp: true, meaning: 'reads a key' },
  barrier: { read: false, keepsCatchUp: false, meaning: 'barrier of every rank; commits the puts' },
  finalize: { read: false, keepsCatchUp: false, meaning: 'leaves the job' },
  abort: { read: false, keepsCatchUp: false, meaning: 'ends the job; no reply comes' },
  'name-publish': { read: false, keepsCatchUp: false, meaning: 'name service: publish or unpublish' },
  'name-lookup': { read: true, keepsCatchUp: true, meaning: 'name service: look a name up' },
  spawn: { read: false, keepsCatchUp: false, meaning: 'spawns processes (PMI-1: a multi-line `mcmd=spawn` block)' },
  other: { read: false, keepsCatchUp: false, meaning: 'anything else, unparsable lines included: forwarded as a write' },
};

export const KIND_NAMES = Object.keys(KINDS) as RequestKind[];

/**
 * The internal name of a PMI-1 multi-line block (any line starting `mcmd=`, as hydra and our server
 * read it). Not 'spawn': a single-line `cmd=spawn` is an ordinary (unknown) command with one reply.
 */
export const BLOCK = 'mcmd';

/**
 * PMI-1 command names (`cmd=<name>`; BLOCK for `mcmd=` lines). A name not listed is `other`: the
 * conservative kind (a write) — it ends a catch-up and voids a kept reply.
 */
export const PMI1_KINDS: ReadonlyMap<string, RequestKind> = new Map<string, RequestKind>([
  ['initack', 'handshake'],
  ['init', 'init'],
  ['get_maxes', 'query'],
  ['get_appnum', 'query'],
  ['get_my_kvsname', 'query'],
  ['get_universe_size', 'query'],
  ['put', 'kvs-put'],
  ['get', 'kvs-get'],
  ['barrier_in', 'barrier'],
  ['finalize', 'finalize'],
  ['abort', 'abort'],
  ['publish_name', 'name-publish'],
  ['unpublish_name', 'name-publish'],
  ['lookup_name', 'name-lookup'],
  [BLOCK, 'spawn'],
]);

/**
 * PMI-2 command names, for when PMI-2 frames reach the relay (they do not yet). `cmd=init
 * pmi_version=2` before them is a PMI-1 line (kind init). The node attributes are `other` until
 * their rules are decided: info-getnodeattr with wait=TRUE blocks, so it is not a plain read.
 */
export const PMI2_KINDS: ReadonlyMap<string, RequestKind> = new Map<string, RequestKind>([
  ['fullinit', 'handshake'],
  ['job-getid', 'query'],
  ['info-getjobattr', 'query'],
  ['kvs-put', 'kvs-put'],
  ['kvs-get', 'kvs-get'],
  ['kvs-fence', 'barrier'],
  ['finalize', 'finalize'],
  ['abort', 'abort'],
  ['name-publish', 'name-publish'],
  ['name-unpublish', 'name-publish'],
  ['name-lookup', 'name-lookup'],
  ['spawn', 'spawn'],
  ['info-putnodeattr', 'other'],
  ['info-getnodeattr', 'other'],
]);

export function pmi1Kind(cmd: string): RequestKind {
  return PMI1_KINDS.get(cmd) ?? 'other';
}

export function pmi2Kind(cmd: string): RequestKind {
  return PMI2_KINDS.get(cmd) ?? 'other';
}
