/**
 * What goes into and comes out of the server engine. The engine never touches a socket: a host
 * feeds it connection events and lines, and carries out the actions it returns, in order.
 */

/** Opaque connection handle chosen by the host. */
export type ConnId = number;

/** Facts the edge (transport, launcher) knows about a connection before it says anything. */
export interface ConnectionFacts {
  readonly transport: 'fd' | 'tcp' | 'unix';
  /** Rank bound by the edge: the PMI_FD channel of a rank the launcher spawned. */
  readonly rank?: number;
  /** Peer uid when the transport knows it (SO_PEERCRED, /proc/net/tcp). */
  readonly uid?: number;
  /** A description of the peer for logs (address, pid…). */
  readonly peer?: string;
  /** A TCP peer on another host, whose uid could not be checked (logged at warn, with its address). */
  readonly remote?: boolean;
}

export interface JobStatus {
  readonly ok: boolean;
  /** Exit status the launcher/server process should end with. */
  readonly exitCode: number;
  /** One line a user understands. */
  readonly reason: string;
  /** Rank that caused a failure or abort, if any. */
  readonly rank?: number;
}

export type RankState = 'waiting' | 'connected' | 'initialized' | 'in-barrier' | 'finalized' | 'failed';

export type EngineEvent =
  | { readonly type: 'connected'; readonly conn: ConnId; readonly rank?: number; readonly facts: ConnectionFacts }
  | { readonly type: 'bound'; readonly conn: ConnId; readonly rank: number; readonly how: 'fd' | 'initack' | 'anonymous' | 'fullinit' }
  | { readonly type: 'initialized'; readonly conn: ConnId; readonly rank: number }
  | { readonly type: 'refused'; readonly conn: ConnId; readonly code: string; readonly message: string }
  | { readonly type: 'protocol-error'; readonly conn: ConnId; readonly rank?: number; readonly code: string; readonly message: string }
  | { readonly type: 'put'; readonly conn: ConnId; readonly rank: number; readonly key: string; readonly bytes: number }
  | { readonly type: 'barrier'; readonly entered: number; readonly size: number; readonly epoch: number; readonly rank: number }
  | { readonly type: 'barrier-complete'; readonly epoch: number; readonly committed: number; readonly keys: number }
  | { readonly type: 'finalized'; readonly conn: ConnId; readonly rank: number; readonly finalized: number; readonly size: number }
  | { readonly type: 'aborted'; readonly conn: ConnId; readonly rank?: number; readonly exitCode: number; readonly message: string }
  | { readonly type: 'disconnected'; readonly conn: ConnId; readonly rank?: number; readonly clean: boolean }
  | { readonly type: 'rank-failed'; readonly rank: number; readonly message: string }
  | { readonly type: 'job-finished'; readonly status: JobStatus };

export type Action =
  /** Write these bytes (one or more complete lines) to the connection. */
  | { readonly kind: 'send'; readonly conn: ConnId; readonly data: string }
  /** Close the connection after what was sent to it is flushed. */
  | { readonly kind: 'close'; readonly conn: ConnId; readonly reason: string }
  /** The job is over; the host ends it with this status (kill ranks, exit). */
  | { readonly kind: 'finished'; readonly status: JobStatus }
  /** Something observable happened (logs, tap, metrics subscribe to these). */
  | { readonly kind: 'event'; readonly event: EngineEvent };
