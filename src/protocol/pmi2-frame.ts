/**
 * PMI-2 framing: one message = a 6-byte ASCII decimal length, then that many bytes of
 * `cmd=<name>;<key>=<value>;…;` — every pair *terminated* by `;`, a `;` inside a value doubled.
 *
 * Writing is strict, byte for byte what MPICH ≥ 4.1 (`PMIU_cmd_output_v2`: `%6u`, right-aligned)
 * and hydra write, plus the `;;` escape of the legacy MPICH client (`simple2pmi.c`
 * `PMIi_WriteSimpleCommand`) and of MPICH's wire design page. The length counts the bytes after
 * the header. A value we could not hand to a C reader unchanged (a NUL) or a name with a
 * separator in it is a LocalPmiError: we never put one on the wire.
 *
 * Reading is liberal, as the readers we must talk to are:
 * - the header is `atoi`'d by every peer (hydra `check_pmi_cmd`, MPICH `PMIU_check_full_cmd`,
 *   Slurm `handle_pmi2_cmd`), so it may be right-aligned (`    23`, what MPICH ≥ 4.1 and hydra
 *   write) or left-aligned (`23    `, what the legacy MPICH and Slurm clients write); anything
 *   else (a sign, a letter, digits with a space between) is refused;
 * - pairs may come in any order, a repeated key keeps its FIRST value (as `PMIU_cmd_find_keyval`
 *   and the legacy `getval` return the first match) and is listed in `repeated`; all pairs are
 *   also kept in wire order for `spawn`, whose segments repeat their keys;
 * - `;;` inside a value reads as one `;` (legacy MPICH client, the design page); the last pair
 *   may lack its `;`; whitespace before a key is skipped (MPICH's `parse_v2` skips spaces);
 *   a word without `=` is kept in `bare`; a NUL after the last `;` ends the frame, as it does for
 *   every C reader (padding, or the legacy client's trailing bytes), a NUL before it is refused.
 *
 * Frames are latin1 strings: one char per byte, so lengths count bytes and UTF-8 passes unchanged.
 *
 * Sources: ../shared/reference/pmi-wire-protocol.md §1.2, §6; mpich `src/pmi/src/pmi_wire.c`,
 * `doc/wiki/design/PMI_v2_Wire_Protocol.md`, `src/pmi/pmi2/simple/simple2pmi.c` (v4.0.2); Slurm
 * `src/plugins/mpi/pmi2/client.c`.
 */
import { LocalPmiError } from './errors.js';

/** Bytes of the length header. */
export const PMI2_HEADER_LENGTH = 6;
/** The largest length six decimal digits can declare. */
export const PMI2_LENGTH_LIMIT = 999_999;
/**
 * Longest frame body we buffer, in bytes after the header. The legacy MPICH client builds every
 * command in a 64 KiB buffer, header included (`PMII_MAX_COMMAND_LEN`), and hydra's proxy reads
 * into one 64 KiB buffer (`HYD_TMPBUF_SIZE`): no MPICH client writes, and no hydra reads, more.
 * (A key is at most 64 bytes and a value 1024, `PMI2_MAX_KEYLEN`/`PMI2_MAX_VALLEN` in `pmi2.h`;
 * only `spawn` gets long.) Longer frames are discarded by count and reported, never buffered.
 */
export const PMI2_MAX_FRAME = 64 * 1024 - PMI2_HEADER_LENGTH;

const SPACE = 0x20;
const ZERO = 0x30;
const NINE = 0x39;

/** `%6u`: the header for a body of `length` bytes. */
export function frameHeader(length: number): string {
  if (!Number.isInteger(length) || length < 0 || length > PMI2_LENGTH_LIMIT) {
    throw new LocalPmiError(`a PMI-2 frame of ${length} bytes cannot be declared in 6 digits`, 'E_PMI2_TOO_LONG');
  }
  return String(length).padStart(PMI2_HEADER_LENGTH, ' ');
}

