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
  type Framed,
  type Limits,
  type Problem,
  type Query,
  type QueryOf,
  type Reply,
} from '../protocol/index.js';
import { defaultLimits } from '../protocol/limits.js';
import { EpochKvs } from './kvs.js';
import { NameService } from './name-service.js';
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
}

type Phase = 'new' | 'bound' | 'initialized' | 'finalized';

interface Conn {
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
  }

  // ---- inputs ----------------------------------------------------------------------------------

  /** A new connection. With facts.rank (a launcher's PMI_FD channel) it is bound at once. */
  connect(id: ConnId, facts: ConnectionFacts): Action[] {
    const out: Action[] = [];
    if (this.conns.has(id)) throw new TypeError(`connection ${id} already exists`); // host bug, not peer input
    const conn: Conn = { id, facts, rank: undefined, phase: 'new', spoke: false, inBarrier: false, strikes: 0, spawn: null, closing: false };
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
  receive(id: ConnId, input: Framed): Action[] {
    const conn = this.conns.get(id);
    if (!conn || conn.closing) return [];
    if (this.result) return []; // the job is over; the host is tearing down
    const out: Action[] = [];
    if (input.kind === 'overlong') {
      this.lineTooLong(conn, input.prefix, input.length, out);
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
    if (conn.phase === 'new') {
      if (q.cmd === 'init') {
        const rank = this.ranks.findIndex((s) => s.conn === null && s.state === 'waiting');
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

  /** Why a connection may not become `rank`, or null. */
  private bindProblem(rank: number): Problem | null {
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

  private bind(conn: Conn, rank: number, how: 'fd' | 'initack' | 'anonymous', out: Action[]): void {
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
    // grouped/tagged barriers), as flux does. 1.0 and 2.x are refused as flux's tests expect.
    if (v !== 1 || sub < 1) {
      const msg = v === 2 ? 'PMI-2_is_not_served_use_PMI-1' : `pmi_version_${v}.${sub}_not_supported_need_1.1`;
      return this.answerFailure(conn, 'init', problem('E_VERSION', PMI_RC.FAIL, msg, `client asked for PMI ${v}.${sub}; pmibridge serves PMI 1.1`), out);
    }
    conn.spoke = true;
    if (conn.phase !== 'initialized') {
      conn.phase = 'initialized';
      const slot = this.ranks[conn.rank as number] as RankSlot;
      slot.state = 'initialized';
      out.push(event({ type: 'initialized', conn: conn.id, rank: conn.rank as number }));
    }
    this.reply(conn, { cmd: 'response_to_init', rc: 0, pmi_version: 1, pmi_subversion: 1 }, out);
  }

  // ---- KVS -----------------------------------------------------------------------------------------------

  private checkKey(key: string, kvsname: string | undefined): Problem | null {
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
    const bad = this.checkKey(q.key, q.kvsname) ?? this.checkValue(q.key, q.value);
    if (bad) return this.answerFailure(conn, 'put', bad, out, false);
    const full = this.kvsFull(q.key, q.value);
    if (full) return this.answerFailure(conn, 'put', full, out); // logged: the job is likely to fail on it
    this.kvs.put(q.key, q.value);
    out.push(event({ type: 'put', conn: conn.id, rank, key: q.key, bytes: q.value.length }));
    this.reply(conn, { cmd: 'put_result', rc: 0 }, out);
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

  private checkValue(key: string, value: string): Problem | null {
    const L = this.limits;
    // MPICH >= 4.1's parser rejects an empty `value=` in get_result ("Expecting value after =").
    if (value.length === 0) return problem('E_EMPTY_VALUE', PMI_RC.ERR_INVALID_VAL, 'empty_value', 'empty values cannot be read back by MPICH >= 4.1 clients; put a non-empty value');
    if (value.length >= L.vallenMax) {
      return problem('E_VALUE_TOO_LONG', PMI_RC.ERR_INVALID_VAL_LENGTH, `value_length_${value.length}_exceeds_max_${L.vallenMax - 1}`, `value of ${value.length} bytes; vallen_max is ${L.vallenMax} including the NUL`);
    }
    // We would have to write it back in get_result, and a space there breaks every MPICH client.
    if (/[ \t]/.test(value)) return problem('E_VALUE_HAS_SPACE', PMI_RC.ERR_INVALID_VAL, 'value_contains_a_space', 'PMI-1 values cannot contain spaces (MPICH clients cannot read them back); encode the value');
    // A CR (e.g. a client writing CRLF) would make formatReply throw when the value is read back.
    if (UNSAFE_VALUE.test(value)) return problem('E_VALUE_HAS_CONTROL', PMI_RC.ERR_INVALID_VAL, 'value_contains_a_control_character', 'PMI-1 values cannot contain CR, LF or NUL (did the client send CRLF line endings?)');
    if (key.startsWith('PMI_')) return problem('E_RESERVED_KEY', PMI_RC.ERR_INVALID_KEY, 'keys_starting_with_PMI_are_reserved', `key ${key} is reserved (PMI_ keys belong to the process manager)`);
    return null;
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
      line = formatReply({ cmd: 'get_result', rc: 0, value });
      this.getReplies.set(q.key, line);
    }
    out.push(this.send(conn, line));
  }

  // ---- name service ------------------------------------------------------------------------------------------

  private nameService(conn: Conn, q: QueryOf<'publish_name'> | QueryOf<'unpublish_name'> | QueryOf<'lookup_name'>, out: Action[]): void {
    // An empty name can be published but never usefully looked up, and an empty port would be
    // answered `port=`, which MPICH >= 4.1's parser rejects ("Expecting value after =").
    if (q.service === '') {
      return this.answerFailure(conn, q.cmd, problem('E_EMPTY_SERVICE', PMI_RC.ERR_INVALID_ARG, 'empty_service', `${q.cmd} with an empty service= name`), out, false);
    }
    switch (q.cmd) {
      case 'publish_name':
        if (q.port === '') {
          return this.answerFailure(conn, q.cmd, problem('E_EMPTY_PORT', PMI_RC.ERR_INVALID_ARG, 'empty_port', `publish_name of service ${q.service} with an empty port= (lookup_name could not return it to MPICH >= 4.1 clients)`), out, false);
        }
        if (UNSAFE_VALUE.test(q.port)) {
          return this.answerFailure(conn, q.cmd, problem('E_PORT_HAS_CONTROL', PMI_RC.ERR_INVALID_ARG, 'port_contains_a_control_character', 'a published port cannot contain CR, LF or NUL (lookup_name could not return it)'), out, false);
        }
        if (!this.names.has(q.service) && this.names.size >= this.limits.maxNames) {
          const max = this.limits.maxNames;
          return this.answerFailure(conn, q.cmd, problem('E_NAMES_FULL', PMI_RC.ERR_NOMEM, `name_service_full_${max}_services`, `the name service holds ${max} services, its limit; publish_name of ${q.service} refused (unpublish some, or raise it with --max-names)`), out);
        }
        if (this.names.publish(q.service, q.port)) return this.reply(conn, { cmd: 'publish_result', rc: 0 }, out);
        return this.answerFailure(conn, q.cmd, problem('E_SERVICE_EXISTS', 1, `service_${q.service}_already_published`, `service ${q.service} is already published`), out, false);
      case 'unpublish_name':
        if (this.names.unpublish(q.service)) return this.reply(conn, { cmd: 'unpublish_result', rc: 0 }, out);
        return this.answerFailure(conn, q.cmd, problem('E_SERVICE_NOT_FOUND', 1, 'service_not_found', `service ${q.service} is not published`), out, false);
      case 'lookup_name': {
        const port = this.names.lookup(q.service);
        if (port !== undefined) return this.reply(conn, { cmd: 'lookup_result', rc: 0, port }, out);
        return this.answerFailure(conn, q.cmd, problem('E_SERVICE_NOT_FOUND', 1, 'service_not_found', `service ${q.service} is not published`), out, false);
      }
    }
  }

  // ---- barrier, finalize, abort ---------------------------------------------------------------------------

  private barrierIn(conn: Conn, rank: number, out: Action[]): void {
    if (conn.inBarrier) {
      return this.answerFailure(conn, 'barrier_in', problem('E_ALREADY_IN_BARRIER', PMI_RC.FAIL, 'already_in_barrier', `rank ${rank} sent barrier_in twice`), out);
    }
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
    const line = formatReply(reply); // the same bytes for everyone
    for (const c of waiting) {
      c.inBarrier = false;
      (this.ranks[c.rank as number] as RankSlot).state = 'initialized';
      if (!c.closing) out.push(this.send(c, line)); // closed for bad lines while waiting: nothing more to send
    }
  }

  private finalize(conn: Conn, rank: number, out: Action[]): void {
    if (conn.inBarrier) {
      return this.answerFailure(conn, 'finalize', problem('E_IN_BARRIER', PMI_RC.FAIL, 'finalize_while_in_barrier', `rank ${rank} sent finalize while in a barrier`), out);
    }
    conn.phase = 'finalized';
    (this.ranks[rank] as RankSlot).state = 'finalized';
    this.finalizedCount++;
    this.reply(conn, { cmd: 'finalize_ack', rc: 0 }, out);
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
    const code = q.exitcode ?? 1;
    const exitCode = code & 255;
    const rank = conn.rank;
    const who = rank === undefined ? `connection ${conn.id}` : `rank ${rank}`;
    const message = q.message ? `: ${q.message}` : '';
    out.push(event({ type: 'aborted', conn: conn.id, exitCode: code, message: q.message ?? '', ...(rank !== undefined ? { rank } : {}) }));
    this.finish({ ok: false, exitCode, reason: `${who} called abort with exit code ${code}${message}`, ...(rank !== undefined ? { rank } : {}) }, out);
  }

  private finish(status: JobStatus, out: Action[]): void {
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
    conn.strikes++;
    out.push(event({ type: 'protocol-error', conn: conn.id, code: p.code, message: p.detail, ...(conn.rank !== undefined ? { rank: conn.rank } : {}) }));
    if (reply !== null) out.push(this.send(conn, failureReply(reply, p)));
    else if (p.code !== 'E_MCMD') out.push(this.send(conn, failureReply('error', p)));
    if (conn.strikes >= this.maxStrikes) {
      conn.closing = true;
      conn.closedBecause = `${conn.strikes} bad lines in a row (last: ${p.detail})`;
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
    conn.closing = true;
    const out: Action[] = [event({ type: 'refused', conn: conn.id, code: p.code, message: p.detail })];
    if (reply) out.push(this.send(conn, failureReply(reply, p)));
    out.push({ kind: 'close', conn: conn.id, reason: p.detail });
    return out;
  }

  private reply(conn: Conn, r: Reply, out: Action[]): void {
    out.push(this.send(conn, formatReply(r)));
  }

  private send(conn: Conn, data: string): Action {
    return { kind: 'send', conn: conn.id, data };
  }
}

function event(e: EngineEvent): Action {
  return { kind: 'event', event: e };
}

function assertNever(x: never): never {
  throw new TypeError(`unhandled query ${JSON.stringify(x)}`);
}
