/**
 * Line → tokens: the liberal half of the codec.
 *
 * A PMI-1 line is `cmd=<name>( <key>=<value>)*`. Every real parser differs (see
 * pmi-wire-protocol.md §1.3); this one accepts what any of them accepts:
 * - tokens are separated by runs of spaces or tabs; a value runs to the next separator and may
 *   contain `=` (only the first `=` of a token splits);
 * - attributes may come in any order; a repeated attribute keeps its last value;
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
}

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

const SEP = /[ \t]+/;

export function tokenize(line: string, vocabulary?: Vocabulary): Tokens | TokenizeFailure {
  if (line.length === 0 || /^[ \t\r]*$/.test(line)) {
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
  const words = line.split(SEP);
  const first = words[0] ?? '';
  const name = first.slice(head.length + 1);
  if (name.length === 0) return { reason: 'no-name', detail: 'empty command name after cmd=' };
  const vocab = vocabulary?.(head, name);
  const text = vocab?.text;
  const attrs = new Map<string, string>();
  const bare: string[] = [];
  let lastKey: string | undefined;
  for (let i = 1; i < words.length; i++) {
    const w = words[i] ?? '';
    if (w === '') continue; // leading/trailing separators
    const eq = w.indexOf('=');
    if (eq > 0) {
      const key = w.slice(0, eq);
      // Inside free text, only a known attribute name starts a new attribute (`value=a=b c=d`
      // stays one value, while hydra 4.1's `value=v found=TRUE` splits off `found`).
      if (lastKey !== undefined && text?.has(lastKey) && !vocab?.known.has(key)) {
        attrs.set(lastKey, `${attrs.get(lastKey) ?? ''} ${w}`);
        continue;
      }
      attrs.delete(key); // a repeated attribute: the last one wins, in its own position
      attrs.set(key, w.slice(eq + 1));
      lastKey = key;
    } else if (lastKey !== undefined && text?.has(lastKey)) {
      attrs.set(lastKey, `${attrs.get(lastKey) ?? ''} ${w}`);
    } else {
      bare.push(w);
    }
  }
  return { head, name, attrs, bare };
}

export function isTokens(t: Tokens | TokenizeFailure): t is Tokens {
  return !('reason' in t);
}

/** A short, printable excerpt of a bad line for logs and error messages. */
export function preview(line: string, max = 60): string {
  const shown = line.length > max ? `${line.slice(0, max)}…` : line;
  return JSON.stringify(shown);
}
