/**
 * The relay's session logic: clients (legacy PMI_FD ranks, or TCP/Unix PMI_PORT ranks) on one
 * side, one upstream connection per session on the other, keyed by the client's PMI_ID.
 *
 * Rules of this file:
 * 1. Sans-I/O: inputs are connection events, lines and timer expiries; outputs are actions. The
 *    host opens upstream connections and runs timers when told.
 * 2. Bytes are forwarded as they came; every line is also parsed, because the session logic (and
 *    the tap) need to know what it is.
 * 3. A session outlives its client connection. The reconnection rules (README table):
 *    - a client that disconnects before finalize leaves its session *held* for `holdMs` (0: pass
 *      the failure through at once; null: hold until the job ends); the upstream connection stays
 *      open and a reply arriving meanwhile is kept;
 *    - a new connection with the same PMI_ID (and the same uid) takes the session over, also when
 *      the old connection still looks alive (a CRIU restore leaves it half-open): newer wins, the
 *      old one is closed;
 *    - what each request gets (answered from the session, the kept reply, queued, forwarded…)
 *      is the rule table in rules.ts, looked up by the session's phase and the request's kind
 *      (request() below); the README's table is generated from it;
 *    - a held session whose hold expires is closed upstream, so the server sees a failed rank;
 *    - a session whose PMI_ID the upstream refuses is forgotten (it never was one of the job's).
 *    The replay rules, and why each is safe, are in replay.ts.
 * 5. Receipt of replies (replay.ts): the last reply a client was sent is *unconfirmed* until the
 *    client sends its next line on that connection or the kernel says the bytes were taken
 *    (`unread` option). When the client leaves or is replaced before that, the reply is kept for
 *    its re-send; a reply known to be received is never replayed. A live client's request always
 *    goes upstream, except the re-sends a takeover allows (replay.ts).
 * 4. The client's handshake is answered from the upstream's: `initack` + `set` lines rewritten with
 *    the rank and size the upstream gave (or, for an inherited-fd upstream, PMI_RANK/PMI_SIZE).
 */
import { formatReply, pmi2FailureResponse, pmi2ResponseFor, preview, tokenize, tokenizeFrame, isPmi2Tokens, isTokens, wireMsg, wireItemText, type Tokens, type WireItem } from '../protocol/index.js';
import { foreignAnswer } from '../protocol/foreign-answer.js';
import { RelayKvsCache, type CacheStats } from './kvs-cache.js';
import { PutHistory, type Unconfirmed } from './replay.js';
import { BLOCK, KINDS, PMI1_KINDS, pmi1Kind, type RequestKind } from './kinds.js';
import { endsCatchUp, phaseOf, stepsFor, type Step } from './rules.js';
import type { ClientFacts, ClientId, RelayAction, RelayEvent, RelayInput, SessionId, SessionState } from './types.js';

export interface UpstreamIdentity {
  readonly rank: number;
  readonly size: number;
  readonly appnum: number;
  readonly debug: number;
}

export interface RelayEngineOptions {
  /**
   * `socket`: each session opens its own connection and sends `initack pmiid=<upstream id>`.
   * `fd`: one inherited connection (PMI_FD from hydra, flux, Slurm) whose identity is known from
   * PMI_RANK/PMI_SIZE; it carries one session, and no handshake is sent upstream.
   */
  readonly upstream: { readonly mode: 'socket' } | { readonly mode: 'fd'; readonly identity: UpstreamIdentity };
  /** Client PMI_ID → upstream pmiid; undefined refuses the id. Default: identity. */
  readonly mapId?: (pmiid: number) => number | undefined;
  /** How long a disconnected session is held (ms); null holds until the job ends; 0 passes through. */
  readonly holdMs: number | null;
  /**
   * Answer `get`s from the answers of the current barrier epoch (kvs-cache.ts). Default true;
   * false forwards every get (to measure the hop, or to rule the cache out when debugging).
   */
  readonly kvsCache?: boolean;
  /**
   * Bytes sent to a client connection that its peer has not provably received: TCP not yet
   * acknowledged, Unix not yet read (SIOCOUTQ), plus what is still queued in the host. 0: all
   * received; undefined: cannot tell (counted as not received). Asked when a client leaves or is
   * replaced with a reply unconfirmed, and on ticks. Default: cannot tell.
   */
  readonly unread?: (client: ClientId) => number | undefined;
}

/** Requests a session may have waiting behind the one in flight (a lock-step client has one). */
const MAX_QUEUED = 256;
const MAX_QUEUED_BYTES = 256 * 1024;

/** A reply line `cmd=<name>` whose rc is 0 (or absent: hydra 4.0 writes none on success). */
function succeeded(line: string, name: string): boolean {
  const t = tokenize(line);
  if (!isTokens(t) || t.name !== name) return false;
  const rc = t.attrs.get('rc');
  return rc === undefined || rc === '0';
}

/** The request line a spawn block's reply is kept under. */
const SPAWN_LINE = 'mcmd=spawn';

/** kvsname, key, value of a put. */
type PutAttrs = readonly [string, string, string];

/** PMI-1 requests whose answers never change during a job: kept to answer from the session (rules.ts). */
const INVARIANT = new Set([...PMI1_KINDS].filter(([, kind]) => kind === 'init' || kind === 'query').map(([name]) => name));

/** A request as the rules see it: its kind, and what the steps read of its line. */
interface Request {
  readonly client: Client;
  readonly line: string;
  /** The wire name (`cmd=<name>`; BLOCK for `mcmd=` lines; '' if unparsable): what events name. */
  readonly cmd: string;
  readonly kind: RequestKind;
  readonly tokens: Tokens | null;
  readonly put: PutAttrs | undefined;
}

