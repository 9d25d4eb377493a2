/**
 * A PMI-2 client mirroring the C API (PMI2_Init, PMI2_KVS_Put, PMI2_KVS_Fence, PMI2_KVS_Get,
 * PMI2_Info_GetJobAttr, …), the sibling of PmiClient (same endpoint, transport, lock-step and
 * timeout: `channel.ts`, `connect.ts`).
 *
 * On the wire, as MPICH's PMI2_Init: the PMI-1 line `cmd=init pmi_version=2 pmi_subversion=0`,
 * its `cmd=response_to_init` line, then length-prefixed frames both ways, starting with
 * `fullinit;pmirank=N` (PMI_ID, else PMI_RANK; never an initack, also over PMI_PORT), with
 * `pmijobid` = PMI_JOBID when the launcher set it and `threaded=FALSE` (Slurm's stepd requires both).
 *
 * Replies are read liberally through the PMI-2 codec: any attribute order, unknown attributes
 * ignored, missing `rc` = 0, left- or right-aligned length headers, frames split across reads.
 * "Not found" is what the server says either way: `found=FALSE;rc=0` (Slurm, hydra ≤ 4.0) or
 * rc≠0 (hydra ≥ 4.1).
 */
import type { Socket } from 'node:net';
import {
  decodePmi2Response,
  decodeReply,
  formatPmi2Query,
  formatQuery,
  rcText,
  RemotePmiError,
  WireFramer,
  type Pmi2Query,
  type Pmi2ResponseOf,
  type Pmi2ResponseName,
  type WireItem,
  PMI2_QUERIES,
  PMI_RC,
} from '../protocol/index.js';
import { ReplyChannel } from './channel.js';
import type { ClientOptions } from './client.js';
import { connectEndpoint } from './connect.js';
import { endpointFromEnv, type PmiEndpoint } from './env.js';

export interface Pmi2ClientOptions extends ClientOptions {
  /** Longest reply frame accepted (bytes after the header; default: the PMI-2 limit, 64 KiB). */
  readonly maxFrame?: number;
  /**
   * `pmijobid` for fullinit: Slurm's stepd refuses a fullinit without it ("pmijobid missing in
   * fullinit command"). Default: PMI_JOBID from the environment, as Slurm's libpmi2 sends it.
   */
  readonly pmijobid?: string;
}

/** Where a rank is: what fullinit told (and, for PMI_ID, what the environment said). */
export type Pmi2Identity = Pick<PmiEndpoint, 'rank' | 'size'> & { readonly pmiid?: number };

/** Options of kvs-get: another job's KVS (`jobid`), the rank that put the key (`srcid`, a hint). */
export interface Pmi2GetOptions {
  readonly jobid?: string;
  readonly srcid?: number;
}

/** The message a client shows when a server will not speak PMI-2 (RemotePmiError code E_PMI2_REFUSED). */
export const PMI2_REFUSED = 'E_PMI2_REFUSED';

type Pmi2QueryName = Pmi2Query['cmd'];
/** The response a command gets (by the catalogue's response name). */
type ResponseFor<N extends Pmi2QueryName> = (typeof PMI2_QUERIES)[N]['response'] extends infer R extends Pmi2ResponseName ? Pmi2ResponseOf<R> : never;

export class Pmi2Client {
  rank: number;
  size: number;
  appnum = 0;
  /** The job's id (PMI2_Job_GetId), which is also its KVS name: PMI-1's kvsname. */
  jobid = '';
  /** Set in a spawned job: the id of the job that spawned it. */
  spawnerJobid: string | undefined;
  debugged = false;
  pmiverbose = false;
  private readonly channel: ReplyChannel<WireItem>;
  private readonly pmirank: number;
  private readonly pmijobid: string | undefined;
  private initialized = false;

  /** Connect using PMI_FD / PMI_PORT (+PMI_ID) from the environment, or an explicit endpoint. */
  static async connect(endpoint: PmiEndpoint = endpointFromEnv(), opts: Pmi2ClientOptions = {}): Promise<Pmi2Client> {
    const { socket, endpoint: ep } = await connectEndpoint(endpoint);
    const jobid = opts.pmijobid ?? process.env['PMI_JOBID'];
    return new Pmi2Client(socket, ep, { ...opts, ...(jobid !== undefined && jobid !== '' ? { pmijobid: jobid } : {}) });
  }

