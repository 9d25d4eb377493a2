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
  queryDef,
  replyDef,
  replyNameOf,
  type AttrDef,
  type Query,
  type Reply,
  type ReplyOf,
} from './catalogue.js';
import { LocalPmiError, PMI_RC, problem, type Problem } from './errors.js';
import { isTokens, tokenize, type AttrVocabulary, type Tokens, type Vocabulary } from './tokenize.js';

// ---- vocabulary for the tokenizer (built once from the tables) ---------------------------------

function vocabularyOf(attrs: Readonly<Record<string, AttrDef>>): AttrVocabulary {
  const known = new Set<string>();
  const text = new Set<string>();
  for (const [name, [, def]] of attributeIndex(attrs)) {
    known.add(name);
    if (def.type === 'text') text.add(name);
  }
  return { known, text };
}

const queryVocab = new Map<string, AttrVocabulary>(
  Object.entries(QUERIES).map(([name, def]) => [name, vocabularyOf(def.attrs)]),
);
const replyVocab = new Map<string, AttrVocabulary>(
  Object.entries(REPLIES).map(([name, def]) => [name, vocabularyOf({ ...REPLY_COMMON, ...def.attrs })]),
);

export const queryVocabulary: Vocabulary = (head, name) => (head === 'cmd' ? queryVocab.get(name) : undefined);
export const replyVocabulary: Vocabulary = (head, name) => (head === 'cmd' ? replyVocab.get(name) : undefined);

// ---- decoding ----------------------------------------------------------------------------------

export type DecodedQuery =
  | { readonly ok: true; readonly query: Query; readonly tokens: Tokens }
  | { readonly ok: false; readonly problem: Problem; readonly tokens?: Tokens; readonly cmd?: string; readonly reply?: string | null };

const INT_RE = /^[-+]?\d{1,15}$/;

function decodeAttrs(
  tokens: Tokens,
  attrs: Readonly<Record<string, AttrDef>>,
  enforceRequired: boolean,
): { values: Record<string, string | number>; extra: Map<string, string> } | Problem {
  const index = attributeIndex(attrs);
  const values: Record<string, string | number> = Object.create(null) as Record<string, string | number>;
  const extra = new Map<string, string>();
  for (const [key, raw] of tokens.attrs) {
    const hit = index.get(key);
    if (!hit) {
      extra.set(key, raw);
      continue;
    }
    const [name, def] = hit;
    if (def.type === 'int') {
      if (!INT_RE.test(raw)) {
        return problem('E_BAD_INTEGER', PMI_RC.ERR_INVALID_ARG, `${name}_is_not_an_integer`, `attribute ${name}=${JSON.stringify(raw)} is not an integer`);
      }
      values[name] = Number(raw);
    } else {
      values[name] = raw;
    }
  }
  if (enforceRequired) {
    for (const [name, def] of Object.entries(attrs)) {
      if (def.required && !(name in values)) {
        return problem('E_MISSING_ATTRIBUTE', def.missingRc ?? PMI_RC.ERR_INVALID_ARG, `missing_${name}`, `cmd=${tokens.name} needs ${name}=`);
      }
    }
  }
  return { values, extra };
}

function isProblem(x: unknown): x is Problem {
  return typeof x === 'object' && x !== null && 'rc' in x && 'code' in x;
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
  const def = queryDef(tokens.name);
  if (!def) {
    return {
      ok: false,
      tokens,
      cmd: tokens.name,
      problem: problem('E_UNKNOWN_COMMAND', PMI_RC.FAIL, `unknown_command_${tokens.name}`, `unknown command cmd=${tokens.name}`),
    };
  }
  const decoded = decodeAttrs(tokens, def.attrs, true);
  if (isProblem(decoded)) return { ok: false, tokens, cmd: tokens.name, reply: def.reply, problem: decoded };
  const query = { cmd: tokens.name, ...decoded.values } as Record<string, unknown>;
  if (decoded.extra.size > 0) query['extra'] = decoded.extra;
  return { ok: true, tokens, query: query as unknown as Query };
}

export type DecodedReply =
  | { readonly ok: true; readonly reply: Reply; readonly tokens: Tokens }
  | { readonly ok: false; readonly problem: Problem; readonly tokens?: Tokens };

const mergedReplyAttrs = new Map<string, Readonly<Record<string, AttrDef>>>();
/** A reply's attributes with the common rc/msg, built once per reply name. */
function replyAttrs(name: string, attrs: Readonly<Record<string, AttrDef>>): Readonly<Record<string, AttrDef>> {
  let merged = mergedReplyAttrs.get(name);
  if (!merged) mergedReplyAttrs.set(name, (merged = { ...REPLY_COMMON, ...attrs }));
  return merged;
}

