/**
 * The PMI-1 job engine: one job of `size` ranks, fed connection events and lines, returning actions.
 *
 * Rules of this file (as h11's _state.py states its own):
 * 1. No I/O, no clocks, no randomness: the same inputs give the same actions. Hosts own sockets.
 * 2. Identity comes from the edge or the handshake, never from a bare claim: a connection is bound
 *    to a rank by the launcher (PMI_FD channel), by `initack pmiid=N`, or — for a client that sends
 *    `init` without a handshake (PMI_PORT without PMI_ID) — to the lowest free rank.
 * 3. Every input gets a defined answer; no input throws. Answers to failures use the query's own
 *    reply command with rc≠0 and a `msg` without spaces, so the waiting client reads a failure
 *    instead of hanging. Lines that name no query are answered `cmd=error rc=-1 msg=…`.
 * 4. One connection's mistakes cost only that connection: after `maxStrikes` consecutive bad
 *    lines it is closed; other ranks, the KVS and the job go on (unless that rank had started
 *    PMI, in which case losing it fails the job, as in hydra).
 *
 * Per-connection answers (the README's state-machine table is this list):
 * - unbound connection: `initack` binds (unknown pmiid or one bound to a live connection → initack
 *   rc=-1 and close); `init` binds anonymously; anything else → its reply with rc=1 (send
 *   initack/init first).
 * - bound, before `init`: `initack` for its own rank is answered again; anything else → rc=1.
 * - `init` again after success: answered again (flux's tests rely on this).
 * - after `finalize`: every query → rc=1 msg=already_finalized.
 */
import {
  PMI_RC,
  SpawnAssembler,
  decodeQuery,
  failureReply,
  formatReply,
  problem,
  replyNameOf,
  rcText,
  type Limits,
  type Problem,
  type Query,
  type QueryOf,
  type Reply,
  type WireItem,
} from '../protocol/index.js';
import { defaultLimits } from '../protocol/limits.js';
import { EpochKvs } from './kvs.js';
import { NameService } from './name-service.js';
import { Pmi2Requests, pmi2Reply, type PmiVersions } from './pmi2-requests.js';
import { foreignAnswer } from '../protocol/foreign-answer.js';
import type { Action, ConnId, ConnectionFacts, EngineEvent, JobStatus, RankState } from './types.js';

export interface EngineOptions {
  readonly size: number;
  readonly kvsname?: string;
  readonly appnum?: number;
  /** Reported by get_universe_size; defaults to size (flux). hydra reports -1 unless -usize. */
  readonly universeSize?: number;
  readonly limits?: Partial<Limits>;
  /**
   * Value of the preset key PMI_process_mapping; default `(vector,(0,1,size))` (one node, all
   * ranks). null leaves it unset, so MPICH falls back to exchanging hostnames (multi-host jobs).
   */
  readonly processMapping?: string | null;
  /** `debug=` in the initack reply (MPICH's PMI_DEBUG level). */
  readonly debug?: number;
  /** Consecutive bad lines before a connection is closed. */
  readonly maxStrikes?: number;
  /** Which wire versions ranks may speak: `any` (default), `1` (PMI-1 only) or `2` (PMI-2 only). */
  readonly pmiVersions?: PmiVersions;
}

type Phase = 'new' | 'bound' | 'initialized' | 'finalized';

/** A connection as the engine sees it (pmi2-requests.ts serves the PMI-2 ones). */
export interface Conn {
  readonly id: ConnId;
  readonly facts: ConnectionFacts;
  rank: number | undefined;
  phase: Phase;
  /** Has this connection started PMI (sent init)? Losing such a rank fails the job. */
  spoke: boolean;
  inBarrier: boolean;
  strikes: number;
  spawn: SpawnAssembler | null;
  closing: boolean;
  /** Why the server itself closed this connection, when it did (said when a rank is lost so). */
  closedBecause?: string;
  /** The wire it speaks: PMI-2 after `init pmi_version=2` (or a first frame). */
  wire: 'pmi1' | 'pmi2';
  /** A PMI-2 fence's request id, echoed in the kvs-fence-response. */
  fenceThrid?: string | undefined;
}

interface RankSlot {
  conn: ConnId | null;
  state: RankState;
}

export interface RankSnapshot {
  readonly rank: number;
  readonly state: RankState;
  readonly conn: ConnId | null;
}

export const DEFAULT_MAX_STRIKES = 8;

/** Characters formatReply refuses to write (space and tab are refused earlier with their own code). */
const UNSAFE_VALUE = /[\r\n\0]/;

/** Why a value cannot travel in a PMI-1 reply (`get_result … value=`), or null. */
function pmi1Unreadable(value: string): Problem | null {
  // MPICH >= 4.1's parser rejects an empty `value=` in get_result ("Expecting value after =").
  if (value.length === 0) return problem('E_EMPTY_VALUE', PMI_RC.ERR_INVALID_VAL, 'empty_value', 'empty values cannot be read back by MPICH >= 4.1 clients; put a non-empty value');
  // We would have to write it back in get_result, and a space there breaks every MPICH client.
  if (/[ \t]/.test(value)) return problem('E_VALUE_HAS_SPACE', PMI_RC.ERR_INVALID_VAL, 'value_contains_a_space', 'PMI-1 values cannot contain spaces (MPICH clients cannot read them back); encode the value');
  // A CR (e.g. a client writing CRLF) would make formatReply throw when the value is read back.
  if (UNSAFE_VALUE.test(value)) return problem('E_VALUE_HAS_CONTROL', PMI_RC.ERR_INVALID_VAL, 'value_contains_a_control_character', 'PMI-1 values cannot contain CR, LF or NUL (did the client send CRLF line endings?)');
  return null;
}

