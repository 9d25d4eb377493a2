/**
 * The job's key-value space with barrier epochs.
 *
 * Choice (documented in the README): a put becomes visible to `get` only after the next barrier
 * completes — not even the putting rank sees it before. That is exactly hydra's behaviour (its
 * proxy caches puts until barrier_in; see mpich-4.0.2-interop.md §3c), and what PMI's contract
 * promises ("PMI_Barrier automatically applies PMI_KVS_Commit"). A repeated put of a key replaces
 * its value (hydra: last one wins).
 */
export class EpochKvs {
  private readonly committed = new Map<string, string>();
  private pending = new Map<string, string>();
  private epochNo = 0;

  constructor(preset: Iterable<readonly [string, string]> = []) {
    for (const [k, v] of preset) this.committed.set(k, v);
  }

  put(key: string, value: string): void {
    this.pending.set(key, value);
  }

  get(key: string): string | undefined {
    return this.committed.get(key);
  }

  /** Make pending puts visible; returns how many were committed. */
  commit(): number {
    const n = this.pending.size;
    for (const [k, v] of this.pending) this.committed.set(k, v);
    this.pending = new Map();
    this.epochNo++;
    return n;
  }

  get epoch(): number {
    return this.epochNo;
  }

  get size(): number {
    return this.committed.size;
  }

  get pendingSize(): number {
    return this.pending.size;
  }

  entries(): IterableIterator<[string, string]> {
    return this.committed.entries();
  }
}
