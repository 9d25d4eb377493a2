/**
 * How many log lines bad input may cost. Every bad line from any peer is a warn-level event, and
 * pino writes synchronously to stderr: a peer sending garbage as fast as it can would make us
 * spend our time writing ~340-byte lines about it (and fill the disk behind stderr).
 *
 * Rules (the numbers are the defaults):
 * - per connection, its first 5 such events are written in full; after that they are counted,
 *   with at most one summary line per connection every 10 s, and the rest counted in one line when
 *   the connection closes;
 * - across all peers, at most 50 of these lines (full or summary) every 10 s; the lines held back
 *   beyond that are counted, and the count written once the 10 s are over.
 * Only events about what peers send are throttled (protocol errors, refusals); a job's own story
 * (ranks joining, barriers, failures) is always written.
 *
 * Sans-I/O: callers pass the time and write the lines it returns.
 */

export interface ThrottleOptions {
  readonly perConnection: number;
  readonly perInterval: number;
  readonly intervalMs: number;
}

export const DEFAULT_THROTTLE: ThrottleOptions = { perConnection: 5, perInterval: 50, intervalMs: 10_000 };

interface ConnTally {
  seen: number;
  /** Held back since the last summary. */
  held: number;
  lastSummary: number;
  last: string;
}

export type Decision = { readonly write: boolean; readonly extra: readonly string[] };

export class LogThrottle {
  private readonly conns = new Map<string, ConnTally>();
  private windowStart = -Infinity;
  private written = 0;
  /** Lines held back by the global budget in the current window, and from how many keys. */
  private dropped = 0;
  private readonly droppedKeys = new Set<string>();

  constructor(private readonly opts: ThrottleOptions = DEFAULT_THROTTLE) {}

  /**
   * An event about bad input from `key` (a connection: `connection 7`; or a kind of peer).
   * `perConnection`: whether the per-connection rule applies (false: only the global budget).
   * Returns whether to write the event itself, and summary lines to write after it.
   */
  offer(key: string, message: string, now: number, perConnection = true): Decision {
    const extra: string[] = [];
    this.roll(now, extra);
    if (!perConnection) return { write: this.spend(key), extra };
    let c = this.conns.get(key);
    if (!c) this.conns.set(key, (c = { seen: 0, held: 0, lastSummary: now, last: '' }));
    c.seen++;
    if (c.seen <= this.opts.perConnection) {
      const write = this.spend(key);
      if (write && c.seen === this.opts.perConnection) {
        extra.push(`${key}: that is ${c.seen} of its bad lines; more are counted, not logged one by one (a summary every ${this.opts.intervalMs / 1000} s and a count when it closes)`);
      }
      return { write, extra };
    }
    c.held++;
    c.last = message.startsWith(`${key}: `) ? message.slice(key.length + 2) : message;
    if (now - c.lastSummary >= this.opts.intervalMs) {
      const line = `${key}: ${c.held} more bad lines in the last ${Math.round((now - c.lastSummary) / 1000)} s (last: ${c.last})`;
      c.held = 0;
      c.lastSummary = now;
      if (this.spend(key)) extra.push(line);
    }
    return { write: false, extra };
  }

  /** The connection closed: the count of what was not written, if anything. */
  closed(key: string, now: number): string[] {
    const extra: string[] = [];
    this.roll(now, extra);
    const c = this.conns.get(key);
    if (!c) return extra;
    this.conns.delete(key);
    if (c.held > 0 && this.spend(key)) extra.push(`${key} closed after ${c.seen} bad lines; ${c.held} of them were not logged one by one (last: ${c.last})`);
    return extra;
  }

  /** The count of a window that has ended (a timer calls this when the window is over). */
  flush(now: number): string[] {
    const extra: string[] = [];
    this.roll(now, extra);
    return extra;
  }

  /** When the current window ends (a timer writes its count then), or null with nothing held back. */
  get pendingUntil(): number | null {
    return this.dropped > 0 ? this.windowStart + this.opts.intervalMs : null;
  }

  private spend(key: string): boolean {
    if (this.written < this.opts.perInterval) {
      this.written++;
      return true;
    }
    this.dropped++;
    this.droppedKeys.add(key);
    return false;
  }

  private roll(now: number, extra: string[]): void {
    if (now - this.windowStart < this.opts.intervalMs) return;
    if (this.dropped > 0) {
      extra.push(`log throttled: ${this.dropped} lines about bad input from ${this.droppedKeys.size} connections or peers were not written in the last ${Math.round(Math.min(now - this.windowStart, 10 * this.opts.intervalMs) / 1000)} s (at most ${this.opts.perInterval} such lines every ${this.opts.intervalMs / 1000} s)`);
    }
    this.windowStart = now;
    this.written = 0;
    this.dropped = 0;
    this.droppedKeys.clear();
  }
}
