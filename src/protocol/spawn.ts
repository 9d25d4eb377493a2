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
  | { readonly kind: 'error'; readonly detail: string };

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
        return { kind: 'error', detail: `no endcmd within ${this.maxLines} lines of a failed spawn request` };
      }
      return { kind: 'more' };
    }
    if (++this.lines > this.maxLines) {
      if (line.trim() === 'endcmd') this.current = null; // the block ends here: nothing left to skip
      return this.fail(`spawn request longer than ${this.maxLines} lines`);
    }
    if (this.current === null) {
      if (line.trim() !== 'mcmd=spawn') return this.fail('a spawn block must start with mcmd=spawn');
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

  private fail(detail: string): SpawnStep {
    const inBlock = this.current !== null;
    this.reset();
    this.skipping = inBlock;
    return { kind: 'error', detail };
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
