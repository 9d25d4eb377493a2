/**
 * PMI-2 frame bodies ⇄ typed messages, driven by the PMI-2 catalogue.
 *
 * decode*: liberal (see `pmi2-catalogue.ts` and `pmi2-frame.ts`): any order, aliases, unknown
 * attributes kept in `extra`, first of a repeated attribute wins, missing `rc` = 0, lists indexed
 * from 0 or 1. A failure names the rc to answer with and, when the command was recognisable, the
 * response to answer it in and the `thrid` to echo, so a server can always give a defined answer.
 * Counts are compared with the items actually present, never looped to: `argc=99999999` with
 * two `argvN` is refused at once.
 *
 * format*: strict. The whole frame, header included: `cmd=` first, then `thrid`, then (responses)
 * `rc` and `errmsg`, then the attributes in catalogue order, each list as its count then its
 * items from index 0, key/value items interleaved (`ppkey0`, `ppval0`, `ppkey1`, …), as MPICH's
 * `PMIU_msg_set_query_spawn` writes them.
 */
import {
  PMI2_QUERIES,
  PMI2_QUERY_COMMON,
  PMI2_RESPONSES,
  PMI2_RESPONSE_COMMON,
  type Pmi2AttrDef,
  type Pmi2ListDef,
  type Pmi2Query,
  type Pmi2QueryDef,
  type Pmi2Response,
  type Pmi2SegmentsDef,
} from './pmi2-catalogue.js';
import { encodeFrame, isPmi2Tokens, tokenizeFrame, type Pmi2Tokens } from './pmi2-frame.js';
import { LocalPmiError, PMI_RC, problem, type Problem } from './errors.js';

// ---- tables compiled once from the catalogue ----------------------------------------------------

interface AttrSlot {
  readonly kind: 'attr';
  /** The main name (aliases map to it). */
  readonly name: string;
  readonly def: Pmi2AttrDef;
}
interface ListSlot {
  readonly name: string;
  readonly def: Pmi2ListDef;
}
type Resolved =
  | AttrSlot
  | { readonly kind: 'count'; readonly list: ListSlot | null } // null: the segment count
  | { readonly kind: 'item'; readonly list: ListSlot; readonly role: 'item' | 'key' | 'value'; readonly index: number };

/** What one scope (a message, spawn's head, a spawn segment) knows. */
interface Scope {
  readonly index: ReadonlyMap<string, Resolved>;
  /** Item prefixes, longest first (`infokey` before `info…`, if there were one). */
  readonly prefixes: ReadonlyArray<readonly [prefix: string, list: ListSlot, role: 'item' | 'key' | 'value']>;
  readonly attrs: readonly AttrSlot[];
  readonly lists: readonly ListSlot[];
}

const INDEX_RE = /^\d{1,9}$/;

function compileScope(attrs: Readonly<Record<string, Pmi2AttrDef>>, lists: Readonly<Record<string, Pmi2ListDef>> | undefined, segmentCount?: string): Scope {
  const index = new Map<string, Resolved>();
  const slots: AttrSlot[] = [];
  for (const [name, def] of Object.entries(attrs)) {
    const slot: AttrSlot = { kind: 'attr', name, def };
    slots.push(slot);
    index.set(name, slot);
    for (const alias of def.aliases ?? []) index.set(alias, slot);
  }
  if (segmentCount !== undefined) index.set(segmentCount, { kind: 'count', list: null });
  const listSlots: ListSlot[] = [];
  const prefixes: Array<readonly [string, ListSlot, 'item' | 'key' | 'value']> = [];
  for (const [name, def] of Object.entries(lists ?? {})) {
    const list = { name, def };
    listSlots.push(list);
    index.set(def.count, { kind: 'count', list });
    if (def.item !== undefined) prefixes.push([def.item, list, 'item']);
    if (def.key !== undefined) prefixes.push([def.key, list, 'key']);
    if (def.value !== undefined) prefixes.push([def.value, list, 'value']);
  }
  prefixes.sort((a, b) => b[0].length - a[0].length);
  return { index, prefixes, attrs: slots, lists: listSlots };
}