/**
 * Decode one reply line. Client-side reading rule (pmi-wire-protocol.md §11): missing rc = 0; a
 * successful reply must carry its required attributes; `value` is the rest of the line minus a
 * trailing ` found=TRUE` (hydra 4.1/4.2), which the tokenizer already splits off as `found`.
 */
export function decodeReply(line: string): DecodedReply {
  const tokens = tokenize(line, replyVocabulary);
  if (!isTokens(tokens)) return { ok: false, problem: problem('E_BAD_REPLY', PMI_RC.FAIL, 'bad_reply', tokens.detail) };
  const def = replyDef(tokens.name);
  if (!def || tokens.head !== 'cmd') {
    return { ok: false, tokens, problem: problem('E_UNKNOWN_REPLY', PMI_RC.FAIL, 'unknown_reply', `unexpected reply cmd=${tokens.name}`) };
  }
  const decoded = decodeAttrs(tokens, replyAttrs(tokens.name, def.attrs), false);
  if (isProblem(decoded)) return { ok: false, tokens, problem: decoded };
  const rc = typeof decoded.values['rc'] === 'number' ? decoded.values['rc'] : 0;
  if (rc === 0) {
    for (const [name, attr] of Object.entries(def.attrs)) {
      if (attr.required && !(name in decoded.values)) {
        return { ok: false, tokens, problem: problem('E_BAD_REPLY', PMI_RC.FAIL, `reply_missing_${name}`, `cmd=${tokens.name} reply lacks ${name}=`) };
      }
    }
  }
  const reply = { ...decoded.values, cmd: tokens.name, rc } as Record<string, unknown>;
  if (decoded.extra.size > 0) reply['extra'] = decoded.extra;
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

function formatLine(cmd: string, ordered: ReadonlyArray<readonly [string, string | number | undefined]>): string {
  let out = `cmd=${cmd}`;
  for (const [key, value] of ordered) {
    if (value === undefined) continue;
    out += ` ${key}=${formatValue(cmd, key, value)}`;
  }
  return `${out}\n`;
}

/** Write attributes in table order, free text last, then nothing else: strict output. */
function orderedAttrs(attrs: Readonly<Record<string, AttrDef>>, values: Readonly<Record<string, unknown>>) {
  const words: Array<[string, string | number | undefined]> = [];
  const texts: Array<[string, string | number | undefined]> = [];
  for (const [name, def] of Object.entries(attrs)) {
    const v = values[name] as string | number | undefined;
    (def.type === 'text' ? texts : words).push([name, v]);
  }
  return [...words, ...texts];
}

/** Format a request line (client side). */
export function formatQuery(query: Query): string {
  const def = QUERIES[query.cmd];
  return formatLine(query.cmd, orderedAttrs(def.attrs, query as unknown as Readonly<Record<string, unknown>>));
}

/**
 * Format a reply. For `initack` this writes the four lines every MPICH generation accepts:
 * `cmd=initack rc=0 rank= size= appnum= debug=` then `cmd=set size=`, `cmd=set rank=`,
 * `cmd=set debug=` — in that order (swapped set lines crash MPICH 4.0.2, one line hangs it).
 */
export function formatReply(reply: Reply): string {
  const def = replyDef(reply.cmd);
  if (!def) throw new LocalPmiError(`no reply named ${reply.cmd}`);
  const values = reply as unknown as Readonly<Record<string, unknown>>;
  const msg = reply.msg;
  const head: Array<[string, string | number | undefined]> = [['rc', reply.rc], ['msg', msg]];
  let out = formatLine(reply.cmd, [...head, ...orderedAttrs(def.attrs, values)]);
  if (def.trailer === 'set-lines' && reply.rc === 0) {
    const r = reply as ReplyOf<'initack'>;
    if (r.size === undefined || r.rank === undefined) throw new LocalPmiError('initack reply needs rank and size');
    out += formatLine('set', [['size', r.size]]) + formatLine('set', [['rank', r.rank]]) + formatLine('set', [['debug', r.debug ?? 0]]);
  }
  return out;
}

/** A failure reply to a query, in the query's own reply command (what its client is waiting for). */
export function failureReply(replyCmd: string, p: Pick<Problem, 'rc' | 'msg'>): string {
  if (!replyDef(replyCmd)) return formatLine(replyCmd, [['rc', p.rc], ['msg', p.msg]]);
  return formatReply({ cmd: replyCmd, rc: p.rc, msg: p.msg } as Reply);
}

export { replyNameOf };
