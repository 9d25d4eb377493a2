/**
 * The relay's KVS cache: `get` answers remembered for the current barrier epoch, shared by every
 * session of the relay (the ranks of one node), as hydra's proxy serves a node's ranks from its
 * keyval cache. Without it, the all-to-all business-card exchange (every rank gets every rank's
 * key: N² requests) crosses the relay hop N² times; with it, each key crosses once per relay and
 * the rest are answered on the node.
 *
 * Why this is safe against any PMI-1 upstream, not only pmibridge's server:
 * - Puts become visible at a barrier (PMI's contract: PMI_Barrier commits; hydra and pmibridge
 *   hold them until then). Between two barriers a key that was found keeps its value, so a
 *   remembered `rc=0` answer is the answer the upstream would give. Every completed barrier
 *   starts a new epoch and forgets everything.
 * - Only successful answers are kept: a key missing now may appear before the next barrier on a
 *   server that flushes puts early (hydra's proxy flushes at 999 pending puts).
 * - A put passing through the relay forgets that key at once (flux serves a rank its own pending
 *   puts before the barrier).
 * The epoch of a session is the number of barriers it completed; only a session at the cache's
 * epoch uses it (all sessions of a relay join at job start, so their counts agree).
 *
 * Misses for the same key are coalesced: while one session's `get` of a key is on its way
 * upstream, other sessions asking the same key wait for that answer instead of asking again —
 * with ranks walking the keys in the same order, N sessions would otherwise send N copies.
 *
 * Sans-I/O: plain data; the engine decides what to send.
 */
import type { SessionId } from './types.js';

export interface CacheStats {
  readonly epoch: number;
  /** Answers given from the cache. */
  readonly hits: number;
  /** Gets sent upstream because no answer was known. */
  readonly fetches: number;
  /** Gets that waited for another session's fetch of the same key. */
  readonly coalesced: number;
  readonly entries: number;
}

export class RelayKvsCache {
  private epochNo = 0;
  private readonly replies = new Map<string, string>();
  /**
   * The same answers by request line: ranks of one job send byte-identical get lines, so a hit
   * needs neither parsing nor a composed key (the hit path is the relay's hottest: N² gets).
   */
  private readonly byLine = new Map<string, string>();
  /** Key → sessions parked until the fetch of that key (by another session) is answered. */
  private readonly fetching = new Map<string, SessionId[]>();
  private hitCount = 0;
  private fetchCount = 0;
  private coalescedCount = 0;

  /** One string per (kvsname, key), unambiguous whatever bytes either holds. */
  static keyOf(kvsname: string, key: string): string {
    return `${kvsname.length}:${kvsname}${key}`;
  }

  get epoch(): number {
    return this.epochNo;
  }

  /** A session completed its `epoch`-th barrier: a newer epoch forgets every answer. */
  advance(epoch: number): void {
    if (epoch <= this.epochNo) return;
    this.epochNo = epoch;
    this.replies.clear();
    this.byLine.clear();
  }

  /** The answer to this exact request line, if remembered (counted as a hit). */
  hitLine(line: string): string | undefined {
    const r = this.byLine.get(line);
    if (r !== undefined) this.hitCount++;
    return r;
  }

  /** Remember a parsed request's answer also under its exact line. */
  rememberLine(line: string, reply: string): void {
    this.byLine.set(line, reply);
  }

  /** The remembered reply line (with its newline), counted as a hit. */
  hit(ck: string): string | undefined {
    const r = this.replies.get(ck);
    if (r !== undefined) this.hitCount++;
    return r;
  }

  /** Whether a fetch of this key is on its way; if so, park `session` on it. */
  park(ck: string, session: SessionId): boolean {
    const waiting = this.fetching.get(ck);
    if (!waiting) return false;
    waiting.push(session);
    this.coalescedCount++;
    return true;
  }

  /** A session sends this key's get upstream; others asking meanwhile will wait for it. */
  fetch(ck: string): void {
    this.fetchCount++;
    if (!this.fetching.has(ck)) this.fetching.set(ck, []);
  }

  /**
   * The fetched answer came (or the fetching session went away: reply undefined). Remember a
   * successful answer of the current epoch; return the sessions to wake, and whether they will
   * find the answer (if not, they must ask on their own).
   */
  settle(ck: string, reply: string | undefined, epoch: number): { readonly waiting: SessionId[]; readonly remembered: boolean } {
    const remembered = reply !== undefined && epoch === this.epochNo && reply.startsWith('cmd=get_result ') && RC_ZERO.test(reply);
    if (remembered) this.replies.set(ck, reply);
    const waiting = this.fetching.get(ck) ?? [];
    this.fetching.delete(ck);
    return { waiting, remembered };
  }

  /** A put of this key passed through: its answer may change before the next barrier. */
  forget(ck: string): void {
    if (this.replies.delete(ck)) this.byLine.clear(); // rare (a put between barriers): no index
  }

  stats(): CacheStats {
    return { epoch: this.epochNo, hits: this.hitCount, fetches: this.fetchCount, coalesced: this.coalescedCount, entries: this.replies.size };
  }
}

const RC_ZERO = /(^|\s)rc=0(\s|$)/;
