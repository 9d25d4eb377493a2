/**
 * The environment a rank gets, exactly as hydra gives it (mpich-4.0.2-interop.md §2):
 * - PMI_FD mode: PMI_FD, PMI_RANK, PMI_SIZE;
 * - PMI_PORT mode: PMI_PORT, PMI_ID, plus PMI_RANK and PMI_SIZE (MPICH >= 4.2 needs them when
 *   PMI_ID is absent; harmless otherwise).
 * Connection variables inherited from an outer launcher are removed first: a stale PMI_FD would
 * win over our PMI_PORT in every client.
 */
const INHERITED_PMI_VARS = ['PMI_FD', 'PMI_PORT', 'PMI_ID', 'PMI_RANK', 'PMI_SIZE', 'PMI_SPAWNED'] as const;

/**
 * `pmiid` (port mode) is the PMI_ID the client sends in its handshake; it defaults to the rank.
 * A relay in a rank slot (`wrap`) keys its session by the PMI_ID it was started with, which need
 * not be the rank the upstream assigned.
 */
export type RankConnection = { readonly mode: 'fd'; readonly fd: number } | { readonly mode: 'port'; readonly pmiPort: string; readonly pmiid?: number };

export function rankEnv(base: NodeJS.ProcessEnv, rank: number, size: number, conn: RankConnection): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const k of INHERITED_PMI_VARS) delete env[k];
  return { ...env, ...rankVars(rank, size, conn) };
}

/** Only the PMI variables (what --attach prints). */
export function rankVars(rank: number, size: number, conn: RankConnection): Record<string, string> {
  if (conn.mode === 'fd') return { PMI_FD: String(conn.fd), PMI_RANK: String(rank), PMI_SIZE: String(size) };
  return { PMI_PORT: conn.pmiPort, PMI_ID: String(conn.pmiid ?? rank), PMI_RANK: String(rank), PMI_SIZE: String(size) };
}
