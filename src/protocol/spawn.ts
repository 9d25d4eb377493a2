/**
 * The multi-line `mcmd=spawn … endcmd` request (MPI_Comm_spawn), assembled line by line.
 *
 * A spawn request is one or more segments, one per executable:
 *   mcmd=spawn / nprocs= / execname= / totspawns= / spawnssofar= / argcnt= / arg1=… /
 *   preput_num= / preput_key_0= / preput_val_0= / info_num= / info_key_0= / info_val_0= / endcmd
 * and is complete at the `endcmd` of the segment whose spawnssofar == totspawns; it gets one reply
 * (`cmd=spawn_result`). Values may contain anything but `\n` (MPICH's parse_v1_mcmd), so each
 * line is split at its first `=` only. Legacy clients write `key=value` pairs several per line;
 * we accept both.
 *
 * Every count a client gives (argcnt, preput_num, info_num, totspawns, nprocs) is checked against
 * what the block can actually carry before anything loops to it: a 7-line block saying
 * `preput_num=100000000000` is refused at its endcmd, not iterated for hours.
 */

export interface SpawnSegment {
  readonly nprocs: number;
  readonly execname: string;
  readonly args: readonly string[];
  readonly preput: ReadonlyMap<string, string>;
  readonly info: ReadonlyMap<string, string>;
}

export interface SpawnRequest {
  readonly segments: readonly SpawnSegment[];
}

export type SpawnStep =
  | { readonly kind: 'more' }
  | { readonly kind: 'done'; readonly request: SpawnRequest }
  /** `msg`: the reply's msg word (no spaces); `detail`: the same for logs, in words. */
  | { readonly kind: 'error'; readonly msg: string; readonly detail: string };

/** MPI_Comm_spawn's maxprocs is a C int: no client can ask for more. */
export const MAX_SPAWN_NPROCS = 2 ** 31 - 1;
/** Lines a segment needs at least: `mcmd=spawn`, one line of attributes, `endcmd`. */
const MIN_SEGMENT_LINES = 3;

const MALFORMED = 'malformed_spawn_request';

export class SpawnAssembler {
  private current: Map<string, string> | null = null;
  private segments: SpawnSegment[] = [];
  private lines = 0;
  /** After a failure inside a block, the rest of it up to `endcmd` is swallowed (as flux does). */
  private skipping = false;

  constructor(private readonly maxLines: number) {}

  get active(): boolean {
    return this.current !== null || this.skipping;
  }