function resolve(scope: Scope, key: string): Resolved | undefined {
  const known = scope.index.get(key);
  if (known !== undefined) return known;
  for (const [prefix, list, role] of scope.prefixes) {
    if (key.length > prefix.length && key.startsWith(prefix)) {
      const suffix = key.slice(prefix.length);
      if (INDEX_RE.test(suffix)) return { kind: 'item', list, role, index: Number(suffix) };
    }
  }
  return undefined;
}

interface CompiledQuery {
  /** The catalogue's own string (compared by identity downstream, as for PMI-1). */
  readonly name: string;
  readonly def: Pmi2QueryDef;
  readonly head: Scope;
  readonly segments?: { readonly def: Pmi2SegmentsDef; readonly scope: Scope };
}

const compiledQueries = new Map<string, CompiledQuery>(
  Object.entries(PMI2_QUERIES).map(([name, def]: [string, Pmi2QueryDef]) => {
    const seg = def.segments;
    const compiled: CompiledQuery = {
      name,
      def,
      head: compileScope({ ...PMI2_QUERY_COMMON, ...def.attrs }, def.lists, seg?.count),
      ...(seg ? { segments: { def: seg, scope: compileScope(seg.attrs, seg.lists) } } : {}),
    };
    return [name, compiled];
  }),
);

interface CompiledResponse {
  readonly name: string;
  readonly scope: Scope;
  /** The response's own attributes (after thrid, rc, errmsg), in write order. */
  readonly own: readonly AttrSlot[];
}

const commonResponseCount = Object.keys(PMI2_RESPONSE_COMMON).length;
const compiledResponses = new Map<string, CompiledResponse>(
  Object.entries(PMI2_RESPONSES).map(([name, def]) => {
    const scope = compileScope({ ...PMI2_RESPONSE_COMMON, ...def.attrs }, undefined);
    return [name, { name, scope, own: scope.attrs.slice(commonResponseCount) }];
  }),
);

// ---- reading values ------------------------------------------------------------------------------

const INT_RE = /^[-+]?\d{1,15}$/;
const TRUE_RE = /^(?:true|yes)$/i;
const FALSE_RE = /^(?:false|no)$/i;

function readValue(slot: AttrSlot, raw: string): number | boolean | string | Problem {
  const { name, def } = slot;
  if (def.type === 'int') {
    if (INT_RE.test(raw)) return Number(raw);
    return problem('E_BAD_INTEGER', PMI_RC.ERR_INVALID_ARG, `${name}_is_not_an_integer`, `attribute ${name}=${JSON.stringify(raw)} is not an integer`);
  }
  if (def.type === 'bool') {
    if (TRUE_RE.test(raw)) return true;
    if (FALSE_RE.test(raw)) return false;
    if (INT_RE.test(raw)) return Number(raw) !== 0;
    return problem('E_BAD_BOOLEAN', PMI_RC.ERR_INVALID_ARG, `${name}_is_not_TRUE_or_FALSE`, `attribute ${name}=${JSON.stringify(raw)} is not TRUE or FALSE`);
  }
  return raw;
}

function isProblem(v: unknown): v is Problem {
  return typeof v === 'object' && v !== null && 'code' in v;
}

/** The values one scope collects while the pairs are walked. */
class Collected {
  readonly values: Record<string, unknown> = {};
  readonly counts = new Map<ListSlot | null, number>();
  readonly items = new Map<ListSlot, { item: Map<number, string>; key: Map<number, string>; value: Map<number, string> }>();
  extra: Map<string, string> | undefined;

  constructor(readonly scope: Scope) {}

