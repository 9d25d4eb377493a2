/** Open the socket an endpoint names: an inherited fd, or a TCP / Unix connection. */
import { Socket, connect as netConnect } from 'node:net';
import { fstatSync } from 'node:fs';
import type { PmiEndpoint } from './env.js';
import { PmiEnvError } from './env.js';

export async function openEndpoint(ep: PmiEndpoint, timeoutMs = 30_000): Promise<Socket> {
  if (ep.mode === 'fd') {
    let isSocket: boolean;
    try {
      isSocket = fstatSync(ep.fd).isSocket();
    } catch {
      throw new PmiEnvError(`PMI_FD=${ep.fd} is not open in this process (a debugger such as lldb closes inherited descriptors; start the rank with PMI_PORT and PMI_ID instead, e.g. via pmibridge run --attach)`);
    }
    // Under lldb the inherited fd is closed and its number reused by the next open() (see
    // debuggers-and-checkpoint.md §1), so "not a socket" usually means the same thing.
    if (!isSocket) throw new PmiEnvError(`PMI_FD=${ep.fd} is not a socket in this process (was the inherited descriptor closed, e.g. by a debugger, and reused?); start the rank with PMI_PORT and PMI_ID instead, e.g. via pmibridge run --attach`);
    return new Socket({ fd: ep.fd, readable: true, writable: true });
  }
  const addr = ep.address;
  const socket = addr.kind === 'tcp' ? netConnect({ host: addr.host, port: addr.port, noDelay: true }) : netConnect({ path: addr.path });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`timed out connecting to PMI_PORT after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve();
    });
    const onError = (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const where = addr.kind === 'tcp' ? `${addr.host}:${addr.port}` : addr.path;
      reject(new Error(`cannot connect to the PMI server at ${where}: ${err.code ?? err.message} (is the server running and PMI_PORT right?)`));
    };
    socket.once('error', onError);
  });
  return socket;
}

/**
 * Open an endpoint; when PMI_FD is unusable (closed by a debugger, or reused) but PMI_PORT is
 * there, use PMI_PORT instead, as the reference recommends (MPICH's own client would not check).
 * Returns the socket and the endpoint actually used.
 */
export async function connectEndpoint(endpoint: PmiEndpoint): Promise<{ socket: Socket; endpoint: PmiEndpoint }> {
  try {
    return { socket: await openEndpoint(endpoint), endpoint };
  } catch (err) {
    if (endpoint.mode !== 'fd' || !endpoint.fallback || !(err instanceof PmiEnvError)) throw err;
    return { socket: await openEndpoint(endpoint.fallback), endpoint: endpoint.fallback };
  }
}
