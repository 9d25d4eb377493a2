/**
 * Bytes → PMI-1 lines and PMI-2 frames, told apart by their first bytes, never by waiting for a
 * newline. Sans-I/O: the transport pushes chunks and gets items back; `end()` at EOF.
 *
 * At each message boundary (as hydra's `check_pmi_cmd` and MPICH's `PMIU_check_full_cmd` do):
 * - a digit, or spaces then a digit, starts a PMI-2 frame: a 6-byte length header (`pmi2-frame.ts`),
 *   then exactly that many bytes. A header that is not `spaces digits spaces` (a sign, a letter,
 *   digits with a space between) desynchronises the stream: `bad-frame`, and the framer stops;
 * - anything else is a line up to its `\n`, exactly as LineFramer frames it: PMI-1 (`cmd=`,
 *   `mcmd=`) or garbage that a server answers as PMI-1 garbage. Bytes that start with spaces but
 *   reach something other than a digit (a blank line of spaces) are a line too.
 *
 * Limits: a line longer than `maxLine` and a frame declaring more than `maxFrame` bytes are never
 * buffered. Their first bytes (enough to see the command, so the server can answer in the right
 * response) are kept, the rest is counted and dropped, and they are reported once as `overlong`
 * when their end has gone by. Memory per connection is bounded by max(maxLine, maxFrame, 128) + 16.
 *
 * Optionally (`pmi1Sticky`, for the streams clients send to a server), a stream that has spoken
 * PMI-1 stays PMI-1: once a line has gone by that is not the one PMI-1
 * line a PMI-2 client sends (`cmd=init … pmi_version=2`), every later message is a line, also one
 * that starts with a digit or a space (garbage a PMI-1 server answers and counts, instead of a
 * PMI-2 length that is no number, which would end the connection). PMI-1 and PMI-2 never share a
 * connection: a PMI-2 client's first message is that init line or a frame.
 *
 * Optionally (`detectForeign`, default on) the first bytes of the stream are classified
 * (`first-bytes.ts`): HTTP, TLS, SSH, PMIx or binary are reported as `foreign` and the framer
 * stops, so the listener can answer or close at once with a reason.
 *
 * Every result depends on the bytes only: any split of the same bytes gives the same items.
 * Items are latin1 strings (one char per byte, byte-exact).
 */
import { OPENING_BYTES, classifyOpening, type ForeignProtocol } from './first-bytes.js';
import { PMI2_HEADER_LENGTH, PMI2_MAX_FRAME, headerStep, type HeaderProgress } from './pmi2-frame.js';

export type WireItem =
  /** A PMI-1 line (or a garbage line), without its `\n`. */
  | { readonly kind: 'line'; readonly line: string }
  /** A PMI-2 frame's body: the bytes after the 6-byte header. */
  | { readonly kind: 'frame'; readonly body: string }
  /** A line over maxLine (`pmi1`) or a frame declaring more than maxFrame (`pmi2`), dropped. */
  | { readonly kind: 'overlong'; readonly wire: 'pmi1' | 'pmi2'; readonly prefix: string; readonly length: number }
  /** A header that is no length: the stream cannot be followed any further. Last item. */
  | { readonly kind: 'bad-frame'; readonly header: string; readonly detail: string }
  /** The connection speaks another protocol (`prefix`: the bytes that told). Last item. */
  | { readonly kind: 'foreign'; readonly protocol: ForeignProtocol; readonly reason: string; readonly prefix: string }
  /** From end(): the stream stopped inside a line, a header or a frame (`length`: bytes seen). */
  | { readonly kind: 'truncated'; readonly wire: 'pmi1' | 'pmi2'; readonly prefix: string; readonly length: number; readonly declared?: number };

export interface WireFramerOptions {
  /** Longest line, in bytes without its `\n` (the server's `maxLine`). */
  readonly maxLine: number;
  /** Longest PMI-2 frame body (default PMI2_MAX_FRAME). */
  readonly maxFrame?: number;
  /** Classify the stream's first bytes and stop at a foreign protocol (default true). */
  readonly detectForeign?: boolean;
  /**
   * A client's stream that has spoken PMI-1 stays PMI-1 (see above; default false: a server's
   * replies to a PMI-2 client begin with the PMI-1 `response_to_init` line, then frames).
   */
  readonly pmi1Sticky?: boolean;
}

