/**
 * The server's PMI-2 side: the commands of PMI-2 frames, served from the same job as PMI-1 lines
 * (one KVS, one barrier, one name service), so PMI-1 and PMI-2 ranks can share a job.
 *
 * Sans I/O like the engine it belongs to: frames in, actions out. What each command does:
 * - `cmd=init pmi_version=2` (a PMI-1 line) switches the connection to PMI-2 frames; its rank is
 *   named only by `fullinit` (`pmirank`, or `srcid` = PMI_ID from Slurm's libpmi2), or given by
 *   the edge (PMI_FD). A client that names none gets the lowest free rank, as PMI-1 `init` does.
 * - `kvs-fence` is the job's barrier (it commits the puts), shared with PMI-1 `barrier_in`.
 * - `kvs-get` of a missing key answers `found=FALSE rc=0`, as Slurm and hydra 4.0 do (hydra ≥ 4.1
 *   answers rc=1; every client reads both as "not found").
 * - `info-getjobattr` answers from the committed KVS (PMI_process_mapping is preset there) and
 *   `universeSize`, as hydra answers it.
 * - `info-putnodeattr`/`info-getnodeattr`: one table for the whole server (it does not know which
 *   TCP peers share a node); `wait=TRUE` answers once the key is put.
 * - spawn, job-connect/disconnect and Slurm's ring are answered with rc≠0: not supported.
 * Every response echoes the request's `thrid`.
 */
import {
  PMI_RC,
  decodePmi2Query,
  formatPmi2Response,
  formatReply,
  pmi2FailureResponse,
  pmi2ResponseFor,
  problem,
  rcText,
  type Pmi2Query,
  type Pmi2QueryOf,
  type Pmi2Response,
  type Pmi2ResponseName,
  type Pmi2ResponseOf,
  type Problem,
} from '../protocol/index.js';
import { event, type Conn, type ServerEngine } from './engine.js';
import type { Action } from './types.js';

/** Which wire versions a job serves (`--pmi-version`). */
export type PmiVersions = 'any' | '1' | '2';

/** A response before its rc and thrid are added (per response name: Omit on the union would merge them). */
type ResponseBody = { [N in Pmi2ResponseName]: Omit<Pmi2ResponseOf<N>, 'rc' | 'thrid'> }[Pmi2ResponseName];

export function pmi2Reply(r: Pmi2Response): string {
  return formatPmi2Response(r);
}

interface AttrWait {
  readonly conn: Conn;
  readonly key: string;
  readonly thrid: string | undefined;
}

export class Pmi2Requests {
  private readonly nodeAttrs = new Map<string, string>();
  /**
   * Formatted `kvs-get-response` frames of the committed KVS, by key, for gets without thrid: as
   * for PMI-1 (engine.ts getReplies), a wire-up's N² gets only change answer when a fence commits.
   */
  private readonly getReplies = new Map<string, string>();
  private waits: AttrWait[] = [];

  constructor(private readonly job: ServerEngine) {}

  /** The PMI-1 line `cmd=init pmi_version=2`: the connection speaks PMI-2 frames from now on. */
  init(conn: Conn, out: Action[]): void {
    if (this.job.pmiVersions === '1') return this.job.refuseVersion(conn, 2, out);
    conn.wire = 'pmi2';
    if (conn.rank !== undefined) conn.spoke = true; // a rank that began PMI: losing it fails the job
    out.push(this.job.send(conn, formatReply({ cmd: 'response_to_init', rc: 0, pmi_version: 2, pmi_subversion: 0 })));
  }

  /** One frame body from a connection. */
  receive(conn: Conn, body: string, out: Action[]): void {
    const d = decodePmi2Query(body);
    if (this.job.pmiVersions === '1') {
      const response = (d.ok ? pmi2ResponseFor(d.query.cmd) : d.response) ?? 'error';
      return this.job.refuseVersion(conn, 2, out, pmi2FailureResponse(response, { rc: PMI_RC.FAIL, msg: 'this_job_serves_PMI-1_only' }));
    }
    conn.wire = 'pmi2'; // also without the init line first (liberal: some clients start with fullinit)
    if (!d.ok) {
      if (d.cmd === 'abort' && conn.rank !== undefined) return this.job.abortJob(conn, 1, `malformed abort request (${d.problem.detail})`, out);
      const response = d.response === null ? null : (d.response ?? 'error');
      return this.job.strike(conn, d.problem, response === null ? null : pmi2FailureResponse(response, d.problem, d.thrid), out);
    }
    conn.strikes = 0;
    this.dispatch(conn, d.query, out);
  }

