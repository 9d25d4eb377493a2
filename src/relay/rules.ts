/**
 * The relay's per-request rules as one table: (session phase, request kind) → the steps the
 * engine tries in order; the first step that applies answers, forwards or queues the request.
 * The engine (RelayEngine.request) and the README's reconnection table (rules-markdown.ts) both
 * read this table, so they cannot drift apart. Like h11's state machine: the shape is data; each
 * step is a small function in the engine.
 *
 * Kinds are wire-independent (kinds.ts): PMI-1 and PMI-2 sessions share these rules.
 */
import { KIND_NAMES, KINDS, type RequestKind } from './kinds.js';

/**
 * Where a session stands when a request comes, by precedence (the first that holds). `held` and
 * `closed` sessions have no client, so no requests: they are not phases.
 */
export type Phase = 'replaying-spawn' | 'in-spawn' | 'busy' | 'finalized' | 'ready';

export const PHASES: Readonly<Record<Phase, string>> = {
  'replaying-spawn':
    'a spawn block is being re-sent whose result was kept at a takeover (this line starts it, or an earlier one did)',
  'in-spawn': 'the lines of a spawn block are being forwarded, up to its `endcmd`',
  busy: 'the upstream handshake is not complete, or a request is in flight (PMI is lock-step: one at a time)',
  finalized: 'the upstream acknowledged `finalize`; its connection is closed',
  ready: 'none of the above: the upstream is free',
};

/**
 * Facts of a session that decide its phase. Invariants the precedence relies on (so the table
 * needs no rows for them): a finalized session has nothing in flight and no block open (nothing
 * is forwarded once finalized, and finalize itself is only forwarded from `ready`); `busy` by
 * handshake implies nothing in flight (nothing is forwarded before the handshake completes).
 */
export interface PhaseFacts {
  /** The lines of a re-sent block are being swallowed. */
  readonly swallowingSpawn: boolean;
  /** The reply kept at a takeover is a spawn block's result. */
  readonly spawnResultKept: boolean;
  /** Inside a block being forwarded (before its last endcmd). */
  readonly inSpawn: boolean;
  readonly opening: boolean;
  readonly inflight: boolean;
  readonly finalized: boolean;
}

export function phaseOf(f: PhaseFacts, kind: RequestKind): Phase {
  if (f.swallowingSpawn || (kind === 'spawn' && !f.inSpawn && f.spawnResultKept)) return 'replaying-spawn';
  if (f.inSpawn) return 'in-spawn';
  if (f.opening || f.inflight) return 'busy';
  if (f.finalized) return 'finalized';
  return 'ready';
}

export type Step =
  | 'swallow-spawn'
  | 'forward-block'
  | 'continue-block'
  | 'answer-handshake'
  | 'answer-from-session'
  | 'forget-cached-key'
  | 'ack-resent-put'
  | 'wait'
  | 'kept-reply'
  | 'refuse-finalized'
  | 'refuse-finalized-spawn'
  | 'cached-get'
  | 'forward';

export interface StepInfo {
  /** What the relay does (and when the step passes to the next). */
  readonly does: string;
  /** Why that is safe: the argument the rule rests on. */
  readonly why: string;
}

export const STEPS: Readonly<Record<Step, StepInfo>> = {
  'swallow-spawn': {
    does: 'swallows the line; the kept `spawn_result` answers the block’s last `endcmd`',
    why: 'the block was spawned already: forwarding it again would start its processes twice',
  },
  'forward-block': {
    does: 'forwards the line as part of the block; the reply is awaited after its last `endcmd`',
    why: 'the upstream reads a block whole: its lines must go on without waiting or interleaving',
  },
  'continue-block': {
    does: 'if the request in flight is this block’s previous segment: forwards the line (a further segment)',
    why: 'a multi-segment block is answered once, after its last segment',
  },
  'answer-handshake': {
    does: 'answers from the session (the upstream’s rank and size), or once the upstream handshake completes',
    why: 'a session has one upstream handshake: a second would bind a second rank',
  },
  'answer-from-session': {
    does: 'if this exact line was answered before (rc=0): answers it from the session, also while busy',
    why: 'its answer never changes during a job; a restarted rank must not queue its start-up behind the request its predecessor left in flight',
  },
  'forget-cached-key': {
    does: 'forgets the key in the KVS cache, then tries the next step',
    why: 'a server may serve a rank its own put before the barrier (flux): the cached answer may be stale',
  },
  'ack-resent-put': {
    does: 'if the client is catching up after a takeover and this is not the request of the kept reply: answers `put_result rc=0` (catching up implies its predecessor had this put acknowledged since the last `barrier_out` it received: same kvsname, key, value)',
    why: 'the value is in the KVS already; forwarding it again could undo a later writer’s value. Never for a live client: its puts, a repeated put of an older value included, always go upstream',
  },
  wait: {
    does: 'if this is the re-send of the request in flight at a takeover: it gets that reply when it comes; otherwise queued behind the request in flight (over 256 requests or 256 KiB: `E_FLOOD`, connection closed)',
    why: 'asking twice would be a second barrier or put upstream; a lock-step client has at most one request waiting',
  },
  'kept-reply': {
    does: 'if a reply was kept for this exact line: delivers it, once. Otherwise a read leaves it kept; anything else drops it (logged) and tries the next step',
    why: 'the predecessor never received the kept reply, so the identical re-send is that request; reads change nothing (a restarted MPICH rank reads `PMI_process_mapping` before it re-sends its barrier); a write means the client moved on',
  },
  'refuse-finalized': {
    does: 'answers `cmd=error rc=-1 msg=PMI_ID_<n>_already_finalized`',
    why: 'the upstream connection is closed; only a kept `finalize_ack` could still be collected (previous step)',
  },
  'refuse-finalized-spawn': {
    does: 'answers `cmd=spawn_result rc=-1 msg=PMI_ID_<n>_already_finalized`',
    why: 'the upstream connection is closed: the block’s lines cannot go there',
  },
  'cached-get': {
    does: 'if the session is at the cache’s barrier epoch and the get has no repeated attribute: answers from the KVS cache, waits for another session’s fetch of the key, or fetches it',
    why: 'between two barriers a found key keeps its value (kvs-cache.ts); a repeated attribute might be read differently upstream',
  },
  forward: {
    does: 'forwards it; the reply goes to this client (`abort`: none is awaited)',
    why: 'the relay answers itself only what the steps before prove it may; the rest is the upstream’s to answer',
  },
};

