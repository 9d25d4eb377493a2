/**
 * The job's key-value space with barrier epochs.
 *
 * Choice (documented in the README): a put becomes visible to `get` only after the next barrier
 * completes — not even the putting rank sees it before. That is exactly hydra's behaviour (its
 * proxy caches puts until barrier_in; see mpich-4.0.2-interop.md §3c), and what PMI's contract
 * promises ("PMI_Barrier automatically applies PMI_KVS_Commit"). A repeated put of a key replaces
 * its value (hydra: last one wins).
 *
 * It also keeps the two numbers its limits are checked against (the engine answers a put that
 * would pass one with rc=2): distinct keys, and bytes held — key plus value of every committed
 * and every pending entry, since until a barrier both the old and the new value of a key are kept.
 */
export class EpochKvs {
  private readonly committed = new Map<string, string>();
  private pending = new Map<string, string>();
  private epochNo = 0;
  /** Pending keys that are not committed yet: keys = committed.size + pendingNew. */
  private pendingNew = 0;
  private held = 0;

  constructor(preset: Iterable<readonly [string, string]> = []) {
    for (const [k, v] of preset) {
      this.committed.set(k, v);
      this.held += k.length + v.length;
    }
  }

  /** What put(key, value) would add: a key not known yet, and the change in bytes held. */
  costOf(key: string, value: string): { readonly newKey: boolean; readonly bytes: number } {
    const old = this.pending.get(key);
    if (old !== undefined) return { newKey: false, bytes: value.length - old.length };
    return { newKey: !this.committed.has(key), bytes: key.length + value.length };
  }

  put(key: string, value: string): void {
    const { newKey, bytes } = this.costOf(key, value);
    if (newKey) this.pendingNew++;
    this.held += bytes;
    this.pending.set(key, value);
  }

  get(key: string): string | undefined {
    return this.committed.get(key);
  }

  /** Make pending puts visible; returns how many were committed. */
  commit(): number {
    const n = this.pending.size;
    for (const [k, v] of this.pending) {
      const old = this.committed.get(k);
      if (old !== undefined) this.held -= k.length + old.length; // the pending copy replaces it
      this.committed.set(k, v);
    }
    this.pending = new Map();
    this.pendingNew = 0;
    this.epochNo++;
    return n;
  }

  get epoch(): number {
    return this.epochNo;
  }

  get size(): number {
    return this.committed.size;
  }

  /** Distinct keys, committed or pending. */
  get keys(): number {
    return this.committed.size + this.pendingNew;
  }

  /** Bytes of keys and values held, committed and pending. */
  get bytes(): number {
    return this.held;
  }

  get pendingSize(): number {
    return this.pending.size;
  }

  entries(): IterableIterator<[string, string]> {
    return this.committed.entries();
  }
}