  constructor(socket: Socket, identity: Pmi2Identity = {}, opts: Pmi2ClientOptions = {}) {
    this.rank = identity.rank ?? 0;
    this.size = identity.size ?? 1;
    // MPICH: PMI_ID, else PMI_RANK, else -1 (the server then decides).
    this.pmirank = identity.pmiid ?? identity.rank ?? -1;
    this.pmijobid = opts.pmijobid;
    const framer = new WireFramer({ maxLine: opts.maxLine ?? 64 * 1024, ...(opts.maxFrame !== undefined ? { maxFrame: opts.maxFrame } : {}), detectForeign: false });
    this.channel = new ReplyChannel(socket, framer, opts.timeoutMs ?? 0);
  }

  /** PMI-1 `init` asking for version 2, then `fullinit`; then the job id (as MPI_Init asks next). */
  async init(): Promise<void> {
    await this.channel.serialize(async () => {
      this.channel.write(formatQuery({ cmd: 'init', pmi_version: 2, pmi_subversion: 0 }));
      const line = await this.negotiationReply();
      const d = decodeReply(line);
      if (!d.ok || d.reply.cmd !== 'response_to_init') {
        throw new RemotePmiError(`expected cmd=response_to_init to cmd=init pmi_version=2, got ${JSON.stringify(line.slice(0, 200))}`, -1, 'E_BAD_REPLY');
      }
      const r = d.reply;
      if (r.rc !== 0 || (r.pmi_version !== undefined && r.pmi_version !== 2)) {
        const said = r.msg ? `: ${r.msg}` : r.rc !== 0 ? ` (rc=${r.rc}, ${rcText(r.rc)})` : ` (it offered PMI ${r.pmi_version ?? '?'}.${r.pmi_subversion ?? '?'})`;
        throw new RemotePmiError(`the PMI server refused PMI-2${said}; it serves PMI-1 only: use PMI-1 instead`, r.rc !== 0 ? r.rc : -1, PMI2_REFUSED, r.msg);
      }
    });
    // threaded=FALSE: Slurm's stepd also refuses a fullinit without it ("threaded missing").
    const f = await this.request({ cmd: 'fullinit', ...(this.pmijobid !== undefined ? { pmijobid: this.pmijobid } : {}), pmirank: this.pmirank, threaded: false });
    this.rank = f.rank ?? this.rank;
    this.size = f.size ?? this.size;
    this.appnum = f.appnum ?? 0;
    this.spawnerJobid = f['spawner-jobid'];
    this.debugged = f.debugged ?? false;
    this.pmiverbose = f.pmiverbose ?? false;
    this.initialized = true;
    this.jobid = await this.jobGetId();
  }

  get isInitialized(): boolean {
    return this.initialized;
  }

  /** The job's id, PMI-1's kvsname. */
  get kvsname(): string {
    return this.jobid;
  }

  async jobGetId(): Promise<string> {
    return (await this.request({ cmd: 'job-getid' })).jobid ?? '';
  }

  async put(key: string, value: string): Promise<void> {
    await this.request({ cmd: 'kvs-put', key, value });
  }

  /** Barrier of every rank; commits the puts (PMI-1's barrier). */
  async fence(): Promise<void> {
    await this.request({ cmd: 'kvs-fence' });
  }

  /** A committed key's value, or undefined when the server says it has none. */
  async tryGet(key: string, opts: Pmi2GetOptions = {}): Promise<string | undefined> {
    const r = await this.kvsGet(key, opts);
    return r.found ? (r.response.value ?? '') : undefined;
  }

  /** A committed key's value; a key the server does not have is a RemotePmiError (E_NOT_FOUND). */
  async get(key: string, opts: Pmi2GetOptions = {}): Promise<string> {
    const r = await this.kvsGet(key, opts);
    if (!r.found) throw notFound('kvs-get', `key ${JSON.stringify(key)}`, r);
    return r.response.value ?? '';
  }

  /** A job attribute (PMI_process_mapping, universeSize, …), or undefined when the server has none. */
  async getJobAttr(key: string): Promise<string | undefined> {
    const r = await this.lookupLike({ cmd: 'info-getjobattr', key });
    return r.found ? (r.response.value ?? '') : undefined;
  }

