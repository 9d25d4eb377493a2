/**
 * systemd integration without a native addon of our own: socket activation (sd_listen_fds(3):
 * listening sockets passed as fds 3.. with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES) and readiness
 * (sd_notify(3): a datagram to $NOTIFY_SOCKET, sent through koffi since Node has no AF_UNIX
 * datagrams). Both are no-ops outside systemd.
 */
export interface InheritedFd {
  readonly fd: number;
  readonly name: string;
}

/**
 * The listening fds systemd passed us, if it passed them to this very process. The variables are
 * removed so that children (ranks) do not take the fds for theirs.
 */
export function takeListenFds(env: NodeJS.ProcessEnv = process.env): InheritedFd[] {
  if (Number(env['LISTEN_PID']) !== process.pid) return [];
  const n = Number(env['LISTEN_FDS'] ?? 0);
  const names = (env['LISTEN_FDNAMES'] ?? '').split(':');
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDS'];
  delete env['LISTEN_FDNAMES'];
  if (!Number.isInteger(n) || n <= 0) return [];
  return Array.from({ length: n }, (_, i) => ({ fd: 3 + i, name: names[i] ?? 'unknown' }));
}

/**
 * sd_notify: true when the datagram went out; false when not under systemd (no NOTIFY_SOCKET) or
 * when sending failed — readiness is best-effort and never a reason to fail (like libsystemd's).
 */
export async function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  try {
    return await notify(state, env);
  } catch {
    return false;
  }
}

async function notify(state: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  const path = env['NOTIFY_SOCKET'];
  if (!path) return false;
  const { default: koffi } = await import('koffi');
  const libc = koffi.load('libc.so.6');
  const socket = libc.func('int socket(int domain, int type, int protocol)');
  const sendto = libc.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)');
  const close = libc.func('int close(int fd)');
  const AF_UNIX = 1;
  const SOCK_DGRAM = 2;
  const SOCK_CLOEXEC = 0o2000000;
  const MSG_NOSIGNAL = 0x4000;
  // struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; }; '@' = abstract namespace
  const abstract = path.startsWith('@');
  const name = Buffer.from(abstract ? `\0${path.slice(1)}` : path);
  if (name.length >= 108) throw new Error('NOTIFY_SOCKET path too long');
  const addr = Buffer.alloc(2 + name.length + (abstract ? 0 : 1));
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new Error(`sd_notify: socket() failed, errno ${koffi.errno()}`);
  try {
    const msg = Buffer.from(state);
    const sent = Number(sendto(fd, msg, msg.length, MSG_NOSIGNAL, addr, addr.length));
    if (sent !== msg.length) throw new Error(`sd_notify: sendto() failed, errno ${koffi.errno()}`);
  } finally {
    close(fd);
  }
  return true;
}

/** With WatchdogSec=, ping systemd at half the interval; returns a stopper. */
export function startWatchdog(env: NodeJS.ProcessEnv = process.env): () => void {
  const usec = Number(env['WATCHDOG_USEC'] ?? 0);
  if (!usec || (env['WATCHDOG_PID'] && Number(env['WATCHDOG_PID']) !== process.pid)) return () => undefined;
  const t = setInterval(() => void sdNotify('WATCHDOG=1', env), Math.max(1, usec / 2000));
  t.unref();
  return () => clearInterval(t);
}
