/**
 * RelayHost: a RelayEngine on real sockets. Client connections come from listeners (TCP loopback,
 * Unix) or socketpairs (`wrap`); each session's upstream connection is opened here when the engine
 * asks, to an address or on an inherited fd; hold timers run here.
 */
import { connect as netConnect, Socket } from 'node:net';
import type { PmiAddress } from '../protocol/address.js';
import { defaultLimits } from '../protocol/limits.js';
import { RelayEngine, type RelayEngineOptions, type UpstreamIdentity } from '../relay/engine.js';
import type { ClientFacts, ClientId, RelayAction, RelayEvent, RelayInput, SessionId } from '../relay/types.js';
import { LineConnection } from '../transport/line-connection.js';
import { wireItemText } from '../protocol/wire-framer.js';
import { listen, listenInherited, listenPrivateUnix, type AcceptedPeer, type Listener } from '../transport/listen.js';
import { unreadBytes } from '../transport/unread-bytes.js';
import { fdLimit } from '../transport/fd-limit.js';
import { ObserverBus, type Leg } from './bus.js';
import { ConnectionLimits, type Eviction } from './connection-limits.js';
import { admitPeer } from './admit-peer.js';
import { DEFAULT_IDENTIFY_TIMEOUT_MS, defaultMaxConnections } from './job-server.js';

export type UpstreamSpec =
  | { readonly kind: 'address'; readonly address: PmiAddress }
  /** An inherited, already connected socket (PMI_FD of hydra/flux/Slurm); carries one session. */
  | { readonly kind: 'fd'; readonly fd: number; readonly identity: UpstreamIdentity };

export interface RelayHostOptions {
  readonly upstream: UpstreamSpec;
  readonly holdMs: number | null;
  readonly mapId?: (pmiid: number) => number | undefined;
  readonly allowUids?: readonly number[];
  readonly maxLine?: number;
  readonly bus?: ObserverBus;
  /** Answer gets from the current barrier epoch's answers (default true; see relay/kvs-cache.ts). */
  readonly kvsCache?: boolean;
  /** Listener connections held at once (default: relayMaxConnections()). */
  readonly maxConnections?: number;
  /** … of them from one uid (local peers) or address (remote peers); default: half of maxConnections. */
  readonly maxConnectionsPerPeer?: number;
  /** Close a listener's connection that has not sent a valid initack by then; null: never. */
  readonly identifyTimeoutMs?: number | null;
}

/**
 * 4096, lowered to fit the fd limit. Each identified client also holds its session's upstream
 * connection, so a relay needs two descriptors per rank: it counts half the limit.
 */
export function relayMaxConnections(nofile: number | undefined = fdLimit()): number {
  return defaultMaxConnections(0, nofile === undefined ? undefined : Math.floor(nofile / 2) + 32);
}

const TICK_MS = 1000;

function unreadOf(socket: Socket): number | undefined {
  try {
    return unreadBytes(socket);
  } catch {
    return undefined; // no koffi / ioctl here: cannot tell
  }
}

export class RelayHost {
  readonly engine: RelayEngine;
  readonly bus: ObserverBus;
  private readonly clients = new Map<ClientId, LineConnection>();
  private readonly upstreams = new Map<SessionId, LineConnection>();
  private readonly timers = new Map<SessionId, NodeJS.Timeout>();
  private readonly listeners: Listener[] = [];
  private readonly relayEvents = new Set<(e: RelayEvent) => void>();
  private readonly maxLine: number;
  private nextClient = 1;
  /** close() was called: the connections it destroys are not reported to the engine. */
  private closing = false;
  private fdUsed = false;
  /** What a client connection we ended had left unread when we released its fd (close-soon.ts). */
  private readonly unreadAtRelease = new Map<ClientId, number | undefined>();
  /** Drives the engine's `tick` (replies not yet known received; stalled clients). */
  private readonly ticker: NodeJS.Timeout;
  /** Listener connections: how many per peer and in total, and which have not sent initack yet. */
  readonly limits: ConnectionLimits;
  private sweep: NodeJS.Timeout | undefined;