  /**
   * The `universeSize` job attribute; -1 ("not available", what MPICH then assumes and hydra's
   * PMI-1 answers) when the server has none, as hydra 4.0 has not.
   */
  async universeSize(): Promise<number> {
    const v = await this.getJobAttr('universeSize');
    return v !== undefined && /^-?\d+$/.test(v.trim()) ? Number(v) : -1;
  }

  async putNodeAttr(key: string, value: string): Promise<void> {
    await this.request({ cmd: 'info-putnodeattr', key, value });
  }

  /** A node attribute, or undefined when not there; `wait`: the server answers once it is put. */
  async getNodeAttr(key: string, wait = false): Promise<string | undefined> {
    const r = await this.lookupLike({ cmd: 'info-getnodeattr', key, ...(wait ? { wait: true } : {}) });
    return r.found ? (r.response.value ?? '') : undefined;
  }

  async publish(name: string, port: string): Promise<void> {
    await this.request({ cmd: 'name-publish', name, port });
  }

  async unpublish(name: string): Promise<void> {
    await this.request({ cmd: 'name-unpublish', name });
  }

  /** The port published under `name`; an unknown name is a RemotePmiError (E_NOT_FOUND). */
  async lookup(name: string): Promise<string> {
    const r = await this.lookupLike({ cmd: 'name-lookup', name });
    if (!r.found || r.response.port === undefined) throw notFound('name-lookup', `name ${JSON.stringify(name)}`, r.found ? { rc: 0 } : r);
    return r.response.port;
  }

  /** PMI2_Finalize; then the connection is closed. */
  async finalize(): Promise<void> {
    await this.request({ cmd: 'finalize' });
    this.initialized = false;
    await this.channel.end();
  }

  /**
   * PMI2_Abort: no response; the server ends the job. Both spellings are sent (`isworld`/`msg` of
   * the legacy and Slurm clients, `exitcode` of MPICH ≥ 4.1; `msg` is read as `message` too).
   */
  async abort(exitCode: number, message?: string): Promise<void> {
    await this.channel.end(formatPmi2Query({ cmd: 'abort', isworld: true, exitcode: exitCode, ...(message ? { msg: message } : {}) }));
  }

  close(): void {
    this.channel.close();
  }

  // ---- wire ------------------------------------------------------------------------------------

  /** Send one command and return its successful response; rc≠0 throws RemotePmiError (E_RC). */
  request<Q extends Pmi2Query>(query: Q): Promise<ResponseFor<Q['cmd']>> {
    return this.channel.serialize(async () => {
      const r = await this.exchange(query);
      if (r.rc !== 0) throw failed(query.cmd, r.rc, r.errmsg);
      return r;
    });
  }

  private kvsGet(key: string, opts: Pmi2GetOptions): Promise<Lookup<ResponseFor<'kvs-get'>>> {
    return this.lookupLike({ cmd: 'kvs-get', key, ...(opts.jobid !== undefined ? { jobid: opts.jobid } : {}), ...(opts.srcid !== undefined ? { srcid: opts.srcid } : {}) });
  }

  /**
   * Commands whose answer may be "not there", whichever way the server says it: `found=FALSE`
   * with rc=0 (Slurm, hydra ≤ 4.0) or rc≠0 (hydra ≥ 4.1). The response when found.
   */
  private lookupLike<Q extends Extract<Pmi2Query, { cmd: 'kvs-get' | 'info-getjobattr' | 'info-getnodeattr' | 'name-lookup' }>>(query: Q): Promise<Lookup<ResponseFor<Q['cmd']>>> {
    return this.channel.serialize(async () => {
      const r = (await this.exchange(query)) as ResponseFor<Q['cmd']> & { found?: boolean };
      if (r.rc !== 0 || r.found === false) return { found: false, rc: r.rc, ...(r.errmsg !== undefined ? { errmsg: r.errmsg } : {}) };
      return { found: true, response: r };
    });
  }