  /** Feed one line; the first must be `mcmd=spawn`. */
  push(line: string): SpawnStep {
    if (this.skipping) {
      if (line.trim() === 'endcmd') {
        this.skipping = false;
        this.lines = 0; // the next block gets its own line count
      } else if (++this.lines > this.maxLines) {
        this.skipping = false;
        this.lines = 0;
        return { kind: 'error', msg: MALFORMED, detail: `no endcmd within ${this.maxLines} lines of a failed spawn request` };
      }
      return { kind: 'more' };
    }
    if (++this.lines > this.maxLines) {
      if (line.trim() === 'endcmd') this.current = null; // the block ends here: nothing left to skip
      return this.fail(`spawn request longer than ${this.maxLines} lines`);
    }
    if (this.current === null) {
      // Any `mcmd=` line opens a block that runs to its endcmd (hydra frames it so too): an
      // unknown one is refused once, and the rest of it skipped, not read as separate commands.
      if (line.trim() !== 'mcmd=spawn') return this.fail('a spawn block must start with mcmd=spawn', MALFORMED, line.startsWith('mcmd='));
      this.current = new Map();
      return { kind: 'more' };
    }
    if (line.trim() === 'endcmd') return this.endSegment();
    if (line.startsWith('mcmd=')) return this.fail('mcmd= inside an unfinished spawn segment');
    // One pair per line (MPICH >= 4.1) or several space-separated pairs (legacy); a pair's value
    // runs to the next ` key=` only in the legacy form, so split on first '=' when there is one pair.
    const pairs = /^\S+=/.test(line) && /\s\S+=/.test(line) ? line.trim().split(/\s+(?=\S+=)/) : [line];
    for (const pair of pairs) {
      const eq = pair.indexOf('=');
      if (eq <= 0) return this.fail(`spawn line without key=value: ${JSON.stringify(pair.slice(0, 40))}`);
      this.current.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    return { kind: 'more' };
  }

  private endSegment(): SpawnStep {
    const m = this.current ?? new Map<string, string>();
    const int = (k: string): number | undefined => {
      const v = m.get(k);
      return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
    };
    const nprocs = int('nprocs');
    const total = int('totspawns');
    const sofar = int('spawnssofar');
    const execname = m.get('execname');
    if (nprocs === undefined || total === undefined || sofar === undefined || execname === undefined) {
      this.current = null; // this segment ended at its endcmd: nothing of it is left to skip
      return this.fail('spawn segment lacks nprocs, execname, totspawns or spawnssofar');
    }
    // Each argument takes an attribute of this segment, each preput/info pair two; a block holds
    // at most maxLines lines, so at most maxLines/3 segments. Counts beyond that cannot be honest.
    const carried = m.size;
    const bounds: ReadonlyArray<readonly [string, number | undefined, number, string]> = [
      ['nprocs', nprocs, MAX_SPAWN_NPROCS, 'MPI_Comm_spawn takes at most an int of processes'],
      ['totspawns', total, Math.max(1, Math.floor(this.maxLines / MIN_SEGMENT_LINES)), `a spawn request of at most ${this.maxLines} lines holds no more segments`],
      ['spawnssofar', sofar, total, 'a segment number cannot exceed totspawns'],
      ['argcnt', int('argcnt'), carried, `its segment carries only ${carried} attributes`],
      ['preput_num', int('preput_num'), Math.floor(carried / 2), `its segment carries only ${carried} attributes (two per pair)`],
      ['info_num', int('info_num'), Math.floor(carried / 2), `its segment carries only ${carried} attributes (two per pair)`],
    ];
    for (const [name, value, limit, why] of bounds) {
      if (value === undefined || value <= limit) continue;
      this.current = null; // failed at its own endcmd: nothing left to skip
      const shown = m.get(name) ?? String(value);
      return this.fail(`spawn ${name}=${shown.length > 20 ? `${shown.slice(0, 20)}…` : shown} exceeds ${limit}: ${why}`, `spawn_${name}_${shown.length > 20 ? 'is_out_of_range' : `${shown}_exceeds_limit_${limit}`}`);
    }
    const args: string[] = [];
    const argcnt = int('argcnt') ?? 0;
    for (let i = 1; i <= argcnt; i++) args.push(m.get(`arg${i}`) ?? '');
    const pairs = (n: string, k: string, v: string) => {
      const out = new Map<string, string>();
      const count = int(n) ?? 0;
      for (let i = 0; i < count; i++) out.set(m.get(`${k}_${i}`) ?? '', m.get(`${v}_${i}`) ?? '');
      return out;
    };
    this.segments.push({ nprocs, execname, args, preput: pairs('preput_num', 'preput_key', 'preput_val'), info: pairs('info_num', 'info_key', 'info_val') });
    this.current = null;
    if (sofar >= total) {
      const request = { segments: this.segments };
      this.reset();
      return { kind: 'done', request };
    }
    return { kind: 'more' };
  }

  private fail(detail: string, msg = MALFORMED, opened = false): SpawnStep {
    const inBlock = this.current !== null || opened;
    this.reset();
    this.skipping = inBlock;
    return { kind: 'error', msg, detail };
  }

  private reset(): void {
    this.current = null;
    this.segments = [];
    this.lines = 0;
  }
}

/** Write a spawn request the way MPICH >= 4.1 does (one attribute per line). */
export function formatSpawn(req: SpawnRequest): string {
  let out = '';
  req.segments.forEach((seg, i) => {
    out += `mcmd=spawn\nnprocs=${seg.nprocs}\nexecname=${seg.execname}\ntotspawns=${req.segments.length}\nspawnssofar=${i + 1}\nargcnt=${seg.args.length}\n`;
    seg.args.forEach((a, j) => (out += `arg${j + 1}=${a}\n`));
    if (i === 0) {
      out += `preput_num=${seg.preput.size}\n`;
      [...seg.preput].forEach(([k, v], j) => (out += `preput_key_${j}=${k}\npreput_val_${j}=${v}\n`));
    }
    out += `info_num=${seg.info.size}\n`;
    [...seg.info].forEach(([k, v], j) => (out += `info_key_${j}=${k}\ninfo_val_${j}=${v}\n`));
    out += 'endcmd\n';
  });
  return out;
}
