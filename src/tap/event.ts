/**
 * Tap events, schema version 2 (documented in the README): what observers of a job receive, one
 * JSON object per WebSocket message.
 *
 * Version 2 (PMI-2): every line event says which wire it is (`wire: 'pmi1' | 'pmi2'`); a PMI-2
 * frame's event carries the frame's body (without its 6-byte length header) as `line`, its
 * command as `cmd` and its pairs as `attrs`. Nothing else changed from version 1.
 *
 *   common: { v: 2, seq, t, job, kind }   t = wall-clock time in ns as a decimal string (exact)
 *             seq numbers the live events (line, state) 1, 2, 3… per tap, the same for every
 *             observer, so an observer sees them contiguous unless it was told of a gap. The
 *             per-observer messages take no number of their own: hello and snapshot carry the seq
 *             of the last event the snapshot includes (the next live event is seq+1), a gap the
 *             seq of the last event it missed.
 *   hello     { role: 'server'|'relay'|'run', redact: boolean }             first message
 *   snapshot  { state: TapSnapshot }                                       second message
 *   line      { leg, wire, line, cmd, attrs, conn?, session?, rank?, pmiid?, latencyNs? }
 *             latencyNs on replies: time since the matching request on the same hop
 *   state     { event, rank?, session?, detail… }   connected, handshaken, held, taken-over,
 *             finalized, aborted, refused-peer, barrier (entered/size), rank-failed, job-finished…
 *   gap       { dropped }        this observer missed `dropped` events (it was too slow)
 */
import { isTokens, tokenize } from '../protocol/tokenize.js';
import { isPmi2Tokens, tokenizeFrame } from '../protocol/pmi2-frame.js';
import type { BusEvent, Leg } from '../host/bus.js';

export const TAP_SCHEMA_VERSION = 2;

interface Common {
  readonly v: 2;
  readonly seq: number;
  readonly t: string;
  readonly job: string;
}

export type TapLineEvent = Common & {
  readonly kind: 'line';
  readonly leg: Leg;
  /** PMI-1 line, or PMI-2 frame (`line` is then the frame's body). */
  readonly wire: 'pmi1' | 'pmi2';
  readonly line: string;
  readonly cmd: string;
  readonly attrs: Record<string, string>;
  readonly conn?: number;
  readonly session?: number;
  readonly rank?: number;
  readonly pmiid?: number;
  readonly latencyNs?: number;
};

export type TapStateEvent = Common & { readonly kind: 'state'; readonly event: string; readonly rank?: number; readonly session?: number; readonly [detail: string]: unknown };

export type TapEvent =
  | (Common & { readonly kind: 'hello'; readonly role: 'server' | 'relay' | 'run'; readonly redact: boolean; readonly schema: number })
  | (Common & { readonly kind: 'snapshot'; readonly state: unknown })
  | TapLineEvent
  | TapStateEvent
  | (Common & { readonly kind: 'gap'; readonly dropped: number });

const REQUEST_LEGS: ReadonlySet<Leg> = new Set(['client->server', 'client->relay', 'relay->upstream']);
/** The request leg a reply answers on the same hop. */
const REQUEST_OF: Readonly<Record<string, Leg>> = { 'server->client': 'client->server', 'relay->client': 'client->relay', 'upstream->relay': 'relay->upstream' };

/** Wall-clock ns from a monotonic clock anchored once (Date.now() alone has ms resolution). */
const anchorNs = BigInt(Date.now()) * 1_000_000n;
const anchorHr = process.hrtime.bigint();
export function nowNs(): bigint {
  return anchorNs + (process.hrtime.bigint() - anchorHr);
}

/**
 * Requests waiting for their reply, remembered for latency. A connection that leaves with one
 * unanswered (a relay client taken over, a rank that died in a barrier) would leave it behind for
 * good; the oldest are forgotten past this many (all it costs is that request's latency).
 */
export const MAX_PENDING_REQUESTS = 16_384;

/** Turns bus events into tap events: stamps time and sequence, parses lines, measures latency. */
export class TapRecorder {
  private seq = 0;
  /** Pending requests per hop and connection: when and what was asked. */
  private readonly pending = new Map<string, { t: bigint; cmd: string }>();

  constructor(
    readonly job: string,
    readonly role: 'server' | 'relay' | 'run',
    readonly redact: boolean,
  ) {}

