/**
 * JobServer: a ServerEngine on real sockets. It owns listeners and connections, feeds the engine
 * what they receive, carries out the engine's actions, and publishes everything on the bus.
 *
 * Used by `pmibridge run` (PMI_FD channels and/or a listener) and `pmibridge serve` (listeners).
 */
import type { Socket } from 'node:net';
import type { PmiAddress } from '../protocol/address.js';
import { PMI_RC, problem } from '../protocol/errors.js';
import { wireItemText, type WireItem } from '../protocol/wire-framer.js';
import { PMI2_HEADER_LENGTH } from '../protocol/pmi2-frame.js';
import { ServerEngine, type EngineOptions } from '../server/engine.js';
import type { Action, ConnId, ConnectionFacts, JobStatus } from '../server/types.js';
import { fdLimit } from '../transport/fd-limit.js';
import { LineConnection } from '../transport/line-connection.js';
import { listen, listenPrivateUnix, type AcceptedPeer, type Listener } from '../transport/listen.js';
import { admitPeer } from './admit-peer.js';
import { ObserverBus } from './bus.js';
import { ConnectionLimits, type Eviction } from './connection-limits.js';

export interface JobServerOptions extends EngineOptions {
  readonly allowUids?: readonly number[];
  readonly bus?: ObserverBus;
  /** Connections from listeners held at once (default: defaultMaxConnections). */
  readonly maxConnections?: number;
  /** … of them from one uid (local peers) or address (remote peers); default: half of maxConnections, at least size + 16. */
  readonly maxConnectionsPerPeer?: number;
  /** Close a listener's connection that has not sent initack or init by then; null: never. */
  readonly identifyTimeoutMs?: number | null;
}

export const DEFAULT_IDENTIFY_TIMEOUT_MS = 30_000;
/** Descriptors left for everything else: listeners, stdio, the tap and its observers, ranks' pipes. */
const FD_RESERVE = 64;

/** size + 4096, lowered to fit the process's fd limit, so that accept() never meets EMFILE. */
export function defaultMaxConnections(size: number, nofile: number | undefined = fdLimit()): number {
  const want = size + 4096;
  return nofile === undefined ? want : Math.max(16, Math.min(want, nofile - FD_RESERVE));
}

export class JobServer {
  readonly engine: ServerEngine;
  readonly bus: ObserverBus;
  readonly done: Promise<JobStatus>;
  private resolveDone!: (s: JobStatus) => void;
  private readonly connections = new Map<ConnId, LineConnection>();
  private readonly listeners: Listener[] = [];
  private nextId = 1;
  /** Listener connections: how many per peer and in total, and which have not identified yet. */
  readonly limits: ConnectionLimits;
  private sweep: NodeJS.Timeout | undefined;

  constructor(private readonly opts: JobServerOptions) {
    this.engine = new ServerEngine(opts);
    this.bus = opts.bus ?? new ObserverBus();
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    const maxTotal = opts.maxConnections ?? defaultMaxConnections(this.engine.size);
    this.limits = new ConnectionLimits({
      maxTotal,
      maxPerPeer: opts.maxConnectionsPerPeer ?? Math.max(this.engine.size + 16, Math.floor(maxTotal / 2)),
      identifyTimeoutMs: opts.identifyTimeoutMs === undefined ? DEFAULT_IDENTIFY_TIMEOUT_MS : opts.identifyTimeoutMs,
    });
  }

  /** Listen on an address (or a private Unix socket when `address` is 'private-unix'). */
  async listen(address: PmiAddress | 'private-unix'): Promise<Listener> {
    const options = {
      allowUids: this.opts.allowUids ?? [],
      onConnection: (socket: Socket, peer: AcceptedPeer) => this.accept(socket, peer),
      onRefused: (peer: { peer: string; uid?: number }, reason: string) =>
        this.bus.emit({ type: 'peer-refused', peer: peer.peer, reason, ...(peer.uid !== undefined ? { uid: peer.uid } : {}) }),
      onError: (err: Error) => this.bus.emit({ type: 'transport-error', message: err.message }),
    };
    const l = address === 'private-unix' ? await listenPrivateUnix(options) : await listen(address, options);
    this.listeners.push(l);
    this.bus.emit({ type: 'listening', pmiPort: l.pmiPort });
    return l;
  }

  /**
   * A peer a listener admitted (its uid is allowed): served if the connection limits let it in,
   * possibly after closing the oldest unidentified connections to make room; else told why.
   */
  private accept(socket: Socket, peer: AcceptedPeer): void {
    const id = this.nextId++;
    const evict = admitPeer(this.limits, id, socket, peer, this.bus);
    if (!evict) return;
    for (const e of evict) this.dismiss(e, 'E_EVICTED');
    this.serve(id, socket, { transport: peer.transport, peer: peer.peer, ...(peer.uid !== undefined ? { uid: peer.uid } : {}), ...(peer.remote ? { remote: true } : {}) }, true);
    this.sweep ??= this.startSweep();
  }

  /** Close a connection the limits gave up on: tell it why (logged as a refusal), then close it at once. */
  private dismiss(e: Eviction, code: string): void {
    this.apply(this.engine.dismiss(e.id, problem(code, PMI_RC.FAIL, e.msg, `${e.reason}; closed`)));
    this.connections.get(e.id)?.end(0);
  }