  /**
   * Take one pair this scope knows; returns a problem for a value of the wrong type. A repeated
   * attribute (or an alias of one already given) is ignored: the first wins.
   */
  take(r: Resolved, key: string, raw: string): Problem | null {
    if (r.kind === 'attr') {
      if (this.values[r.name] !== undefined) return null;
      const v = readValue(r, raw);
      if (isProblem(v)) return v;
      this.values[r.name] = v;
    } else if (r.kind === 'count') {
      if (this.counts.has(r.list)) return null;
      if (!INT_RE.test(raw) || Number(raw) < 0) {
        return problem('E_BAD_INTEGER', PMI_RC.ERR_INVALID_ARG, `${key}_is_not_a_count`, `attribute ${key}=${JSON.stringify(raw)} is not a count`);
      }
      this.counts.set(r.list, Number(raw));
    } else {
      let lists = this.items.get(r.list);
      if (lists === undefined) this.items.set(r.list, (lists = { item: new Map(), key: new Map(), value: new Map() }));
      const m = lists[r.role];
      if (!m.has(r.index)) m.set(r.index, raw);
    }
    return null;
  }

  /** An attribute this scope does not know: kept aside (the first of a repeated one). */
  keep(key: string, raw: string): void {
    const extra = (this.extra ??= new Map());
    if (!extra.has(key)) extra.set(key, raw);
  }

  /** The scope's typed values with its lists, or the first problem. */
  finish(into: Record<string, unknown>, checkRequired = true): Problem | null {
    for (const slot of this.scope.attrs) {
      const v = this.values[slot.name];
      if (v !== undefined) into[slot.name] = v;
    }
    for (const list of this.scope.lists) {
      const v = finishList(list, this.counts.get(list), this.items.get(list));
      if (isProblem(v)) return v;
      if (v !== undefined) into[list.name] = v;
    }
    if (this.extra !== undefined) into['extra'] = this.extra;
    for (const slot of this.scope.attrs) {
      if (checkRequired && slot.def.required && into[slot.name] === undefined) {
        return problem('E_MISSING_ATTRIBUTE', slot.def.missingRc ?? PMI_RC.ERR_INVALID_ARG, `missing_${slot.name}`, `needs ${slot.name}=`);
      }
    }
    return null;
  }
}

/** The indices 0..n-1 or 1..n, exactly: the items in index order, or null. */
function inOrder(m: ReadonlyMap<number, string>, n: number): string[] | null {
  if (m.size !== n) return null;
  if (n === 0) return [];
  const base = m.has(0) ? 0 : 1;
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const v = m.get(base + i);
    if (v === undefined) return null;
    out.push(v);
  }
  return out;
}

function finishList(
  list: ListSlot,
  count: number | undefined,
  items: { item: Map<number, string>; key: Map<number, string>; value: Map<number, string> } | undefined,
): readonly string[] | ReadonlyMap<string, string> | Problem | undefined {
  const { def } = list;
  const isItems = def.item !== undefined;
  const found = items === undefined ? 0 : isItems ? items.item.size : Math.max(items.key.size, items.value.size);
  const n = count ?? found; // no count: as many as came
  const badCount = (what: string) =>
    problem('E_BAD_COUNT', PMI_RC.ERR_INVALID_NUM_ARGS, `${def.count}_${n}_but_${found}_${what}`, `${def.count}=${n} but the message has ${found} ${what} attributes, numbered from 0 (or 1) without gaps`);
  if (isItems) {
    const values = inOrder(items?.item ?? new Map(), n);
    if (values === null) return badCount(`${def.item}N`);
    return values.length === 0 && def.omitEmpty ? undefined : values;
  }
  const keys = inOrder(items?.key ?? new Map(), n);
  const values = inOrder(items?.value ?? new Map(), n);
  if (keys === null || values === null) return badCount(`${def.key as string}N/${def.value as string}N`);
  const m = new Map<string, string>();
  keys.forEach((k, i) => {
    if (!m.has(k)) m.set(k, values[i] as string); // a repeated key: the first wins
  });
  return m.size === 0 && def.omitEmpty ? undefined : m;
}

