/**
 * How many bytes we sent on a stream socket that its peer has not provably received, asked from
 * the kernel with ioctl(SIOCOUTQ) through koffi (Node exposes no such query):
 * - TCP: bytes not yet acknowledged by the peer (write_seq - snd_una). A connection frozen by
 *   CRIU's network lock (iptables drops its packets) keeps them, however alive it looks;
 * - Unix stream sockets: what sits unread in the peer's receive queue (a SIGSTOPped process, one
 *   frozen for a checkpoint).
 * Plus what Node still holds in its own write queue. The relay asks this only when a client
 * leaves or is replaced with a reply not yet proven received, and once a second for such replies
 * (relay/replay.ts), never per request.
 */
import koffi from 'koffi';
import type { Socket } from 'node:net';

// <asm-generic/ioctls.h> TIOCOUTQ, which SIOCOUTQ equals; other architectures differ.
const SIOCOUTQ: number = { ppc: 0x40047473, ppc64: 0x40047473, mips: 0x7472, mipsel: 0x7472 }[process.arch as string] ?? 0x5411;

const libc = koffi.load('libc.so.6');
const ioctl = libc.func('int ioctl(int fd, unsigned long request, _Out_ int *out)');

/** Bytes sent but not known received; undefined when the socket has no fd any more (closed). */
export function unreadBytes(socket: Socket): number | undefined {
  const fd = (socket as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  const out = [0];
  if (ioctl(fd, SIOCOUTQ, out) !== 0) return undefined;
  return (out[0] ?? 0) + socket.writableLength;
}