  /** Common fields of a live event: takes the next seq. */
  private common(): Common {
    return { v: 2, seq: ++this.seq, t: nowNs().toString(), job: this.job };
  }

  /** Common fields of a message to one observer: numbers nothing (`seq` given). */
  private own(seq: number): Common {
    return { v: 2, seq, t: nowNs().toString(), job: this.job };
  }

  /** The seq of the last live event recorded (0 before the first). */
  get lastSeq(): number {
    return this.seq;
  }

  hello(): TapEvent {
    return { ...this.own(this.seq), kind: 'hello', role: this.role, redact: this.redact, schema: TAP_SCHEMA_VERSION };
  }

  /** `state` includes every live event up to `lastSeq`. */
  snapshot(state: unknown): TapEvent {
    return { ...this.own(this.seq), kind: 'snapshot', state };
  }

  /** An observer missed `dropped` live events, the last of them `lastMissed`. */
  gap(dropped: number, lastMissed: number): TapEvent {
    return { ...this.own(lastMissed), kind: 'gap', dropped };
  }

  /** The tap event for a bus event, or null for ones observers do not see. */
  record(ev: BusEvent): TapEvent | null {
    switch (ev.type) {
      case 'line':
        return this.line(ev);
      case 'transport-error':
        return null;
      case 'closed':
        this.pending.delete(hopKey('client->server', ev));
        this.pending.delete(hopKey('client->relay', ev));
    }
    const { event, ...detail } = this.stateOf(ev);
    // Every field of every state event, free-text messages included (the relay quotes requests in
    // them): `--tap-redact values` must hold whatever a message happens to quote.
    return { ...this.common(), kind: 'state', event, ...(this.redact ? redactFields(detail) : detail) };
  }

  /** The name and details of a state event. */
  private stateOf(ev: Exclude<BusEvent, { type: 'line' | 'transport-error' }>): { event: string } & Record<string, unknown> {
    switch (ev.type) {
      case 'engine': {
        const { type, ...detail } = ev.event;
        return { event: type, ...flatten(detail) };
      }
      case 'relay': {
        const { type, ...detail } = ev.event;
        return { event: type, ...flatten(detail) };
      }
      case 'peer-refused':
        return { event: 'refused-peer', peer: ev.peer, reason: ev.reason, ...(ev.uid !== undefined ? { uid: ev.uid } : {}) };
      case 'listening':
        return { event: 'listening', pmiPort: ev.pmiPort };
      case 'closed':
        return { event: 'closed', conn: ev.conn, reason: ev.reason, ...(ev.rank !== undefined ? { rank: ev.rank } : {}) };
    }
  }

  private line(ev: Extract<BusEvent, { type: 'line' }>): TapLineEvent {
    const t = nowNs();
    const pmi2 = ev.wire === 'pmi2';
    const line = this.redact ? (pmi2 ? redactFrameValues(ev.line) : redactValues(ev.line)) : ev.line;
    const attrs: Record<string, string> = Object.create(null) as Record<string, string>;
    let cmd = '';
    if (pmi2) {
      const frame = tokenizeFrame(line);
      if (isPmi2Tokens(frame)) {
        cmd = frame.name;
        for (const [k, v] of frame.attrs) attrs[k] = v;
      }
    } else {
      const tokens = tokenize(line);
      if (isTokens(tokens)) {
        cmd = tokens.head === 'mcmd' ? `mcmd=${tokens.name}` : tokens.name;
        for (const [k, v] of tokens.attrs) attrs[k] = v;
      }
    }
    let latencyNs: number | undefined;
    if (REQUEST_LEGS.has(ev.leg)) {
      const key = hopKey(ev.leg, ev);
      this.pending.delete(key); // re-inserted last: the map stays in age order
      this.pending.set(key, { t, cmd });
      if (this.pending.size > MAX_PENDING_REQUESTS) this.pending.delete(this.pending.keys().next().value as string);
    } else {
      const reqLeg = REQUEST_OF[ev.leg];
      const key = reqLeg ? hopKey(reqLeg, ev) : '';
      const p = this.pending.get(key);
      if (p) {
        latencyNs = Number(t - p.t);
        this.pending.delete(key); // one latency per request (the set lines after initack have none)
      }
    }
    // Built field by field, not with spreads: this runs for every line of a tapped job.
    const out: { -readonly [K in keyof TapLineEvent]: TapLineEvent[K] } = { v: 2, seq: ++this.seq, t: t.toString(), job: this.job, kind: 'line', leg: ev.leg, wire: pmi2 ? 'pmi2' : 'pmi1', line, cmd, attrs };
    if (ev.conn !== undefined) out.conn = ev.conn;
    if (ev.session !== undefined) {
      out.session = ev.session;
      out.pmiid = ev.session;
    }
    if (ev.rank !== undefined) out.rank = ev.rank;
    if (latencyNs !== undefined) out.latencyNs = latencyNs;
    return out;
  }