/** Bytes of an overlong message kept to name its command. */
const PREFIX_KEEP = 128;
const NL = 10;
/** The PMI-1 line that opens a PMI-2 conversation. */
const PMI2_INIT = /^cmd=init[ \t](?:.*[ \t])?pmi_version=2(?:[ \t]|$)/;

type State =
  /** At a message boundary. */
  | { readonly t: 'start' }
  /** Reading a 6-byte length header. */
  | { readonly t: 'header'; bytes: number[]; readonly progress: HeaderProgress }
  /** Reading a line: `have` bytes so far in `parts`. */
  | { readonly t: 'line'; parts: Buffer[]; have: number }
  /** Dropping the rest of an overlong line (its first PREFIX_KEEP bytes kept). */
  | { readonly t: 'line-drop'; prefixParts: Buffer[]; kept: number; count: number }
  /** Reading a frame body of `length` bytes. */
  | { readonly t: 'body'; readonly length: number; parts: Buffer[]; have: number }
  /** Dropping a frame body over maxFrame. */
  | { readonly t: 'body-drop'; readonly length: number; prefixParts: Buffer[]; kept: number; have: number }
  /** After bad-frame or foreign: nothing more is read. */
  | { readonly t: 'dead' };

const START: State = { t: 'start' };
const DEAD: State = { t: 'dead' };

function latin1(parts: readonly Buffer[]): string {
  return parts.length === 1 ? (parts[0] as Buffer).toString('latin1') : Buffer.concat(parts).toString('latin1');
}

/** The bytes the verdict needed (the shortest decided prefix): the same under any chunking. */
function decisive(head: Buffer, ended: boolean): string {
  let k = 1;
  while (k < head.length && classifyOpening(head.subarray(0, k), ended && k === head.length).kind === 'need-more') k++;
  return head.toString('latin1', 0, k);
}

export class WireFramer {
  readonly maxLine: number;
  readonly maxFrame: number;
  private state: State = START;
  private readonly pmi1Sticky: boolean;
  /** Set once the stream has spoken PMI-1 (pmi1Sticky): no more frames. */
  private linesOnly = false;
  /** The stream's first bytes while they are being classified (detectForeign). */
  private opening: Buffer | null;