export type HeaderCheck = { readonly ok: true; readonly length: number } | { readonly ok: false; readonly detail: string };

/**
 * Read a 6-character header: spaces, then digits, then spaces (at least one digit). The two
 * alignments peers write are both a run of digits padded with spaces; `atoi` would also take a
 * sign or stop at the first letter, but a header like that is a desynchronised stream, not a
 * length we should trust.
 */
export function parseFrameHeader(header: string): HeaderCheck {
  if (header.length !== PMI2_HEADER_LENGTH) return { ok: false, detail: `a PMI-2 length header has 6 bytes, got ${header.length}` };
  const m = /^ *(\d+) *$/.exec(header);
  if (!m) return { ok: false, detail: `PMI-2 length header ${JSON.stringify(header)} is not a decimal number padded with spaces` };
  return { ok: true, length: Number(m[1]) };
}

/**
 * Where a header can still go: `digit`/`space` bytes that keep it a valid header prefix, or the
 * reason it cannot become one. Shared by the framer and the first-bytes classifier so that both
 * read a header the same way.
 */
export type HeaderStep = 'continue' | 'not-a-header' | 'bad-header';

/** Header state for byte-at-a-time reading: digits seen, and whether trailing spaces started. */
export interface HeaderProgress {
  digits: number;
  trailing: boolean;
}

/**
 * Feed one more header byte. `not-a-header`: no digit so far and this byte is not a digit or
 * space (the bytes are a line that happens to start with spaces). `bad-header`: a digit was seen
 * and this byte breaks the `spaces digits spaces` shape.
 */
export function headerStep(p: HeaderProgress, byte: number): HeaderStep {
  if (byte >= ZERO && byte <= NINE) {
    if (p.trailing) return 'bad-header';
    p.digits++;
    return 'continue';
  }
  if (byte === SPACE) {
    if (p.digits > 0) p.trailing = true;
    return 'continue';
  }
  return p.digits > 0 ? 'bad-header' : 'not-a-header';
}

// ---- body: pairs ---------------------------------------------------------------------------------

export interface Pmi2Tokens {
  /** The command: the value of the first pair, whose key must be `cmd`. */
  readonly name: string;
  /** Every `key=value` after `cmd`, in wire order, repeats included (spawn's segments repeat keys). */
  readonly pairs: ReadonlyArray<readonly [key: string, value: string]>;
  /** The same, first value of each key only (a Map: a peer's `__proto__` key is just a key). */
  readonly attrs: ReadonlyMap<string, string>;
  /**
   * Keys that came more than once (the first value was kept in `attrs`). Usually empty; a caller
   * can refuse to cache what another reader could understand differently. (spawn's segments
   * repeat their keys by design.)
   */
  readonly repeated: readonly string[];
  /** Words without `=`. */
  readonly bare: readonly string[];
}

export type Pmi2TokenizeFailure =
  | { readonly reason: 'empty'; readonly detail: string }
  | { readonly reason: 'no-cmd'; readonly detail: string }
  | { readonly reason: 'no-name'; readonly detail: string }
  | { readonly reason: 'nul'; readonly detail: string };

const NONE: readonly string[] = Object.freeze([]);

function isWhite(c: number): boolean {
  return c === SPACE || c === 9 || c === 10 || c === 13;
}

/**
 * The body as a C reader sees it: up to its first NUL, when no `;` follows that NUL (padding or
 * garbage after the last pair, as the legacy MPICH client may send); null when a NUL sits inside
 * the pairs.
 */
function cString(body: string): string | null {
  const nul = body.indexOf('\0');
  if (nul < 0) return body;
  return body.indexOf(';', nul) < 0 ? body.slice(0, nul) : null;
}

/**
 * A frame body (after the header) → pairs. One pass: a key runs to `=` (or to `;`: a bare word),
 * a value to the next `;` that is not doubled.
 */
