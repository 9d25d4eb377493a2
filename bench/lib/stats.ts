/** Order statistics for the benchmarks: medians of runs, and percentiles of RTT histograms. */

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError('median of nothing');
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Nearest-rank percentile (p in 0..100) of a non-empty list; with fewer than 100 samples p99 is the max. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) throw new RangeError('percentile of nothing');
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[Math.min(rank, s.length) - 1] as number;
}

/**
 * A latency histogram as the load client writes it: fixed-width buckets (`bucketNs` wide), a
 * sparse list of [bucket, count] pairs, plus samples beyond the last bucket (`overflow`, placed at
 * `maxNs`). Merging is exact; a percentile is resolved to the bucket's midpoint (±50 ns).
 */
export class Histogram {
  private readonly counts = new Map<number, number>();
  overflow = 0;
  maxNs = 0;
  total = 0;

  constructor(readonly bucketNs: number) {}

  add(pairs: ReadonlyArray<readonly [number, number]>, overflow: number, maxNs: number): void {
    for (const [b, c] of pairs) {
      this.counts.set(b, (this.counts.get(b) ?? 0) + c);
      this.total += c;
    }
    this.overflow += overflow;
    this.total += overflow;
    this.maxNs = Math.max(this.maxNs, maxNs);
  }

  /** Nearest-rank percentile in ns. */
  percentileNs(p: number): number {
    if (this.total === 0) throw new RangeError('percentile of an empty histogram');
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    let seen = 0;
    for (const b of [...this.counts.keys()].sort((x, y) => x - y)) {
      seen += this.counts.get(b) ?? 0;
      if (seen >= rank) return (b + 0.5) * this.bucketNs;
    }
    return this.maxNs; // in the overflow
  }
}