/** A step of a rule (rules.ts): true once it handled the request, false to try the next step. */
type StepFn = (session: Session, req: Request, out: RelayAction[]) => boolean;

interface Inflight {
  readonly line: string;
  readonly cmd: string;
  /** The client that asked, or null once it went away (the reply will be kept). */
  client: ClientId | null;
  readonly put?: PutAttrs;
  /**
   * A `get` not sent upstream yet: it waits for another session's fetch of the same key (parked),
   * or it is the fetch itself (fetching). `ck` is its cache key.
   */
  readonly cache?: { readonly ck: string; readonly parked: boolean };
}

interface Session {
  readonly id: SessionId;
  readonly upstreamId: number;
  state: SessionState;
  uid: number | undefined;
  client: ClientId | null;
  identity: UpstreamIdentity | null;
  /** Lines of the upstream handshake still expected (initack + 3 set lines). */
  handshakeLines: number;
  /** Clients waiting for their initack answer until the upstream handshake completes. */
  awaitingInitack: ClientId[];
  readonly invariant: Map<string, string>;
  /** Puts acknowledged since the client last received a barrier_out (replay.ts). */
  readonly puts: PutHistory;
  /** Set by a takeover: the new client may re-send what its predecessor did this epoch (replay.ts). */
  catchingUp: boolean;
  /** The last reply sent to the current client, until it provably received it. */
  unconfirmed: Unconfirmed | null;
  /**
   * A re-sent spawn block whose lines are swallowed until its last segment's endcmd (the kept
   * reply then): the segment counts it announced so far.
   */
  swallowSpawn: { tot: number; sofar: number } | null;
  inflight: Inflight | null;
  /** A reply that arrived while no client was connected, for the request that asked it. */
  kept: { readonly line: string; readonly reply: string } | null;
  /** Requests waiting for the upstream (lock-step: one at a time). */
  readonly queue: Array<{ client: ClientId; line: string }>;
  /** Bytes of the lines in `queue` (bounded with its length). */
  queuedBytes: number;
  /** Lines of an mcmd=spawn block being forwarded. */
  inSpawn: boolean;
  /**
   * The upstream answered the block before its endcmd (a server that refuses a malformed block
   * at once and skips the rest): that endcmd then awaits nothing.
   */
  spawnAnswered: boolean;
  /** Barriers this session completed upstream: its KVS epoch. */
  barriers: number;
}

interface Client {
  readonly id: ClientId;
  readonly facts: ClientFacts;
  session: SessionId | null;
  closing: boolean;
}

export class RelayEngine {
  private readonly sessions = new Map<SessionId, Session>();
  private readonly clients = new Map<ClientId, Client>();
  private readonly mapId: (pmiid: number) => number | undefined;
  private readonly cache: RelayKvsCache | null;
  private readonly unread: (client: ClientId) => number | undefined;

  constructor(private readonly opts: RelayEngineOptions) {
    this.mapId = opts.mapId ?? ((id) => id);
    this.unread = opts.unread ?? (() => undefined);
    this.cache = opts.kvsCache === false ? null : new RelayKvsCache();
    if (opts.holdMs !== null && (!Number.isFinite(opts.holdMs) || opts.holdMs < 0)) throw new TypeError(`holdMs must be >= 0 or null, got ${opts.holdMs}`);
  }

  handle(input: RelayInput): RelayAction[] {
    const out: RelayAction[] = [];
    switch (input.kind) {
      case 'client-connect':
        this.clientConnect(input.client, input.facts, out);
        break;
      case 'client-input':
        this.clientInput(input.client, input.input, out);
        break;
      case 'client-close':
        this.clientClose(input.client, input.reason, out);
        break;
      case 'upstream-connected':
        this.upstreamConnected(input.session, out);
        break;
      case 'upstream-input':
        this.upstreamInput(input.session, input.input, out);
        break;
      case 'upstream-close':
        this.upstreamClose(input.session, input.reason, out);
        break;
      case 'timer':
        this.holdExpired(input.session, out);
        break;
      case 'prepare':
        this.prepare(input.session, out);
        break;
      case 'tick':
        this.tick(out);
        break;
    }
    return out;
  }

  sessionStates(): Array<{ session: SessionId; state: SessionState; client: ClientId | null; rank: number | null }> {
    return [...this.sessions.values()].map((s) => ({ session: s.id, state: s.state, client: s.client, rank: s.identity?.rank ?? null }));
  }

  /** What the KVS cache did (null when it is off). */
  cacheStats(): CacheStats | null {
    return this.cache?.stats() ?? null;
  }

  /** Sessions not yet finalized or closed. */
  get openSessions(): number {
    return [...this.sessions.values()].filter((s) => s.state !== 'finalized' && s.state !== 'closed').length;
  }

  // ---- clients ---------------------------------------------------------------------------------

  private clientConnect(id: ClientId, facts: ClientFacts, out: RelayAction[]): void {
    const client: Client = { id, facts, session: null, closing: false };
    this.clients.set(id, client);
    if (facts.pmiid !== undefined) this.bindClient(client, facts.pmiid, false, out);
  }

  private clientInput(id: ClientId, input: WireItem, out: RelayAction[]): void {
    const client = this.clients.get(id);
    if (!client || client.closing) return;
    if (input.kind !== 'line' && input.kind !== 'overlong') return this.clientNotPmi1(client, input, out);
    if (input.kind === 'overlong') {
      // The upstream applies its own limit; we will not buffer more than ours. Tell the client.
      const m = /^cmd=([^ \t]+)/.exec(input.prefix);
      this.sendClient(client, `cmd=error rc=8 msg=${wireMsg(`line_of_${input.length}_bytes_too_long_for_the_relay${m?.[1] ? `_(${m[1]})` : ''}`)}\n`, out);
      out.push(event({ type: 'protocol-error', client: id, message: `a ${input.length}-byte line from client ${id} exceeds the relay's line limit` }));
      return;
    }
    const line = input.line;
    const session = client.session === null ? undefined : this.sessions.get(client.session);
    if (!session) return this.firstLine(client, line, out);
    if (session.client !== client.id) return; // superseded (taken over): ignore stragglers
    // A lock-step client speaks again only after reading its reply: that reply is received.
    this.confirmed(session, out);
    this.request(session, client, line, out);
  }

