/**
 * What a new observer needs before the live stream: every rank's (or relay session's) state, the
 * last command it sent and since when, barrier progress, and how many keys the KVS holds.
 * Built only from tap events, so the snapshot always agrees with the stream.
 */
import type { TapEvent } from './event.js';

export interface RankView {
  rank: number | null;
  session: number | null;
  state: string;
  lastCmd: string;
  /** ns (decimal string) when lastCmd was sent */
  since: string;
}

export interface TapSnapshot {
  readonly ranks: RankView[];
  readonly barrier: { epoch: number; entered: number; size: number };
  readonly kvsKeys: number;
  readonly finished: unknown;
}

/**
 * Distinct keys of live puts remembered for the KVS count between barriers (a relay, which never
 * sees the upstream's count, has only these). Past it the count stops growing; a completed
 * barrier's count (the server's own) replaces it.
 */
export const MAX_COUNTED_KEYS = 65_536;

const STATE_OF: Readonly<Record<string, string>> = {
  bound: 'connected',
  initialized: 'initialized',
  finalized: 'finalized',
  'rank-failed': 'failed',
  held: 'held',
  stalled: 'stalled',
  resumed: 'connected',
  'taken-over': 'connected',
  handshaken: 'connected',
  'session-opened': 'connecting',
  'hold-expired': 'failed',
  'session-closed': 'closed',
  aborted: 'aborted',
};

export class TapState {
  private readonly views = new Map<string, RankView>();
  /** A relay session's view, once merged into its rank's: events naming only the session find it. */
  private readonly viewOfSession = new Map<number, string>();
  private barrier = { epoch: 0, entered: 0, size: 0 };
  private kvsKeys = 0;
  private readonly putKeys = new Set<string>();
  private finished: unknown = null;

  private view(rank: number | undefined, session: number | undefined): RankView | null {
    if (rank === undefined && session === undefined) return null;
    const key = rank !== undefined ? `r${rank}` : (this.viewOfSession.get(session as number) ?? `s${session}`);
    let v = this.views.get(key);
    if (!v && rank !== undefined && session !== undefined) {
      // a relay session learns its rank later: merge its view
      v = this.views.get(`s${session}`);
      if (v) this.views.delete(`s${session}`);
    }
    if (rank !== undefined && session !== undefined) this.viewOfSession.set(session, key);
    if (!v) {
      v = { rank: rank ?? null, session: session ?? null, state: 'connecting', lastCmd: '', since: '0' };
    }
    if (rank !== undefined) v.rank = rank;
    if (session !== undefined) v.session = session;
    this.views.set(key, v);
    return v;
  }

  apply(ev: TapEvent): void {
    if (ev.kind === 'line') {
      const v = this.view(ev.rank, ev.session);
      if (v && (ev.leg === 'client->server' || ev.leg === 'client->relay')) {
        v.lastCmd = ev.cmd;
        v.since = ev.t;
        if (ev.cmd === 'barrier_in' || ev.cmd === 'kvs-fence') v.state = 'in-barrier';
      }
      if (v && (ev.leg === 'server->client' || ev.leg === 'relay->client') && (ev.cmd === 'barrier_out' || ev.cmd === 'kvs-fence-response')) v.state = 'initialized';
      // a rank's puts only: a connection that is no rank is refused, its keys stored nowhere
      if ((ev.cmd === 'put' || ev.cmd === 'kvs-put') && ev.rank !== undefined && ev.attrs['key'] !== undefined && this.putKeys.size < MAX_COUNTED_KEYS) this.putKeys.add(ev.attrs['key']);
      return;
    }
    if (ev.kind !== 'state') return;
    const rank = typeof ev['rank'] === 'number' ? ev['rank'] : undefined;
    const session = typeof ev['session'] === 'number' ? ev['session'] : undefined;
    if (ev.event === 'barrier') {
      this.barrier = { epoch: Number(ev['epoch'] ?? 0), entered: Number(ev['entered'] ?? 0), size: Number(ev['size'] ?? 0) };
    } else if (ev.event === 'barrier-complete') {
      this.barrier = { ...this.barrier, epoch: Number(ev['epoch'] ?? 0), entered: 0 };
      this.kvsKeys = Number(ev['keys'] ?? this.kvsKeys);
    } else if (ev.event === 'job-finished') {
      this.finished = Object.fromEntries(Object.entries(ev).filter(([k]) => k.startsWith('status.')));
    } else if (ev.event === 'session-closed' && ev['refused'] === true && session !== undefined && !this.viewOfSession.has(session)) {
      // The upstream refused its PMI_ID: never a session of the job, and the relay forgets it too.
      // Any client may name any PMI_ID, so a view kept per refused one would grow without bound.
      this.views.delete(`s${session}`);
      return;
    }
    const next = STATE_OF[ev.event];
    if (next) {
      const v = this.view(rank, session);
      if (v) v.state = next;
    }
  }

  snapshot(): TapSnapshot {
    const ranks = [...this.views.values()].sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9) || (a.session ?? 0) - (b.session ?? 0));
    return { ranks, barrier: { ...this.barrier }, kvsKeys: Math.max(this.kvsKeys, this.putKeys.size), finished: this.finished };
  }
}
