/**
 * Line → tokens: the liberal half of the codec.
 *
 * A PMI-1 line is `cmd=<name>( <key>=<value>)*`. Every real parser differs (see
 * pmi-wire-protocol.md §1.3); this one accepts what any of them accepts:
 * - tokens are separated by runs of spaces or tabs; a value runs to the next separator and may
 *   contain `=` (only the first `=` of a token splits);
 * - attributes may come in any order; a repeated attribute keeps its FIRST value, as hydra's
 *   server and MPICH's client read it (PMIU_getval returns the first match), and its name is
 *   listed in `repeated` so that a caller can refuse to cache what another reader could
 *   understand differently (the relay's KVS cache);
 * - a word without `=` that follows a free-text attribute (`value`, `message`, …) is part of that
 *   text, as flux writes `value=a b c`; any other bare word is kept in `bare` for the caller;
 * - the line is a latin1 string: one char per byte, so any byte sequence (e.g. flux's UTF-8
 *   kvsname `ƒ…`) round-trips unchanged and lengths count bytes.
 *
 * Attributes go into a Map in wire order: a rank-supplied `__proto__` key is just a key.
 */

export interface Tokens {
  /** `cmd` for single-line commands, `mcmd` for a spawn block's first line. */
  readonly head: 'cmd' | 'mcmd';
  readonly name: string;
  readonly attrs: Map<string, string>;
  /** Words without `=` that were not part of a text attribute. */
  readonly bare: string[];
  /** Names of attributes that came more than once (the first value was kept). Usually empty. */
  readonly repeated: readonly string[];
}

const NONE: readonly string[] = Object.freeze([]);

export type TokenizeFailure =
  | { readonly reason: 'blank'; readonly detail: string }
  | { readonly reason: 'nul'; readonly detail: string }
  | { readonly reason: 'pmi2'; readonly detail: string }
  | { readonly reason: 'not-pmi1'; readonly detail: string }
  | { readonly reason: 'no-name'; readonly detail: string };

/** What the tokenizer needs to know of a command: its attribute names, and which are free text. */
export interface AttrVocabulary {
  readonly known: ReadonlySet<string>;
  readonly text: ReadonlySet<string>;
}
export type Vocabulary = (head: 'cmd' | 'mcmd', name: string) => AttrVocabulary | undefined;

const SPACE = 32;
const TAB = 9;

/** A line of nothing but spaces, tabs and CRs (or nothing). */
function isBlank(line: string): boolean {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (c !== SPACE && c !== TAB && c !== 13) return false;
  }
  return true;
}

/**
 * One pass over the line with native searches (`indexOf`), no regex split and no array of words:
 * this runs for every line the server and the relay read, so it allocates only the strings and
 * the Map it returns. The next tab and the next `=` are remembered while they lie ahead, so a
 * line costs O(length) whatever its shape.
 */
export function tokenize(line: string, vocabulary?: Vocabulary): Tokens | TokenizeFailure {
  if (isBlank(line)) {
    return { reason: 'blank', detail: 'blank line (a PMI-1 line starts with cmd=)' };
  }
  if (line.includes('\0')) return { reason: 'nul', detail: 'line contains a NUL byte' };
  let head: 'cmd' | 'mcmd';
  if (line.startsWith('cmd=')) head = 'cmd';
  else if (line.startsWith('mcmd=')) head = 'mcmd';
  else if (/^[ \d]{6}cmd=/.test(line)) {
    return { reason: 'pmi2', detail: 'PMI-2 framed message (PMI-2 is not served; the client must use PMI-1)' };
  } else {
    return { reason: 'not-pmi1', detail: `not a PMI-1 line (must start with cmd=): ${preview(line)}` };
  }
  const n = line.length;
  let end = head.length + 1;
  while (end < n && !isSep(line.charCodeAt(end))) end++; // a command name is short: just scan it
  const name = line.slice(head.length + 1, end);
  if (name.length === 0) return { reason: 'no-name', detail: 'empty command name after cmd=' };
  const vocab = vocabulary?.(head, name);
  const text = vocab?.text;
  const attrs = new Map<string, string>();
  const bare: string[] = [];
  let repeated: string[] | undefined;
  let lastKey: string | undefined;
  let lastIsText = false;
  let nextTab = -1; // where the next tab (or the end) is, once looked up; a tab is rare
  let nextEq = -1; // where the next `=` (or the end) is, once looked up
  let start = end;
  for (;;) {
    while (start < n && isSep(line.charCodeAt(start))) start++; // a run of separators
    if (start >= n) break;
    if (nextTab < start) {
      nextTab = line.indexOf('\t', start);
      if (nextTab < 0) nextTab = n;
    }
    end = line.indexOf(' ', start);
    if (end < 0 || end > nextTab) end = nextTab;
    if (nextEq < start && nextEq < n) {
      nextEq = line.indexOf('=', start);
      if (nextEq < 0) nextEq = n;
    }
    if (nextEq > start && nextEq < end) {
      const key = line.slice(start, nextEq);
      // Inside free text, only a known attribute name starts a new attribute (`value=a=b c=d`
      // stays one value, while hydra 4.1's `value=v found=TRUE` splits off `found`).
      if (lastIsText && !vocab?.known.has(key)) {
        appendText(attrs, lastKey as string, line.slice(start, end));
      } else if (attrs.has(key)) {
        // A repeated attribute: the first one wins (hydra, MPICH). Its words, if free text, are
        // not appended to the first value either.
        (repeated ??= []).push(key);
        lastKey = undefined;
        lastIsText = false;
      } else {
        attrs.set(key, line.slice(nextEq + 1, end));
        lastKey = key;
        lastIsText = text?.has(key) ?? false;
      }
    } else if (lastIsText) {
      appendText(attrs, lastKey as string, line.slice(start, end));
    } else {
      bare.push(line.slice(start, end));
    }
    start = end;
  }
  return { head, name, attrs, bare, repeated: repeated ?? NONE };
}

function isSep(c: number): boolean {
  return c === SPACE || c === TAB;
}

/** A word of free text (`value=a b c`): joined to its attribute with one space. */
function appendText(attrs: Map<string, string>, key: string, word: string): void {
  attrs.set(key, `${attrs.get(key) ?? ''} ${word}`);
}

export function isTokens(t: Tokens | TokenizeFailure): t is Tokens {
  return !('reason' in t);
}

/** A short, printable excerpt of a bad line for logs and error messages. */
export function preview(line: string, max = 60): string {
  const shown = line.length > max ? `${line.slice(0, max)}…` : line;
  return JSON.stringify(shown);
}