  /**
   * What a PMI-1 session cannot carry: a PMI-2 frame (answered in PMI-2, so the client fails at
   * once instead of waiting), a stream that cannot be followed or another protocol (closed), a
   * message cut short by EOF (only reported).
   */
  private clientNotPmi1(client: Client, input: Exclude<WireItem, { kind: 'line' | 'overlong' }>, out: RelayAction[]): void {
    const id = client.id;
    switch (input.kind) {
      case 'truncated':
        out.push(event({ type: 'protocol-error', client: id, message: `client ${id} closed its connection in the middle of a message (${preview(wireItemText(input))})` }));
        return;
      case 'frame': {
        const t = tokenizeFrame(input.body);
        const name = isPmi2Tokens(t) ? t.name : '';
        const response = pmi2ResponseFor(name) ?? 'error-response';
        if (response !== null) this.sendClient(client, pmi2FailureResponse(response, { rc: -1, msg: 'the_pmibridge_relay_does_not_carry_PMI-2_yet' }), out);
        return this.dropClient(client, `client ${id} speaks PMI-2 (${preview(input.body)}); this relay carries PMI-1 sessions only`, out);
      }
      case 'bad-frame':
        return this.dropClient(client, `client ${id}: ${input.detail}; the stream cannot be read any further`, out);
      case 'foreign': {
        const answer = foreignAnswer(input.protocol);
        if (answer !== null) this.sendClient(client, answer, out);
        return this.dropClient(client, `client ${id} sent ${input.reason}`, out);
      }
    }
  }

  private dropClient(client: Client, message: string, out: RelayAction[]): void {
    out.push(event({ type: 'protocol-error', client: client.id, message }));
    client.closing = true;
    out.push({ kind: 'client-close', client: client.id, reason: message });
  }

  /** A socket client's first line: `initack pmiid=N` names its session. */
  private firstLine(client: Client, line: string, out: RelayAction[]): void {
    const t = tokenize(line);
    if (isTokens(t) && t.head === 'cmd' && t.name === 'initack') {
      const raw = t.attrs.get('pmiid') ?? '';
      if (!/^\d{1,9}$/.test(raw)) return this.refuse(client, 'initack', 'E_BAD_PMIID', 'initack_needs_a_numeric_pmiid', `initack without a numeric pmiid (${preview(line)})`, out);
      this.bindClient(client, Number(raw), true, out);
      return;
    }
    const name = isTokens(t) ? t.name : '';
    const reply = name === 'init' ? 'response_to_init' : 'error';
    this.refuse(client, reply, 'E_NO_PMIID', 'the_relay_needs_PMI_ID_send_initack_first', `client ${client.id} sent ${preview(line)} before initack; the relay maps sessions by PMI_ID (set PMI_ID for MPICH)`, out);
  }

  private bindClient(client: Client, pmiid: number, answerInitack: boolean, out: RelayAction[]): void {
    const upstreamId = this.mapId(pmiid);
    if (upstreamId === undefined) {
      return this.refuse(client, answerInitack ? 'initack' : 'error', 'E_UNKNOWN_PMIID', `no_session_for_pmiid_${pmiid}`, `PMI_ID ${pmiid} is not served by this relay`, out);
    }
    let session = this.sessions.get(pmiid);
    const over = (s: Session) => this.refuse(client, answerInitack ? 'initack' : 'error', 'E_SESSION_OVER', `session_${pmiid}_is_${s.state}`, `PMI_ID ${pmiid} already ${s.state}; it cannot join again`, out);
    if (session?.state === 'closed') return over(session);
    if (session) {
      // Takeover: only by the same uid; the newer connection wins, even over a live-looking one.
      // A session owned by a known uid is only taken over by that uid — not by one we cannot
      // verify (a remote TCP peer), which could be anyone.
      if (session.uid !== undefined && session.uid !== client.facts.uid) {
        const who = client.facts.uid === undefined ? 'a client whose uid cannot be verified' : `uid ${client.facts.uid}`;
        return this.refuse(client, answerInitack ? 'initack' : 'error', 'E_WRONG_UID', `pmiid_${pmiid}_belongs_to_another_user`, `${who} tried to take over PMI_ID ${pmiid}, owned by uid ${session.uid}`, out);
      }
      // Did the connection being replaced get its last reply? (A frozen one may not have.)
      if (session.client !== null) this.settleReceipt(session, session.client, out);
      // A finalized session still admits the client whose finalize_ack it did not receive.
      if (session.state === 'finalized' && !session.kept) return over(session);
      // A prepared session (or one whose first client's uid was unknown) belongs to the first known uid.
      session.uid ??= client.facts.uid;
      const previous = session.client;
      const wasHeld = session.state === 'held';
      if (session.state === 'waiting' || session.state === 'stalled') session.state = 'ready';
      if (previous !== null || wasHeld) session.catchingUp = true;
      session.swallowSpawn = null; // a block the old connection was re-sending: the new one starts over
      if (previous !== null) {
        const old = this.clients.get(previous);
        if (old && !old.closing) {
          old.closing = true;
          out.push({ kind: 'client-close', client: previous, reason: `replaced by a newer connection for PMI_ID ${pmiid}` });
        }
        if (session.inflight?.client === previous) session.inflight.client = null;
      }
      if (wasHeld) {
        out.push({ kind: 'timer-clear', session: session.id });
        session.state = session.identity && session.handshakeLines === 0 ? 'ready' : 'opening';
      }
      // Requests the old connection had queued are void: the new one will send its own.
      for (let i = session.queue.length - 1; i >= 0; i--) if (session.queue[i]?.client !== client.id) session.queue.splice(i, 1);
      session.queuedBytes = session.queue.reduce((n, q) => n + q.line.length, 0);
      session.client = client.id;
      client.session = session.id;
      out.push(event({ type: 'taken-over', session: session.id, client: client.id, previous, wasHeld }));
    } else {
      session = this.newSession(pmiid, upstreamId, client, out);
    }
    if (answerInitack) {
      if (session.identity && session.state !== 'opening') this.answerInitack(session, client, out);
      else session.awaitingInitack.push(client.id);
    }
  }