  /** A frame over the size limit: answered in the response its command waits for. */
  frameTooLong(conn: Conn, prefix: string, length: number, out: Action[]): void {
    const name = /^cmd=([^;]*)/.exec(prefix)?.[1] ?? '';
    if (name === 'abort' && conn.rank !== undefined) return this.job.abortJob(conn, 1, `malformed abort request (a ${length}-byte frame)`, out);
    const p = problem('E_FRAME_TOO_LONG', PMI_RC.ERR_INVALID_LENGTH, `frame_of_${length}_bytes_exceeds_limit`, `a PMI-2 frame of ${length} bytes exceeds the server's frame limit`);
    const response = pmi2ResponseFor(name);
    this.job.strike(conn, p, response === null ? null : pmi2FailureResponse(response ?? 'error', p), out);
  }

  /** A barrier committed the KVS: cached answers are stale. */
  committed(): void {
    this.getReplies.clear();
  }

  /** The connection is gone: its node-attribute waits with it. */
  forget(conn: Conn): void {
    if (this.waits.length > 0) this.waits = this.waits.filter((w) => w.conn !== conn);
  }

  private dispatch(conn: Conn, q: Pmi2Query, out: Action[]): void {
    const fail = (p: Problem, logIt = true) => this.fail(conn, q, p, out, logIt);
    if (conn.phase === 'finalized') return fail(problem('E_FINALIZED', PMI_RC.ERR_INIT, 'already_finalized', `cmd=${q.cmd} after finalize`));
    if (q.cmd === 'fullinit') return this.fullinit(conn, q, out);
    if (conn.phase !== 'initialized' || conn.rank === undefined) {
      if (q.cmd === 'abort' && conn.rank !== undefined) return this.job.abortJob(conn, q.exitcode ?? 1, q.msg ?? '', out);
      return fail(problem('E_NOT_INITIALIZED', PMI_RC.ERR_INIT, 'fullinit_required', `cmd=${q.cmd} before fullinit`));
    }
    const rank = conn.rank;
    const ok = (r: ResponseBody) => this.answer(conn, q, r, out);
    switch (q.cmd) {
      case 'job-getid':
        return ok({ cmd: 'job-getid-response', jobid: this.job.kvsname });
      case 'kvs-put': {
        const bad = this.job.store(conn, rank, q.key, q.value, undefined, out);
        return bad ? fail(bad.p, bad.logIt) : ok({ cmd: 'kvs-put-response' });
      }
      case 'kvs-fence':
        if (conn.inBarrier) return fail(problem('E_ALREADY_IN_BARRIER', PMI_RC.FAIL, 'already_in_fence', `rank ${rank} sent kvs-fence twice`));
        conn.fenceThrid = q.thrid;
        return this.job.joinBarrier(conn, rank, out); // answered when the barrier completes
      case 'kvs-get': {
        const bad = this.job.checkKey(q.key, undefined);
        if (bad) return fail(bad, false);
        const own = q.jobid === undefined || q.jobid === this.job.kvsname;
        const cacheable = own && q.thrid === undefined;
        const hit = cacheable ? this.getReplies.get(q.key) : undefined;
        if (hit !== undefined) return void out.push(this.job.send(conn, hit));
        const value = own ? this.job.committed(q.key) : undefined;
        if (value === undefined) return ok({ cmd: 'kvs-get-response', found: false });
        const frame = this.format(q, { cmd: 'kvs-get-response', found: true, value }, 0);
        if (cacheable) this.getReplies.set(q.key, frame);
        return void out.push(this.job.send(conn, frame));
      }
      case 'info-getjobattr': {
        const value = q.key === 'universeSize' ? String(this.job.universeSize) : this.job.committed(q.key);
        return ok(value === undefined ? { cmd: 'info-getjobattr-response', found: false } : { cmd: 'info-getjobattr-response', found: true, value });
      }
      case 'info-putnodeattr':
        this.nodeAttrs.set(q.key, q.value);
        ok({ cmd: 'info-putnodeattr-response' });
        return this.wake(q.key, q.value, out);
      case 'info-getnodeattr': {
        const value = this.nodeAttrs.get(q.key);
        if (value !== undefined) return ok({ cmd: 'info-getnodeattr-response', found: true, value });
        if (q.wait === true) return void this.waits.push({ conn, key: q.key, thrid: q.thrid });
        return ok({ cmd: 'info-getnodeattr-response', found: false });
      }
      case 'name-publish':
      case 'name-unpublish':
      case 'name-lookup': {
        const op = ({ 'name-publish': 'publish_name', 'name-unpublish': 'unpublish_name', 'name-lookup': 'lookup_name' } as const)[q.cmd];
        const r = this.job.nameOp(op, q.name, q.cmd === 'name-publish' ? q.port : undefined);
        if ('p' in r) return fail(r.p, r.logIt);
        if (q.cmd === 'name-lookup') return ok({ cmd: 'name-lookup-response', port: r.port as string, found: true });
        return ok({ cmd: q.cmd === 'name-publish' ? 'name-publish-response' : 'name-unpublish-response' });
      }
      case 'abort':
        return this.job.abortJob(conn, q.exitcode ?? 1, q.msg ?? '', out);
      case 'finalize':
        if (conn.inBarrier) return fail(problem('E_IN_BARRIER', PMI_RC.FAIL, 'finalize_while_in_fence', `rank ${rank} sent finalize while in a kvs-fence`));
        return this.job.leave(conn, rank, this.format(q, { cmd: 'finalize-response' }, 0), out);
      case 'spawn':
        return fail(problem('E_SPAWN_UNSUPPORTED', PMI_RC.FAIL, 'spawn_is_not_supported_by_pmibridge', 'MPI_Comm_spawn is not supported: pmibridge runs fixed-size jobs'), false);
      case 'job-connect':
      case 'job-disconnect':
        return fail(problem('E_UNSUPPORTED', PMI_RC.FAIL, `${q.cmd}_is_not_supported_by_pmibridge`, `${q.cmd}: pmibridge serves a single job`));
      case 'ring':
        return fail(problem('E_UNSUPPORTED', PMI_RC.FAIL, 'ring_is_not_supported_by_pmibridge', 'ring (a Slurm extension) is not supported by pmibridge'));
    }
  }

