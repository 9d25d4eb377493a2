/**
 * Where a rank finds its process manager, read from the environment the way MPICH does:
 * PMI_FD wins over PMI_PORT; PMI_ID (port mode) asks for the initack handshake; PMI_RANK and
 * PMI_SIZE are used when no handshake tells them.
 */
import { parseAddress, type PmiAddress } from '../protocol/address.js';

export type PortEndpoint = { readonly mode: 'port'; readonly address: PmiAddress; readonly pmiid?: number; readonly rank?: number; readonly size?: number };

export type PmiEndpoint =
  | {
      readonly mode: 'fd';
      readonly fd: number;
      /** PMI_ID, when set: PMI-2's fullinit names it before PMI_RANK, as MPICH does. */
      readonly pmiid?: number;
      readonly rank?: number;
      readonly size?: number;
      /**
       * PMI_PORT (+PMI_ID) set next to PMI_FD: used when the fd is not a socket here, as under lldb,
       * which closes inherited descriptors (debuggers-and-checkpoint.md §1d).
       */
      readonly fallback?: PortEndpoint;
    }
  | PortEndpoint;

export class PmiEnvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PmiEnvError';
  }
}

function intVar(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^-?\d+$/.test(v.trim())) throw new PmiEnvError(`${name}=${JSON.stringify(v)} is not an integer`);
  return Number(v);
}

export function endpointFromEnv(env: NodeJS.ProcessEnv = process.env): PmiEndpoint {
  const rank = intVar(env, 'PMI_RANK');
  const size = intVar(env, 'PMI_SIZE');
  const extra = { ...(rank !== undefined ? { rank } : {}), ...(size !== undefined ? { size } : {}) };
  const port = env['PMI_PORT'];
  let portEndpoint: PortEndpoint | undefined;
  if (port !== undefined && port !== '') {
    const pmiid = intVar(env, 'PMI_ID');
    portEndpoint = { mode: 'port', address: parseAddress(port), ...(pmiid !== undefined ? { pmiid } : {}), ...extra };
  }
  const fd = intVar(env, 'PMI_FD');
  if (fd !== undefined) {
    if (fd < 0) throw new PmiEnvError(`PMI_FD=${fd} is not a file descriptor`);
    const pmiid = intVar(env, 'PMI_ID');
    return { mode: 'fd', fd, ...(pmiid !== undefined ? { pmiid } : {}), ...extra, ...(portEndpoint ? { fallback: portEndpoint } : {}) };
  }
  if (portEndpoint) return portEndpoint;
  throw new PmiEnvError('no PMI process manager: neither PMI_FD nor PMI_PORT is set (start this under `pmibridge run`, mpiexec, or set PMI_PORT and PMI_ID)');
}