  private newSession(pmiid: number, upstreamId: number, client: Client | null, out: RelayAction[]): Session {
    const session: Session = {
      id: pmiid,
      upstreamId,
      state: 'opening',
      uid: client?.facts.uid,
      client: client?.id ?? null,
      identity: this.opts.upstream.mode === 'fd' ? this.opts.upstream.identity : null,
      handshakeLines: this.opts.upstream.mode === 'socket' ? 4 : 0,
      awaitingInitack: [],
      invariant: new Map(),
      puts: new PutHistory(),
      catchingUp: false,
      unconfirmed: null,
      swallowSpawn: null,
      inflight: null,
      kept: null,
      queue: [],
      queuedBytes: 0,
      inSpawn: false,
      spawnAnswered: false,
      barriers: 0,
    };
    this.sessions.set(pmiid, session);
    if (client) client.session = session.id;
    out.push(event({ type: 'session-opened', session: session.id, upstreamId, client: client?.id ?? null }));
    out.push({ kind: 'upstream-open', session: session.id, upstreamId });
    return session;
  }

  private prepare(pmiid: number, out: RelayAction[]): void {
    if (this.sessions.has(pmiid)) return;
    const upstreamId = this.mapId(pmiid);
    if (upstreamId === undefined) {
      out.push(event({ type: 'protocol-error', session: pmiid, message: `PMI_ID ${pmiid} is not served by this relay` }));
      return;
    }
    this.newSession(pmiid, upstreamId, null, out);
  }

  /** The session a client connection belongs to, if it has one yet. */
  sessionOfClient(client: ClientId): SessionId | undefined {
    return this.clients.get(client)?.session ?? undefined;
  }

  /** Rank, size, appnum, debug of a session once the upstream told them. */
  identityOf(pmiid: SessionId): UpstreamIdentity | null {
    const s = this.sessions.get(pmiid);
    return s && s.handshakeLines === 0 ? s.identity : null;
  }

  private answerInitack(session: Session, client: Client, out: RelayAction[]): void {
    const id = session.identity as UpstreamIdentity;
    this.sendClient(client, formatReply({ cmd: 'initack', rc: 0, rank: id.rank, size: id.size, appnum: id.appnum, debug: id.debug }), out);
  }

  /** Send the reply to `line` to the session's client; it stays unconfirmed until proven received. */
  private answer(session: Session, client: Client, line: string, reply: string, out: RelayAction[]): void {
    this.sendClient(client, reply, out);
    if (session.client === client.id) session.unconfirmed = { line, reply, ticks: 0 };
  }

  /** The current client provably has its last reply (it spoke again, or the kernel says so). */
  private confirmed(session: Session, out: RelayAction[]): void {
    if (session.unconfirmed) session.puts.received();
    session.unconfirmed = null;
    if (session.state === 'stalled') {
      session.state = 'ready';
      out.push(event({ type: 'resumed', session: session.id }));
    }
  }

  /**
   * `client` leaves the session (closed, or replaced by a newer connection): its last reply, unless
   * provably received, is kept for the re-send a restored or restarted client will make.
   */
  private settleReceipt(session: Session, client: ClientId, out: RelayAction[]): void {
    const u = session.unconfirmed;
    session.unconfirmed = null;
    // A kept reply outlives reads only (request()): an unconfirmed one now is a read's, and the
    // kept one is what the client still has to re-send.
    if (!u || session.kept) return;
    const unread = this.unread(client);
    if (unread === 0) return session.puts.received();
    session.puts.notReceived();
    session.kept = { line: u.line, reply: u.reply };
    out.push(event({ type: 'reply-kept', session: session.id, request: preview(u.line), unread: unread ?? null }));
  }

  /** Once a second: confirm replies the kernel says were taken; report clients that stopped reading. */
  private tick(out: RelayAction[]): void {
    for (const session of this.sessions.values()) {
      const u = session.unconfirmed;
      if (!u || session.client === null) continue;
      // A reply sent since the last tick is left alone: most are read within microseconds, and the
      // client's next request proves it for free.
      if (u.ticks++ === 0) continue;
      const unread = this.unread(session.client);
      if (unread === 0) this.confirmed(session, out);
      else if (unread !== undefined && session.state === 'ready') {
        session.state = 'stalled';
        out.push(event({ type: 'stalled', session: session.id, unread }));
      }
    }
  }