export class ServerEngine {
  readonly size: number;
  readonly kvsname: string;
  readonly appnum: number;
  readonly universeSize: number;
  readonly limits: Limits;
  readonly debug: number;
  /** The preset PMI_process_mapping, or null when none is preset. */
  readonly processMapping: string | null;
  private readonly maxStrikes: number;
  private readonly conns = new Map<ConnId, Conn>();
  private readonly ranks: RankSlot[];
  private readonly kvs: EpochKvs;
  private readonly names = new NameService();
  /**
   * Formatted `get_result` lines of the committed KVS, by key. `get` is the request a wire-up
   * makes N² of, and its answer only changes when a barrier commits, so each key's reply is
   * formatted once per epoch (cleared in settleBarrier) instead of once per get.
   */
  private readonly getReplies = new Map<string, string>();
  private barrierCount = 0;
  private finalizedCount = 0;
  private result: JobStatus | null = null;
  readonly pmiVersions: PmiVersions;
  private readonly pmi2: Pmi2Requests;

  constructor(opts: EngineOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new TypeError(`job size must be a positive integer, got ${opts.size}`);
    this.size = opts.size;
    this.limits = defaultLimits(opts.limits);
    this.kvsname = opts.kvsname ?? 'kvs_pmibridge_0';
    if (/[\s\0]/.test(this.kvsname) || this.kvsname.length === 0 || this.kvsname.length >= this.limits.kvsnameMax) {
      throw new TypeError(`kvsname must be 1..${this.limits.kvsnameMax - 1} bytes without spaces`);
    }
    this.appnum = opts.appnum ?? 0;
    this.universeSize = opts.universeSize ?? opts.size;
    this.debug = opts.debug ?? 0;
    this.maxStrikes = opts.maxStrikes ?? DEFAULT_MAX_STRIKES;
    this.ranks = Array.from({ length: this.size }, () => ({ conn: null, state: 'waiting' }));
    const mapping = opts.processMapping === undefined ? `(vector,(0,1,${this.size}))` : opts.processMapping;
    this.processMapping = mapping;
    this.kvs = new EpochKvs(mapping === null ? [] : [['PMI_process_mapping', mapping]]);
    this.pmiVersions = opts.pmiVersions ?? 'any';
    this.pmi2 = new Pmi2Requests(this);
  }

  // ---- inputs ----------------------------------------------------------------------------------

  /** A new connection. With facts.rank (a launcher's PMI_FD channel) it is bound at once. */
  connect(id: ConnId, facts: ConnectionFacts): Action[] {
    const out: Action[] = [];
    if (this.conns.has(id)) throw new TypeError(`connection ${id} already exists`); // host bug, not peer input
    const conn: Conn = { id, facts, rank: undefined, phase: 'new', spoke: false, inBarrier: false, strikes: 0, spawn: null, closing: false, wire: 'pmi1' };
    this.conns.set(id, conn);
    out.push(event({ type: 'connected', conn: id, facts, ...(facts.rank !== undefined ? { rank: facts.rank } : {}) }));
    if (facts.rank !== undefined) {
      const why = this.bindProblem(facts.rank);
      if (why) return [...out, ...this.refuse(conn, why)];
      this.bind(conn, facts.rank, 'fd', out);
    }
    return out;
  }

  /** One framed input from a connection. */
  receive(id: ConnId, input: WireItem | { readonly kind: 'overlong'; readonly prefix: string; readonly length: number }): Action[] {
    const conn = this.conns.get(id);
    if (!conn || conn.closing) return [];
    if (this.result) return []; // the job is over; the host is tearing down
    const out: Action[] = [];
    switch (input.kind) {
      case 'line':
        break;
      case 'overlong':
        if ('wire' in input && input.wire === 'pmi2') this.pmi2.frameTooLong(conn, input.prefix, input.length, out);
        else this.lineTooLong(conn, input.prefix, input.length, out);
        return out;
      case 'frame':
        this.pmi2.receive(conn, input.body, out);
        return out;
      case 'bad-frame':
        this.unreadable(conn, `a bad PMI-2 frame (${input.detail}), after which its stream cannot be read`, out);
        return out;
      case 'foreign': {
        const answer = foreignAnswer(input.protocol);
        if (answer !== null) out.push(this.send(conn, answer));
        this.unreadable(conn, `${input.reason}`, out);
        return out;
      }
      case 'truncated':
        out.push(event({ type: 'protocol-error', conn: conn.id, code: 'E_TRUNCATED', message: `the connection closed in the middle of a ${input.wire === 'pmi2' ? 'PMI-2 frame' : 'line'} (${input.length} bytes: ${JSON.stringify(input.prefix.slice(0, 60))})`, ...(conn.rank !== undefined ? { rank: conn.rank } : {}) }));
        return out;
    }
    const line = input.line;
    if (conn.spawn?.active || line.startsWith('mcmd=')) {
      this.spawnLine(conn, line, out);
      return out;
    }
    const decoded = decodeQuery(line);
    if (!decoded.ok) {
      // A rank that asks to abort gets its abort, even if the request is malformed.
      if (decoded.cmd === 'abort' && conn.phase !== 'new') this.malformedAbort(conn, decoded.problem.detail, out);
      else this.badLine(conn, decoded.problem, decoded.reply ?? null, out);
      return out;
    }
    conn.strikes = 0; // a well-formed command, even a refused one, is not garbage
    this.dispatch(conn, decoded.query, out);
    return out;
  }

