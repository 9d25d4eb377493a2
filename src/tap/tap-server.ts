/**
 * The tap: observers watch a job's PMI traffic live over WebSocket, a browser gets the monitor
 * page, Prometheus scrapes /metrics — all on one HTTP listener (loopback TCP, or a Unix socket).
 *
 * Safe by default:
 * - nothing a client sends can end the process: a malformed request is answered 400, and any
 *   other failure while answering one is caught where each request enters (`onRequest`,
 *   `onUpgrade`), logged and answered 500 (or its connection closed);
 * - requests are admitted by target, Host and Origin first (request-guard.ts: DNS rebinding,
 *   cross-origin pages);
 * - every request needs the token (`Authorization: Bearer …` or `?token=`), checked in constant
 *   time during the HTTP upgrade; /metrics too unless `metricsPublic`; on a Unix socket the peer's
 *   uid must also be ours (SO_PEERCRED);
 * - observers are read-only: what they send is discarded, and frames over `maxPayload` (small)
 *   close them;
 * - the job never waits for an observer: each one has a bounded send buffer; events that do not
 *   fit are dropped and counted, announced to the observer as a `gap` once it catches up, and an
 *   observer that keeps falling behind is disconnected.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, WebSocket } from 'ws';
import type { ObserverBus } from '../host/bus.js';
import type { PmiAddress } from '../protocol/address.js';
import { formatAddress } from '../protocol/address.js';
import { preview } from '../protocol/tokenize.js';
import { TapRecorder, type TapEvent } from './event.js';
import { TapMetrics } from './metrics.js';
import { RequestGuard, type Verdict } from './request-guard.js';
import { TapState } from './state.js';
import { presentedToken, tokenMatches } from './token.js';

export interface TapServerOptions {
  readonly listen: PmiAddress;
  readonly token: string;
  readonly job: string;
  readonly role: 'server' | 'relay' | 'run';
  readonly bus: ObserverBus;
  readonly redact?: boolean;
  readonly metricsPublic?: boolean;
  /** Bytes queued for one observer before its events are dropped. */
  readonly highWaterBytes?: number;
  /** Events dropped for one observer before it is disconnected. */
  readonly maxDrops?: number;
  /** Connections (observers, scrapes, browsers) open at once; a new one past it is closed. */
  readonly maxConnections?: number;
}

/** Open connections the tap takes by default: observers, scrapes and browsers together. */
export const TAP_MAX_CONNECTIONS = 64;
/** Time a client has to send its request headers (and its whole request), in ms. */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;

interface Observer {
  readonly ws: WebSocket;
  /** The observer's connection under the WebSocket, corked while a loop turn's events gather. */
  readonly socket: Duplex;
  corked: boolean;
  /**
   * `?batch=1`: the events of one loop turn travel as one message, one JSON object per line
   * (`\n`-separated). A busy job makes thousands of events a second; one message per event costs
   * each observer (and the job, framing them) more than the events themselves.
   */
  readonly batch: boolean;
  /** Batch mode: this turn's events, sent at the end of the turn. */
  pending: string[];
  pendingBytes: number;
  dropped: number;
  unannounced: number;
}

