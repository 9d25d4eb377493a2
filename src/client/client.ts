/**
 * A PMI-1 client mirroring the C API (PMI_Init, PMI_Get_rank, PMI_KVS_Put, PMI_Barrier, …).
 *
 * Strict lock-step, as PMI 1.1 requires: one request, its reply, then the next; concurrent calls
 * are queued. Replies are read liberally through the same catalogue the server writes with
 * (missing rc = 0, any attribute order, `value` to end of line minus hydra's ` found=TRUE`), so
 * this client works against pmibridge, hydra (all generations) and flux.
 */
import type { Socket } from 'node:net';
import {
  decodeReply,
  formatQuery,
  LineFramer,
  RemotePmiError,
  type Framed,
  rcText,
  replyNameOf,
  wireMsg,
  type Query,
  type Reply,
  type ReplyOf,
} from '../protocol/index.js';
import type { QUERIES } from '../protocol/catalogue.js';
import { ReplyChannel } from './channel.js';
import { connectEndpoint } from './connect.js';
import { endpointFromEnv, type PmiEndpoint } from './env.js';

export interface Maxes {
  readonly kvsnameMax: number;
  readonly keylenMax: number;
  readonly vallenMax: number;
}

export interface ClientOptions {
  /** Fail a request whose reply takes longer (ms); 0 = wait forever, like MPICH. */
  readonly timeoutMs?: number;
  /** Longest reply line accepted (bytes). */
  readonly maxLine?: number;
}

export class PmiClient {
  rank: number;
  size: number;
  appnum = 0;
  kvsname = '';
  debug = 0;
  maxes: Maxes = { kvsnameMax: 0, keylenMax: 0, vallenMax: 0 };
  private readonly channel: ReplyChannel<Framed>;
  private initialized = false;

  /** Connect using PMI_FD / PMI_PORT (+PMI_ID) from the environment, or an explicit endpoint. */
  static async connect(endpoint: PmiEndpoint = endpointFromEnv(), opts: ClientOptions = {}): Promise<PmiClient> {
    const { socket, endpoint: ep } = await connectEndpoint(endpoint);
    const client = new PmiClient(socket, ep, opts);
    if (ep.mode === 'port' && ep.pmiid !== undefined) await client.handshake(ep.pmiid);
    return client;
  }

  constructor(
    socket: Socket,
    endpoint: Pick<PmiEndpoint, 'rank' | 'size'> = {},
    opts: ClientOptions = {},
  ) {
    this.rank = endpoint.rank ?? 0;
    this.size = endpoint.size ?? 1;
    this.channel = new ReplyChannel(socket, new LineFramer(opts.maxLine ?? 64 * 1024), opts.timeoutMs ?? 0);
  }

  // ---- PMI API ---------------------------------------------------------------------------------

  /** PMI_Init plus what MPICH's MPI_Init asks next: maxes, appnum, kvsname. */
  async init(): Promise<void> {
    await this.request({ cmd: 'init', pmi_version: 1, pmi_subversion: 1 });
    this.initialized = true;
    const m = await this.request({ cmd: 'get_maxes' });
    this.maxes = { kvsnameMax: m.kvsname_max ?? 0, keylenMax: m.keylen_max ?? 0, vallenMax: m.vallen_max ?? 0 };
    this.appnum = (await this.request({ cmd: 'get_appnum' })).appnum ?? 0;
    this.kvsname = (await this.request({ cmd: 'get_my_kvsname' })).kvsname ?? '';
  }

  get isInitialized(): boolean {
    return this.initialized;
  }

  async universeSize(): Promise<number> {
    return (await this.request({ cmd: 'get_universe_size' })).size ?? this.size;
  }

  async put(key: string, value: string): Promise<void> {
    await this.request({ cmd: 'put', kvsname: this.kvsname, key, value });
  }

  async get(key: string): Promise<string> {
    return (await this.request({ cmd: 'get', kvsname: this.kvsname, key })).value ?? '';
  }

  async barrier(): Promise<void> {
    await this.request({ cmd: 'barrier_in' });
  }