  /** fullinit: binds the connection to its rank (unless the edge did) and starts PMI. */
  private fullinit(conn: Conn, q: Pmi2QueryOf<'fullinit'>, out: Action[]): void {
    // Slurm's libpmi2 sends PMI_ID as `srcid`; MPICH sends `pmirank` (PMI_ID, else PMI_RANK).
    const srcid = q.extra?.get('srcid');
    const claimed = q.pmirank ?? (srcid !== undefined && /^\d{1,9}$/.test(srcid) ? Number(srcid) : undefined);
    if (conn.phase === 'new') {
      const rank = claimed ?? this.job.freeRank();
      const why =
        rank < 0
          ? problem('E_JOB_FULL', PMI_RC.FAIL, 'all_ranks_connected', `a connection sent fullinit without a rank but all ${this.job.size} ranks are already connected`)
          : this.job.bindProblem(rank);
      if (why) return void out.push(...this.job.refuseWith(conn, why, this.failure(q, why)));
      this.job.bind(conn, rank, claimed === undefined ? 'anonymous' : 'fullinit', out);
    } else if (claimed !== undefined && claimed !== conn.rank) {
      const p = problem('E_WRONG_RANK', PMI_RC.ERR_INVALID_ARG, `this_connection_is_rank_${conn.rank}_not_${claimed}`, `fullinit names rank ${claimed} on the connection of rank ${conn.rank} (check PMI_RANK/PMI_ID)`);
      return this.fail(conn, q, p, out, true);
    }
    this.job.initialized(conn, out);
    this.answer(conn, q, { cmd: 'fullinit-response', rank: conn.rank as number, size: this.job.size, appnum: this.job.appnum, debugged: false, pmiverbose: false }, out);
  }

  /** Answer the node-attribute waits for `key`. */
  private wake(key: string, value: string, out: Action[]): void {
    if (!this.waits.some((w) => w.key === key)) return;
    const ready = this.waits.filter((w) => w.key === key);
    this.waits = this.waits.filter((w) => w.key !== key);
    for (const w of ready) {
      if (w.conn.closing) continue;
      const r: Pmi2Response = { cmd: 'info-getnodeattr-response', rc: 0, found: true, value, ...(w.thrid !== undefined ? { thrid: w.thrid } : {}) };
      out.push(this.job.send(w.conn, pmi2Reply(r)));
    }
  }

  private format(q: Pmi2Query, r: ResponseBody, rc: number): string {
    return pmi2Reply({ ...r, rc, ...(q.thrid !== undefined ? { thrid: q.thrid } : {}) });
  }

  private answer(conn: Conn, q: Pmi2Query, r: ResponseBody, out: Action[]): void {
    out.push(this.job.send(conn, this.format(q, r, 0)));
  }

  private failure(q: Pmi2Query, p: Problem): string {
    return pmi2FailureResponse(pmi2ResponseFor(q.cmd) ?? 'error', p, q.thrid);
  }

  /** A failure response in the command's own response; `logIt` marks the client's mistakes. */
  private fail(conn: Conn, q: Pmi2Query, p: Problem, out: Action[], logIt: boolean): void {
    if (logIt) {
      out.push(event({ type: 'protocol-error', conn: conn.id, code: p.code, message: `${p.detail} (${rcText(p.rc)})`, ...(conn.rank !== undefined ? { rank: conn.rank } : {}) }));
    }
    if (pmi2ResponseFor(q.cmd) === null) return; // abort has no response
    out.push(this.job.send(conn, this.failure(q, p)));
  }
}
