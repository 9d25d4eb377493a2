/** Options shared by `run` and `serve` that shape the job the embedded server runs. */
import type { JobServerOptions } from '../host/job-server.js';
import { intOption, stringOption, UsageError, type CommandSpec, type OptionSpec, type ParsedValues } from './args.js';
import { ALLOW_UID_OPTION, allowUids } from './listen-options.js';
import { CONNECTION_OPTIONS, connectionOptions } from './connection-options.js';

export const JOB_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  kvsname: { type: 'string', arg: 'NAME', help: 'KVS name reported to ranks (default: kvs_<pid>_0)' },
  appnum: { type: 'string', arg: 'N', help: 'appnum reported to ranks (default: 0)' },
  'universe-size': { type: 'string', arg: 'N', help: 'universe size reported to ranks (default: the job size)' },
  'no-process-mapping': { type: 'boolean', help: 'do not preset PMI_process_mapping (MPICH then exchanges hostnames); the default when a TCP listener is not loopback' },
  'process-mapping': { type: 'boolean', help: 'preset PMI_process_mapping=(vector,(0,1,N)) (all ranks on one node) even when a TCP listener is not loopback (default: only when every listener is loopback or a Unix socket)' },
  'pmi-version': { type: 'string', arg: '1|2|any', default: 'any', help: 'wire versions ranks may speak: 1 (PMI-1 lines), 2 (PMI-2 frames) or any (default; PMI-1 and PMI-2 ranks share the job). A rank speaking another version is told so in its own protocol and fails the job' },
  'max-line': { type: 'string', arg: 'BYTES', help: 'longest request line accepted (default: kvsname_max+keylen_max+vallen_max+64 = 1408)' },
  'allow-uid': ALLOW_UID_OPTION,
  'kvs-max-keys': { type: 'string', arg: 'N', help: 'distinct keys the KVS may hold; a put of one more is answered rc=2 (default: 1048576)' },
  'kvs-max-bytes': { type: 'string', arg: 'BYTES', help: 'bytes of keys and values the KVS may hold, pending ones included (default: 268435456 = 256 MiB)' },
  'max-names': { type: 'string', arg: 'N', help: 'services publish_name may hold (default: 4096)' },
  ...CONNECTION_OPTIONS,
};

/**
 * Whether to preset PMI_process_mapping, and why. The preset says "all ranks share one node", which
 * MPICH believes: a rank on another host then fails in MPI_Init (it cannot attach the node's shared
 * memory). So by default it is preset only when every listener is loopback TCP or a Unix socket (no
 * rank can be elsewhere); --process-mapping forces it, --no-process-mapping removes it.
 * `exposed`: the listeners other hosts can reach (non-loopback TCP hosts).
 */
export interface ProcessMappingChoice {
  /** Preset the one-node mapping? */
  readonly preset: boolean;
  /** Why, in words (for logs and --help-like notes). */
  readonly reason: string;
}

export function processMappingChoice(spec: CommandSpec, values: ParsedValues, exposed: readonly string[]): ProcessMappingChoice {
  if (values['process-mapping'] && values['no-process-mapping']) throw new UsageError(spec.name, '--process-mapping and --no-process-mapping contradict each other');
  if (values['no-process-mapping']) return { preset: false, reason: '--no-process-mapping' };
  if (values['process-mapping']) return { preset: true, reason: '--process-mapping' };
  if (exposed.length > 0) return { preset: false, reason: `listening on ${exposed.join(', ')}, so ranks may be on other hosts; --process-mapping presets one node` };
  return { preset: true, reason: 'every listener is on this host' };
}

export function jobOptions(spec: CommandSpec, values: ParsedValues, exposed: readonly string[] = []): Omit<JobServerOptions, 'size' | 'bus'> {
  const appnum = intOption(spec, values, 'appnum', -1, 2 ** 31 - 1);
  const universe = intOption(spec, values, 'universe-size', -1, 2 ** 31 - 1);
  const maxLine = intOption(spec, values, 'max-line', 1024, 16 * 1024 * 1024);
  const kvsname = stringOption(values, 'kvsname') ?? `kvs_${process.pid}_0`;
  const kvsMaxKeys = intOption(spec, values, 'kvs-max-keys', 1);
  const kvsMaxBytes = intOption(spec, values, 'kvs-max-bytes', 1);
  const maxNames = intOption(spec, values, 'max-names', 1);
  const limits = {
    ...(maxLine !== undefined ? { maxLine } : {}),
    ...(kvsMaxKeys !== undefined ? { kvsMaxKeys } : {}),
    ...(kvsMaxBytes !== undefined ? { kvsMaxBytes } : {}),
    ...(maxNames !== undefined ? { maxNames } : {}),
  };
  const mapping = processMappingChoice(spec, values, exposed);
  const pmiVersions = stringOption(values, 'pmi-version') ?? 'any';
  if (pmiVersions !== '1' && pmiVersions !== '2' && pmiVersions !== 'any') throw new UsageError(spec.name, `--pmi-version must be 1, 2 or any, got ${JSON.stringify(pmiVersions)}`);
  if (!/^[!-~]{1,255}$/.test(kvsname)) throw new UsageError(spec.name, '--kvsname must be 1-255 printable characters without spaces');
  return {
    kvsname,
    pmiVersions,
    ...(appnum !== undefined ? { appnum } : {}),
    ...(universe !== undefined ? { universeSize: universe } : {}),
    ...(mapping.preset ? {} : { processMapping: null }),
    ...(Object.keys(limits).length ? { limits } : {}),
    ...connectionOptions(spec, values),
    allowUids: allowUids(spec.name, values),
  };
}