  /** One command, one response frame (of the right name), decoded; rc is left to the caller. */
  private async exchange<Q extends Pmi2Query>(query: Q): Promise<ResponseFor<Q['cmd']>> {
    const want = PMI2_QUERIES[query.cmd].response;
    this.channel.write(formatPmi2Query(query));
    const body = await this.frame(query.cmd);
    const d = decodePmi2Response(body);
    if (!d.ok) {
      const rc = d.tokens?.attrs.get('rc');
      const errmsg = d.tokens?.attrs.get('errmsg');
      if (d.tokens?.name === want && rc !== undefined && rc !== '0') throw failed(query.cmd, Number(rc), errmsg);
      throw new RemotePmiError(`unreadable response to ${query.cmd} ${JSON.stringify(body.slice(0, 200))}: ${d.problem.detail}`, -1, 'E_BAD_REPLY', errmsg);
    }
    if (d.response.cmd !== want) throw new RemotePmiError(`expected cmd=${want ?? '(none)'} to ${query.cmd}, got cmd=${d.response.cmd}`, -1, 'E_BAD_REPLY');
    return d.response as ResponseFor<Q['cmd']>;
  }

  /** The next item as a frame body; anything else is a clear error. */
  private async frame(cmd: string): Promise<string> {
    const item = await this.channel.read();
    switch (item.kind) {
      case 'frame':
        return item.body;
      case 'line':
        throw new RemotePmiError(`the PMI server answered ${cmd} with a PMI-1 line, not a PMI-2 frame: ${JSON.stringify(item.line.slice(0, 200))}`, -1, 'E_BAD_REPLY');
      default:
        throw new RemotePmiError(`${describeBroken(item)} (waiting for the response to ${cmd})`, -1, 'E_BAD_REPLY');
    }
  }

  /** The response_to_init line; a server that hangs up instead is explained. */
  private async negotiationReply(): Promise<string> {
    let item: WireItem;
    try {
      item = await this.channel.read();
    } catch (err) {
      if (err instanceof RemotePmiError && err.code !== 'E_TIMEOUT') {
        throw new RemotePmiError(`${err.message} instead of answering cmd=init pmi_version=2 (a server that does not serve PMI-2 may do that: use PMI-1 instead)`, err.rc, PMI2_REFUSED);
      }
      throw err;
    }
    if (item.kind === 'line') return item.line;
    if (item.kind === 'frame') throw new RemotePmiError(`the PMI server answered cmd=init with a PMI-2 frame, not cmd=response_to_init: ${JSON.stringify(item.body.slice(0, 200))}`, -1, 'E_BAD_REPLY');
    throw new RemotePmiError(`${describeBroken(item)} (waiting for cmd=response_to_init)`, -1, 'E_BAD_REPLY');
  }
}

type Miss = { readonly rc: number; readonly errmsg?: string };
type Lookup<R> = ({ readonly found: true; readonly response: R }) | ({ readonly found: false } & Miss);

function notFound(cmd: string, what: string, miss: Miss): RemotePmiError {
  const said = miss.rc !== 0 || miss.errmsg ? ` (rc=${miss.rc}${miss.errmsg ? `: ${miss.errmsg}` : ''})` : '';
  return new RemotePmiError(`${cmd}: ${what} not found${said}`, miss.rc !== 0 ? miss.rc : PMI_RC.ERR_INVALID_KEY, 'E_NOT_FOUND', miss.errmsg);
}

function failed(cmd: string, rc: number, errmsg: string | undefined): RemotePmiError {
  return new RemotePmiError(`${cmd} failed with rc=${rc}${errmsg ? `: ${errmsg}` : ''}`, rc, 'E_RC', errmsg);
}

/** What a framer item other than a line or frame says about the stream. */
function describeBroken(item: Exclude<WireItem, { kind: 'line' | 'frame' }>): string {
  switch (item.kind) {
    case 'truncated':
      return item.wire === 'pmi2' && item.declared !== undefined
        ? `the PMI server closed the connection in the middle of a PMI-2 frame (${item.length} of ${item.declared} bytes came)`
        : `the PMI server closed the connection in the middle of a message (${JSON.stringify(item.prefix.slice(0, 60))})`;
    case 'overlong':
      return `the PMI server sent a ${item.wire === 'pmi2' ? 'frame' : 'line'} of ${item.length} bytes, over the limit`;
    case 'bad-frame':
      return `the PMI server's reply cannot be read: ${item.detail}`;
    case 'foreign':
      return `the PMI server's reply is not PMI: ${item.reason}`;
  }
}