export function tokenizeFrame(frameBody: string): Pmi2Tokens | Pmi2TokenizeFailure {
  const body = cString(frameBody);
  if (body === null) return { reason: 'nul', detail: 'PMI-2 frame contains a NUL byte before its last pair' };
  const n = body.length;
  const pairs: Array<readonly [string, string]> = [];
  const bare: string[] = [];
  let i = 0;
  for (;;) {
    while (i < n && isWhite(body.charCodeAt(i))) i++;
    if (i >= n) break;
    const semi = body.indexOf(';', i);
    const eq = body.indexOf('=', i);
    if (eq < 0 || (semi >= 0 && semi < eq)) {
      // A word without `=` (up to its `;`): kept aside.
      const stop = semi < 0 ? n : semi;
      if (stop > i) bare.push(body.slice(i, stop));
      i = stop + 1;
      continue;
    }
    const key = body.slice(i, eq);
    let value = '';
    let j = eq + 1;
    for (;;) {
      const next = body.indexOf(';', j);
      if (next < 0) {
        value += body.slice(j); // the last pair may lack its `;`
        j = n;
        break;
      }
      value += body.slice(j, next);
      if (body.charCodeAt(next + 1) === 0x3b) {
        value += ';'; // `;;` is one `;`
        j = next + 2;
        continue;
      }
      j = next + 1;
      break;
    }
    if (key.length === 0) bare.push(`=${value}`);
    else pairs.push([key, value]);
    i = j;
  }
  if (pairs.length === 0 && bare.length === 0) return { reason: 'empty', detail: 'empty PMI-2 frame' };
  const first = pairs[0];
  if (first === undefined || first[0] !== 'cmd') {
    return { reason: 'no-cmd', detail: `a PMI-2 frame starts with cmd=, got ${JSON.stringify(body.slice(0, 40))}` };
  }
  if (first[1].length === 0) return { reason: 'no-name', detail: 'empty command name after cmd=' };
  const rest = pairs.slice(1);
  const attrs = new Map<string, string>();
  let repeated: string[] | undefined;
  for (const [key, value] of rest) {
    if (attrs.has(key)) (repeated ??= []).push(key);
    else attrs.set(key, value);
  }
  return { name: first[1], pairs: rest, attrs, repeated: repeated ?? NONE, bare };
}

export function isPmi2Tokens(t: Pmi2Tokens | Pmi2TokenizeFailure): t is Pmi2Tokens {
  return !('reason' in t);
}

// ---- writing -------------------------------------------------------------------------------------

/** Names (command, keys) are written as they are: no separator, no space, no NUL, never empty. */
function badName(name: string): boolean {
  return name.length === 0 || /[;=\s]/.test(name) || badValue(name);
}
/** Values: any byte but NUL (C readers stop there); `;` is doubled. One char per byte. */
function badValue(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0 || c > 0xff) return true;
  }
  return false;
}

/** `a;b` → `a;;b`. */
export function escapeValue(value: string): string {
  return value.includes(';') ? value.replaceAll(';', ';;') : value;
}

function checkName(what: string, name: string): void {
  if (badName(name)) {
    throw new LocalPmiError(`PMI-2 ${what} ${JSON.stringify(name)} is empty or contains a separator, space, NUL or a character beyond one byte`, 'E_UNSAFE_NAME');
  }
}

/**
 * The whole frame, header included: `%6u` then `cmd=<cmd>;` and `key=value;` for each pair in the
 * order given.
 */
export function encodeFrame(cmd: string, pairs: Iterable<readonly [string, string]>): string {
  checkName('command', cmd);
  let body = `cmd=${cmd};`;
  for (const [key, value] of pairs) {
    checkName('key', key);
    if (badValue(value)) {
      throw new LocalPmiError(`PMI-2 ${cmd} ${key}: value ${JSON.stringify(value.slice(0, 40))} contains a NUL or a character beyond one byte`, 'E_UNSAFE_VALUE');
    }
    body += `${key}=${escapeValue(value)};`;
  }
  return frameHeader(body.length) + body;
}