  /** Close connections that did not identify themselves in time; one timer for all of them. */
  private startSweep(): NodeJS.Timeout | undefined {
    const limit = this.limits.opts.identifyTimeoutMs;
    if (limit === null) return undefined;
    const timer = setInterval(() => {
      for (const e of this.limits.expired(performance.now())) this.dismiss(e, 'E_IDENTIFY_TIMEOUT');
    }, Math.max(50, Math.min(1000, Math.floor(limit / 4))));
    timer.unref();
    return timer;
  }

  /** Serve a connected socket (an accepted peer, or a rank's PMI_FD channel with facts.rank). */
  attach(socket: Socket, facts: ConnectionFacts): ConnId {
    return this.serve(this.nextId++, socket, facts, false);
  }

  private serve(id: ConnId, socket: Socket, facts: ConnectionFacts, counted: boolean): ConnId {
    let unidentified = counted; // until the engine binds it to a rank
    const conn = new LineConnection(socket, this.engine.limits.maxLine, {
      onInput: (input) => {
        // Per-line work only when someone watches lines: this runs for every request.
        const watched = this.bus.wantsLines;
        const before = watched ? this.engine.rankOf(id) : undefined;
        const actions = this.receive(id, input);
        if (unidentified && this.engine.rankOf(id) !== undefined) {
          unidentified = false;
          this.limits.identified(id);
        }
        // After the engine read it (initack binds the rank) and before what it caused.
        if (watched) {
          const line = wireItemText(input);
          const wire = input.kind === 'frame' || (input.kind === 'overlong' && input.wire === 'pmi2') ? { wire: 'pmi2' as const } : {};
          const rank = before ?? this.engine.rankOf(id);
          this.bus.emit({ type: 'line', leg: 'client->server', conn: id, line, ...wire, ...(rank !== undefined ? { rank } : {}) });
        }
        this.apply(actions);
      },
      onClose: (reason) => {
        this.connections.delete(id);
        if (counted) this.limits.release(id);
        const rank = this.engine.rankOf(id);
        this.bus.emit({ type: 'closed', conn: id, reason, ...(rank !== undefined ? { rank } : {}) });
        this.apply(this.guard(id, () => this.engine.disconnect(id)));
      },
    });
    this.connections.set(id, conn);
    this.apply(this.engine.connect(id, facts));
    return id;
  }

  /** Resolves once no rank is bound to a live connection (all finalized, or gone). */
  ranksDisconnected(): Promise<void> {
    const idle = () => this.engine.rankStates().every((r) => r.conn === null || this.engine.finished !== null);
    if (idle()) return Promise.resolve();
    return new Promise((resolve) => {
      const unsubscribe = this.bus.subscribe((ev) => {
        if (ev.type === 'engine' && idle()) {
          unsubscribe();
          resolve();
        }
      });
    });
  }

  /**
   * The engine promises never to throw on peer input; should a bug break that promise, only the
   * connection that triggered it is lost (logged), never the server and the other ranks.
   */
  private guard(id: ConnId, step: () => Action[]): Action[] {
    try {
      return step();
    } catch (err) {
      return this.internalError(id, err);
    }
  }

  private internalError(id: ConnId, err: unknown): Action[] {
    this.bus.emit({ type: 'transport-error', message: `internal error while handling connection ${id}; closing it: ${String((err as Error)?.stack ?? err)}` });
    this.connections.get(id)?.destroy();
    return [];
  }

  /** `guard` for the per-line path, without a closure per line. */
  private receive(id: ConnId, input: WireItem): Action[] {
    try {
      return this.engine.receive(id, input);
    } catch (err) {
      return this.internalError(id, err);
    }
  }

  /** End the job from outside (a rank process died, a signal); the first status wins. */
  fail(status: JobStatus): void {
    this.apply(this.engine.fail(status));
  }

  private apply(actions: readonly Action[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'send': {
          const c = this.connections.get(a.conn);
          if (!c) break;
          if (this.bus.wantsLines) {
            const rank = this.engine.rankOf(a.conn);
            // A PMI-2 frame starts with its length header (spaces, digits); PMI-1 replies are lines.
            const frame = a.data.charCodeAt(0) === 0x20 || (a.data.charCodeAt(0) >= 0x30 && a.data.charCodeAt(0) <= 0x39);
            for (const line of frame ? [a.data.slice(PMI2_HEADER_LENGTH)] : a.data.split('\n').slice(0, -1)) {
              this.bus.emit({ type: 'line', leg: 'server->client', conn: a.conn, line, ...(frame ? { wire: 'pmi2' as const } : {}), ...(rank !== undefined ? { rank } : {}) });
            }
          }
          c.send(a.data);
          break;
        }
        case 'close':
          this.connections.get(a.conn)?.end();
          break;
        case 'event':
          this.bus.emit({ type: 'engine', event: a.event });
          break;
        case 'finished':
          this.resolveDone(a.status);
          break;
      }
    }
  }

  /** Stop listening and drop every connection. */
  async close(): Promise<void> {
    clearInterval(this.sweep);
    for (const c of this.connections.values()) c.destroy();
    await Promise.all(this.listeners.splice(0).map((l) => l.close()));
  }
}