  /**
   * A request from the session's current client: classify it, find the session's phase, and run
   * the steps the rule table (rules.ts) gives for that pair until one handles it.
   */
  private request(session: Session, client: Client, line: string, out: RelayAction[]): void {
    // The hot path: a get already answered this epoch, from an idle session — no parsing. (It is
    // the `ready`/`kvs-get` rule's cache hit, taken before classifying.)
    if (this.cache && session.state === 'ready' && !session.inflight && !session.kept && !session.inSpawn && session.barriers === this.cache.epoch) {
      const reply = this.cache.hitLine(line);
      if (reply !== undefined) return this.answer(session, client, line, reply, out);
    }
    const req = this.classify(client, line);
    const phase = phaseOf(
      {
        swallowingSpawn: session.swallowSpawn !== null,
        spawnResultKept: session.kept?.line === SPAWN_LINE,
        inSpawn: session.inSpawn,
        opening: session.state === 'opening',
        inflight: session.inflight !== null,
        finalized: session.state === 'finalized',
      },
      req.kind,
    );
    // The takeover's catch-up ends with the first request that is not a start-up query, a read or
    // a re-sent put: from then on the client is live and everything it asks goes upstream. The
    // lines of a replayed block are not requests of the new client's: they leave it as it is.
    if (phase !== 'replaying-spawn' && session.catchingUp && endsCatchUp(req.kind, !!req.put && session.puts.acknowledged(...req.put))) session.catchingUp = false;
    for (const step of stepsFor(phase, req.kind)) if (this.steps[step](session, req, out)) return;
  }

  /** What a PMI-1 line asks (its kind) and the attributes the steps read. */
  private classify(client: Client, line: string): Request {
    const t = tokenize(line);
    const tokens = isTokens(t) ? t : null;
    const cmd = line.startsWith('mcmd=') ? BLOCK : tokens ? tokens.name : '';
    const put = cmd === 'put' && tokens ? ([tokens.attrs.get('kvsname') ?? '', tokens.attrs.get('key') ?? '', tokens.attrs.get('value') ?? ''] as const) : undefined;
    return { client, line, cmd, kind: pmi1Kind(cmd), tokens, put };
  }

  // ---- the steps of the rules (rules.ts says what each does and why it is safe) ----------------

  private readonly steps: Readonly<Record<Step, StepFn>> = {
    'swallow-spawn': (s, r, out) => {
      this.replaySpawn(s, r.client, r.line, out);
      return true;
    },
    'forward-block': (s, r, out) => {
      this.spawnLine(s, r.line, out);
      return true;
    },
    'continue-block': (s, r, out) => {
      // Busy only with this block itself (after an endcmd): its further segments go straight on.
      const busy = s.state === 'opening' || (s.inflight !== null && s.inflight.cmd !== BLOCK);
      if (busy) return false;
      this.spawnLine(s, r.line, out);
      return true;
    },
    'answer-handshake': (s, r, out) => {
      // A client repeating its handshake on the same connection: answer from the session.
      if (s.identity && s.state !== 'opening') this.answerInitack(s, r.client, out);
      else s.awaitingInitack.push(r.client.id);
      return true;
    },
    'answer-from-session': (s, r, out) => {
      const cached = s.invariant.get(r.line);
      if (cached === undefined) return false;
      out.push(event({ type: 'answered-locally', session: s.id, cmd: r.cmd }));
      this.answer(s, r.client, r.line, cached, out);
      return true;
    },
    'forget-cached-key': (_s, r) => {
      if (r.put && this.cache) this.cache.forget(RelayKvsCache.keyOf(r.put[0], r.put[1]));
      return false;
    },
    'ack-resent-put': (s, r, out) => {
      // Still catching up (so this put was acknowledged to the predecessor this epoch, replay.ts).
      if (!r.put || !s.catchingUp || s.kept?.line === r.line) return false;
      out.push(event({ type: 'answered-locally', session: s.id, cmd: 'put (re-sent after a takeover, acknowledged before it)' }));
      this.answer(s, r.client, r.line, 'cmd=put_result rc=0\n', out);
      return true;
    },
    wait: (s, r, out) => this.wait(s, r, out),
    'kept-reply': (s, r, out) => this.keptReply(s, r, out),
    'refuse-finalized': (s, r, out) => {
      this.answer(s, r.client, r.line, `cmd=error rc=-1 msg=${wireMsg(`PMI_ID_${s.id}_already_finalized`)}\n`, out);
      return true;
    },
    'refuse-finalized-spawn': (s, r, out) => {
      // The upstream connection is done: nothing goes there any more (a block's lines would).
      this.answer(s, r.client, r.line, `cmd=spawn_result rc=-1 msg=${wireMsg(`PMI_ID_${s.id}_already_finalized`)}\n`, out);
      return true;
    },
    'cached-get': (s, r, out) => {
      // A get with a repeated attribute is forwarded but never cached: we read its first `key` (as
      // hydra does), but another upstream might read it differently and file its answer elsewhere.
      const t = r.tokens;
      if (!t || t.repeated.length > 0 || !this.cache || s.barriers !== this.cache.epoch || s.inSpawn) return false;
      this.cachedGet(s, r.client.id, r.line, RelayKvsCache.keyOf(t.attrs.get('kvsname') ?? '', t.attrs.get('key') ?? ''), out);
      return true;
    },
    forward: (s, r, out) => {
      this.forward(s, r.client.id, r.cmd, r.line, r.put, out);
      return true;
    },
  };

  /** The upstream is busy (handshake, or a request in flight): the request waits its turn. */
  private wait(session: Session, req: Request, out: RelayAction[]): boolean {
    const { client, line } = req;
    if (session.inflight && session.inflight.client === null && session.inflight.line === line) {
      // The request that was in flight when the old connection went away, sent again: its
      // reply is on its way; hand it to this client instead of asking twice.
      session.inflight.client = client.id;
      out.push(event({ type: 'replayed', session: session.id, what: `${req.cmd} (waiting for the reply already asked for)` }));
      return true;
    }
    if (session.queue.length >= MAX_QUEUED || session.queuedBytes + line.length > MAX_QUEUED_BYTES) {
      // PMI is lock-step: a client with this much unanswered is flooding, not waiting.
      this.refuse(client, 'error', 'E_FLOOD', 'too_many_requests_waiting_send_one_request_at_a_time', `client ${client.id} (PMI_ID ${session.id}) sent more than ${MAX_QUEUED} requests or ${MAX_QUEUED_BYTES} bytes without waiting for the replies; closing that connection`, out);
      return true;
    }
    session.queue.push({ client: client.id, line });
    session.queuedBytes += line.length;
    return true;
  }