/** One row: in `phase`, requests of these kinds (`rest`: every kind not listed before) take `steps`. */
export interface RuleRow {
  readonly phase: Phase;
  readonly kinds: readonly RequestKind[] | 'any' | 'rest';
  readonly steps: readonly Step[];
}

const START_UP: readonly RequestKind[] = ['init', 'query'];

export const RULES: readonly RuleRow[] = [
  { phase: 'replaying-spawn', kinds: 'any', steps: ['swallow-spawn'] },
  // A takeover in the middle of a block leaves it open: the new client's lines complete it.
  { phase: 'in-spawn', kinds: 'any', steps: ['forward-block'] },

  { phase: 'busy', kinds: ['handshake'], steps: ['answer-handshake'] },
  { phase: 'busy', kinds: START_UP, steps: ['answer-from-session', 'wait'] },
  { phase: 'busy', kinds: ['kvs-put'], steps: ['forget-cached-key', 'ack-resent-put', 'wait'] },
  { phase: 'busy', kinds: ['spawn'], steps: ['continue-block', 'wait'] },
  { phase: 'busy', kinds: 'rest', steps: ['wait'] },

  { phase: 'finalized', kinds: ['handshake'], steps: ['answer-handshake'] },
  { phase: 'finalized', kinds: START_UP, steps: ['answer-from-session', 'kept-reply', 'refuse-finalized'] },
  { phase: 'finalized', kinds: ['kvs-put'], steps: ['forget-cached-key', 'ack-resent-put', 'kept-reply', 'refuse-finalized'] },
  { phase: 'finalized', kinds: ['spawn'], steps: ['refuse-finalized-spawn'] },
  { phase: 'finalized', kinds: 'rest', steps: ['kept-reply', 'refuse-finalized'] },

  { phase: 'ready', kinds: ['handshake'], steps: ['answer-handshake'] },
  { phase: 'ready', kinds: START_UP, steps: ['answer-from-session', 'kept-reply', 'forward'] },
  { phase: 'ready', kinds: ['kvs-put'], steps: ['forget-cached-key', 'ack-resent-put', 'kept-reply', 'forward'] },
  { phase: 'ready', kinds: ['kvs-get'], steps: ['kept-reply', 'cached-get', 'forward'] },
  // A block does not look at a kept reply (it neither collects nor voids it).
  { phase: 'ready', kinds: ['spawn'], steps: ['forward-block'] },
  { phase: 'ready', kinds: 'rest', steps: ['kept-reply', 'forward'] },
];

/** The kinds a row covers, `rest` resolved against the rows of its phase before it. */
export function rowKinds(row: RuleRow): readonly RequestKind[] {
  if (row.kinds === 'any') return KIND_NAMES;
  if (row.kinds !== 'rest') return row.kinds;
  const before = new Set<RequestKind>();
  for (const r of RULES) {
    if (r === row) break;
    if (r.phase === row.phase && typeof r.kinds !== 'string') for (const k of r.kinds) before.add(k);
  }
  return KIND_NAMES.filter((k) => !before.has(k));
}

/** The lookup the engine uses: every (phase, kind) exactly once, checked when the module loads. */
const TABLE = (() => {
  const table = {} as Record<Phase, Partial<Record<RequestKind, readonly Step[]>>>;
  for (const phase of Object.keys(PHASES) as Phase[]) table[phase] = {};
  for (const row of RULES) {
    for (const kind of rowKinds(row)) {
      if (table[row.phase][kind]) throw new Error(`relay rules: ${row.phase}/${kind} has two rows`);
      table[row.phase][kind] = row.steps;
    }
  }
  for (const phase of Object.keys(PHASES) as Phase[]) {
    for (const kind of KIND_NAMES) if (!table[phase][kind]) throw new Error(`relay rules: no row for ${phase}/${kind}`);
  }
  return table as Readonly<Record<Phase, Readonly<Record<RequestKind, readonly Step[]>>>>;
})();

export function stepsFor(phase: Phase, kind: RequestKind): readonly Step[] {
  return TABLE[phase][kind];
}

/**
 * The catch-up transition (replay.ts), applied to every request but the lines of a replayed
 * block: a takeover starts it; a request of a kind that does not keep it ends it — unless it is a
 * put its predecessor had acknowledged since its last received barrier_out (`resentPut`).
 */
export function endsCatchUp(kind: RequestKind, resentPut: boolean): boolean {
  return !KINDS[kind].keepsCatchUp && !(kind === 'kvs-put' && resentPut);
}