export class TapServer {
  readonly metrics = new TapMetrics();
  readonly state = new TapState();
  private readonly recorder: TapRecorder;
  private readonly observers = new Set<Observer>();
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 4096, perMessageDeflate: false });
  /**
   * Every connection costs the process a file descriptor, which its PMI listeners need too: they
   * are bounded (maxConnections) and a client that never finishes its request is closed (408)
   * after HEADERS_TIMEOUT_MS, checked every second. Upgraded observers are out of these timers.
   */
  private readonly http = createServer({ headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1000 }, (req, res) => this.onRequest(req, res));
  private drops = { count: 0, loggedAt: -Infinity };
  private readonly guard: RequestGuard;
  private readonly highWater: number;
  private readonly maxDrops: number;
  private unsubscribe: () => void = () => undefined;
  /** Observers whose socket is corked until the end of this loop turn. */
  private readonly corked: Observer[] = [];
  /** uid of a Unix-socket peer (SO_PEERCRED, loaded only for Unix taps). */
  private peerUid: (s: Socket) => number | undefined = () => undefined;
  /** The address observers use (ws://host:port or a Unix path). */
  url = '';

  constructor(private readonly opts: TapServerOptions) {
    this.recorder = new TapRecorder(opts.job, opts.role, opts.redact ?? false);
    // Defaults may be overridden from the environment, for tests that need an observer to fall
    // behind within a small job: PMIBRIDGE_TAP_HIGH_WATER (bytes), PMIBRIDGE_TAP_MAX_DROPS (events).
    this.highWater = opts.highWaterBytes ?? envInt('PMIBRIDGE_TAP_HIGH_WATER') ?? 256 * 1024;
    this.maxDrops = opts.maxDrops ?? envInt('PMIBRIDGE_TAP_MAX_DROPS') ?? 10_000;
    this.guard = new RequestGuard(opts.listen);
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    // PMIBRIDGE_TAP_MAX_CONNECTIONS: for tests that reach the limit with a few connections
    this.http.maxConnections = opts.maxConnections ?? envInt('PMIBRIDGE_TAP_MAX_CONNECTIONS') ?? TAP_MAX_CONNECTIONS;
    this.http.on('drop', () => this.dropped());
  }

  /** A connection past maxConnections was closed: said in the log, at most every 10 s (a flood is one line). */
  private dropped(): void {
    this.drops.count++;
    const now = performance.now();
    if (now - this.drops.loggedAt < 10_000) return;
    this.drops.loggedAt = now;
    this.opts.bus.emit({ type: 'transport-error', message: `tap: closed a new connection: ${this.http.maxConnections} connections are open, the most the tap takes (${this.drops.count} closed so far); new observers and scrapes are refused until some close` });
  }

  async start(): Promise<string> {
    const l = this.opts.listen;
    if (l.kind === 'unix') {
      const { peerCred } = await import('../transport/peercred.js');
      this.peerUid = (s) => {
        try {
          return peerCred(s)?.uid;
        } catch {
          return undefined; // no fd any more: unknown uid, refused
        }
      };
    }
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      const done = () => {
        this.http.off('error', reject);
        resolve();
      };
      if (l.kind === 'tcp') this.http.listen(l.port, l.host, done);
      else this.http.listen(l.path, done);
    });
    // Once listening, a server error (accept failing with EMFILE…) is the tap's trouble alone: logged,
    // never an uncaught 'error' event that would end the job.
    this.http.on('error', (err: Error) => this.opts.bus.emit({ type: 'transport-error', message: `tap: ${err.message}` }));
    if (l.kind === 'tcp') {
      const port = (this.http.address() as AddressInfo).port;
      this.url = `ws://${formatAddress({ kind: 'tcp', host: l.host, port })}`;
    } else {
      this.url = l.path;
    }
    this.unsubscribe = this.opts.bus.subscribe((ev) => {
      if (ev.type === 'line') {
        const cmd = this.recorder.requestOf(ev);
        const tapEv = this.recorder.record(ev);
        if (tapEv?.kind === 'line' && cmd !== undefined) this.metrics.reply(cmd, ev.leg, ev.line, tapEv.latencyNs);
        if (tapEv) this.publish(tapEv);
        return;
      }
      this.metrics.event(ev);
      const tapEv = this.recorder.record(ev);
      if (tapEv) this.publish(tapEv);
    }, { lines: true });
    return this.url;
  }

  /** The monitor's address for a browser (TCP taps only). */
  monitorUrl(): string | null {
    return this.url.startsWith('ws://') ? `${this.url.replace(/^ws:/, 'http:')}/?token=${encodeURIComponent(this.opts.token)}` : null;
  }

  /** Never blocks, never throws: serialise once, then per observer send or drop. */
  private publish(ev: TapEvent): void {
    this.state.apply(ev);
    if (this.observers.size === 0) return;
    const msg = JSON.stringify(ev);
    for (const o of this.observers) {
      try {
        this.offer(o, ev, msg);
      } catch (err) {
        this.cutOff(o, err); // that observer only: the others still get the event
      }
    }
  }

  private offer(o: Observer, ev: TapEvent, msg: string): void {
    if (o.ws.readyState !== WebSocket.OPEN) return;
    if (o.ws.bufferedAmount + o.pendingBytes > this.highWater) {
      o.dropped++;
      o.unannounced++;
      this.metrics.observerDrops.inc();
      if (o.dropped >= this.maxDrops) {
        o.ws.terminate(); // hopelessly behind: let it reconnect and start from a snapshot
        this.observers.delete(o);
        this.metrics.observers.set(this.observers.size);
      }
      return;
    }
    this.cork(o);
    if (o.unannounced > 0) {
      this.deliver(o, JSON.stringify(this.recorder.gap(o.unannounced, ev.seq - 1)));
      o.unannounced = 0;
    }
    this.deliver(o, msg);
  }

  /** An observer that could not be written to is closed; it may reconnect. */
  private cutOff(o: Observer, err: unknown): void {
    this.opts.bus.emit({ type: 'transport-error', message: `tap: closed an observer that could not be written to: ${String(err)}` });
    o.ws.terminate();
    this.observers.delete(o);
    this.metrics.observers.set(this.observers.size);
  }

  private deliver(o: Observer, msg: string): void {
    if (!o.batch) return o.ws.send(msg);
    o.pending.push(msg);
    o.pendingBytes += msg.length + 1;
  }

  /**
   * The events of one loop turn (flushed by setImmediate, after the turn's I/O) leave in one
   * write per observer (batch observers: in one message; others: still one message per event,
   * schema v1, but corked together): a tapped
   * request makes 2–4 events, and a syscall (and an observer wake-up) per event per observer cost
   * the job far more than recording them. What is held counts against the high-water mark.
   */
  private cork(o: Observer): void {
    if (o.corked) return;
    o.corked = true;
    o.socket.cork();
    if (this.corked.push(o) === 1) setImmediate(() => this.uncorkAll());
  }

  private uncorkAll(): void {
    for (const o of this.corked.splice(0)) {
      o.corked = false;
      try {
        if (o.pending.length > 0 && o.ws.readyState === WebSocket.OPEN) o.ws.send(o.pending.join('\n'));
        o.socket.uncork();
      } catch (err) {
        this.cutOff(o, err); // (run from setImmediate: a throw here would be uncaught)
      }
      o.pending = [];
      o.pendingBytes = 0;
    }
  }

  /**
   * Where every HTTP request enters: whatever happens while answering it is caught here, logged,
   * and answered 500 (or its connection closed when an answer had begun). An uncaught throw would
   * end serve, relay or run (and leave run's ranks behind).
   */
  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.request(req, res).catch((err: unknown) => {
      this.internalError(req, err);
      if (res.headersSent) res.destroy();
      else deny(res, 500, 'internal error of the tap (logged); try again');
    });
  }

  /** Where every WebSocket upgrade enters: the same promise as onRequest. */
  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    try {
      this.upgrade(req, socket, head);
    } catch (err) {
      this.internalError(req, err);
      refuseUpgrade(socket, 500);
    }
  }

  private internalError(req: IncomingMessage, err: unknown): void {
    const what = err instanceof Error ? (err.stack ?? err.message) : String(err);
    this.opts.bus.emit({ type: 'transport-error', message: `tap: internal error while answering ${req.method ?? '?'} ${preview(req.url ?? '')}; answered 500 and went on: ${what}` });
  }

  /** Who is asking (a Unix peer's uid), and with what target, Host and Origin; refusals other than a malformed request are events. */
  private admit(req: IncomingMessage): Verdict {
    const uid = this.opts.listen.kind === 'unix' ? this.peerUid(req.socket) : process.getuid?.();
    const verdict: Verdict = uid !== process.getuid?.() ? { ok: false, status: 403, why: `uid ${uid ?? 'unknown'} may not observe this job` } : this.guard.check(req);
    if (!verdict.ok && verdict.status !== 400) this.refused(req, verdict.why);
    return verdict;
  }

  private tokenOk(req: IncomingMessage, target: URL): boolean {
    return tokenMatches(presentedToken(req.headers, target), this.opts.token);
  }

  private refused(req: IncomingMessage, why: string): void {
    this.opts.bus.emit({ type: 'peer-refused', peer: `tap observer ${req.socket.remoteAddress ?? 'unix'}`, reason: why });
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const admitted = this.admit(req);
    if (!admitted.ok) return refuseUpgrade(socket, admitted.status);
    if (!this.tokenOk(req, admitted.target)) {
      refuseUpgrade(socket, 401);
      return this.refused(req, 'missing or wrong token');
    }
    const path = admitted.target.pathname;
    if (path !== '/' && path !== '/tap') return refuseUpgrade(socket, 404);
    const batch = ['1', 'true', 'yes'].includes(admitted.target.searchParams.get('batch') ?? '');
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      // The socket is a WebSocket now: a failure from here on closes it (no HTTP answer any more).
      try {
        const o: Observer = { ws, socket, corked: false, batch, pending: [], pendingBytes: 0, dropped: 0, unannounced: 0 };
        ws.on('message', () => undefined); // read-only: input is discarded
        ws.on('error', () => ws.terminate());
        ws.on('close', () => {
          this.observers.delete(o);
          this.metrics.observers.set(this.observers.size);
        });
        ws.send(JSON.stringify(this.recorder.hello()));
        ws.send(JSON.stringify(this.recorder.snapshot(this.state.snapshot())));
        this.observers.add(o);
        this.metrics.observers.set(this.observers.size);
      } catch (err) {
        this.internalError(req, err);
        ws.terminate();
      }
    });
  }

  private async request(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const admitted = this.admit(req);
    if (!admitted.ok) return deny(res, admitted.status, admitted.why);
    const path = admitted.target.pathname;
    if (path === '/metrics') {
      if (!this.opts.metricsPublic && !this.tokenOk(req, admitted.target)) return deny(res, 401, 'missing or wrong token');
      this.metrics.states.reset();
      for (const r of this.state.snapshot().ranks) this.metrics.states.inc({ state: r.state });
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (path === '/' || path === '/index.html') {
      if (!this.tokenOk(req, admitted.target)) return deny(res, 401, 'missing or wrong token');
      const html = monitorPage();
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:" });
      res.end(html);
      return;
    }
    deny(res, 404, 'not found');
  }

  async close(): Promise<void> {
    this.unsubscribe();
    this.uncorkAll(); // this turn's events first: the last ones of a job matter most
    const sockets = [...this.observers].map((o) => o.ws);
    this.observers.clear();
    // A closing handshake for each observer, but the job does not wait for one that does not
    // answer (stalled, or stopped): after a grace period it is cut off.
    await new Promise<void>((resolve) => {
      let open = sockets.length;
      if (open === 0) return resolve();
      const timer = setTimeout(resolve, 500);
      for (const ws of sockets) {
        ws.once('close', () => {
          if (--open === 0) {
            clearTimeout(timer);
            resolve();
          }
        });
        ws.close(1001, 'job finished');
      }
    });
    for (const ws of sockets) ws.terminate();
    await new Promise<void>((resolve) => {
      setTimeout(resolve, 500).unref();
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/** An HTTP answer saying why not. After a malformed request the connection is not reused. */
function deny(res: ServerResponse, status: number, why: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', ...(status === 401 ? { 'www-authenticate': 'Bearer' } : {}), ...(status === 400 || status >= 500 ? { connection: 'close' } : {}) });
  res.end(`${why}\n`);
}

/** A refused upgrade: the status line, and the connection closed. */
function refuseUpgrade(socket: Duplex, status: number): void {
  if (!socket.writable) return void socket.destroy();
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nConnection: close\r\nContent-Length: 0\r\n${status === 401 ? 'WWW-Authenticate: Bearer\r\n' : ''}\r\n`);
}

let page: string | undefined;
/** The monitor: one self-contained page (HTML with its script and style inlined; no CDN). */
function monitorPage(): string {
  if (page) return page;
  const dir = new URL('./web/', import.meta.url);
  const html = readFileSync(new URL('index.html', dir), 'utf8');
  const js = readFileSync(new URL('monitor.js', dir), 'utf8');
  const css = readFileSync(new URL('monitor.css', dir), 'utf8');
  page = html.replace('<!--STYLE-->', `<style>\n${css}</style>`).replace('<!--SCRIPT-->', `<script>\n${js}</script>`);
  return page;
}

