/**
 * Tokens ⇄ typed messages, driven by the catalogue.
 *
 * decode*: liberal. Any attribute order, aliases, unknown attributes (kept in `extra`), missing
 * `rc` (= 0). A failure names the PMI rc to answer with and, when the command was recognisable, the
 * reply to answer it in, so the engine can always give a defined answer.
 *
 * format*: strict, hydra/MPICH-compatible bytes. `cmd=` first, then `rc`, `msg`, the attributes in
 * catalogue order with free text last; single spaces; one `\n`. A value that a client could not
 * parse back (space, tab, newline, NUL) is a LocalPmiError: we never put one on the wire.
 */
import {
  QUERIES,
  REPLIES,
  REPLY_COMMON,
  attributeIndex,
  replyNameOf,
  type AttrDef,
  type QueryDef,
  type ReplyDef,
  type Query,
  type Reply,
  type ReplyOf,
} from './catalogue.js';
import { LocalPmiError, PMI_RC, problem, type Problem } from './errors.js';
import { isTokens, tokenize, type AttrVocabulary, type Tokens, type Vocabulary } from './tokenize.js';

// ---- tables compiled once from the catalogue ----------------------------------------------------
//
// Decoding and formatting run for every line the server and the relay handle, so everything that
// can be known from the catalogue alone (attribute lookup, required attributes, write order,
// which words are free text) is worked out here once per command instead of once per line.

interface Slot {
  /** The main name (aliases map to it). */
  readonly name: string;
  readonly int: boolean;
  readonly def: AttrDef;
}

interface Compiled {
  /** Attribute names and aliases → slot. */
  readonly index: ReadonlyMap<string, Slot>;
  /** Required attributes, in table order (the first one missing is the one reported). */
  readonly required: readonly Slot[];
  readonly vocab: AttrVocabulary;
  /** Strict write order: the table's words in order, then its free text. */
  readonly order: readonly string[];
}

function compile(attrs: Readonly<Record<string, AttrDef>>): Compiled {
  const index = new Map<string, Slot>();
  const known = new Set<string>();
  const text = new Set<string>();
  for (const [key, [name, def]] of attributeIndex(attrs)) {
    index.set(key, { name, int: def.type === 'int', def });
    known.add(key);
    if (def.type === 'text') text.add(key);
  }
  const entries = Object.entries(attrs);
  return {
    index,
    required: entries.filter(([, def]) => def.required).map(([name, def]) => ({ name, int: def.type === 'int', def })),
    vocab: { known, text },
    order: [...entries.filter(([, d]) => d.type !== 'text'), ...entries.filter(([, d]) => d.type === 'text')].map(([name]) => name),
  };
}

/** `name` is the catalogue's own string: `q.cmd === 'get'` in the engine compares it by identity. */
const compiledQueries = new Map<string, Compiled & { readonly name: string; readonly def: QueryDef }>(
  Object.entries(QUERIES).map(([name, def]) => [name, { ...compile(def.attrs), name, def }]),
);
/** Replies decode with the common rc/msg; they are written first, before the reply's own order. */
const compiledReplies = new Map<string, Compiled & { readonly def: ReplyDef; readonly writeOrder: readonly string[] }>(
  Object.entries(REPLIES).map(([name, def]) => [name, { ...compile({ ...REPLY_COMMON, ...def.attrs }), def, writeOrder: ['rc', 'msg', ...compile(def.attrs).order] }]),
);

export const queryVocabulary: Vocabulary = (head, name) => (head === 'cmd' ? compiledQueries.get(name)?.vocab : undefined);
export const replyVocabulary: Vocabulary = (head, name) => (head === 'cmd' ? compiledReplies.get(name)?.vocab : undefined);

export type DecodedQuery =
  | { readonly ok: true; readonly query: Query; readonly tokens: Tokens }
  | { readonly ok: false; readonly problem: Problem; readonly tokens?: Tokens; readonly cmd?: string; readonly reply?: string | null };

const INT_RE = /^[-+]?\d{1,15}$/;