  constructor(private readonly opts: RelayHostOptions) {
    const upstream: RelayEngineOptions['upstream'] = opts.upstream.kind === 'fd' ? { mode: 'fd', identity: opts.upstream.identity } : { mode: 'socket' };
    this.engine = new RelayEngine({
      upstream,
      holdMs: opts.holdMs,
      unread: (client) => this.unread(client),
      ...(opts.mapId ? { mapId: opts.mapId } : {}),
      ...(opts.kvsCache !== undefined ? { kvsCache: opts.kvsCache } : {}),
    });
    this.bus = opts.bus ?? new ObserverBus();
    this.maxLine = opts.maxLine ?? defaultLimits().maxLine;
    this.ticker = setInterval(() => {
      if (this.clients.size > 0) this.step({ kind: 'tick' });
    }, TICK_MS).unref();
    const maxTotal = opts.maxConnections ?? relayMaxConnections();
    this.limits = new ConnectionLimits({
      maxTotal,
      maxPerPeer: opts.maxConnectionsPerPeer ?? Math.max(1, Math.floor(maxTotal / 2)),
      identifyTimeoutMs: opts.identifyTimeoutMs === undefined ? DEFAULT_IDENTIFY_TIMEOUT_MS : opts.identifyTimeoutMs,
    });
  }

  /**
   * Bytes a client connection has not provably received (engine option `unread`). Asked while the
   * connection is open, or while its close is being reported: a clean EOF leaves the fd to ask; a
   * reset (the peer closed with our bytes unread, or the kernel gave up on a frozen peer) does not,
   * and means "not received".
   */
  private unread(client: ClientId): number | undefined {
    const conn = this.clients.get(client);
    if (!conn || conn.closeError) return undefined;
    if (conn.socket.destroyed) return this.unreadAtRelease.get(client);
    return unreadOf(conn.socket);
  }

  async listen(address: PmiAddress | 'private-unix' | { readonly fd: number }): Promise<Listener> {
    const options = {
      allowUids: this.opts.allowUids ?? [],
      onConnection: (socket: Socket, peer: AcceptedPeer) => this.accept(socket, peer),
      onRefused: (peer: AcceptedPeer, reason: string) => this.bus.emit({ type: 'peer-refused', peer: peer.peer, reason, ...(peer.uid !== undefined ? { uid: peer.uid } : {}) }),
      onError: (err: Error) => this.bus.emit({ type: 'transport-error', message: err.message }),
    };
    const l = address === 'private-unix' ? await listenPrivateUnix(options) : 'fd' in address ? await listenInherited(address.fd, options) : await listen(address, options);
    this.listeners.push(l);
    this.bus.emit({ type: 'listening', pmiPort: l.pmiPort });
    return l;
  }

  /**
   * A peer a listener admitted (its uid is allowed): served if the connection limits let it in,
   * possibly after closing the oldest connections that have not sent initack; else told why.
   * The same rules as the server's (connection-limits.ts): a flood cannot crowd out real ranks.
   */
  private accept(socket: Socket, peer: AcceptedPeer): void {
    const evict = admitPeer(this.limits, this.nextClient, socket, peer, this.bus);
    if (!evict) return;
    for (const e of evict) this.dismiss(e);
    this.attachClient(socket, { transport: peer.transport, peer: peer.peer, ...(peer.uid !== undefined ? { uid: peer.uid } : {}) }, true);
    this.sweep ??= this.startSweep();
  }

  /** Close a connection the limits gave up on (it has no session): tell it why, log it, close it. */
  private dismiss(e: Eviction): void {
    const conn = this.clients.get(e.id);
    if (!conn) return;
    this.bus.emit({ type: 'peer-refused', peer: `client ${e.id}`, reason: `${e.reason}; closed` });
    conn.send(`cmd=error rc=-1 msg=${e.msg}\n`);
    conn.end(0);
  }

  /** Close connections that did not identify themselves in time; one timer for all of them. */
  private startSweep(): NodeJS.Timeout | undefined {
    const limit = this.limits.opts.identifyTimeoutMs;
    if (limit === null) return undefined;
    const timer = setInterval(() => {
      for (const e of this.limits.expired(performance.now())) this.dismiss(e);
    }, Math.max(50, Math.min(1000, Math.floor(limit / 4))));
    timer.unref();
    return timer;
  }

