/**
 * The observer bus: every observable thing a host does passes here once. Logs, the tap and
 * metrics are subscribers, never special cases inside engines. Subscribers must not throw; one
 * that does is reported to the others and does not stop delivery.
 */
import type { EngineEvent, ConnId } from '../server/types.js';
import type { RelayEvent } from '../relay/types.js';

export type BusEvent =
  | { readonly type: 'engine'; readonly event: EngineEvent }
  | { readonly type: 'relay'; readonly event: RelayEvent }
  /**
   * One wire message: a PMI-1 line, or (`wire: 'pmi2'`) a PMI-2 frame's body without its length
   * header. `conn` is the server's connection or the relay's client; `session` the relay's.
   */
  | { readonly type: 'line'; readonly leg: Leg; readonly line: string; readonly wire?: 'pmi2'; readonly conn?: ConnId; readonly session?: number; readonly rank?: number }
  | { readonly type: 'listening'; readonly pmiPort: string }
  | { readonly type: 'peer-refused'; readonly peer: string; readonly uid?: number; readonly reason: string }
  | { readonly type: 'closed'; readonly conn: ConnId; readonly reason: string; readonly rank?: number }
  | { readonly type: 'transport-error'; readonly message: string };

/** Which hop a line travelled; requests go left to right, replies come back. */
export type Leg = 'client->server' | 'server->client' | 'client->relay' | 'relay->upstream' | 'upstream->relay' | 'relay->client';

export type Subscriber = (ev: BusEvent) => void;

export class ObserverBus {
  private readonly subscribers = new Set<Subscriber>();
  /** True when someone wants per-line events (they cost an allocation per line). */
  wantsLines = false;

  subscribe(fn: Subscriber, opts: { lines?: boolean } = {}): () => void {
    this.subscribers.add(fn);
    if (opts.lines) this.wantsLines = true;
    return () => this.subscribers.delete(fn);
  }

  emit(ev: BusEvent): void {
    for (const fn of this.subscribers) {
      try {
        fn(ev);
      } catch (err) {
        if (ev.type !== 'transport-error') this.emit({ type: 'transport-error', message: `observer failed: ${String(err)}` });
      }
    }
  }
}
