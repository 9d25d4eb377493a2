/**
 * The PMI-2 message catalogue: every command a PMI-2 client sends, its response, and their
 * attributes. Like `catalogue.ts` for PMI-1, this table is the one place that knows the
 * vocabulary: the codec (`pmi2-codec.ts`) decodes, validates and writes with it, the types below
 * are derived from it, and `pmibridge protocol --pmi-version 2` prints it.
 *
 * Conventions (stated once, for all messages, as MPICH's `pmi-2.0.txt` does):
 * - A response is named `<command>-response` and carries `rc` (0: success) and, on failure,
 *   `errmsg`. It is written `cmd=<response>;[thrid=…;]rc=<n>;[errmsg=…;]<attributes in table
 *   order>`, which is what hydra ≥ 4.1 writes (`PMIU_msg_set_response`); every client finds
 *   attributes by name, so hydra 4.0's and Slurm's orders read the same.
 * - `thrid` (a threaded client's request id) may come with any command; the response echoes it.
 * - Booleans are written `TRUE`/`FALSE` (MPICH and Slurm code; the design page says lower case).
 *   Read: any case, `yes`/`no`, or an integer (hydra ≥ 4.1 writes `pmiverbose=0`).
 * - On reading, `rc` is optional (missing = 0), attributes may come in any order, a repeated one
 *   keeps its first value, unknown ones are kept aside in `extra`.
 * - `required` on a command attribute: a command without it is answered with `missingRc`
 *   (default PMI2_ERR_INVALID_ARG). On a response attribute: we never write a successful response
 *   without it (some client rejects it), and a successful response read without it is malformed.
 * - `writeDefault`: written with this value when the caller gives none, because some client
 *   requires the attribute (e.g. `pmiverbose`, which MPICH ≥ 4.1's PMI2_Init needs).
 * - Lists (`argc` + `argv0…`, `infokeycount` + `infokey0…`/`infoval0…`): the count attribute and
 *   indexed items; written from 0 (as every client does), read from 0 or 1 (the spec file says 1).
 *   The typed message holds the list, not the count.
 * - `spawn` has segments: a head, then one segment per executable, each opened by `subcmd`.
 *
 * Where peers disagree, the table follows the reader that is strictest, so both can read what we
 * write (each choice has its source beside it).
 *
 * Sources: ../shared/reference/pmi-wire-protocol.md §6; mpich `src/pmi/maint/pmi-2.0.txt`,
 * `src/pmi/src/pmi_wire.c` (spawn), `doc/wiki/design/PMI_v2_Wire_Protocol.md`, legacy client
 * `src/pmi/pmi2/simple/simple2pmi.[ch]` (v4.0.2), hydra `src/pm/hydra/proxy/pmip_pmi.c` and
 * 4.0.2's `pm/pmiserv/pmip_pmi_v2.c`, `pmiserv_pmi_v2.c`; Slurm `src/plugins/mpi/pmi2/pmi2.c`,
 * `contribs/pmi2/pmi2_api.c`.
 */
import { PMI_RC } from './errors.js';

export type Pmi2AttrType = 'int' | 'bool' | 'string';

export interface Pmi2AttrDef {
  readonly type: Pmi2AttrType;
  readonly required?: boolean;
  /** Other names peers use for the same attribute (read only; we write the main name). */
  readonly aliases?: readonly string[];
  /** Also written under this name, right after the main one (two peers read different names). */
  readonly alsoWrite?: string;
  /** Written when the caller gives no value (responses only; not on failures). */
  readonly writeDefault?: number | boolean | string;
  /** rc answered when a required command attribute is missing (default PMI2_ERR_INVALID_ARG). */
  readonly missingRc?: number;
  readonly doc?: string;
}

/** An indexed list: a count attribute and `<item>N` values, or `<key>N`/`<value>N` pairs. */
export interface Pmi2ListDef {
  readonly count: string;
  /** `argv` → argv0, argv1 …: a list of strings. */
  readonly item?: string;
  /** `infokey`/`infoval` → infokey0=…;infoval0=… : a Map. */
  readonly key?: string;
  readonly value?: string;
  /** Count and items are left out when the list is empty, and an empty list reads as absent. */
  readonly omitEmpty?: boolean;
  readonly doc?: string;
}