/**
 * Decode the tokens' attributes onto `into` (a plain object: the names written are the
 * catalogue's, never a peer's), in wire order; unknown ones go to `extra`. Returns a problem or null.
 */
function decodeAttrs(tokens: Tokens, c: Compiled, into: Record<string, unknown>): Problem | null {
  let extra: Map<string, string> | undefined;
  for (const [key, raw] of tokens.attrs) {
    const slot = c.index.get(key);
    if (slot === undefined) {
      (extra ??= new Map()).set(key, raw);
    } else if (slot.int) {
      if (!INT_RE.test(raw)) {
        return problem('E_BAD_INTEGER', PMI_RC.ERR_INVALID_ARG, `${slot.name}_is_not_an_integer`, `attribute ${slot.name}=${JSON.stringify(raw)} is not an integer`);
      }
      into[slot.name] = Number(raw);
    } else {
      into[slot.name] = raw;
    }
  }
  if (extra !== undefined) into['extra'] = extra;
  return null;
}

const TOKENIZE_PROBLEMS = {
  blank: ['E_BLANK_LINE', 'blank_line'],
  nul: ['E_NUL_BYTE', 'line_contains_a_NUL_byte'],
  pmi2: ['E_PMI2', 'PMI-2_is_not_served_use_PMI-1'],
  'not-pmi1': ['E_NOT_PMI1', 'not_a_PMI-1_line_expected_cmd='],
  'no-name': ['E_NO_COMMAND', 'empty_command_name'],
} as const;

/** Decode one request line (without its `\n`). `mcmd=` lines are reported as `spawn` for spawn.ts. */
export function decodeQuery(line: string): DecodedQuery {
  const tokens = tokenize(line, queryVocabulary);
  if (!isTokens(tokens)) {
    const [code, msg] = TOKENIZE_PROBLEMS[tokens.reason];
    return { ok: false, problem: problem(code, PMI_RC.FAIL, msg, tokens.detail) };
  }
  if (tokens.head === 'mcmd') {
    return {
      ok: false,
      tokens,
      cmd: tokens.name,
      reply: tokens.name === 'spawn' ? 'spawn_result' : null,
      problem: problem('E_MCMD', PMI_RC.FAIL, 'mcmd_block', 'mcmd= starts a multi-line block; feed it to SpawnAssembler'),
    };
  }
  const compiled = compiledQueries.get(tokens.name);
  if (!compiled) {
    return {
      ok: false,
      tokens,
      cmd: tokens.name,
      problem: problem('E_UNKNOWN_COMMAND', PMI_RC.FAIL, `unknown_command_${tokens.name}`, `unknown command cmd=${tokens.name}`),
    };
  }
  const query: Record<string, unknown> = { cmd: compiled.name };
  let bad = decodeAttrs(tokens, compiled, query);
  for (let i = 0; bad === null && i < compiled.required.length; i++) {
    const { name, def: attr } = compiled.required[i] as Slot;
    if (query[name] === undefined) bad = problem('E_MISSING_ATTRIBUTE', attr.missingRc ?? PMI_RC.ERR_INVALID_ARG, `missing_${name}`, `cmd=${tokens.name} needs ${name}=`);
  }
  if (bad !== null) return { ok: false, tokens, cmd: tokens.name, reply: compiled.def.reply, problem: bad };
  return { ok: true, tokens, query: query as unknown as Query };
}

export type DecodedReply =
  | { readonly ok: true; readonly reply: Reply; readonly tokens: Tokens }
  | { readonly ok: false; readonly problem: Problem; readonly tokens?: Tokens };

/**
 * Decode one reply line. Client-side reading rule (pmi-wire-protocol.md §11): missing rc = 0; a
 * successful reply must carry its required attributes; `value` is the rest of the line minus a
 * trailing ` found=TRUE` (hydra 4.1/4.2), which the tokenizer already splits off as `found`.
 */
