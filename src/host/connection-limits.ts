/**
 * Who may hold how many of the server's connections, and for how long without saying who it is.
 *
 * Every connection costs a file descriptor, and a flood of them up to the process's fd limit
 * would stop real ranks from connecting until it ends. The rules, in the order a new connection
 * meets them:
 * 1. Per peer (a uid for local peers, an address for remote ones) and in total, at most
 *    `maxPerPeer` and `maxTotal` connections.
 * 2. At either limit, the oldest connection that has not identified itself yet (no `initack` or
 *    `init`) — of that peer, or of anyone for the total — is closed to make room: a real rank
 *    identifies in its first round trip, so it is never the one evicted by a flood that it
 *    arrives in, and it always gets in. Only when there is nobody to evict is the new one refused.
 * 3. A connection that has not identified itself within `identifyTimeoutMs` is closed.
 *
 * Sans-I/O: the host says what happened and when (`now` in ms), and closes what it is told to.
 * Connections handed over by a launcher (PMI_FD channels) are not counted: they are ranks.
 */

export interface ConnectionLimitOptions {
  readonly maxTotal: number;
  readonly maxPerPeer: number;
  /** null: wait forever. */
  readonly identifyTimeoutMs: number | null;
}

export type Admission =
  | { readonly ok: true; readonly evict: readonly Eviction[] }
  | { readonly ok: false; readonly msg: string; readonly reason: string };

export interface Eviction {
  readonly id: number;
  readonly msg: string;
  readonly reason: string;
}

interface Entry {
  readonly peer: string;
  readonly since: number;
}

export class ConnectionLimits {
  /** Every counted connection, by id. */
  private readonly open = new Map<number, Entry>();
  /** Counted connections not identified yet, oldest first (Map keeps insertion order). */
  private readonly unidentified = new Map<number, Entry>();
  /** The same, per peer: finding a peer's oldest is then no walk over everyone else's. */
  private readonly unidentifiedOf = new Map<string, Map<number, Entry>>();
  private readonly perPeer = new Map<string, number>();

  constructor(readonly opts: ConnectionLimitOptions) {
    for (const [k, v] of Object.entries({ maxTotal: opts.maxTotal, maxPerPeer: opts.maxPerPeer })) {
      if (!Number.isInteger(v) || v < 1) throw new TypeError(`${k} must be a positive integer, got ${v}`);
    }
  }

  get size(): number {
    return this.open.size;
  }

  get unidentifiedCount(): number {
    return this.unidentified.size;
  }

  /** May a new connection from `peer` (described as `who` in messages) be served? */
  admit(id: number, peer: string, who: string, now: number): Admission {
    const evict: Eviction[] = [];
    if ((this.perPeer.get(peer) ?? 0) >= this.opts.maxPerPeer) {
      const victim = this.oldestUnidentified(peer);
      if (victim === undefined) {
        const max = this.opts.maxPerPeer;
        return { ok: false, msg: `too_many_connections_from_${who.replace(/\s+/g, '_')}_limit_${max}`, reason: `${who} already holds ${max} connections, the limit per peer (raise it with --max-connections-per-peer)` };
      }
      evict.push(this.evict(victim, `${who} opened more than ${this.opts.maxPerPeer} connections (the limit per peer); its oldest one that had not sent initack or init was closed to make room`));
    }
    if (this.open.size >= this.opts.maxTotal) {
      const victim = this.oldestUnidentified();
      if (victim === undefined) {
        const max = this.opts.maxTotal;
        return { ok: false, msg: `too_many_connections_limit_${max}`, reason: `the server holds ${max} connections, its limit, and every one is a rank (raise it with --max-connections)` };
      }
      evict.push(this.evict(victim, `the server holds ${this.opts.maxTotal} connections, its limit; the oldest one that had not sent initack or init was closed to make room`));
    }
    const entry = { peer, since: now };
    this.open.set(id, entry);
    this.unidentified.set(id, entry);
    let mine = this.unidentifiedOf.get(peer);
    if (!mine) this.unidentifiedOf.set(peer, (mine = new Map<number, Entry>()));
    mine.set(id, entry);
    this.perPeer.set(peer, (this.perPeer.get(peer) ?? 0) + 1);
    return { ok: true, evict };
  }

  /** The connection identified itself (it is a rank now): no longer evictable, no timeout. */
  identified(id: number): void {
    const e = this.unidentified.get(id);
    if (e) this.forget(id, e);
  }

  isUnidentified(id: number): boolean {
    return this.unidentified.has(id);
  }

  /** The connection is gone or being closed; idempotent. */
  release(id: number): void {
    const e = this.open.get(id);
    if (!e) return;
    this.open.delete(id);
    this.forget(id, e);
    const n = (this.perPeer.get(e.peer) ?? 1) - 1;
    if (n > 0) this.perPeer.set(e.peer, n);
    else this.perPeer.delete(e.peer);
  }

  /** Connections that have been unidentified for `identifyTimeoutMs` or longer; released. */
  expired(now: number): Eviction[] {
    const limit = this.opts.identifyTimeoutMs;
    if (limit === null) return [];
    const out: Eviction[] = [];
    for (const [id, e] of this.unidentified) {
      if (now - e.since < limit) break; // oldest first: the rest are younger
      const s = formatSeconds(limit);
      out.push({ id, msg: `no_initack_or_init_within_${s}`, reason: `it sent no valid initack or init within ${s} of connecting (--identify-timeout)` });
      this.release(id);
    }
    return out;
  }

  private forget(id: number, e: Entry): void {
    this.unidentified.delete(id);
    const mine = this.unidentifiedOf.get(e.peer);
    mine?.delete(id);
    if (mine?.size === 0) this.unidentifiedOf.delete(e.peer);
  }

  private oldestUnidentified(peer?: string): number | undefined {
    const from = peer === undefined ? this.unidentified : this.unidentifiedOf.get(peer);
    for (const id of from?.keys() ?? []) return id;
    return undefined;
  }

  private evict(id: number, reason: string): Eviction {
    this.release(id);
    return { id, msg: 'closed_to_make_room_identify_with_initack_or_init_at_once', reason };
  }
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