export interface Pmi2SegmentsDef {
  /** The attribute that opens each segment (`subcmd`); it belongs to `attrs`. */
  readonly start: string;
  /** The head attribute that counts the segments (`ncmds`). */
  readonly count: string;
  readonly attrs: Readonly<Record<string, Pmi2AttrDef>>;
  readonly lists?: Readonly<Record<string, Pmi2ListDef>>;
  readonly doc?: string;
}

export interface Pmi2QueryDef {
  /** Response command, or null when the command has none (abort). */
  readonly response: string | null;
  readonly attrs: Readonly<Record<string, Pmi2AttrDef>>;
  readonly lists?: Readonly<Record<string, Pmi2ListDef>>;
  readonly segments?: Pmi2SegmentsDef;
  readonly doc: string;
}

export interface Pmi2ResponseDef {
  readonly attrs: Readonly<Record<string, Pmi2AttrDef>>;
}

const int = { type: 'int' } as const;
const bool = { type: 'bool' } as const;
const str = { type: 'string' } as const;

/** `infokeycount` + `infokey0`/`infoval0` …: MPI_Info hints; the legacy client sends `infokeycount=0`. */
const INFO_LIST = { count: 'infokeycount', key: 'infokey', value: 'infoval', omitEmpty: true, doc: 'MPI_Info hints' } as const;

export const PMI2_QUERIES = {
  fullinit: {
    response: 'fullinit-response',
    doc: 'First command after `cmd=init pmi_version=2` (a PMI-1 line); binds the connection to a rank. Never preceded by initack, also over PMI_PORT.',
    attrs: {
      pmijobid: { ...str, doc: 'PMI_JOBID, legacy clients only' },
      pmirank: { ...int, doc: 'PMI_ID, else PMI_RANK (hydra: the rank; over PMI_PORT the only identity)' },
      threaded: { ...bool, doc: 'legacy clients: TRUE when requests carry thrid' },
    },
  },
  'job-getid': { response: 'job-getid-response', doc: 'Name of the job (its KVS).', attrs: {} },
  'job-connect': { response: 'job-connect-response', doc: 'Connect to another job (not functioning in MPICH).', attrs: { jobid: { ...str, required: true } } },
  'job-disconnect': { response: 'job-disconnect-response', doc: 'Disconnect from a job (not functioning in MPICH).', attrs: { jobid: { ...str, required: true } } },
  'kvs-put': {
    response: 'kvs-put-response',
    doc: 'Store key=value; visible to kvs-get after the next kvs-fence.',
    attrs: {
      key: { ...str, required: true, missingRc: PMI_RC.ERR_INVALID_KEY },
      value: { ...str, required: true, missingRc: PMI_RC.ERR_INVALID_VAL },
    },
  },
  'kvs-fence': { response: 'kvs-fence-response', doc: 'Barrier of every rank; commits the puts.', attrs: {} },
  'kvs-get': {
    response: 'kvs-get-response',
    doc: 'Read a committed key; jobid (default: own job) and srcid (the putter, a hint; -1: none) are optional.',
    attrs: {
      jobid: str,
      srcid: int,
      key: { ...str, required: true, missingRc: PMI_RC.ERR_INVALID_KEY },
    },
  },
  'info-putnodeattr': {
    response: 'info-putnodeattr-response',
    doc: 'Store a node attribute, seen by the ranks on this node.',
    attrs: {
      key: { ...str, required: true, missingRc: PMI_RC.ERR_INVALID_KEY },
      value: { ...str, required: true, missingRc: PMI_RC.ERR_INVALID_VAL },
    },
  },
  'info-getnodeattr': {
    response: 'info-getnodeattr-response',
    doc: 'Read a node attribute; wait=TRUE answers only once it is put.',
    attrs: { key: { ...str, required: true, missingRc: PMI_RC.ERR_INVALID_KEY }, wait: bool },
  },
  'info-getjobattr': {
    response: 'info-getjobattr-response',
    doc: 'Read a job attribute: PMI_process_mapping, universeSize, PMI_hwloc_xmlfile, … (hydra).',
    attrs: { kvsname: str, key: { ...str, required: true, missingRc: PMI_RC.ERR_INVALID_KEY } },
  },
  'name-publish': {
    response: 'name-publish-response',
    doc: 'Name service: publish name -> port.',
    attrs: { name: { ...str, required: true }, port: { ...str, required: true } },
    lists: { info: INFO_LIST },
  },
  'name-unpublish': {
    response: 'name-unpublish-response',
    doc: 'Name service: remove a name.',
    attrs: { name: { ...str, required: true } },
    lists: { info: INFO_LIST },
  },
  'name-lookup': {
    response: 'name-lookup-response',
    doc: 'Name service: find the port of a name.',
    attrs: { name: { ...str, required: true } },
    lists: { info: INFO_LIST },
  },
  spawn: {
    response: 'spawn-response',
    doc: 'MPI_Comm_spawn(_multiple): preput pairs, then one segment per executable.',
    attrs: {},
    lists: { preput: { count: 'preputcount', key: 'ppkey', value: 'ppval', doc: 'keys put into the new job’s KVS' } },
    segments: {
      start: 'subcmd',
      count: 'ncmds',
      doc: 'one per executable',
      attrs: { subcmd: { ...str, required: true, doc: 'the executable' }, maxprocs: { ...int, required: true } },
      lists: {
        argv: { count: 'argc', item: 'argv' },
        info: { count: 'infokeycount', key: 'infokey', value: 'infoval', doc: 'MPI_Info hints' },
      },
    },
  },
  abort: {
    response: null,
    doc: 'End the job; no response. Legacy and Slurm clients send isworld/msg, MPICH ≥ 4.1 exitcode/message.',
    attrs: {
      isworld: bool,
      exitcode: int,
      msg: { ...str, aliases: ['message'] },
    },
  },
  finalize: { response: 'finalize-response', doc: 'Leave the job cleanly.', attrs: {} },
  ring: {
    response: 'ring-response',
    doc: 'Slurm extension (PMIX_Ring): a scan over the ranks; count is summed, left/right are the neighbours’ values.',
    attrs: {
      'ring-count': { ...int, required: true },
      'ring-left': { ...str, required: true },
      'ring-right': { ...str, required: true },
    },
  },
} as const satisfies Readonly<Record<string, Pmi2QueryDef>>;

