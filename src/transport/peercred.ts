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