export function decodeReply(line: string): DecodedReply {
  const tokens = tokenize(line, replyVocabulary);
  if (!isTokens(tokens)) return { ok: false, problem: problem('E_BAD_REPLY', PMI_RC.FAIL, 'bad_reply', tokens.detail) };
  const compiled = compiledReplies.get(tokens.name);
  if (!compiled || tokens.head !== 'cmd') {
    return { ok: false, tokens, problem: problem('E_UNKNOWN_REPLY', PMI_RC.FAIL, 'unknown_reply', `unexpected reply cmd=${tokens.name}`) };
  }
  const reply: Record<string, unknown> = { cmd: tokens.name, rc: 0 };
  const bad = decodeAttrs(tokens, compiled, reply);
  if (bad !== null) return { ok: false, tokens, problem: bad };
  if (reply['rc'] === 0) {
    for (const { name } of compiled.required) {
      if (reply[name] === undefined) {
        return { ok: false, tokens, problem: problem('E_BAD_REPLY', PMI_RC.FAIL, `reply_missing_${name}`, `cmd=${tokens.name} reply lacks ${name}=`) };
      }
    }
  }
  return { ok: true, tokens, reply: reply as unknown as Reply };
}

// ---- formatting --------------------------------------------------------------------------------

const UNSAFE = /[ \t\n\r\0]/;

function formatValue(cmd: string, key: string, value: string | number): string {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new LocalPmiError(`cmd=${cmd} ${key}: ${value} is not an integer`);
    return String(value);
  }
  if (UNSAFE.test(value)) {
    throw new LocalPmiError(`cmd=${cmd} ${key}: value ${JSON.stringify(value)} contains a space or control character, which PMI-1 cannot carry`, 'E_UNSAFE_VALUE');
  }
  return value;
}

/** `cmd=<cmd>` and the values of `keys` that are set, in that order; one `\n`. */
function formatLine(cmd: string, keys: readonly string[], values: Readonly<Record<string, unknown>>): string {
  let out = `cmd=${cmd}`;
  for (const key of keys) {
    const value = values[key] as string | number | undefined;
    if (value === undefined) continue;
    out += ` ${key}=${formatValue(cmd, key, value)}`;
  }
  return `${out}\n`;
}

/** Format a request line (client side). */
export function formatQuery(query: Query): string {
  const c = compiledQueries.get(query.cmd) as Compiled;
  return formatLine(query.cmd, c.order, query as unknown as Readonly<Record<string, unknown>>);
}

const SIZE = ['size'] as const;
const RANK = ['rank'] as const;
const DEBUG = ['debug'] as const;

/**
 * Format a reply. For `initack` this writes the four lines every MPICH generation accepts:
 * `cmd=initack rc=0 rank= size= appnum= debug=` then `cmd=set size=`, `cmd=set rank=`,
 * `cmd=set debug=` — in that order (swapped set lines crash MPICH 4.0.2, one line hangs it).
 */
export function formatReply(reply: Reply): string {
  const c = compiledReplies.get(reply.cmd);
  if (!c) throw new LocalPmiError(`no reply named ${reply.cmd}`);
  let out = formatLine(reply.cmd, c.writeOrder, reply as unknown as Readonly<Record<string, unknown>>);
  if (c.def.trailer === 'set-lines' && reply.rc === 0) {
    const r = reply as ReplyOf<'initack'>;
    if (r.size === undefined || r.rank === undefined) throw new LocalPmiError('initack reply needs rank and size');
    out += formatLine('set', SIZE, { size: r.size }) + formatLine('set', RANK, { rank: r.rank }) + formatLine('set', DEBUG, { debug: r.debug ?? 0 });
  }
  return out;
}

const RC_MSG = ['rc', 'msg'] as const;

/** A failure reply to a query, in the query's own reply command (what its client is waiting for). */
export function failureReply(replyCmd: string, p: Pick<Problem, 'rc' | 'msg'>): string {
  if (!compiledReplies.has(replyCmd)) return formatLine(replyCmd, RC_MSG, p);
  return formatReply({ cmd: replyCmd, rc: p.rc, msg: p.msg } as Reply);
}

export { replyNameOf };
