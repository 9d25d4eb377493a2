/**
 * Peer credentials of a connected AF_UNIX socket via getsockopt(SO_PEERCRED), through koffi.
 *
 * Node exposes no SO_PEERCRED, and the well-kept FFI library (koffi) makes this a few lines
 * instead of a native addon. Loaded lazily: only Unix listeners pay for it.
 * On TCP sockets the kernel answers pid 0 / uid -1 (no credentials): we return null then.
 */
import koffi from 'koffi';

export interface PeerCred {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

const SOL_SOCKET = 1;
// Linux x86_64/arm64/riscv use the asm-generic value; other architectures differ.
const SO_PEERCRED: number = { ppc: 21, ppc64: 21, mips: 18, mipsel: 18 }[process.arch as string] ?? 17;

const libc = koffi.load('libc.so.6');
const ucred = koffi.struct('pmibridge_ucred', { pid: 'int32_t', uid: 'uint32_t', gid: 'uint32_t' });
const getsockopt = libc.func('int getsockopt(int fd, int level, int optname, _Out_ pmibridge_ucred *optval, _Inout_ uint32_t *optlen)');

/** The OS fd of a net.Socket (TCP and Pipe handles expose it on POSIX). */
export function socketFd(sock: object): number {
  const fd = (sock as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no OS file descriptor');
  return fd;
}

export function peerCred(sock: object): PeerCred | null {
  const out = {} as PeerCred;
  const len = [koffi.sizeof(ucred)];
  if (getsockopt(socketFd(sock), SOL_SOCKET, SO_PEERCRED, out, len) !== 0) {
    throw new Error(`getsockopt(SO_PEERCRED) failed: errno ${koffi.errno()}`);
  }
  return out.pid === 0 && out.uid === 0xffffffff ? null : out;
}

const getsockname = libc.func('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *addrlen)');

export type BoundAddress = { readonly family: 'unix'; readonly path: string } | { readonly family: 'inet'; readonly host: string; readonly port: number };

/**
 * What a socket fd is bound to (getsockname): for listeners inherited from systemd, whose kind
 * Node does not report (server.address() of a listen({fd}) server is not the bound path).
 */
export function boundAddress(fd: number): BoundAddress | null {
  const buf = Buffer.alloc(128);
  const len = [buf.length];
  if (getsockname(fd, buf, len) !== 0) return null;
  const family = buf.readUInt16LE(0);
  if (family === 1) {
    const end = buf.indexOf(0, 2);
    return { family: 'unix', path: buf.subarray(2, end < 0 ? len[0] : end).toString() };
  }
  if (family === 2) return { family: 'inet', host: [...buf.subarray(4, 8)].join('.'), port: buf.readUInt16BE(2) };
  if (family === 10) {
    const groups: string[] = [];
    for (let i = 8; i < 24; i += 2) groups.push(buf.readUInt16BE(i).toString(16));
    return { family: 'inet', host: groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::'), port: buf.readUInt16BE(2) };
  }
  return null;
}
