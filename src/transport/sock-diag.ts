/**
 * uid of a TCP socket by its exact 4-tuple, asked from the kernel with netlink sock_diag
 * (SOCK_DIAG_BY_FAMILY without NLM_F_DUMP: a hash lookup, not a walk of every socket as reading
 * /proc/net/tcp is). Through koffi, synchronously: the kernel answers before recv() returns.
 * Layouts from <linux/netlink.h> and <linux/inet_diag.h>.
 */
import koffi from 'koffi';
import { isIPv4 } from 'node:net';

const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const NLMSG_ERROR = 2;
const IPPROTO_TCP = 6;

const libc = koffi.load('libc.so.6');
const socket = libc.func('int socket(int domain, int type, int protocol)');
const sendto = libc.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)');
const recv = libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)');
const close = libc.func('int close(int fd)');

let fd = -1;
let seq = 0;
const reply = Buffer.alloc(8192);
const kernel = Buffer.alloc(12); // struct sockaddr_nl { u16 family; u16 pad; u32 pid = 0; u32 groups }
kernel.writeUInt16LE(AF_NETLINK, 0);

/** Address bytes in network order, 16 wide (IPv4 in the first 4). */
function addr16(ip: string, family: number): Buffer {
  const out = Buffer.alloc(16);
  if (family === 2) {
    ip.split('.').forEach((b, i) => out.writeUInt8(Number(b), i));
    return out;
  }
  let text = ip;
  let tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    tail = v4[1].split('.').map(Number);
    text = `${text.slice(0, -v4[1].length)}0:0`;
  }
  const [left = '', right = ''] = text.split('::');
  const l = left ? left.split(':') : [];
  const r = right ? right.split(':') : [];
  const groups = text.includes('::') ? [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r] : l;
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  tail.forEach((b, i) => out.writeUInt8(b, 12 + i));
  return out;
}

/**
 * uid owning the TCP socket whose local end is src:sport and remote end dst:dport, or undefined
 * when the kernel does not know it (or sock_diag is unavailable: callers fall back).
 */
export function tcpSocketUid(src: string, sport: number, dst: string, dport: number): number | undefined {
  if (fd < 0) {
    fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as number;
    if (fd < 0) throw new Error(`sock_diag unavailable: errno ${koffi.errno()}`);
  }
  const family = isIPv4(src) && isIPv4(dst) ? 2 : 10;
  const req = Buffer.alloc(72);
  // struct nlmsghdr (16)
  req.writeUInt32LE(72, 0);
  req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
  req.writeUInt16LE(NLM_F_REQUEST, 6);
  req.writeUInt32LE(++seq, 8);
  // struct inet_diag_req_v2 (56): family, protocol, ext, pad, states, then inet_diag_sockid (48)
  req.writeUInt8(family, 16);
  req.writeUInt8(IPPROTO_TCP, 17);
  req.writeUInt32LE(0xffffffff, 20); // any state
  req.writeUInt16BE(sport, 24);
  req.writeUInt16BE(dport, 26);
  addr16(src, family).copy(req, 28);
  addr16(dst, family).copy(req, 44);
  req.writeUInt32LE(0, 60); // interface
  req.writeUInt32LE(0xffffffff, 64); // INET_DIAG_NOCOOKIE
  req.writeUInt32LE(0xffffffff, 68);
  if (Number(sendto(fd, req, req.length, 0, kernel, kernel.length)) !== req.length) return undefined;
  const n = Number(recv(fd, reply, reply.length, 0));
  if (n < 16) return undefined;
  const type = reply.readUInt16LE(4);
  if (type === NLMSG_ERROR || type !== SOCK_DIAG_BY_FAMILY || n < 16 + 84) return undefined;
  // struct inet_diag_msg: family, state, timer, retrans (4), sockid (48), expires, rqueue, wqueue, uid, inode
  return reply.readUInt32LE(16 + 4 + 48 + 12);
}

export function closeSockDiag(): void {
  if (fd >= 0) close(fd);
  fd = -1;
}