export const PMI2_RESPONSES = {
  'fullinit-response': {
    attrs: {
      // Legacy MPICH and Slurm's libpmi2 require both versions; hydra ≥ 4.1 no longer writes them.
      'pmi-version': { ...int, writeDefault: 2 },
      'pmi-subversion': { ...int, writeDefault: 0 },
      rank: { ...int, required: true },
      size: { ...int, required: true },
      appnum: { ...int, required: true },
      'spawner-jobid': { ...str, doc: 'present only in a spawned job' },
      debugged: { ...bool, writeDefault: false },
      // MPICH ≥ 4.1 requires it (as an integer: `atoi("FALSE")` is 0); legacy MPICH and Slurm's
      // libpmi2 fail PMI2_Init unless it is TRUE or FALSE. TRUE/FALSE satisfies both.
      pmiverbose: { ...bool, writeDefault: false },
    },
  },
  'job-getid-response': { attrs: { jobid: { ...str, required: true } } },
  // MPICH ≥ 4.1 reads an integer, legacy and Slurm a boolean: FALSE reads as 0 in both.
  'job-connect-response': { attrs: { kvscopy: bool } },
  'job-disconnect-response': { attrs: {} },
  'kvs-put-response': { attrs: {} },
  'kvs-fence-response': { attrs: {} },
  // Not found: legacy hydra and Slurm answer `found=FALSE;rc=0`, hydra ≥ 4.1 `rc=1`.
  'kvs-get-response': { attrs: { found: { ...bool, required: true }, value: str } },
  'info-putnodeattr-response': { attrs: {} },
  'info-getnodeattr-response': { attrs: { found: { ...bool, required: true }, value: str } },
  'info-getjobattr-response': { attrs: { found: { ...bool, required: true }, value: str } },
  'name-publish-response': { attrs: {} },
  'name-unpublish-response': { attrs: {} },
  // hydra and MPICH ≥ 4.1 read `port`; legacy MPICH and Slurm's libpmi2 read `value`: we write both.
  'name-lookup-response': { attrs: { port: { ...str, required: true, aliases: ['value'], alsoWrite: 'value' }, found: bool } },
  'spawn-response': { attrs: { jobid: str, nerrs: int, errcodes: { ...str, doc: 'comma-separated, one per process' } } },
  'finalize-response': { attrs: {} },
  'ring-response': {
    attrs: { 'ring-count': { ...int, required: true }, 'ring-left': { ...str, required: true }, 'ring-right': { ...str, required: true } },
  },
} as const satisfies Readonly<Record<string, Pmi2ResponseDef>>;

