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
import { listen, listenInherited, listenPrivateUnix, type AcceptedPeer, type Listener } from '../transport/listen.js';
import { unreadBytes } from '../transport/unread-bytes.js';
import { ObserverBus, type Leg } from './bus.js';

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
  private fdUsed = false;
  /** What a client connection we ended had left unread when we released its fd (close-soon.ts). */
  private readonly unreadAtRelease = new Map<ClientId, number | undefined>();
  /** Drives the engine's `tick` (replies not yet known received; stalled clients). */
  private readonly ticker: NodeJS.Timeout;

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
      onConnection: (socket: Socket, peer: AcceptedPeer) =>
        this.attachClient(socket, { transport: peer.transport, peer: peer.peer, ...(peer.uid !== undefined ? { uid: peer.uid } : {}) }),
      onRefused: (peer: AcceptedPeer, reason: string) => this.bus.emit({ type: 'peer-refused', peer: peer.peer, reason, ...(peer.uid !== undefined ? { uid: peer.uid } : {}) }),
      onError: (err: Error) => this.bus.emit({ type: 'transport-error', message: err.message }),
    };
    const l = address === 'private-unix' ? await listenPrivateUnix(options) : 'fd' in address ? await listenInherited(address.fd, options) : await listen(address, options);
    this.listeners.push(l);
    this.bus.emit({ type: 'listening', pmiPort: l.pmiPort });
    return l;
  }

  /** Serve a connected client socket (accepted, or wrap's socketpair with facts.pmiid). */
  attachClient(socket: Socket, facts: ClientFacts): ClientId {
    const id = this.nextClient++;
    const conn = new LineConnection(socket, this.maxLine, {
      onInput: (input) =>
        // The line event goes out after the engine read the line (a first line, initack, names
        // the session) and before what it caused.
        this.step({ kind: 'client-input', client: id, input }, () => {
          if (this.bus.wantsLines) this.emitLine('client->relay', input.kind === 'line' ? input.line : `${input.prefix}… (${input.length} bytes)`, { conn: id });
        }),
      onClose: (reason) => {
        // Reported before the connection is forgotten: the engine asks what it left unread.
        this.step({ kind: 'client-close', client: id, reason });
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
    const conn: LineConnection = new LineConnection(socket, this.maxLine, {
      onInput: (input) => {
        if (!current()) return;
        if (this.bus.wantsLines) this.emitLine('upstream->relay', input.kind === 'line' ? input.line : `${input.prefix}… (${input.length} bytes)`, { session });
        this.step({ kind: 'upstream-input', session, input });
      },
      onClose: (reason) => {
        if (!current()) return;
        this.upstreams.delete(session);
        this.step({ kind: 'upstream-close', session, reason });
      },
    });
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
          this.upstreams.get(a.session)?.end();
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

  /** Per-line bus event, with the session (and rank, once known) of the connection. */
  private emitLine(leg: Leg, line: string, where: { conn?: ClientId; session?: SessionId }): void {
    const session = where.session ?? (where.conn !== undefined ? this.engine.sessionOfClient(where.conn) : undefined);
    const rank = session !== undefined ? this.engine.identityOf(session)?.rank : undefined;
    this.bus.emit({ type: 'line', leg, line, ...(where.conn !== undefined ? { conn: where.conn } : {}), ...(session !== undefined ? { session } : {}), ...(rank !== undefined ? { rank } : {}) });
  }

  async close(): Promise<void> {
    clearInterval(this.ticker);
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const c of this.clients.values()) c.destroy();
    for (const u of this.upstreams.values()) u.destroy();
    await Promise.all(this.listeners.splice(0).map((l) => l.close()));
  }
}