  constructor(options: WireFramerOptions) {
    const { maxLine, maxFrame = PMI2_MAX_FRAME, detectForeign = true, pmi1Sticky = false } = options;
    this.pmi1Sticky = pmi1Sticky;
    for (const [name, v] of [['maxLine', maxLine], ['maxFrame', maxFrame]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new TypeError(`${name} must be a positive integer, got ${v}`);
    }
    this.maxLine = maxLine;
    this.maxFrame = maxFrame;
    this.opening = detectForeign ? Buffer.alloc(0) : null;
  }

  /** True after `bad-frame` or `foreign`: the stream cannot be read any further. */
  get stopped(): boolean {
    return this.state.t === 'dead';
  }

  /** Bytes held between pushes (bounded by max(maxLine, maxFrame, 128) + OPENING_BYTES). */
  get pending(): number {
    const s = this.state;
    const held = this.opening?.length ?? 0;
    switch (s.t) {
      case 'header':
        return held + s.bytes.length;
      case 'line':
      case 'body':
        return held + s.have;
      case 'line-drop':
      case 'body-drop':
        return held + s.kept;
      default:
        return held;
    }
  }

  /** The items completed by `chunk` (its first `end` bytes: a reader's buffer may be larger). */
  push(chunk: Buffer, end: number = chunk.length): WireItem[] {
    const out: WireItem[] = [];
    if (this.opening !== null) {
      const take = Math.min(end, OPENING_BYTES - this.opening.length);
      const head = Buffer.concat([this.opening, chunk.subarray(0, take)]);
      const verdict = classifyOpening(head);
      if (verdict.kind === 'need-more' && take === end) {
        this.opening = head; // copied: the chunk may be a reused read buffer
        return out;
      }
      const held = this.opening;
      this.opening = null;
      if (verdict.kind === 'foreign') {
        this.state = DEAD;
        out.push({ kind: 'foreign', protocol: verdict.protocol, reason: verdict.reason, prefix: decisive(head, false) });
        return out;
      }
      if (held.length > 0) this.feed(held, 0, held.length, out);
    }
    this.feed(chunk, 0, end, out);
    return out;
  }

  /** The stream has ended: what was left inside a message, if anything. The framer stops. */
  end(): WireItem[] {
    const out: WireItem[] = [];
    if (this.opening !== null) {
      const held = this.opening;
      this.opening = null;
      const verdict = classifyOpening(held, true);
      if (verdict.kind === 'foreign') {
        this.state = DEAD;
        return [{ kind: 'foreign', protocol: verdict.protocol, reason: verdict.reason, prefix: decisive(held, true) }];
      }
      this.feed(held, 0, held.length, out);
    }
    const s = this.state;
    switch (s.t) {
      case 'header': {
        const text = Buffer.from(s.bytes).toString('latin1');
        out.push({ kind: 'truncated', wire: s.progress.digits > 0 ? 'pmi2' : 'pmi1', prefix: text, length: text.length });
        break;
      }
      case 'line':
        if (s.have > 0) out.push({ kind: 'truncated', wire: 'pmi1', prefix: latin1(s.parts).slice(0, PREFIX_KEEP), length: s.have });
        break;
      case 'line-drop':
        out.push({ kind: 'truncated', wire: 'pmi1', prefix: latin1(s.prefixParts), length: s.count });
        break;
      case 'body':
        out.push({ kind: 'truncated', wire: 'pmi2', prefix: latin1(s.parts).slice(0, PREFIX_KEEP), length: s.have, declared: s.length });
        break;
      case 'body-drop':
        out.push({ kind: 'truncated', wire: 'pmi2', prefix: latin1(s.prefixParts), length: s.have, declared: s.length });
        break;
      default:
        break;
    }
    this.state = DEAD;
    return out;
  }

  private feed(chunk: Buffer, start: number, end: number, out: WireItem[]): void {
    let i = start;
    while (i < end) {
      const s = this.state;
      switch (s.t) {
        case 'dead':
          return;
        case 'start': {
          const b = chunk[i] as number;
          this.state = !this.linesOnly && (b === 0x20 || (b >= 0x30 && b <= 0x39)) ? { t: 'header', bytes: [], progress: { digits: 0, trailing: false } } : { t: 'line', parts: [], have: 0 };
          break;
        }
        case 'header':
          i = this.header(s, chunk, i, end, out);
          break;
        case 'line':
          i = this.line(s, chunk, i, end, out);
          break;
        case 'line-drop': {
          let nl = chunk.indexOf(NL, i);
          if (nl >= end) nl = -1;
          const stop = nl < 0 ? end : nl;
          const keep = Math.min(stop - i, PREFIX_KEEP - s.kept);
          if (keep > 0) {
            s.prefixParts.push(Buffer.from(chunk.subarray(i, i + keep)));
            s.kept += keep;
          }
          s.count += stop - i;
          i = stop;
          if (nl >= 0) {
            out.push({ kind: 'overlong', wire: 'pmi1', prefix: latin1(s.prefixParts), length: s.count });
            this.state = START;
            i = nl + 1;
          }
          break;
        }
        case 'body': {
          if (s.have === 0 && end - i >= s.length) {
            // The whole body in this chunk (the usual case): no copy but the string.
            out.push({ kind: 'frame', body: chunk.toString('latin1', i, i + s.length) });
            i += s.length;
            this.state = START;
            break;
          }
          const take = Math.min(end - i, s.length - s.have);
          s.parts.push(Buffer.from(chunk.subarray(i, i + take))); // copied: the chunk may be reused
          s.have += take;
          i += take;
          if (s.have === s.length) {
            out.push({ kind: 'frame', body: latin1(s.parts) });
            this.state = START;
          }
          break;
        }
        case 'body-drop': {
          const take = Math.min(end - i, s.length - s.have);
          const keep = Math.min(take, PREFIX_KEEP - s.kept);
          if (keep > 0) {
            s.prefixParts.push(Buffer.from(chunk.subarray(i, i + keep)));
            s.kept += keep;
          }
          s.have += take;
          i += take;
          if (s.have === s.length) {
            out.push({ kind: 'overlong', wire: 'pmi2', prefix: latin1(s.prefixParts), length: s.length });
            this.state = START;
          }
          break;
        }
      }
    }
  }

  /** Header bytes, one at a time (six at most). */
  private header(s: Extract<State, { t: 'header' }>, chunk: Buffer, i: number, end: number, out: WireItem[]): number {
    while (i < end && s.bytes.length < PMI2_HEADER_LENGTH) {
      const b = chunk[i] as number;
      const step = headerStep(s.progress, b);
      if (step === 'not-a-header') {
        // Spaces, then neither a digit nor a space: these bytes begin a line.
        this.state = { t: 'line', parts: [Buffer.from(s.bytes)], have: s.bytes.length };
        return i;
      }
      if (step === 'bad-header') {
        const header = Buffer.from([...s.bytes, b]).toString('latin1');
        this.state = DEAD;
        out.push({ kind: 'bad-frame', header, detail: `PMI-2 length header ${JSON.stringify(header)} is not a decimal number padded with spaces` });
        return end;
      }
      s.bytes.push(b);
      i++;
    }
    if (s.bytes.length < PMI2_HEADER_LENGTH) return i;
    if (s.progress.digits === 0) {
      // Six spaces: no length can follow; a line of spaces (or garbage) it is.
      this.state = { t: 'line', parts: [Buffer.from(s.bytes)], have: s.bytes.length };
      return i;
    }
    const length = Number(Buffer.from(s.bytes).toString('latin1').trim());
    if (length === 0) {
      out.push({ kind: 'frame', body: '' });
      this.state = START;
    } else if (length > this.maxFrame) {
      this.state = { t: 'body-drop', length, prefixParts: [], kept: 0, have: 0 };
    } else {
      this.state = { t: 'body', length, parts: [], have: 0 };
    }
    return i;
  }

  /** A line up to its `\n`, with LineFramer's overlong rule. */
  private line(s: Extract<State, { t: 'line' }>, chunk: Buffer, i: number, end: number, out: WireItem[]): number {
    let nl = chunk.indexOf(NL, i);
    if (nl >= end) nl = -1;
    const stop = nl < 0 ? end : nl;
    if (s.have + (stop - i) > this.maxLine) {
      // Over the limit: keep the first PREFIX_KEEP bytes (whatever the split), drop the rest.
      const drop: Extract<State, { t: 'line-drop' }> = { t: 'line-drop', prefixParts: [], kept: 0, count: 0 };
      for (const part of s.parts) {
        const keep = Math.min(part.length, PREFIX_KEEP - drop.kept);
        if (keep > 0) drop.prefixParts.push(part.subarray(0, keep));
        drop.kept += keep;
      }
      drop.count = s.have;
      this.state = drop;
      return i; // line-drop reads on from here
    }
    if (nl < 0) {
      s.parts.push(Buffer.from(chunk.subarray(i, end))); // copied: the chunk may be reused
      s.have += end - i;
      return end;
    }
    const line = s.parts.length === 0 ? chunk.toString('latin1', i, nl) : Buffer.concat([...s.parts, chunk.subarray(i, nl)]).toString('latin1');
    out.push({ kind: 'line', line });
    if (this.pmi1Sticky && !this.linesOnly && !PMI2_INIT.test(line)) this.linesOnly = true;
    this.state = START;
    return nl + 1;
  }
}

/** An item as one line of text for logs and the tap (what the peer sent, or the start of it). */
export function wireItemText(item: WireItem): string {
  switch (item.kind) {
    case 'line':
      return item.line;
    case 'frame':
      return item.body;
    case 'overlong':
      return `${item.prefix}… (${item.length} bytes)`;
    case 'bad-frame':
      return item.header;
    case 'foreign':
      return item.prefix;
    case 'truncated':
      return `${item.prefix}… (cut short after ${item.length} bytes)`;
  }
}