  /**
   * Serve a connected client socket (accepted, or wrap's socketpair with facts.pmiid). `counted`:
   * a listener's connection under the limits until it names its session.
   */
  attachClient(socket: Socket, facts: ClientFacts, counted = false): ClientId {
    const id = this.nextClient++;
    let unidentified = counted;
    const conn = new LineConnection(socket, this.maxLine, {
      onInput: (input) => {
        // The line event goes out after the engine read the line (a first line, initack, names
        // the session) and before what it caused.
        this.step({ kind: 'client-input', client: id, input }, () => {
          if (this.bus.wantsLines) this.emitLine('client->relay', wireItemText(input), { conn: id });
        });
        if (unidentified && this.engine.sessionOfClient(id) !== undefined) {
          unidentified = false;
          this.limits.identified(id);
        }
      },
      onClose: (reason) => {
        if (counted) this.limits.release(id);
        // Reported before the connection is forgotten: the engine asks what it left unread. Not
        // when the relay itself is closing: its own destroy() leaves no fd to ask, and every
        // reply it had just written (the last finalize_ack) would be logged as kept for a re-send
        // that can no longer come.
        if (!this.closing) this.step({ kind: 'client-close', client: id, reason });
        this.clients.delete(id);
        this.unreadAtRelease.delete(id);
      },
      beforeRelease: () => this.unreadAtRelease.set(id, unreadOf(socket)),
    });
    this.clients.set(id, conn);
    this.step({ kind: 'client-connect', client: id, facts });
    return id;
  }

  /** Open a session ahead of its client; resolves with the rank/size the upstream gave. */
  prepare(pmiid: SessionId): Promise<UpstreamIdentity> {
    const known = this.engine.identityOf(pmiid);
    if (known) return Promise.resolve(known);
    return new Promise((resolve, reject) => {
      const off = this.onRelayEvent((e) => {
        if (e.type === 'handshaken' && e.session === pmiid) {
          off();
          resolve(this.engine.identityOf(pmiid) as UpstreamIdentity);
        } else if ((e.type === 'session-closed' && e.session === pmiid) || (e.type === 'protocol-error' && e.session === pmiid && !this.engine.sessionStates().some((s) => s.session === pmiid))) {
          off();
          reject(new Error(e.type === 'session-closed' ? e.reason : e.message));
        }
      });
      this.step({ kind: 'prepare', session: pmiid });
    });
  }

  onRelayEvent(fn: (e: RelayEvent) => void): () => void {
    this.relayEvents.add(fn);
    return () => this.relayEvents.delete(fn);
  }

  private openUpstream(session: SessionId): void {
    const spec = this.opts.upstream;
    let socket: Socket;
    if (spec.kind === 'fd') {
      if (this.fdUsed) {
        this.step({ kind: 'upstream-close', session, reason: 'the inherited PMI_FD carries a single session' });
        return;
      }
      this.fdUsed = true;
      try {
        socket = new Socket({ fd: spec.fd, readable: true, writable: true });
      } catch (err) {
        // e.g. PMI_FD names a descriptor that is closed or not a socket
        this.step({ kind: 'upstream-close', session, reason: `cannot use the inherited PMI_FD ${spec.fd}: ${(err as Error).message}` });
        return;
      }
    } else {
      const a = spec.address;
      socket = a.kind === 'tcp' ? netConnect({ host: a.host, port: a.port, noDelay: true }) : netConnect({ path: a.path });
    }
    // A session the upstream refused is forgotten, and its PMI_ID may open a new one while the
    // refused connection is still closing: only the session's current connection speaks for it.
    const current = () => this.upstreams.get(session) === conn;
    const conn: LineConnection = new LineConnection(
      socket,
      this.maxLine,
      {
        onInput: (input) => {
          if (!current()) return;
          if (this.bus.wantsLines) this.emitLine('upstream->relay', wireItemText(input), { session });
          this.step({ kind: 'upstream-input', session, input });
        },
        onClose: (reason) => {
          if (!current()) return;
          this.upstreams.delete(session);
          this.step({ kind: 'upstream-close', session, reason });
        },
      },
      // The upstream is the server we chose to talk to; its replies to a PMI-2 client are a line, then frames.
      { detectForeign: false, pmi1Sticky: false },
    );
    this.upstreams.set(session, conn);
    if (spec.kind === 'fd' || !socket.connecting) this.step({ kind: 'upstream-connected', session });
    else socket.once('connect', () => current() && this.step({ kind: 'upstream-connected', session }));
  }

