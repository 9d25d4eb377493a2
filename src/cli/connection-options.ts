/**
 * Connection limits shared by `serve`/`run` (the embedded server) and `relay`: how many
 * connections a listener's peers may hold, in total and per peer, and how long one may stay
 * without identifying itself (host/connection-limits.ts).
 */
import { intOption, stringOption, UsageError, type CommandSpec, type OptionSpec, type ParsedValues } from './args.js';
import { parseDuration } from './relay-options.js';

export const CONNECTION_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  'max-connections': { type: 'string', arg: 'N', help: 'connections held at once; beyond it the oldest one that has not sent initack/init is closed, or the new one refused (default: the job size + 4096, lowered to fit the fd limit; relay: 4096, or half the fd limit as each session also holds an upstream connection)' },
  'max-connections-per-peer': { type: 'string', arg: 'N', help: 'the same per uid (local peers) or address (remote peers) (default: half of --max-connections; serve and run: at least size+16)' },
  'identify-timeout': { type: 'string', arg: 'DURATION', help: 'close a connection that sent no valid initack or init by then: 30s, 2m, 500ms or inf (default: 30s)' },
};

export interface ConnectionOptionValues {
  readonly maxConnections?: number;
  readonly maxConnectionsPerPeer?: number;
  /** null: never time out. */
  readonly identifyTimeoutMs?: number | null;
}

export function connectionOptions(spec: CommandSpec, values: ParsedValues): ConnectionOptionValues {
  const maxConnections = intOption(spec, values, 'max-connections', 1);
  const maxConnectionsPerPeer = intOption(spec, values, 'max-connections-per-peer', 1);
  const identify = stringOption(values, 'identify-timeout');
  let identifyTimeoutMs: number | null | undefined;
  if (identify !== undefined) {
    try {
      identifyTimeoutMs = parseDuration(spec.name, identify);
    } catch {
      throw new UsageError(spec.name, `--identify-timeout: ${JSON.stringify(identify)} is not a duration (e.g. 30s, 2m, 500ms, inf)`);
    }
    if (identifyTimeoutMs === 0) throw new UsageError(spec.name, '--identify-timeout must be more than 0 (inf: never)');
  }
  return {
    ...(maxConnections !== undefined ? { maxConnections } : {}),
    ...(maxConnectionsPerPeer !== undefined ? { maxConnectionsPerPeer } : {}),
    ...(identifyTimeoutMs !== undefined ? { identifyTimeoutMs } : {}),
  };
}