  /**
   * A kept reply waits for its request to be re-sent. Reads may come first (a restarted MPICH
   * rank asks for PMI_process_mapping before its barrier); anything else means the client has
   * moved on, and the reply is void.
   */
  private keptReply(session: Session, req: Request, out: RelayAction[]): boolean {
    const kept = session.kept;
    if (!kept || (kept.line !== req.line && KINDS[req.kind].read)) return false;
    session.kept = null;
    if (kept.line === req.line) {
      out.push(event({ type: 'replayed', session: session.id, what: `${req.cmd} (reply kept while disconnected)` }));
      this.deliver(session, req.client, req.cmd, req.line, kept.reply, out);
      return true;
    }
    out.push(event({ type: 'protocol-error', session: session.id, message: `dropped the reply kept for ${preview(kept.line)}: the reconnected client asked ${preview(req.line)} instead` }));
    return false;
  }

  /**
   * A `get` at the cache's epoch: answered from the cache, parked behind another session's fetch
   * of the same key, or fetched (the answer is remembered when it comes). `bypass`: the fetch it
   * waited for failed; ask on its own rather than queue behind the next waiter's fetch.
   */
  private cachedGet(session: Session, client: ClientId | null, line: string, ck: string, out: RelayAction[], bypass = false): void {
    const cache = this.cache as RelayKvsCache;
    const reply = cache.hit(ck);
    if (reply !== undefined) {
      cache.rememberLine(line, reply);
      const c = client === null ? undefined : this.clients.get(client);
      if (c && session.client === c.id) this.answer(session, c, line, reply, out);
      else session.kept = { line, reply };
      return;
    }
    if (!bypass && cache.park(ck, session.id)) {
      session.inflight = { line, cmd: 'get', client, cache: { ck, parked: true } };
      return;
    }
    if (!bypass) cache.fetch(ck);
    out.push({ kind: 'upstream-send', session: session.id, data: `${line}\n` });
    session.inflight = { line, cmd: 'get', client, ...(bypass ? {} : { cache: { ck, parked: false } }) };
  }

  /** The fetch a parked session waited for is answered: answer or ask again. */
  private wakeParked(id: SessionId, failed: boolean, out: RelayAction[]): void {
    const session = this.sessions.get(id);
    const p = session?.inflight;
    if (!session || !p?.cache?.parked || session.state === 'closed') return;
    session.inflight = null;
    this.cachedGet(session, p.client, p.line, p.cache.ck, out, failed);
    this.drain(session, out);
  }

  /** A fetch is answered, or its session is gone (reply undefined): wake whoever waited on it. */
  private settleFetch(ck: string, reply: string | undefined, epoch: number, out: RelayAction[], line?: string): void {
    if (!this.cache) return;
    const { waiting, remembered } = this.cache.settle(ck, reply, epoch);
    if (remembered && line !== undefined) this.cache.rememberLine(line, reply as string);
    for (const w of waiting) this.wakeParked(w, !remembered, out);
  }

  private forward(session: Session, client: ClientId | null, cmd: string, line: string, put: PutAttrs | undefined, out: RelayAction[]): void {
    out.push({ kind: 'upstream-send', session: session.id, data: `${line}\n` });
    if (cmd === 'abort') return; // no reply will come
    session.inflight = { line, cmd, client, ...(put ? { put } : {}) };
  }

  private spawnLine(session: Session, line: string, out: RelayAction[]): void {
    out.push({ kind: 'upstream-send', session: session.id, data: `${line}\n` });
    session.inSpawn = line.trim() !== 'endcmd';
    if (session.inSpawn) return;
    // The reply comes after the last segment's endcmd; any endcmd may be it — unless the upstream
    // has answered this block already (refused it early): then nothing more will come for it.
    if (session.spawnAnswered) {
      session.spawnAnswered = false;
      return this.drain(session, out);
    }
    session.inflight = { line: SPAWN_LINE, cmd: BLOCK, client: session.client };
  }

  /**
   * A spawn block re-sent after a takeover whose spawn_result was kept: the block was spawned
   * already, so its lines are swallowed and the kept result answers its endcmd.
   */
  private replaySpawn(session: Session, client: Client, line: string, out: RelayAction[]): void {
    const s = session.swallowSpawn;
    if (!s) {
      session.swallowSpawn = { tot: 1, sofar: 1 };
      out.push(event({ type: 'replayed', session: session.id, what: 'spawn (block already spawned; its result was kept)' }));
      return;
    }
    const m = /^(totspawns|spawnssofar)=(\d{1,9})$/.exec(line.trim());
    if (m) s[m[1] === 'totspawns' ? 'tot' : 'sofar'] = Number(m[2]);
    if (line.trim() !== 'endcmd' || s.sofar < s.tot) return;
    session.swallowSpawn = null;
    const kept = session.kept;
    session.kept = null;
    if (kept) this.deliver(session, client, BLOCK, SPAWN_LINE, kept.reply, out);
  }

  private deliver(session: Session, client: Client, cmd: string, line: string, reply: string, out: RelayAction[]): void {
    this.answer(session, client, line, reply, out);
    if (cmd === 'barrier_in' && succeeded(reply, 'barrier_out')) session.puts.barrierDelivered();
    if (cmd === 'finalize' && /^cmd=finalize_ack\b/.test(reply)) {
      this.finalized(session, out);
      client.closing = true;
      out.push({ kind: 'client-close', client: client.id, reason: 'finalized' });
    }
  }

