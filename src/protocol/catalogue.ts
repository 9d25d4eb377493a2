/**
 * The PMI-1 message catalogue: every single-line command, its reply, and their attributes.
 *
 * This table is the one place that knows the protocol's vocabulary. The tokenizer asks it which
 * attributes are free text, the codec decodes and validates with it, the formatter writes in its
 * order, the TypeScript types below are derived from it, and the README's protocol table is printed
 * from it (`pmibridge protocol`). `mcmd=spawn` is multi-line and irregular, so it is
 * hand-written in `spawn.ts` beside this file (MPICH does the same in its generator).
 *
 * Conventions (stated once, for all replies, as MPICH's spec files do):
 * - Every reply is written `cmd=<reply> rc=<n>[ msg=<word>] <attrs in table order>`: `rc` first,
 *   free text (`value`) last, which is what hydra >= 4.1 and flux write and every client reads.
 * - On reading, `rc` is optional (missing = 0) and attributes may come in any order; unknown ones
 *   are kept aside, never an error.
 * - `required` on a query attribute: missing it is answered with `missingRc` (flux's codes).
 *   `required` on a reply attribute: a successful reply without it is malformed (client side).
 * - `text` attributes may contain spaces when *read* (flux writes `value=a b`); we never write one.
 *
 * Sources: ../shared/reference/pmi-wire-protocol.md §2 (message catalogue), §10 (quirks).
 */
import { PMI_RC } from './errors.js';

export type AttrType = 'int' | 'word' | 'text';

export interface AttrDef {
  readonly type: AttrType;
  readonly required?: boolean;
  /** Other names peers use for the same attribute (read only; we write the main name). */
  readonly aliases?: readonly string[];
  /** rc answered when a required query attribute is missing (default PMI_ERR_INVALID_ARG). */
  readonly missingRc?: number;
  readonly doc?: string;
}

export interface QueryDef {
  /** Reply command name, or null when the query has no reply (abort). */
  readonly reply: string | null;
  readonly attrs: Readonly<Record<string, AttrDef>>;
  readonly doc: string;
}

export interface ReplyDef {
  readonly attrs: Readonly<Record<string, AttrDef>>;
  /** `set-lines`: the initack reply is followed by `cmd=set size/rank/debug` lines. */
  readonly trailer?: 'set-lines';
}

const int = { type: 'int' } as const;
const word = { type: 'word' } as const;

export const QUERIES = {
  init: {
    reply: 'response_to_init',
    doc: 'Version negotiation; first command (after initack on a PMI_PORT connection).',
    attrs: { pmi_version: { ...int, required: true }, pmi_subversion: { ...int, required: true } },
  },
  initack: {
    reply: 'initack',
    doc: 'PMI_PORT handshake: binds the connection to the rank whose PMI_ID is pmiid.',
    attrs: { pmiid: { ...int, required: true } },
  },
  get_maxes: { reply: 'maxes', doc: 'Length limits (including the NUL).', attrs: {} },
  get_appnum: { reply: 'appnum', doc: 'Index of this executable in an MPMD launch.', attrs: {} },
  get_my_kvsname: { reply: 'my_kvsname', doc: 'Name of the job KVS.', attrs: {} },
  get_universe_size: { reply: 'universe_size', doc: 'Universe size (ranks the job may hold).', attrs: {} },
  put: {
    reply: 'put_result',
    doc: 'Store key=value; visible to get after the next barrier.',
    attrs: {
      kvsname: word,
      key: { ...word, required: true, missingRc: PMI_RC.ERR_INVALID_KEY },
      value: { type: 'text', required: true, missingRc: PMI_RC.ERR_INVALID_VAL },
    },
  },
  get: {
    reply: 'get_result',
    doc: 'Read a committed key.',
    attrs: { kvsname: word, key: { ...word, required: true, missingRc: PMI_RC.ERR_INVALID_KEY } },
  },
  barrier_in: {
    reply: 'barrier_out',
    doc: 'Wait for every rank; commits puts. `group` (PMI 1.2) is accepted and ignored.',
    attrs: { group: word },
  },
  finalize: { reply: 'finalize_ack', doc: 'Leave the job cleanly.', attrs: {} },
  abort: {
    reply: null,
    doc: 'End the job with exitcode; no reply.',
    attrs: {
      exitcode: { ...int, aliases: ['exit_code'] },
      message: { type: 'text', aliases: ['error_msg'] },
    },
  },
  publish_name: {
    reply: 'publish_result',
    doc: 'Name service: publish service -> port.',
    attrs: { service: { ...word, required: true }, port: { ...word, required: true } },
  },
  unpublish_name: {
    reply: 'unpublish_result',
    doc: 'Name service: remove a service.',
    attrs: { service: { ...word, required: true } },
  },
  lookup_name: {
    reply: 'lookup_result',
    doc: 'Name service: find the port of a service.',
    attrs: { service: { ...word, required: true } },
  },
} as const satisfies Readonly<Record<string, QueryDef>>;