  /** The connection is gone (EOF, error, or closed by the host). */
  disconnect(id: ConnId): Action[] {
    const conn = this.conns.get(id);
    if (!conn) return [];
    this.conns.delete(id);
    this.pmi2.forget(conn);
    const out: Action[] = [];
    const rank = conn.rank;
    // Once the job is over, dropped connections are its consequence, not new failures.
    const clean = conn.phase === 'finalized' || !conn.spoke || this.result !== null;
    out.push(event({ type: 'disconnected', conn: id, clean, ...(rank !== undefined ? { rank } : {}) }));
    if (rank === undefined) return out;
    const slot = this.ranks[rank];
    if (!slot || slot.conn !== id) return out;
    slot.conn = null;
    if (conn.inBarrier) {
      conn.inBarrier = false;
      this.barrierCount--;
    }
    if (conn.phase === 'finalized' || this.result !== null) return out;
    if (!conn.spoke) {
      slot.state = 'waiting'; // never started PMI (e.g. a non-MPI program): nothing lost
      return out;
    }
    slot.state = 'failed';
    const message = conn.closedBecause !== undefined
      ? `rank ${rank}'s PMI connection was closed by the server before finalize: it sent ${conn.closedBecause}`
      : `rank ${rank} closed its PMI connection before finalize (the process died or closed the socket)`;
    out.push(event({ type: 'rank-failed', rank, message }));
    this.finish({ ok: false, exitCode: 1, reason: message, rank }, out);
    return out;
  }

  /**
   * The host closes a connection that has not identified itself (a timeout, or room needed for
   * new connections): it is told why in a `cmd=error` line and closed. A connection bound to a
   * rank by then is left alone.
   */
  dismiss(id: ConnId, p: Problem): Action[] {
    const conn = this.conns.get(id);
    if (!conn || conn.closing || conn.rank !== undefined) return [];
    return this.refuse(conn, p, 'error');
  }

  /** End the job from outside (a rank process failed, a signal…); idempotent. */
  fail(status: JobStatus): Action[] {
    const out: Action[] = [];
    this.finish(status, out);
    return out;
  }

  // ---- state for observers and tests -------------------------------------------------------------

  get finished(): JobStatus | null {
    return this.result;
  }

  rankStates(): RankSnapshot[] {
    return this.ranks.map((s, rank) => ({ rank, state: s.state, conn: s.conn }));
  }

  get kvsKeys(): number {
    return this.kvs.size;
  }

  get barrierEpoch(): number {
    return this.kvs.epoch;
  }

  /** Rank bound to a connection, if any. */
  rankOf(id: ConnId): number | undefined {
    return this.conns.get(id)?.rank;
  }

  // ---- dispatch ------------------------------------------------------------------------------------

  private dispatch(conn: Conn, q: Query, out: Action[]): void {
    if (q.cmd === 'initack') return this.initack(conn, q, out);
    // A PMI-2 client names its rank only in fullinit, after this line (never with initack).
    if (q.cmd === 'init' && q.pmi_version === 2 && conn.phase !== 'finalized') {
      if (conn.phase === 'initialized' && conn.wire === 'pmi1') {
        return this.answerFailure(conn, 'init', problem('E_ALREADY_INITIALIZED', PMI_RC.FAIL, 'already_initialized_with_PMI-1', 'init pmi_version=2 on a connection that already initialized PMI-1'), out);
      }
      return this.pmi2.init(conn, out);
    }
    if (conn.phase === 'new') {
      if (q.cmd === 'init') {
        const rank = this.freeRank();
        if (rank < 0) {
          return void out.push(...this.refuse(conn, problem('E_JOB_FULL', PMI_RC.FAIL, 'all_ranks_connected', `a connection sent init without initack but all ${this.size} ranks are already connected`), 'response_to_init'));
        }
        this.bind(conn, rank, 'anonymous', out);
      } else {
        return this.answerFailure(conn, q.cmd, problem('E_NOT_IDENTIFIED', PMI_RC.ERR_INIT, 'send_initack_or_init_first', `cmd=${q.cmd} before the connection identified itself (initack pmiid=N or init)`), out);
      }
    }
    if (conn.phase === 'finalized') {
      return this.answerFailure(conn, q.cmd, problem('E_FINALIZED', PMI_RC.ERR_INIT, 'already_finalized', `cmd=${q.cmd} after finalize`), out);
    }
    if (q.cmd === 'init') return this.init(conn, q, out);
    if (conn.phase !== 'initialized' && q.cmd !== 'abort') {
      return this.answerFailure(conn, q.cmd, problem('E_NOT_INITIALIZED', PMI_RC.ERR_INIT, 'init_required', `cmd=${q.cmd} before init`), out);
    }
    const rank = conn.rank as number;
    switch (q.cmd) {
      case 'get_maxes':
        return this.reply(conn, { cmd: 'maxes', rc: 0, kvsname_max: this.limits.kvsnameMax, keylen_max: this.limits.keylenMax, vallen_max: this.limits.vallenMax }, out);
      case 'get_appnum':
        return this.reply(conn, { cmd: 'appnum', rc: 0, appnum: this.appnum }, out);
      case 'get_my_kvsname':
        return this.reply(conn, { cmd: 'my_kvsname', rc: 0, kvsname: this.kvsname }, out);
      case 'get_universe_size':
        return this.reply(conn, { cmd: 'universe_size', rc: 0, size: this.universeSize }, out);
      case 'put':
        return this.put(conn, rank, q, out);
      case 'get':
        return this.get(conn, q, out);
      case 'barrier_in':
        return this.barrierIn(conn, rank, out);
      case 'finalize':
        return this.finalize(conn, rank, out);
      case 'abort':
        return this.abort(conn, q, out);
      case 'publish_name':
      case 'unpublish_name':
      case 'lookup_name':
        return this.nameService(conn, q, out);
      default:
        return assertNever(q);
    }
  }