  /** The command a reply answered (for metrics), read before `record` consumes it. */
  requestOf(ev: Extract<BusEvent, { type: 'line' }>): string | undefined {
    const reqLeg = REQUEST_OF[ev.leg];
    return reqLeg ? this.pending.get(hopKey(reqLeg, ev))?.cmd : undefined;
  }
}

/**
 * One connection on one hop: the client's connection where there is one (server, and the relay's
 * client side, whose first line — initack — comes before its session is known), else the relay's
 * upstream connection of the session.
 */
function hopKey(leg: Leg, ev: { readonly conn?: number; readonly session?: number }): string {
  return ev.conn !== undefined ? `${leg}|c${ev.conn}` : `${leg}|s${ev.session ?? ''}`;
}

/**
 * `--tap-redact values`: KVS values never leave the process — a put's or get_result's `value`, a
 * spawn block's `preput_val_N`. The value runs to the end of the line (flux writes spaces in it;
 * any byte counts, CR included), except hydra 4.1/4.2's trailing ` found=TRUE`, which stays
 * visible.
 */
export function redactValues(line: string): string {
  return line.replace(/(^|[ \t])(value|preput_val_\d+)=([\s\S]*?)((?:[ \t]+found=(?:TRUE|FALSE))?)$/, (_m, sep: string, name: string, v: string, tail: string) => `${sep}${name}=<redacted:${v.length}>${tail}`);
}

/**
 * `--tap-redact values` for a PMI-2 frame body: `value`, a spawn's `ppvalN` and an info's
 * `infovalN` are replaced by their length; a value ends at the first `;` that is not doubled.
 */
export function redactFrameValues(body: string): string {
  return body.replace(/(^|;)(value|ppval\d+|infoval\d+)=((?:[^;]|;;)*)(?=;|$)/g, (_m, sep: string, name: string, v: string) => `${sep}${name}=<redacted:${v.replaceAll(';;', ';').length}>`);
}

/** A value attribute starting somewhere in a text. */
const VALUE_ATTR = /(^|[ \t;])(?:value|preput_val_\d+|ppval\d+|infoval\d+)=/;

/** Both wires' value rules (a quoted PMI-2 frame has `;` separators, a PMI-1 line spaces). */
function redactEither(line: string): string {
  return redactFrameValues(redactValues(line));
}
/** A JSON string literal: how messages quote a line (`preview()`). */
const LITERAL = /"(?:[^"\\]|\\.)*"/g;

/**
 * Redaction of free text (log messages, reasons): each quoted line in it is redacted as a line.
 * A value outside any quotes runs to the end of the text, as in a line: hiding too much is the
 * safe way to be wrong.
 */
export function redactText(text: string): string {
  let out = '';
  let last = 0;
  for (const m of text.matchAll(LITERAL)) {
    const between = text.slice(last, m.index);
    if (VALUE_ATTR.test(between)) return out + redactEither(text.slice(last));
    out += between + redactLiteral(m[0]);
    last = m.index + m[0].length;
  }
  return out + redactEither(text.slice(last));
}

function redactLiteral(literal: string): string {
  try {
    const line = JSON.parse(literal) as string;
    const hidden = redactEither(line);
    return hidden === line ? literal : JSON.stringify(hidden);
  } catch {
    return `"${redactEither(literal.slice(1, -1))}"`; // an escape JSON does not know: hide as is
  }
}

/** Every string in a state event's details, at any depth. */
function redactFields(detail: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(detail)) out[k] = redactAny(v);
  return out;
}

function redactAny(v: unknown): unknown {
  if (typeof v === 'string') return redactText(v);
  if (Array.isArray(v)) return v.map(redactAny);
  if (v && typeof v === 'object') return redactFields(v as Record<string, unknown>);
  return v;
}

/** Nested objects (facts, status) become flat fields observers can filter on. */
function flatten(detail: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(detail)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v as Record<string, unknown>)) out[`${k}.${k2}`] = v2;
    else out[k] = v;
  }
  return out;
}