// ---- decoding ------------------------------------------------------------------------------------

export type DecodedPmi2Query =
  | { readonly ok: true; readonly query: Pmi2Query; readonly tokens: Pmi2Tokens }
  | {
      readonly ok: false;
      readonly problem: Problem;
      readonly tokens?: Pmi2Tokens;
      readonly cmd?: string;
      /** The response to answer in (null: the command has none, e.g. abort). */
      readonly response?: string | null;
      /** The request id to echo in that response. */
      readonly thrid?: string;
    };

const TOKENIZE_PROBLEMS = {
  empty: ['E_BLANK_FRAME', 'empty_frame'],
  'no-cmd': ['E_NOT_PMI2', 'not_a_PMI-2_command_expected_cmd='],
  'no-name': ['E_NO_COMMAND', 'empty_command_name'],
  nul: ['E_NUL_BYTE', 'frame_contains_a_NUL_byte'],
} as const;

/** A command name we may echo back as `<name>-response` (the design page: letters, digits, hyphens). */
const SANE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** The response name for any command, known or not: PMI-2 names every response `<cmd>-response`. */
export function pmi2ResponseFor(cmd: string): string | null | undefined {
  const known = compiledQueries.get(cmd);
  if (known) return known.def.response;
  return SANE_NAME.test(cmd) ? `${cmd}-response` : undefined;
}

/** Decode one frame body (the bytes after the 6-byte header). */
export function decodePmi2Query(body: string): DecodedPmi2Query {
  const tokens = tokenizeFrame(body);
  if (!isPmi2Tokens(tokens)) {
    const [code, msg] = TOKENIZE_PROBLEMS[tokens.reason];
    return { ok: false, problem: problem(code, PMI_RC.FAIL, msg, tokens.detail) };
  }
  const thrid = tokens.attrs.get('thrid');
  const echo = thrid === undefined ? {} : { thrid };
  const compiled = compiledQueries.get(tokens.name);
  if (!compiled) {
    const response = pmi2ResponseFor(tokens.name);
    return {
      ok: false,
      tokens,
      cmd: tokens.name,
      ...(response === undefined ? {} : { response }),
      ...echo,
      problem: problem('E_UNKNOWN_COMMAND', PMI_RC.FAIL, `unknown_command_${tokens.name}`, `unknown PMI-2 command cmd=${tokens.name}`),
    };
  }
  const fail = (p: Problem): DecodedPmi2Query => ({ ok: false, tokens, cmd: compiled.name, response: compiled.def.response, ...echo, problem: p });
  const head = new Collected(compiled.head);
  const segs: Collected[] = [];
  const segScope = compiled.segments?.scope;
  const segStart = compiled.segments?.def.start;
  let seg: Collected | undefined;
  for (const [key, raw] of tokens.pairs) {
    if (segScope !== undefined && key === segStart) segs.push((seg = new Collected(segScope)));
    // Inside a segment, its own attributes first, then the head's (MPICH ≥ 4.1 appends thrid last).
    const own = seg === undefined ? undefined : resolve(seg.scope, key);
    const target = own !== undefined ? seg : head;
    const r = own ?? resolve(head.scope, key);
    if (r === undefined) {
      (seg ?? head).keep(key, raw);
      continue;
    }
    const bad = (target as Collected).take(r, key, raw);
    if (bad !== null) return fail(bad);
  }
  const query: Record<string, unknown> = { cmd: compiled.name };
  const bad = head.finish(query);
  if (bad !== null) return fail(bad);
  if (compiled.segments !== undefined) {
    const declared = head.counts.get(null);
    if (declared !== undefined && declared !== segs.length) {
      const { count, start } = compiled.segments.def;
      return fail(problem('E_BAD_COUNT', PMI_RC.ERR_INVALID_NUM_ARGS, `${count}_${declared}_but_${segs.length}_segments`, `${count}=${declared} but the message has ${segs.length} segments (each opened by ${start}=)`));
    }
    const segments: Record<string, unknown>[] = [];
    for (const s of segs) {
      const out: Record<string, unknown> = {};
      const segBad = s.finish(out);
      if (segBad !== null) return fail(segBad);
      segments.push(out);
    }
    query['segments'] = segments;
  }
  return { ok: true, tokens, query: query as unknown as Pmi2Query };
}

