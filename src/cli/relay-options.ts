/** Options shared by `relay`, `wrap` and `run --relay`: the upstream, the hold time, id mapping. */
import { endpointFromEnv, PmiEnvError } from '../client/env.js';
import type { UpstreamSpec } from '../host/relay-host.js';
import { AddressError, parseAddress } from '../protocol/address.js';
import { UsageError, type OptionSpec } from './args.js';

export const RELAY_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  hold: { type: 'string', arg: 'DURATION', help: 'keep a disconnected session for reconnection: 30s, 5m, 1500ms, 0 (pass failures through) or inf' },
  'no-kvs-cache': { type: 'boolean', help: 'forward every get upstream (default: answer repeated gets from what was fetched since the last barrier)' },
};

/** `5m`, `30s`, `1500ms`, `2h`, a plain number of seconds, `0`, or `inf` (→ null). */
export function parseDuration(command: string, text: string): number | null {
  if (text === 'inf' || text === 'infinity') return null;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(command, `--hold: ${JSON.stringify(text)} is not a duration (e.g. 30s, 5m, 1500ms, 0, inf)`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(n * unit);
}

export interface ResolvedUpstream {
  readonly spec: UpstreamSpec;
  /** For an upstream taken from the environment: the one PMI_ID it serves upstream. */
  readonly envPmiid?: number;
  readonly description: string;
}

/**
 * `--upstream`: an address (unix:///path, tcp://…, host:port, /path) or `env`: whatever launched
 * us — PMI_FD (+PMI_RANK, PMI_SIZE) or PMI_PORT (+PMI_ID) — so a relay can sit in a rank slot that
 * hydra, flux or Slurm gave it.
 */
export function resolveUpstream(command: string, value: string, env: NodeJS.ProcessEnv = process.env): ResolvedUpstream {
  if (value !== 'env') {
    try {
      const address = parseAddress(value);
      return { spec: { kind: 'address', address }, description: value };
    } catch (err) {
      if (err instanceof AddressError) throw new UsageError(command, `--upstream: ${err.message}, or env`);
      throw err;
    }
  }
  let ep;
  try {
    ep = endpointFromEnv(env);
  } catch (err) {
    if (err instanceof PmiEnvError || err instanceof AddressError) throw new UsageError(command, `--upstream env: ${err.message}`);
    throw err;
  }
  if (ep.mode === 'fd') {
    if (ep.rank === undefined || ep.size === undefined) throw new UsageError(command, '--upstream env: PMI_FD is set but PMI_RANK or PMI_SIZE is missing');
    return { spec: { kind: 'fd', fd: ep.fd, identity: { rank: ep.rank, size: ep.size, appnum: 0, debug: 0 } }, envPmiid: ep.rank, description: `PMI_FD=${ep.fd}` };
  }
  const pmiid = ep.pmiid ?? ep.rank ?? 0;
  return { spec: { kind: 'address', address: ep.address }, envPmiid: pmiid, description: `PMI_PORT=${env['PMI_PORT'] ?? ''} PMI_ID=${pmiid}` };
}