/** Attributes every command may carry. */
export const PMI2_QUERY_COMMON = { thrid: { ...str, doc: 'request id of a threaded client, echoed in the response' } } as const satisfies Readonly<
  Record<string, Pmi2AttrDef>
>;
/** Attributes every response carries before its own, in this order. */
export const PMI2_RESPONSE_COMMON = { thrid: str, rc: int, errmsg: str } as const satisfies Readonly<Record<string, Pmi2AttrDef>>;

export type Pmi2QueryName = keyof typeof PMI2_QUERIES;
export type Pmi2ResponseName = keyof typeof PMI2_RESPONSES;

// ---- types derived from the tables ------------------------------------------------------------

type ValueOf<D> = D extends { readonly type: 'int' } ? number : D extends { readonly type: 'bool' } ? boolean : string;
type RequiredKeys<A> = { [K in keyof A]: A[K] extends { readonly required: true } ? K : never }[keyof A];
type OptionalKeys<A> = Exclude<keyof A, RequiredKeys<A>>;
type Flatten<T> = { [K in keyof T]: T[K] };
type AttrsOf<A> = { -readonly [K in RequiredKeys<A>]: ValueOf<A[K]> } & { -readonly [K in OptionalKeys<A>]?: ValueOf<A[K]> };
type AllOptional<A> = { -readonly [K in keyof A]?: ValueOf<A[K]> };

/** A list's typed value: strings for `item` lists, a Map for key/value lists. */
export type Pmi2ListValue<L> = L extends { readonly item: string } ? readonly string[] : ReadonlyMap<string, string>;
type ListsOf<L> = { -readonly [K in keyof L as L[K] extends { readonly omitEmpty: true } ? never : K]: Pmi2ListValue<L[K]> } & {
  -readonly [K in keyof L as L[K] extends { readonly omitEmpty: true } ? K : never]?: Pmi2ListValue<L[K]>;
};
type EntryLists<E> = E extends { readonly lists: infer L } ? ListsOf<L> : unknown;

/** Unknown attributes a peer sent, kept in wire order (a Map: keys like `__proto__` stay inert). */
export interface Pmi2Extras {
  readonly extra?: ReadonlyMap<string, string>;
}

export type Pmi2SegmentOf<S extends Pmi2SegmentsDef> = Flatten<AttrsOf<S['attrs']> & EntryLists<S>> & Pmi2Extras;
type EntrySegments<E> = E extends { readonly segments: infer S extends Pmi2SegmentsDef } ? { segments: ReadonlyArray<Pmi2SegmentOf<S>> } : unknown;

export type Pmi2QueryOf<N extends Pmi2QueryName> = Flatten<
  { cmd: N; thrid?: string } & AttrsOf<(typeof PMI2_QUERIES)[N]['attrs']> & EntryLists<(typeof PMI2_QUERIES)[N]> & EntrySegments<(typeof PMI2_QUERIES)[N]>
> &
  Pmi2Extras;
/** Any PMI-2 command, discriminated by `cmd`. */
export type Pmi2Query = { [N in Pmi2QueryName]: Pmi2QueryOf<N> }[Pmi2QueryName];

export type Pmi2ResponseOf<N extends Pmi2ResponseName> = Flatten<
  { cmd: N; rc: number; errmsg?: string; thrid?: string } & AllOptional<(typeof PMI2_RESPONSES)[N]['attrs']>
> &
  Pmi2Extras;
export type Pmi2Response = { [N in Pmi2ResponseName]: Pmi2ResponseOf<N> }[Pmi2ResponseName];

/** The response name of a command (null: none; undefined: not a PMI-2 command we know). */
export function pmi2ResponseNameOf(cmd: string): string | null | undefined {
  return Object.hasOwn(PMI2_QUERIES, cmd) ? PMI2_QUERIES[cmd as Pmi2QueryName].response : undefined;
}

export function pmi2QueryDef(cmd: string): Pmi2QueryDef | undefined {
  return Object.hasOwn(PMI2_QUERIES, cmd) ? PMI2_QUERIES[cmd as Pmi2QueryName] : undefined;
}

export function pmi2ResponseDef(cmd: string): Pmi2ResponseDef | undefined {
  return Object.hasOwn(PMI2_RESPONSES, cmd) ? PMI2_RESPONSES[cmd as Pmi2ResponseName] : undefined;
}