  /**
   * Feed the engine one input and carry out its actions. Like JobServer's guard: the engine
   * promises never to throw on peer input; should a bug break that promise, only the connection
   * the input came from is lost (logged), never the relay and its other sessions.
   */
  private step(input: RelayInput, beforeApply?: () => void): void {
    try {
      const actions = this.engine.handle(input);
      beforeApply?.();
      this.apply(actions);
    } catch (err) {
      const where = 'client' in input ? `client ${input.client}` : 'session' in input ? `session ${input.session}` : 'the relay';
      this.bus.emit({ type: 'transport-error', message: `internal error while handling ${input.kind} of ${where}; closing it: ${String((err as Error)?.stack ?? err)}` });
      if ('client' in input) this.clients.get(input.client)?.destroy();
      else if ('session' in input) this.upstreams.get(input.session)?.destroy();
    }
  }

  private apply(actions: readonly RelayAction[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'client-send':
          if (this.bus.wantsLines) for (const line of a.data.split('\n').slice(0, -1)) this.emitLine('relay->client', line, { conn: a.client });
          this.clients.get(a.client)?.send(a.data);
          break;
        case 'client-close':
          this.clients.get(a.client)?.end();
          break;
        case 'upstream-open':
          this.openUpstream(a.session);
          break;
        case 'upstream-send':
          if (this.bus.wantsLines) for (const line of a.data.split('\n').slice(0, -1)) this.emitLine('relay->upstream', line, { session: a.session });
          this.upstreams.get(a.session)?.send(a.data);
          break;
        case 'upstream-close':
          this.closeUpstream(a.session);
          break;
        case 'timer-set': {
          clearTimeout(this.timers.get(a.session));
          const t = setTimeout(() => {
            this.timers.delete(a.session);
            this.step({ kind: 'timer', session: a.session });
          }, a.ms);
          this.timers.set(a.session, t);
          break;
        }
        case 'timer-clear':
          clearTimeout(this.timers.get(a.session));
          this.timers.delete(a.session);
          break;
        case 'event':
          this.bus.emit({ type: 'relay', event: a.event });
          for (const fn of this.relayEvents) fn(a.event);
          break;
      }
    }
  }

  /**
   * An upstream connection we opened is ended (FIN after what we wrote). An inherited PMI_FD is
   * let go the way a rank lets it go: after finalize with a shutdown, as MPICH 4.0.2's PMI_Finalize
   * does; otherwise only closed, as a process's exit closes it. Slurm's stepd holds a copy of each
   * task's end, so a close is invisible to it (it learns of the task's end from the task's exit),
   * while a shutdown makes it read EOF, and it then logs `mpi/pmi2: read length 0` in a loop until
   * the step ends (thousands of lines after an MPI_Abort), or, before the first line (a program
   * that never spoke PMI), dies with `fatal: this is impossible` and the step hangs. hydra holds
   * no copy: it sees EOF either way.
   */
  private closeUpstream(session: SessionId): void {
    const conn = this.upstreams.get(session);
    if (!conn) return;
    const finalized = this.engine.sessionStates().some((s) => s.session === session && s.state === 'finalized');
    if (this.opts.upstream.kind === 'fd' && !finalized) conn.release();
    else conn.end();
  }

  /** Per-line bus event, with the session (and rank, once known) of the connection. */
  private emitLine(leg: Leg, line: string, where: { conn?: ClientId; session?: SessionId }): void {
    const session = where.session ?? (where.conn !== undefined ? this.engine.sessionOfClient(where.conn) : undefined);
    const rank = session !== undefined ? this.engine.identityOf(session)?.rank : undefined;
    this.bus.emit({ type: 'line', leg, line, ...(where.conn !== undefined ? { conn: where.conn } : {}), ...(session !== undefined ? { session } : {}), ...(rank !== undefined ? { rank } : {}) });
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.ticker);
    clearInterval(this.sweep);
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const c of this.clients.values()) c.destroy();
    for (const u of this.upstreams.values()) u.destroy();
    await Promise.all(this.listeners.splice(0).map((l) => l.close()));
  }
}