export const REPLIES = {
  // Versions are optional on reading: legacy MPICH accepts a bare `cmd=response_to_init rc=0`.
  response_to_init: { attrs: { pmi_version: int, pmi_subversion: int } },
  initack: {
    attrs: { rank: int, size: int, appnum: int, 'spawner-jobid': word, debug: int },
    trailer: 'set-lines',
  },
  set: { attrs: { size: int, rank: int, debug: int } },
  maxes: {
    attrs: {
      kvsname_max: { ...int, required: true },
      keylen_max: { ...int, required: true },
      vallen_max: { ...int, required: true },
    },
  },
  appnum: { attrs: { appnum: { ...int, required: true } } },
  my_kvsname: { attrs: { kvsname: { ...word, required: true } } },
  universe_size: { attrs: { size: { ...int, required: true } } },
  put_result: { attrs: {} },
  get_result: { attrs: { found: word, value: { type: 'text', required: true } } },
  barrier_out: { attrs: { tag: int } },
  finalize_ack: { attrs: {} },
  publish_result: { attrs: { info: word } },
  unpublish_result: { attrs: { info: word } },
  lookup_result: { attrs: { info: word, port: { ...word, required: true } } },
  spawn_result: { attrs: { errcodes: word } },
  /**
   * pmibridge's answer to a line it cannot attribute to any query (garbage, blank line, unknown
   * command, PMI-2 framing): no client waits for it by name, but it shows up in traces and tells a
   * person what went wrong. hydra kills the job instead; flux's job shell dies.
   */
  error: { attrs: {} },
} as const satisfies Readonly<Record<string, ReplyDef>>;

/** Attributes every reply carries before its own. */
export const REPLY_COMMON = { rc: int, msg: { type: 'text' } } as const satisfies Readonly<Record<string, AttrDef>>;

export type QueryName = keyof typeof QUERIES;
export type ReplyName = keyof typeof REPLIES | 'spawn_result';

// ---- types derived from the tables ------------------------------------------------------------

type ValueOf<D> = D extends { readonly type: 'int' } ? number : string;
type RequiredKeys<A> = { [K in keyof A]: A[K] extends { readonly required: true } ? K : never }[keyof A];
type OptionalKeys<A> = Exclude<keyof A, RequiredKeys<A>>;
type Flatten<T> = { [K in keyof T]: T[K] };
export type AttrsOf<A> = Flatten<
  { -readonly [K in RequiredKeys<A>]: ValueOf<A[K]> } & { -readonly [K in OptionalKeys<A>]?: ValueOf<A[K]> }
>;
type AllOptional<A> = { -readonly [K in keyof A]?: ValueOf<A[K]> };

/** Unknown attributes a peer sent, kept in wire order (a Map: keys like `__proto__` stay inert). */
export interface Extras {
  readonly extra?: ReadonlyMap<string, string>;
}

export type QueryOf<N extends QueryName> = Flatten<{ cmd: N } & AttrsOf<(typeof QUERIES)[N]['attrs']>> & Extras;
/** Any single-line query, discriminated by `cmd`. */
export type Query = { [N in QueryName]: QueryOf<N> }[QueryName];

export type ReplyOf<N extends keyof typeof REPLIES> = Flatten<
  { cmd: N; rc: number; msg?: string } & AllOptional<(typeof REPLIES)[N]['attrs']>
> &
  Extras;
export type Reply = { [N in keyof typeof REPLIES]: ReplyOf<N> }[keyof typeof REPLIES];

/** The reply name of a query (null: no reply). */
export function replyNameOf(cmd: string): string | null | undefined {
  if (cmd === 'spawn') return 'spawn_result';
  return Object.hasOwn(QUERIES, cmd) ? QUERIES[cmd as QueryName].reply : undefined;
}

export function queryDef(cmd: string): QueryDef | undefined {
  return Object.hasOwn(QUERIES, cmd) ? QUERIES[cmd as QueryName] : undefined;
}

export function replyDef(cmd: string): ReplyDef | undefined {
  return Object.hasOwn(REPLIES, cmd) ? REPLIES[cmd as keyof typeof REPLIES] : undefined;
}

const indexes = new WeakMap<object, ReadonlyMap<string, [string, AttrDef]>>();

/** Every attribute name (and alias) a command knows, mapped to its main name and definition. */
export function attributeIndex(attrs: Readonly<Record<string, AttrDef>>): ReadonlyMap<string, [string, AttrDef]> {
  const known = indexes.get(attrs);
  if (known) return known; // built once per table entry: decoding is on every line's path
  const index = new Map<string, [string, AttrDef]>();
  for (const [name, def] of Object.entries(attrs)) {
    index.set(name, [name, def]);
    for (const alias of def.aliases ?? []) index.set(alias, [name, def]);
  }
  indexes.set(attrs, index);
  return index;
}