  /** The upstream acknowledged finalize: its connection is done (once), whoever collects the ack. */
  private finalized(session: Session, out: RelayAction[]): void {
    if (session.state === 'finalized') return;
    session.state = 'finalized';
    out.push(event({ type: 'finalized', session: session.id }));
    out.push({ kind: 'upstream-close', session: session.id, reason: 'finalized' });
  }

  private clientClose(id: ClientId, reason: string, out: RelayAction[]): void {
    const client = this.clients.get(id);
    if (!client) return;
    this.clients.delete(id);
    const session = client.session === null ? undefined : this.sessions.get(client.session);
    if (!session || session.client !== id) return;
    session.client = null;
    if (session.inflight?.client === id) session.inflight.client = null;
    session.awaitingInitack = session.awaitingInitack.filter((c) => c !== id);
    this.settleReceipt(session, id, out);
    if (session.state === 'finalized' || session.state === 'closed') return;
    const hold = this.opts.holdMs;
    if (hold === 0) return this.closeSession(session, `client disconnected before finalize (${reason}); --hold 0 passes that through`, out);
    session.state = 'held';
    out.push(event({ type: 'held', session: session.id, holdMs: hold, reason }));
    if (hold !== null) out.push({ kind: 'timer-set', session: session.id, ms: hold });
  }

  private holdExpired(id: SessionId, out: RelayAction[]): void {
    const session = this.sessions.get(id);
    if (!session || session.state !== 'held') return;
    const message = `PMI_ID ${id} did not reconnect within the hold time (${this.opts.holdMs ?? 0} ms); closing its upstream connection so the job sees a failed rank`;
    out.push(event({ type: 'hold-expired', session: id, message }));
    this.closeSession(session, message, out);
  }

  private closeSession(session: Session, reason: string, out: RelayAction[], refused = false): void {
    session.state = 'closed';
    this.abandonFetch(session, out);
    out.push({ kind: 'upstream-close', session: session.id, reason });
    out.push(event({ type: 'session-closed', session: session.id, reason, ...(refused ? { refused: true as const } : {}) }));
  }

  // ---- upstream --------------------------------------------------------------------------------

  private upstreamConnected(id: SessionId, out: RelayAction[]): void {
    const session = this.sessions.get(id);
    if (!session || session.state === 'closed') return;
    if (this.opts.upstream.mode === 'socket') {
      out.push({ kind: 'upstream-send', session: id, data: `cmd=initack pmiid=${session.upstreamId}\n` });
      return;
    }
    this.ready(session, out);
  }

  private upstreamInput(id: SessionId, input: WireItem, out: RelayAction[]): void {
    const session = this.sessions.get(id);
    if (!session || session.state === 'closed') return;
    if (input.kind !== 'line' && input.kind !== 'overlong') {
      out.push(event({ type: 'protocol-error', session: id, message: `upstream sent what a PMI-1 session cannot carry (${input.kind}: ${preview(wireItemText(input))}); dropped` }));
      return;
    }
    if (input.kind === 'overlong') {
      out.push(event({ type: 'protocol-error', session: id, message: `upstream sent a ${input.length}-byte line; dropped` }));
      return;
    }
    const line = input.line;
    if (session.handshakeLines > 0) return this.handshakeLine(session, line, out);
    if (session.inSpawn && !session.spawnAnswered && (!session.inflight || session.inflight.cmd === BLOCK)) {
      // Mid-block, before its (last) endcmd: the upstream refused the block early. That line is
      // the block's answer; the endcmd, when it comes, must not wait for another.
      session.spawnAnswered = true;
      session.inflight ??= { line: SPAWN_LINE, cmd: BLOCK, client: session.client };
    }
    const inflight = session.inflight;
    if (!inflight) {
      // Nothing asked: pass it on (e.g. an error line), so the client sees what the server said.
      out.push(event({ type: 'protocol-error', session: id, message: `unsolicited upstream line ${preview(line)}` }));
      const c = session.client === null ? undefined : this.clients.get(session.client);
      if (c && !c.closing) this.sendClient(c, `${line}\n`, out);
      return;
    }
    session.inflight = null;
    const reply = `${line}\n`;
    // Only a completed barrier starts an epoch: a refusal (`barrier_out rc=1 msg=init_required`)
    // must not move this session's epoch, or it would file this epoch's answers under the next.
    if (inflight.cmd === 'barrier_in' && succeeded(line, 'barrier_out')) {
      session.barriers++;
      this.cache?.advance(session.barriers);
    }
    if (INVARIANT.has(inflight.cmd) && /\brc=0\b/.test(line)) session.invariant.set(inflight.line, reply);
    if (inflight.put && succeeded(line, 'put_result')) session.puts.record(...inflight.put);
    const client = inflight.client === null ? undefined : this.clients.get(inflight.client);
    if (client && session.client === client.id) this.deliver(session, client, inflight.cmd, inflight.line, reply, out);
    else {
      session.kept = { line: inflight.line, reply };
      if (inflight.cmd === 'finalize' && /^cmd=finalize_ack\b/.test(line)) this.finalized(session, out);
    }
    if (inflight.cache) this.settleFetch(inflight.cache.ck, reply, session.barriers, out, inflight.line);
    this.drain(session, out);
  }

