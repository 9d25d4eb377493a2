/**
 * What goes into and comes out of the relay engine. Like the server engine it owns no sockets and
 * no clocks: the host opens upstream connections, runs timers and moves bytes when told to.
 */
import type { WireItem } from '../protocol/wire-framer.js';

/** A client connection (a rank, or a process that took a rank's session over). */
export type ClientId = number;
/** A session is keyed by the client's PMI_ID; its upstream connection shares the id. */
export type SessionId = number;

export interface ClientFacts {
  readonly transport: 'fd' | 'tcp' | 'unix';
  /** Session bound by the edge: the socketpair `pmibridge wrap` gave its child. */
  readonly pmiid?: number;
  /** Peer uid when known (SO_PEERCRED, /proc/net/tcp); a session can only be taken over by its uid. */
  readonly uid?: number;
  readonly peer?: string;
}

export type RelayInput =
  | { readonly kind: 'client-connect'; readonly client: ClientId; readonly facts: ClientFacts }
  | { readonly kind: 'client-input'; readonly client: ClientId; readonly input: WireItem }
  | { readonly kind: 'client-close'; readonly client: ClientId; readonly reason: string }
  | { readonly kind: 'upstream-connected'; readonly session: SessionId }
  | { readonly kind: 'upstream-input'; readonly session: SessionId; readonly input: WireItem }
  | { readonly kind: 'upstream-close'; readonly session: SessionId; readonly reason: string }
  | { readonly kind: 'timer'; readonly session: SessionId }
  /**
   * A periodic look (about once a second) at replies not yet known to be received: the host asks
   * the kernel (RelayEngineOptions.unread); a reply still unread after a whole tick marks its
   * session stalled (a frozen or checkpointed client), one read since clears it.
   */
  | { readonly kind: 'tick' }
  /** Open a session before its client exists (wrap needs the rank and size to start its child). */
  | { readonly kind: 'prepare'; readonly session: SessionId };

/** `stalled`: connected, but its last reply has sat unread for a tick or more (frozen, checkpointed). */
export type SessionState = 'opening' | 'ready' | 'waiting' | 'held' | 'stalled' | 'finalized' | 'closed';

export type RelayEvent =
  | { readonly type: 'session-opened'; readonly session: SessionId; readonly upstreamId: number; readonly client: ClientId | null }
  | { readonly type: 'handshaken'; readonly session: SessionId; readonly rank: number; readonly size: number }
  | { readonly type: 'held'; readonly session: SessionId; readonly holdMs: number | null; readonly reason: string }
  | { readonly type: 'taken-over'; readonly session: SessionId; readonly client: ClientId; readonly previous: ClientId | null; readonly wasHeld: boolean }
  | { readonly type: 'replayed'; readonly session: SessionId; readonly what: string }
  /** The client left (or was replaced) before it provably received its last reply: kept for a re-send. */
  | { readonly type: 'reply-kept'; readonly session: SessionId; readonly request: string; readonly unread: number | null }
  /** A connected client has not read its last reply for a tick or more (`unread` bytes), or has again. */
  | { readonly type: 'stalled'; readonly session: SessionId; readonly unread: number }
  | { readonly type: 'resumed'; readonly session: SessionId }
  | { readonly type: 'answered-locally'; readonly session: SessionId; readonly cmd: string }
  | { readonly type: 'hold-expired'; readonly session: SessionId; readonly message: string }
  | { readonly type: 'finalized'; readonly session: SessionId }
  /** `refused`: the upstream refused the PMI_ID in the handshake (a client error, not a failed rank). */
  | { readonly type: 'session-closed'; readonly session: SessionId; readonly reason: string; readonly refused?: true }
  | { readonly type: 'refused'; readonly client: ClientId; readonly code: string; readonly message: string }
  | { readonly type: 'protocol-error'; readonly client?: ClientId; readonly session?: SessionId; readonly message: string };

export type RelayAction =
  | { readonly kind: 'client-send'; readonly client: ClientId; readonly data: string }
  | { readonly kind: 'client-close'; readonly client: ClientId; readonly reason: string }
  /** Open the upstream connection of a session and, for a socket upstream, send `initack pmiid`. */
  | { readonly kind: 'upstream-open'; readonly session: SessionId; readonly upstreamId: number }
  | { readonly kind: 'upstream-send'; readonly session: SessionId; readonly data: string }
  | { readonly kind: 'upstream-close'; readonly session: SessionId; readonly reason: string }
  | { readonly kind: 'timer-set'; readonly session: SessionId; readonly ms: number }
  | { readonly kind: 'timer-clear'; readonly session: SessionId }
  | { readonly kind: 'event'; readonly event: RelayEvent };
