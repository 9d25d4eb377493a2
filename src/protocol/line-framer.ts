/**
 * Bytes → lines, with a length limit. Sans-I/O: the transport pushes chunks, gets lines back.
 *
 * Every PMI-1 message ends with exactly one `\n` (nobody strips `\r`, so neither do we). A line
 * longer than `maxLine` bytes is never buffered whole: we keep its first bytes (enough to see which
 * command it was, so the engine can answer in the right reply) and drop the rest up to the next
 * `\n`, then report it as `overlong`. Memory per connection is thus bounded by `maxLine`.
 *
 * Lines are latin1 strings (one char per byte): byte-exact, and `.length` counts bytes.
 */

export type Framed =
  | { readonly kind: 'line'; readonly line: string }
  | { readonly kind: 'overlong'; readonly prefix: string; readonly length: number };

const PREFIX_KEEP = 128;

export class LineFramer {
  private carry: Buffer | null = null;
  /** Bytes of the current overlong line seen so far; -1 when not discarding. */
  private discarding = -1;
  private prefix = '';

  constructor(readonly maxLine: number) {
    if (!Number.isInteger(maxLine) || maxLine < 1) throw new TypeError(`maxLine must be a positive integer, got ${maxLine}`);
  }

  /** Bytes of an incomplete line held between pushes. */
  get pending(): number {
    return this.carry?.length ?? 0;
  }

  /** The lines completed by `chunk` (its first `end` bytes: a reader's buffer may be larger). */
  push(chunk: Buffer, end: number = chunk.length): Framed[] {
    const out: Framed[] = [];
    let start = 0;
    while (start < end) {
      let nl = chunk.indexOf(10, start);
      if (nl >= end) nl = -1;
      const stop = nl === -1 ? end : nl;
      if (this.discarding >= 0) {
        this.discarding += stop - start;
        if (nl === -1) return out;
        out.push({ kind: 'overlong', prefix: this.prefix, length: this.discarding });
        this.discarding = -1;
        this.prefix = '';
        start = nl + 1;
        continue;
      }
      const have = this.carry?.length ?? 0;
      if (have + (stop - start) > this.maxLine) {
        const head = this.carry ? Buffer.concat([this.carry, chunk.subarray(start, Math.min(stop, start + PREFIX_KEEP))]) : chunk.subarray(start, stop);
        this.prefix = head.subarray(0, PREFIX_KEEP).toString('latin1');
        this.discarding = have + (stop - start);
        this.carry = null;
        if (nl === -1) return out;
        out.push({ kind: 'overlong', prefix: this.prefix, length: this.discarding });
        this.discarding = -1;
        this.prefix = '';
        start = nl + 1;
        continue;
      }
      if (nl === -1) {
        // Copied: the chunk may be a reader's buffer that is reused for the next read.
        const rest = chunk.subarray(start, end);
        this.carry = this.carry ? Buffer.concat([this.carry, rest]) : Buffer.from(rest);
        return out;
      }
      // toString with bounds: no intermediate Buffer view for the common, carry-free line.
      const line = this.carry ? Buffer.concat([this.carry, chunk.subarray(start, nl)]).toString('latin1') : chunk.toString('latin1', start, nl);
      this.carry = null;
      out.push({ kind: 'line', line });
      start = nl + 1;
    }
    return out;
  }
}
