/**
 * Protocol limits, each with the precedent it follows.
 *
 * Maxes are reported by `get_maxes` and include the terminating NUL (RFC 13: "maximum length
 * (including terminating NULL)"), so a key may have at most `keylenMax - 1` bytes. flux enforces
 * exactly that, and its conformance tests expect rc 5 for a key of `keylen_max` bytes.
 */
export interface Limits {
  /** hydra's PMI_MAXKVSLEN; flux reports 64. */
  readonly kvsnameMax: number;
  /** hydra's and flux's PMI_MAXKEYLEN. */
  readonly keylenMax: number;
  /** The de-facto 1024 (flux: "mpich and mvapich2 do not handle a larger max value correctly"). */
  readonly vallenMax: number;
  /**
   * Longest request line we buffer, in bytes without the newline. flux's rule is
   * kvsname_max + keylen_max + vallen_max + 64 so a maximal `put` fits; MPICH's own client never
   * writes more than 1024 (legacy PMIU_MAXLINE). Longer lines are answered rc=8 and discarded.
   */
  readonly maxLine: number;
  /** Lines one `mcmd=spawn` request may span before it is refused (a spawn is a few dozen). */
  readonly maxSpawnLines: number;
  /**
   * Distinct keys the job's KVS may hold (committed or pending). hydra and flux have no limit; a
   * wire-up puts a few keys per rank, so the default leaves room for ~100 000 ranks × 10 keys.
   */
  readonly kvsMaxKeys: number;
  /** Bytes of keys and values the KVS may hold (pending values count until a barrier replaces the old). */
  readonly kvsMaxBytes: number;
  /** Services the name service may hold (MPI_Publish_name: a handful per job). */
  readonly maxNames: number;
}

export const DEFAULT_KVS_MAX_KEYS = 1_048_576;
export const DEFAULT_KVS_MAX_BYTES = 256 * 1024 * 1024;
export const DEFAULT_MAX_NAMES = 4096;

export const HYDRA_MAXES = { kvsnameMax: 256, keylenMax: 64, vallenMax: 1024 } as const;

export function defaultLimits(overrides: Partial<Limits> = {}): Limits {
  const maxes = { ...HYDRA_MAXES, ...overrides };
  const limits: Limits = {
    kvsnameMax: maxes.kvsnameMax,
    keylenMax: maxes.keylenMax,
    vallenMax: maxes.vallenMax,
    maxLine: overrides.maxLine ?? maxes.kvsnameMax + maxes.keylenMax + maxes.vallenMax + 64,
    maxSpawnLines: overrides.maxSpawnLines ?? 1024,
    kvsMaxKeys: overrides.kvsMaxKeys ?? DEFAULT_KVS_MAX_KEYS,
    kvsMaxBytes: overrides.kvsMaxBytes ?? DEFAULT_KVS_MAX_BYTES,
    maxNames: overrides.maxNames ?? DEFAULT_MAX_NAMES,
  };
  for (const [k, v] of Object.entries(limits)) {
    if (!Number.isInteger(v) || v < 1) throw new TypeError(`limit ${k} must be a positive integer, got ${String(v)}`);
  }
  if (limits.maxLine < 64) throw new TypeError(`maxLine must be at least 64 bytes, got ${limits.maxLine}`);
  return limits;
}