export type DecodedPmi2Response =
  | { readonly ok: true; readonly response: Pmi2Response; readonly tokens: Pmi2Tokens }
  | { readonly ok: false; readonly problem: Problem; readonly tokens?: Pmi2Tokens };

/**
 * Decode one response frame body (client side): missing `rc` = 0; a successful response must
 * carry its required attributes.
 */
export function decodePmi2Response(body: string): DecodedPmi2Response {
  const tokens = tokenizeFrame(body);
  if (!isPmi2Tokens(tokens)) return { ok: false, problem: problem('E_BAD_REPLY', PMI_RC.FAIL, 'bad_response', tokens.detail) };
  const compiled = compiledResponses.get(tokens.name);
  if (!compiled) {
    return { ok: false, tokens, problem: problem('E_UNKNOWN_REPLY', PMI_RC.FAIL, 'unknown_response', `unexpected PMI-2 response cmd=${tokens.name}`) };
  }
  const c = new Collected(compiled.scope);
  for (const [key, raw] of tokens.pairs) {
    const r = resolve(c.scope, key);
    if (r === undefined) {
      c.keep(key, raw);
      continue;
    }
    const bad = c.take(r, key, raw);
    if (bad !== null) return { ok: false, tokens, problem: bad };
  }
  const response: Record<string, unknown> = { cmd: compiled.name };
  const rc = (c.values['rc'] as number | undefined) ?? 0;
  const bad = c.finish(response, rc === 0);
  if (bad !== null) {
    const p = bad.code === 'E_MISSING_ATTRIBUTE' ? problem('E_BAD_REPLY', PMI_RC.FAIL, `response_${bad.msg}`, `cmd=${tokens.name} ${bad.detail}`) : bad;
    return { ok: false, tokens, problem: p };
  }
  response['rc'] = rc;
  return { ok: true, tokens, response: response as unknown as Pmi2Response };
}

// ---- formatting ----------------------------------------------------------------------------------

function writeValue(cmd: string, name: string, def: Pmi2AttrDef, value: unknown): string {
  if (def.type === 'int') {
    if (typeof value !== 'number' || !Number.isInteger(value)) throw new LocalPmiError(`PMI-2 ${cmd} ${name}: ${String(value)} is not an integer`);
    return String(value);
  }
  if (def.type === 'bool') {
    if (typeof value !== 'boolean') throw new LocalPmiError(`PMI-2 ${cmd} ${name}: ${String(value)} is not a boolean`);
    return value ? 'TRUE' : 'FALSE';
  }
  if (typeof value !== 'string') throw new LocalPmiError(`PMI-2 ${cmd} ${name}: ${String(value)} is not a string`);
  return value;
}

type Pairs = Array<readonly [string, string]>;

/**
 * `mode`: `query` checks required attributes; `success` also writes the catalogue's defaults;
 * `as-given` writes what is there (failure responses, the common attributes).
 */
function pushAttrs(cmd: string, out: Pairs, slots: readonly AttrSlot[], values: Readonly<Record<string, unknown>>, mode: 'query' | 'success' | 'as-given'): void {
  for (const { name, def } of slots) {
    let v = values[name];
    if (v === undefined && mode === 'success') v = def.writeDefault;
    if (v === undefined) {
      if (def.required && mode !== 'as-given') throw new LocalPmiError(`PMI-2 ${cmd} needs ${name}`);
      continue;
    }
    const text = writeValue(cmd, name, def, v);
    out.push([name, text]);
    if (def.alsoWrite !== undefined) out.push([def.alsoWrite, text]);
  }
}