  /** PMI_Finalize; the server then closes the connection. */
  async finalize(): Promise<void> {
    await this.request({ cmd: 'finalize' });
    this.initialized = false;
    this.channel.socket.end();
  }

  /** PMI_Abort: no reply; the server ends the job with `exitCode`. */
  async abort(exitCode: number, message?: string): Promise<void> {
    const line = formatQuery({ cmd: 'abort', exitcode: exitCode, ...(message ? { message: wireMsg(message) } : {}) });
    await this.channel.end(line);
  }

  async publish(service: string, port: string): Promise<void> {
    await this.request({ cmd: 'publish_name', service, port });
  }

  async unpublish(service: string): Promise<void> {
    await this.request({ cmd: 'unpublish_name', service });
  }

  async lookup(service: string): Promise<string> {
    return (await this.request({ cmd: 'lookup_name', service })).port ?? '';
  }

  close(): void {
    this.channel.close();
  }

  // ---- wire ------------------------------------------------------------------------------------

  /** PMI_PORT handshake: `initack pmiid=N`, then initack + set size/rank/debug lines. */
  private async handshake(pmiid: number): Promise<void> {
    await this.channel.serialize(async () => {
      this.channel.write(formatQuery({ cmd: 'initack', pmiid }));
      const ack = this.expect(await this.readLine(), 'initack');
      if (ack.rc !== 0) throw new RemotePmiError(`the server refused PMI_ID ${pmiid}: ${ack.msg ?? rcText(ack.rc)}`, ack.rc, 'E_HANDSHAKE');
      for (const want of ['size', 'rank', 'debug'] as const) {
        const set = this.expect(await this.readLine(), 'set') as ReplyOf<'set'>;
        const v = set[want];
        if (v === undefined) throw new RemotePmiError(`handshake: expected cmd=set ${want}=…`, -1, 'E_HANDSHAKE');
        if (want === 'size') this.size = v;
        else if (want === 'rank') this.rank = v;
        else this.debug = v;
      }
    });
  }

  /** Send one query and return its (successful) reply; rc≠0 throws RemotePmiError. */
  request<Q extends Query>(query: Q): Promise<ReplyFor<Q>> {
    return this.channel.serialize(async () => {
      const want = replyNameOf(query.cmd);
      this.channel.write(formatQuery(query));
      const reply = this.expect(await this.readLine(), want as string);
      if (reply.rc !== 0) {
        const msg = reply.msg ? `: ${reply.msg}` : '';
        throw new RemotePmiError(`${query.cmd} failed with rc=${reply.rc} (${rcText(reply.rc)})${msg}`, reply.rc, 'E_RC', reply.msg);
      }
      return reply as ReplyFor<Q>;
    });
  }

  private expect(line: string, cmd: string): Reply {
    const d = decodeReply(line);
    if (!d.ok) {
      if (d.tokens?.name === 'error') throw new RemotePmiError(`the server answered ${line}`, -1, 'E_SERVER_ERROR');
      throw new RemotePmiError(`unreadable reply ${JSON.stringify(line)}: ${d.problem.detail}`, -1, 'E_BAD_REPLY');
    }
    if (d.reply.cmd !== cmd) {
      if (d.reply.cmd === 'error') throw new RemotePmiError(`the server answered: ${d.reply.msg ?? 'error'}`, d.reply.rc, 'E_SERVER_ERROR');
      throw new RemotePmiError(`expected cmd=${cmd}, got cmd=${d.reply.cmd}`, -1, 'E_BAD_REPLY');
    }
    return d.reply;
  }

  /** The next reply line (an overlong one reads as an error line). */
  private async readLine(): Promise<string> {
    const f = await this.channel.read();
    return f.kind === 'line' ? f.line : `cmd=error rc=-1 msg=reply_line_of_${f.length}_bytes_too_long`;
  }
}

/** The reply type a query gets (by the catalogue's reply name). */
type ReplyFor<Q extends Query> = Extract<Reply, { cmd: NonNullable<ReplyNameOfQuery<Q['cmd']>> }>;
type ReplyNameOfQuery<C> = C extends keyof typeof QUERIES ? (typeof QUERIES)[C]['reply'] : never;