  // ---- handshake and init ----------------------------------------------------------------------------

  private initack(conn: Conn, q: QueryOf<'initack'>, out: Action[]): void {
    if (conn.phase !== 'new') {
      if (conn.rank === q.pmiid && conn.phase === 'bound') return this.initackReply(conn, out);
      return this.answerFailure(conn, 'initack', problem('E_ALREADY_BOUND', PMI_RC.FAIL, `connection_is_already_rank_${conn.rank}`, `initack pmiid=${q.pmiid} on a connection already bound to rank ${conn.rank}`), out);
    }
    const why = this.bindProblem(q.pmiid);
    if (why) return void out.push(...this.refuse(conn, why, 'initack'));
    this.bind(conn, q.pmiid, 'initack', out);
    this.initackReply(conn, out);
  }

  private initackReply(conn: Conn, out: Action[]): void {
    this.reply(conn, { cmd: 'initack', rc: 0, rank: conn.rank as number, size: this.size, appnum: this.appnum, debug: this.debug }, out);
  }

  /** @internal Why a connection may not become `rank`, or null. */
  bindProblem(rank: number): Problem | null {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.size) {
      return problem('E_UNKNOWN_PMIID', PMI_RC.ERR_INVALID_ARG, `no_rank_${rank}_in_job_of_size_${this.size}`, `pmiid ${rank} is not a rank of this job (size ${this.size}); check PMI_ID`);
    }
    const slot = this.ranks[rank] as RankSlot;
    if (slot.conn !== null) {
      return problem('E_PMIID_IN_USE', PMI_RC.FAIL, `rank_${rank}_is_already_connected`, `rank ${rank} is already connected on another live connection (duplicate or impersonated PMI_ID); the newer connection was refused`);
    }
    if (slot.state === 'finalized' || slot.state === 'failed') {
      return problem('E_RANK_DONE', PMI_RC.FAIL, `rank_${rank}_already_${slot.state}`, `rank ${rank} already ${slot.state}; it cannot join again`);
    }
    return null;
  }

  /** @internal */
  bind(conn: Conn, rank: number, how: 'fd' | 'initack' | 'anonymous' | 'fullinit', out: Action[]): void {
    const slot = this.ranks[rank] as RankSlot;
    slot.conn = conn.id;
    slot.state = 'connected';
    conn.rank = rank;
    conn.phase = 'bound';
    out.push(event({ type: 'bound', conn: conn.id, rank, how }));
  }

  private init(conn: Conn, q: QueryOf<'init'>, out: Action[]): void {
    const v = q.pmi_version;
    const sub = q.pmi_subversion;
    // 1.1 is what every PMI-1 client asks; a 1.2+ request gets 1.1 (we do not implement 1.2's
    // grouped/tagged barriers), as flux does. 1.0 is refused as flux's tests expect.
    if (v !== 1 || sub < 1) {
      return this.answerFailure(conn, 'init', problem('E_VERSION', PMI_RC.FAIL, `pmi_version_${v}.${sub}_not_supported_need_1.1`, `client asked for PMI ${v}.${sub}; pmibridge serves PMI 1.1 and PMI 2.0`), out);
    }
    if (this.pmiVersions === '2') return this.refuseVersion(conn, 1, out);
    conn.wire = 'pmi1';
    this.initialized(conn, out);
    this.reply(conn, { cmd: 'response_to_init', rc: 0, pmi_version: 1, pmi_subversion: 1 }, out);
  }

  /**
   * A client speaking a version this job does not serve (`--pmi-version`): it is told so in its
   * own protocol (the PMI-1 init line, or a PMI-2 frame), and the job ends with that reason — it
   * cannot complete without this rank, and waiting for it would hang.
   * @internal for pmi2-requests.ts
   */
  refuseVersion(conn: Conn, asked: 1 | 2, out: Action[], frameReply?: string): void {
    const serves = this.pmiVersions === '1' ? 'PMI-1' : 'PMI-2';
    const p = problem('E_VERSION', PMI_RC.FAIL, `this_job_serves_${serves}_only`, `this job serves ${serves} only (--pmi-version ${this.pmiVersions})`);
    out.push(event({ type: 'refused', conn: conn.id, code: p.code, message: `a client asked for PMI-${asked}; ${p.detail}` }));
    out.push(this.send(conn, frameReply ?? failureReply('response_to_init', p)));
    conn.closing = true;
    out.push({ kind: 'close', conn: conn.id, reason: p.detail });
    const who = conn.rank !== undefined ? `rank ${conn.rank}` : `a client on connection ${conn.id}`;
    const message = `${who} speaks PMI-${asked}, but ${p.detail}; run it with --pmi-version ${asked} or any`;
    if (conn.rank !== undefined) {
      const slot = this.ranks[conn.rank] as RankSlot;
      if (slot.conn === conn.id) slot.conn = null;
      slot.state = 'failed';
      out.push(event({ type: 'rank-failed', rank: conn.rank, message }));
    }
    this.finish({ ok: false, exitCode: 1, reason: message, ...(conn.rank !== undefined ? { rank: conn.rank } : {}) }, out);
  }

  /**
   * A stream the server cannot read any further (a PMI-2 length that is no number, another
   * protocol): closed with the reason; a rank's own channel (PMI_FD) lost so fails the job.
   */
  private unreadable(conn: Conn, why: string, out: Action[]): void {
    out.push(event({ type: 'protocol-error', conn: conn.id, code: 'E_UNREADABLE', message: why, ...(conn.rank !== undefined ? { rank: conn.rank } : {}) }));
    conn.closing = true;
    conn.closedBecause = why;
    if (conn.rank !== undefined) conn.spoke = true; // its rank can no longer speak PMI: a failure, not a quiet exit
    out.push({ kind: 'close', conn: conn.id, reason: why });
  }

  // ---- KVS -----------------------------------------------------------------------------------------------

  /** @internal Is this key (and kvsname, if given) within the limits? */
  checkKey(key: string, kvsname: string | undefined): Problem | null {
    const L = this.limits;
    if (kvsname !== undefined && kvsname.length >= L.kvsnameMax) {
      return problem('E_KVSNAME_TOO_LONG', PMI_RC.ERR_INVALID_LENGTH, `kvsname_length_${kvsname.length}_exceeds_max_${L.kvsnameMax - 1}`, `kvsname of ${kvsname.length} bytes; kvsname_max is ${L.kvsnameMax} including the NUL`);
    }
    if (key.length === 0) return problem('E_EMPTY_KEY', PMI_RC.ERR_INVALID_KEY, 'empty_key', 'key= is empty');
    if (key.length >= L.keylenMax) {
      return problem('E_KEY_TOO_LONG', PMI_RC.ERR_INVALID_KEY_LENGTH, `key_length_${key.length}_exceeds_max_${L.keylenMax - 1}`, `key of ${key.length} bytes; keylen_max is ${L.keylenMax} including the NUL`);
    }
    return null;
  }

  private put(conn: Conn, rank: number, q: QueryOf<'put'>, out: Action[]): void {
    const bad = this.store(conn, rank, q.key, q.value, q.kvsname, out);
    if (bad) return this.answerFailure(conn, 'put', bad.p, out, bad.logIt);
    this.reply(conn, { cmd: 'put_result', rc: 0 }, out);
  }

  /**
   * @internal A put of either wire into the one KVS; null when stored. PMI-2 values may hold
   * spaces (frames are length-delimited); a PMI-1 get of such a value is refused (see get).
   */
  store(conn: Conn, rank: number, key: string, value: string, kvsname: string | undefined, out: Action[]): { p: Problem; logIt: boolean } | null {
    const bad = this.checkKey(key, kvsname) ?? this.checkValue(key, value, conn.wire);
    if (bad) return { p: bad, logIt: false };
    const full = this.kvsFull(key, value);
    if (full) return { p: full, logIt: true }; // logged: the job is likely to fail on it
    this.kvs.put(key, value);
    out.push(event({ type: 'put', conn: conn.id, rank, key, bytes: value.length }));
    return null;
  }

  /** Would this put take the KVS past one of its limits? */
  private kvsFull(key: string, value: string): Problem | null {
    const L = this.limits;
    const { newKey, bytes } = this.kvs.costOf(key, value);
    if (newKey && this.kvs.keys >= L.kvsMaxKeys) {
      return problem('E_KVS_FULL', PMI_RC.ERR_NOMEM, `kvs_full_${L.kvsMaxKeys}_keys`, `the KVS holds ${this.kvs.keys} keys, its limit; put of a new key ${key} refused (raise it with --kvs-max-keys)`);
    }
    if (bytes > 0 && this.kvs.bytes + bytes > L.kvsMaxBytes) {
      return problem('E_KVS_FULL', PMI_RC.ERR_NOMEM, `kvs_full_${L.kvsMaxBytes}_bytes`, `the KVS holds ${this.kvs.bytes} bytes of keys and values; put of ${key} (${bytes} more) would pass its limit of ${L.kvsMaxBytes} bytes (raise it with --kvs-max-bytes)`);
    }
    return null;
  }

  private checkValue(key: string, value: string, wire: 'pmi1' | 'pmi2'): Problem | null {
    const L = this.limits;
    if (value.length >= L.vallenMax) {
      return problem('E_VALUE_TOO_LONG', PMI_RC.ERR_INVALID_VAL_LENGTH, `value_length_${value.length}_exceeds_max_${L.vallenMax - 1}`, `value of ${value.length} bytes; vallen_max is ${L.vallenMax} including the NUL`);
    }
    if (key.startsWith('PMI_')) return problem('E_RESERVED_KEY', PMI_RC.ERR_INVALID_KEY, 'keys_starting_with_PMI_are_reserved', `key ${key} is reserved (PMI_ keys belong to the process manager)`);
    return wire === 'pmi1' ? pmi1Unreadable(value) : null;
  }

  private get(conn: Conn, q: QueryOf<'get'>, out: Action[]): void {
    const bad = this.checkKey(q.key, q.kvsname);
    if (bad) return this.answerFailure(conn, 'get', bad, out, false);
    let line = this.getReplies.get(q.key);
    if (line === undefined) {
      const value = this.kvs.get(q.key);
      if (value === undefined) {
        return this.answerFailure(conn, 'get', problem('E_KEY_NOT_FOUND', PMI_RC.ERR_INVALID_KEY, `key_${q.key}_not_found`, `key ${q.key} not found (puts become visible after the next barrier)`), out, false);
      }
      // Put by a PMI-2 rank, with bytes a PMI-1 reply cannot carry.
      const unreadable = pmi1Unreadable(value);
      if (unreadable) return this.answerFailure(conn, 'get', problem(unreadable.code, unreadable.rc, `${unreadable.msg}_put_over_PMI-2`, `key ${q.key} was put by a PMI-2 rank with a value PMI-1 cannot carry: ${unreadable.detail}`), out);
      line = formatReply({ cmd: 'get_result', rc: 0, value });
      this.getReplies.set(q.key, line);
    }
    out.push(this.send(conn, line));
  }

  /** @internal A committed value (or a preset key), for either wire. */
  committed(key: string): string | undefined {
    return this.kvs.get(key);
  }

  // ---- name service ------------------------------------------------------------------------------------------

  private nameService(conn: Conn, q: QueryOf<'publish_name'> | QueryOf<'unpublish_name'> | QueryOf<'lookup_name'>, out: Action[]): void {
    const replies = { publish_name: 'publish_result', unpublish_name: 'unpublish_result', lookup_name: 'lookup_result' } as const;
    const r = this.nameOp(q.cmd, q.service, q.cmd === 'publish_name' ? q.port : undefined);
    if ('p' in r) return this.answerFailure(conn, q.cmd, r.p, out, r.logIt);
    this.reply(conn, r.port !== undefined ? { cmd: 'lookup_result', rc: 0, port: r.port } : ({ cmd: replies[q.cmd], rc: 0 }), out);
  }

  /** @internal The name service for either wire: a port (lookup), ok, or the problem. */
  nameOp(op: 'publish_name' | 'unpublish_name' | 'lookup_name', service: string, port: string | undefined): { port?: string } | { p: Problem; logIt: boolean } {
    const no = (p: Problem, logIt = false) => ({ p, logIt });
    // An empty name can be published but never usefully looked up, and an empty port would be
    // answered `port=`, which MPICH >= 4.1's parser rejects ("Expecting value after =").
    if (service === '') return no(problem('E_EMPTY_SERVICE', PMI_RC.ERR_INVALID_ARG, 'empty_service', `${op} with an empty service name`));
    const notFound = () => no(problem('E_SERVICE_NOT_FOUND', 1, 'service_not_found', `service ${service} is not published`));
    switch (op) {
      case 'publish_name': {
        const p = port ?? '';
        if (p === '') return no(problem('E_EMPTY_PORT', PMI_RC.ERR_INVALID_ARG, 'empty_port', `publish of service ${service} with an empty port (a lookup could not return it to MPICH >= 4.1 clients)`));
        if (UNSAFE_VALUE.test(p)) return no(problem('E_PORT_HAS_CONTROL', PMI_RC.ERR_INVALID_ARG, 'port_contains_a_control_character', 'a published port cannot contain CR, LF or NUL (a lookup could not return it)'));
        if (!this.names.has(service) && this.names.size >= this.limits.maxNames) {
          const max = this.limits.maxNames;
          return no(problem('E_NAMES_FULL', PMI_RC.ERR_NOMEM, `name_service_full_${max}_services`, `the name service holds ${max} services, its limit; publish of ${service} refused (unpublish some, or raise it with --max-names)`), true);
        }
        if (this.names.publish(service, p)) return {};
        return no(problem('E_SERVICE_EXISTS', 1, `service_${service}_already_published`, `service ${service} is already published`));
      }
      case 'unpublish_name':
        return this.names.unpublish(service) ? {} : notFound();
      case 'lookup_name': {
        const found = this.names.lookup(service);
        return found !== undefined ? { port: found } : notFound();
      }
    }
  }

  // ---- barrier, finalize, abort ---------------------------------------------------------------------------

  private barrierIn(conn: Conn, rank: number, out: Action[]): void {
    if (conn.inBarrier) {
      return this.answerFailure(conn, 'barrier_in', problem('E_ALREADY_IN_BARRIER', PMI_RC.FAIL, 'already_in_barrier', `rank ${rank} sent barrier_in twice`), out);
    }
    this.joinBarrier(conn, rank, out);
  }

  /** @internal Enter the job-wide barrier (PMI-1 barrier_in, PMI-2 kvs-fence). */
  joinBarrier(conn: Conn, rank: number, out: Action[]): void {
    conn.inBarrier = true;
    (this.ranks[rank] as RankSlot).state = 'in-barrier';
    this.barrierCount++;
    out.push(event({ type: 'barrier', entered: this.barrierCount, size: this.size, epoch: this.kvs.epoch, rank }));
    this.settleBarrier(out);
  }

  /** Complete the barrier when every rank is in it; fail it when a rank finalized without it. */
  private settleBarrier(out: Action[]): void {
    if (this.barrierCount === 0) return;
    let reply: Reply;
    if (this.barrierCount === this.size) {
      const committed = this.kvs.commit();
      this.getReplies.clear();
      this.pmi2.committed();
      out.push(event({ type: 'barrier-complete', epoch: this.kvs.epoch, committed, keys: this.kvs.size }));
      reply = { cmd: 'barrier_out', rc: 0 };
    } else if (this.barrierCount + this.finalizedCount >= this.size) {
      const p = problem('E_BARRIER_IMPOSSIBLE', PMI_RC.FAIL, 'a_rank_finalized_without_entering_the_barrier', 'the barrier can never complete: a rank finalized without entering it');
      out.push(event({ type: 'protocol-error', conn: -1, code: p.code, message: p.detail }));
      reply = { cmd: 'barrier_out', rc: p.rc, msg: p.msg };
    } else {
      return;
    }
    this.barrierCount = 0;
    // Collected only now: every barrier_in comes here, and a scan each time would be O(N²).
    const waiting = [...this.conns.values()].filter((c) => c.inBarrier);
    const line = formatReply(reply); // the same bytes for every PMI-1 rank
    for (const c of waiting) {
      c.inBarrier = false;
      (this.ranks[c.rank as number] as RankSlot).state = 'initialized';
      if (c.closing) continue; // closed for bad lines while waiting: nothing more to send
      if (c.wire === 'pmi1') out.push(this.send(c, line));
      else {
        out.push(this.send(c, pmi2Reply({ cmd: 'kvs-fence-response', rc: reply.rc, ...(reply.rc !== 0 ? { errmsg: (reply as { msg?: string }).msg ?? 'barrier_failed' } : {}), ...(c.fenceThrid !== undefined ? { thrid: c.fenceThrid } : {}) })));
        c.fenceThrid = undefined;
      }
    }
  }

  private finalize(conn: Conn, rank: number, out: Action[]): void {
    if (conn.inBarrier) {
      return this.answerFailure(conn, 'finalize', problem('E_IN_BARRIER', PMI_RC.FAIL, 'finalize_while_in_barrier', `rank ${rank} sent finalize while in a barrier`), out);
    }
    this.leave(conn, rank, formatReply({ cmd: 'finalize_ack', rc: 0 }), out);
  }

  /** @internal A rank finalizes: `ack` (its wire's answer) is the last thing it is sent. */
  leave(conn: Conn, rank: number, ack: string, out: Action[]): void {
    conn.phase = 'finalized';
    (this.ranks[rank] as RankSlot).state = 'finalized';
    this.finalizedCount++;
    out.push(this.send(conn, ack));
    // hydra closes the PMI fd after finalize_ack; clients expect EOF next.
    conn.closing = true;
    out.push({ kind: 'close', conn: conn.id, reason: 'finalized' });
    out.push(event({ type: 'finalized', conn: conn.id, rank, finalized: this.finalizedCount, size: this.size }));
    if (this.finalizedCount === this.size) {
      this.finish({ ok: true, exitCode: 0, reason: `all ${this.size} ranks finalized` }, out);
    } else {
      this.settleBarrier(out);
    }
  }

  private abort(conn: Conn, q: QueryOf<'abort'>, out: Action[]): void {
    this.abortJob(conn, q.exitcode ?? 1, q.message ?? '', out);
  }

  /** @internal A rank (or a connection) asked to end the job. */
  abortJob(conn: Conn, code: number, text: string, out: Action[]): void {
    const exitCode = code & 255;
    const rank = conn.rank;
    const who = rank === undefined ? `connection ${conn.id}` : `rank ${rank}`;
    const message = text ? `: ${text}` : '';
    out.push(event({ type: 'aborted', conn: conn.id, exitCode: code, message: text, ...(rank !== undefined ? { rank } : {}) }));
    this.finish({ ok: false, exitCode, reason: `${who} called abort with exit code ${code}${message}`, ...(rank !== undefined ? { rank } : {}) }, out);
  }

  /** @internal The connection started PMI (PMI-1 init, PMI-2 fullinit): losing it now fails the job. */
  initialized(conn: Conn, out: Action[]): void {
    conn.spoke = true;
    if (conn.phase === 'initialized') return;
    conn.phase = 'initialized';
    (this.ranks[conn.rank as number] as RankSlot).state = 'initialized';
    out.push(event({ type: 'initialized', conn: conn.id, rank: conn.rank as number }));
  }

  /** @internal */
  finish(status: JobStatus, out: Action[]): void {
    if (this.result) return;
    this.result = status;
    out.push(event({ type: 'job-finished', status }));
    out.push({ kind: 'finished', status });
  }

  // ---- bad input --------------------------------------------------------------------------------------

  private spawnLine(conn: Conn, line: string, out: Action[]): void {
    conn.spawn ??= new SpawnAssembler(this.limits.maxSpawnLines);
    const step = conn.spawn.push(line);
    if (step.kind === 'more') return;
    if (step.kind === 'error') {
      return this.badLine(conn, problem('E_BAD_SPAWN', PMI_RC.FAIL, step.msg, step.detail), 'spawn_result', out);
    }
    conn.strikes = 0; // a complete, well-formed spawn request is not garbage
    // A defined "no": pmibridge runs a fixed-size job (as flux's server does).
    this.answerFailure(conn, 'spawn', problem('E_SPAWN_UNSUPPORTED', PMI_RC.FAIL, 'spawn_is_not_supported_by_pmibridge', 'MPI_Comm_spawn is not supported: pmibridge runs fixed-size jobs'), out, false);
  }

  private malformedAbort(conn: Conn, detail: string, out: Action[]): void {
    this.abort(conn, { cmd: 'abort', exitcode: 1, message: `malformed abort request (${detail})` }, out);
  }

  private lineTooLong(conn: Conn, prefix: string, length: number, out: Action[]): void {
    const m = /^cmd=([^ \t]+)/.exec(prefix);
    if (m?.[1] === 'abort' && conn.phase !== 'new') return this.malformedAbort(conn, `a ${length}-byte line`, out);
    const reply = m?.[1] ? replyNameOf(m[1]) : undefined;
    const p = problem('E_LINE_TOO_LONG', PMI_RC.ERR_INVALID_LENGTH, `line_of_${length}_bytes_exceeds_limit_${this.limits.maxLine}`, `a line of ${length} bytes exceeds the ${this.limits.maxLine}-byte limit (raise it with --max-line)`);
    this.badLine(conn, p, reply ?? null, out);
  }

  /** Answer a line that failed to decode, and count it against the connection. */
  private badLine(conn: Conn, p: Problem, reply: string | null, out: Action[]): void {
    this.strike(conn, p, reply !== null ? failureReply(reply, p) : p.code !== 'E_MCMD' ? failureReply('error', p) : null, out);
  }

  /** @internal Answer bad input with `answer` (either wire) and count it against the connection. */
  strike(conn: Conn, p: Problem, answer: string | null, out: Action[]): void {
    conn.strikes++;
    out.push(event({ type: 'protocol-error', conn: conn.id, code: p.code, message: p.detail, ...(conn.rank !== undefined ? { rank: conn.rank } : {}) }));
    if (answer !== null) out.push(this.send(conn, answer));
    if (conn.strikes >= this.maxStrikes) {
      conn.closing = true;
      conn.closedBecause = `${conn.strikes} bad ${conn.wire === 'pmi2' ? 'PMI-2 messages' : 'lines'} in a row (last: ${p.detail})`;
      out.push({ kind: 'close', conn: conn.id, reason: conn.closedBecause });
    }
  }

  /**
   * A failure reply to a well-formed query, in the query's own reply command. `logIt` marks the
   * client's mistakes (logged); ordinary outcomes such as a key not found are not.
   */
  private answerFailure(conn: Conn, cmd: string, p: Problem, out: Action[], logIt = true): void {
    if (logIt) {
      out.push(event({ type: 'protocol-error', conn: conn.id, code: p.code, message: `${p.detail} (${rcText(p.rc)})`, ...(conn.rank !== undefined ? { rank: conn.rank } : {}) }));
    }
    const reply = replyNameOf(cmd);
    if (reply === null) return; // abort has no reply
    out.push(this.send(conn, failureReply(reply ?? 'error', p)));
  }

  private refuse(conn: Conn, p: Problem, reply?: string): Action[] {
    return this.refuseWith(conn, p, reply ? failureReply(reply, p) : undefined);
  }

  /** @internal Refuse a connection: tell it why (`answer`, in its wire) and close it. */
  refuseWith(conn: Conn, p: Problem, answer: string | undefined): Action[] {
    conn.closing = true;
    const out: Action[] = [event({ type: 'refused', conn: conn.id, code: p.code, message: p.detail })];
    if (answer) out.push(this.send(conn, answer));
    out.push({ kind: 'close', conn: conn.id, reason: p.detail });
    return out;
  }

  /** @internal The lowest rank no connection holds yet (-1: none), for a client that names none. */
  freeRank(): number {
    return this.ranks.findIndex((s) => s.conn === null && s.state === 'waiting');
  }

  private reply(conn: Conn, r: Reply, out: Action[]): void {
    out.push(this.send(conn, formatReply(r)));
  }

  /** @internal */
  send(conn: Conn, data: string): Action {
    return { kind: 'send', conn: conn.id, data };
  }
}

/** @internal */
export function event(e: EngineEvent): Action {
  return { kind: 'event', event: e };
}

function assertNever(x: never): never {
  throw new TypeError(`unhandled query ${JSON.stringify(x)}`);
}