function pushLists(cmd: string, out: Pairs, lists: readonly ListSlot[], values: Readonly<Record<string, unknown>>): void {
  for (const { name, def } of lists) {
    const v = values[name] as readonly string[] | ReadonlyMap<string, string> | undefined;
    const size = v === undefined ? 0 : Array.isArray(v) ? v.length : (v as ReadonlyMap<string, string>).size;
    if (size === 0 && def.omitEmpty) continue;
    out.push([def.count, String(size)]);
    if (v === undefined) continue;
    if (def.item !== undefined) {
      if (!Array.isArray(v)) throw new LocalPmiError(`PMI-2 ${cmd} ${name}: a list of strings is needed`);
      (v as readonly string[]).forEach((item, i) => out.push([`${def.item as string}${i}`, item]));
    } else {
      if (!(v instanceof Map)) throw new LocalPmiError(`PMI-2 ${cmd} ${name}: a Map of key/value pairs is needed`);
      let i = 0;
      for (const [k, val] of v as ReadonlyMap<string, string>) {
        out.push([`${def.key as string}${i}`, k], [`${def.value as string}${i}`, val]);
        i++;
      }
    }
  }
}

/** Format a command (client side): the whole frame, header included. */
export function formatPmi2Query(query: Pmi2Query): string {
  const c = compiledQueries.get(query.cmd);
  if (!c) throw new LocalPmiError(`no PMI-2 command named ${String(query.cmd)}`);
  const values = query as unknown as Readonly<Record<string, unknown>>;
  const pairs: Pairs = [];
  pushAttrs(c.name, pairs, c.head.attrs, values, 'query'); // thrid first: it leads the scope
  if (c.segments !== undefined) {
    const segments = (values['segments'] ?? []) as ReadonlyArray<Readonly<Record<string, unknown>>>;
    pairs.push([c.segments.def.count, String(segments.length)]);
    pushLists(c.name, pairs, c.head.lists, values);
    for (const s of segments) {
      pushAttrs(c.name, pairs, c.segments.scope.attrs, s, 'query');
      pushLists(c.name, pairs, c.segments.scope.lists, s);
    }
  } else {
    pushLists(c.name, pairs, c.head.lists, values);
  }
  return encodeFrame(c.name, pairs);
}

const COMMON_SLOTS = compileScope(PMI2_RESPONSE_COMMON, undefined).attrs;

/**
 * Format a response: the whole frame, header included. A successful one gets every required
 * attribute (a LocalPmiError when the caller gave none) and the catalogue's defaults; a failure
 * carries what the caller gave.
 */
export function formatPmi2Response(response: Pmi2Response): string {
  const c = compiledResponses.get(response.cmd);
  if (!c) throw new LocalPmiError(`no PMI-2 response named ${String(response.cmd)}`);
  const values = response as unknown as Readonly<Record<string, unknown>>;
  const pairs: Pairs = [];
  pushAttrs(c.name, pairs, COMMON_SLOTS, values, 'as-given');
  pushAttrs(c.name, pairs, c.own, values, response.rc === 0 ? 'success' : 'as-given');
  return encodeFrame(c.name, pairs);
}

/**
 * A failure response to a command, in the response its client waits for, echoing its `thrid`.
 * Also for a command we do not know (`<cmd>-response`, see pmi2ResponseFor).
 */
export function pmi2FailureResponse(responseCmd: string, p: Pick<Problem, 'rc' | 'msg'>, thrid?: string): string {
  const pairs: Pairs = [];
  if (thrid !== undefined) pairs.push(['thrid', thrid]);
  pairs.push(['rc', String(p.rc)], ['errmsg', p.msg]);
  return encodeFrame(responseCmd, pairs);
}