  private handshakeLine(session: Session, line: string, out: RelayAction[]): void {
    const t = tokenize(line);
    const tokens: Tokens | null = isTokens(t) ? t : null;
    const step = 4 - session.handshakeLines; // 0: initack, 1: set size, 2: set rank, 3: set debug
    const want = ['initack', 'set', 'set', 'set'][step];
    if (!tokens || tokens.name !== want) {
      return this.failHandshake(session, `upstream answered the handshake with ${preview(line)} (expected cmd=${want})`, out);
    }
    const int = (k: string) => {
      const v = tokens.attrs.get(k);
      return v !== undefined && /^-?\d+$/.test(v) ? Number(v) : undefined;
    };
    if (step === 0) {
      const rc = int('rc') ?? 0;
      if (rc !== 0) {
        const why = tokens.attrs.get('msg') ?? `rc_${rc}`;
        return this.failHandshake(session, `upstream refused PMI_ID ${session.upstreamId}: ${why}`, out, why);
      }
      session.identity = { rank: int('rank') ?? -1, size: int('size') ?? -1, appnum: int('appnum') ?? 0, debug: int('debug') ?? 0 };
    } else {
      const key = ['size', 'rank', 'debug'][step - 1] as 'size' | 'rank' | 'debug';
      const v = int(key);
      if (v === undefined) return this.failHandshake(session, `upstream handshake line ${preview(line)} lacks ${key}=`, out);
      session.identity = { ...(session.identity as UpstreamIdentity), [key]: v };
    }
    session.handshakeLines--;
    if (session.handshakeLines === 0) this.ready(session, out);
  }

  private failHandshake(session: Session, message: string, out: RelayAction[], upstreamMsg?: string): void {
    out.push(event({ type: 'protocol-error', session: session.id, message }));
    for (const cid of session.awaitingInitack) {
      const c = this.clients.get(cid);
      if (c && session.client === cid) this.sendClient(c, `cmd=initack rc=-1 msg=${wireMsg(upstreamMsg ?? 'upstream_refused_the_handshake')}\n`, out);
    }
    if (session.client !== null) {
      const c = this.clients.get(session.client);
      if (c) {
        c.closing = true;
        out.push({ kind: 'client-close', client: c.id, reason: message });
      }
    }
    // Refused with a reason (rc≠0): the PMI_ID was wrong. A garbled handshake is a failure.
    const refused = upstreamMsg !== undefined;
    const wasHeld = session.state === 'held';
    this.closeSession(session, message, out, refused);
    if (refused) this.forget(session, wasHeld, out);
  }

  /**
   * A session the upstream refused never was one of the job's: nothing of it is kept. Any client
   * may name any PMI_ID, and keeping each refused one (for a "session_N_is_closed" answer) grew
   * the relay without bound, ~6 KiB per PMI_ID named. The PMI_ID named again opens a new session
   * and the upstream is asked again; its refused connection, still closing, is the host's to tell
   * apart from the new one's.
   */
  private forget(session: Session, wasHeld: boolean, out: RelayAction[]): void {
    this.sessions.delete(session.id);
    if (wasHeld) out.push({ kind: 'timer-clear', session: session.id });
  }

  private ready(session: Session, out: RelayAction[]): void {
    if (session.state === 'opening') session.state = session.client === null ? 'waiting' : 'ready';
    const id = session.identity as UpstreamIdentity;
    out.push(event({ type: 'handshaken', session: session.id, rank: id.rank, size: id.size }));
    for (const cid of session.awaitingInitack.splice(0)) {
      const c = this.clients.get(cid);
      if (c && session.client === cid) this.answerInitack(session, c, out);
    }
    this.drain(session, out);
  }

  /** Send the next queued request once the upstream is free. */
  private drain(session: Session, out: RelayAction[]): void {
    // A queued spawn block is sent whole: its lines, and its further segments after an endcmd.
    const free = () => !session.inflight || session.inSpawn || (session.inflight.cmd === BLOCK && !!session.queue[0]?.line.startsWith('mcmd='));
    while (session.queue.length > 0 && session.state !== 'opening' && free()) {
      const next = session.queue.shift() as { client: ClientId; line: string };
      session.queuedBytes -= next.line.length;
      const c = this.clients.get(next.client);
      if (!c || c.closing || session.client !== c.id) continue; // closing: e.g. finalized meanwhile
      this.request(session, c, next.line, out);
    }
  }

  private upstreamClose(id: SessionId, reason: string, out: RelayAction[]): void {
    const session = this.sessions.get(id);
    if (!session || session.state === 'closed') return;
    const wasFinalized = session.state === 'finalized';
    session.state = wasFinalized ? 'finalized' : 'closed';
    if (wasFinalized) return;
    this.abandonFetch(session, out);
    const message = `the upstream server closed PMI_ID ${id}'s connection (${reason})`;
    out.push(event({ type: 'session-closed', session: id, reason: message }));
    if (session.client !== null) {
      const c = this.clients.get(session.client);
      if (c) {
        c.closing = true;
        out.push({ kind: 'client-close', client: c.id, reason: message });
      }
    }
  }

  // ---- helpers -----------------------------------------------------------------------------------

  /** A closed session's fetch will never be answered: the sessions parked on it ask themselves. */
  private abandonFetch(session: Session, out: RelayAction[]): void {
    const f = session.inflight?.cache;
    if (f && !f.parked) this.settleFetch(f.ck, undefined, session.barriers, out);
  }

  private sendClient(client: Client, data: string, out: RelayAction[]): void {
    out.push({ kind: 'client-send', client: client.id, data });
  }

  private refuse(client: Client, reply: string, code: string, msg: string, message: string, out: RelayAction[]): void {
    client.closing = true;
    out.push(event({ type: 'refused', client: client.id, code, message }));
    out.push({ kind: 'client-send', client: client.id, data: `cmd=${reply} rc=-1 msg=${wireMsg(msg)}\n` });
    out.push({ kind: 'client-close', client: client.id, reason: message });
  }
}

function event(e: RelayEvent): RelayAction {
  return { kind: 'event', event: e };
}
