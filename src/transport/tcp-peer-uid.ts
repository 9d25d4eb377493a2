/**
 * The uid of the process on the other end of an accepted loopback TCP connection.
 *
 * SO_PEERCRED answers nothing useful for TCP (pid 0, uid -1), but for a loopback connection both
 * ends are sockets of this kernel: the client's end is the row of /proc/net/tcp (or tcp6) whose
 * local address is our remote one and whose remote address is our local one; its `uid` column is
 * the owner. Look it up right after accept: once the client closes, the row goes away.
 * Primary path: netlink sock_diag by exact 4-tuple (sock-diag.ts); /proc/net/tcp is the fallback.
 */
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { isLoopbackHost } from '../protocol/address.js';
import { tcpSocketUid } from './sock-diag.js';

/** The bytes of an IPv4 or IPv6 address (v4-mapped v6 included). */
function addressBytes(ip: string): number[] {
  if (isIPv4(ip)) return ip.split('.').map(Number);
  if (!isIPv6(ip)) throw new Error(`not an IP address: ${ip}`);
  let text = ip;
  let tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    tail = v4[1].split('.').map(Number);
    text = text.slice(0, -v4[1].length) + '0:0';
  }
  const [left = '', right = ''] = text.split('::');
  const l = left ? left.split(':') : [];
  const r = right ? right.split(':') : [];
  const groups = text.includes('::') ? [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r] : l;
  const bytes = groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
  if (tail.length) bytes.splice(12, 4, ...tail);
  return bytes;
}

/** How /proc/net/tcp{,6} prints an address: each 32-bit word in host byte order, as %08X. */
function procAddress(ip: string): string {
  const bytes = addressBytes(ip);
  const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    const word = bytes.slice(i, i + 4);
    out += (little ? word.reverse() : word).map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join('');
  }
  return out;
}

const hexPort = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');

export interface SocketEnds {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}

let sockDiag: typeof tcpSocketUid | undefined = tcpSocketUid;

/**
 * Rows of /proc/net/tcp{,6} as "local remote" → uid, read at most once per event-loop turn: a
 * burst of accepts (libuv accepts until the queue is empty, then runs our callbacks) shares one
 * read instead of each scanning a table that grows with every connection (O(n²) for n clients).
 */
const tables = new Map<string, Map<string, number>>();
let flushScheduled = false;

function table(path: string, fresh: boolean): Map<string, number> {
  let t = fresh ? undefined : tables.get(path);
  if (t) return t;
  t = new Map();
  let text = '';
  try {
    text = readFileSync(path, 'latin1');
  } catch {
    // no such table (e.g. IPv6 disabled)
  }
  for (const row of text.split('\n')) {
    const f = row.trim().split(/\s+/);
    if (f.length > 7 && f[1] && f[2]) t.set(`${f[1]} ${f[2]}`, Number(f[7]));
  }
  tables.set(path, t);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(() => {
      tables.clear();
      flushScheduled = false;
    });
  }
  return t;
}

/** uid owning the client end of an accepted loopback TCP connection, or undefined. */
export function tcpPeerUid(sock: SocketEnds, procRoot = '/proc/net'): number | undefined {
  const { remoteAddress, remotePort, localAddress, localPort } = sock;
  if (!remoteAddress || !localAddress || remotePort === undefined || localPort === undefined) return undefined;
  const unmap = (a: string) => a.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  const ra = unmap(remoteAddress);
  const la = unmap(localAddress);
  // The client's socket: local end = our remote, remote end = our local. Ask the kernel directly.
  if (procRoot === '/proc/net' && sockDiag) {
    try {
      const uid = sockDiag(ra, remotePort, la, localPort) ?? (isIPv4(ra) ? sockDiag(`::ffff:${ra}`, remotePort, `::ffff:${la}`, localPort) : undefined);
      if (uid !== undefined) return uid;
    } catch {
      sockDiag = undefined; // no sock_diag here (old kernel, seccomp): read /proc from now on
    }
  }
  // A v4 client of a dual-stack listener sits in tcp, written as v4; try both tables and forms.
  const keys: Array<[string, string]> = [];
  if (isIPv4(ra) && isIPv4(la)) {
    keys.push(['tcp', `${procAddress(ra)}:${hexPort(remotePort)} ${procAddress(la)}:${hexPort(localPort)}`]);
    keys.push(['tcp6', `${procAddress(`::ffff:${ra}`)}:${hexPort(remotePort)} ${procAddress(`::ffff:${la}`)}:${hexPort(localPort)}`]);
  } else {
    keys.push(['tcp6', `${procAddress(ra)}:${hexPort(remotePort)} ${procAddress(la)}:${hexPort(localPort)}`]);
  }
  // From this turn's tables first; a connection newer than them gets one fresh read.
  for (const fresh of [false, true]) {
    for (const [name, key] of keys) {
      const uid = table(`${procRoot}/${name}`, fresh).get(key);
      if (uid !== undefined) return uid;
    }
  }
  return undefined;
}

// ---- local or remote --------------------------------------------------------------------------------
//
// A process of this host need not connect through loopback: with a listener on 0.0.0.0 it can
// connect to any address of the host, and its uid must be checked all the same. Its socket is
// then in this kernel as well, so the lookup above works for it too. Only a peer whose address is
// not ours (and whose socket the kernel does not know) is remote: admitted, and logged as such.

const unmapped = (a: string) => a.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '').replace(/%.*$/, '');

let own: { readonly at: number; readonly set: ReadonlySet<string> } | undefined;

/** This host's addresses (every interface), re-read at most once a second. */
export function ownAddresses(now = performance.now()): ReadonlySet<string> {
  if (own && now - own.at < 1000) return own.set;
  const set = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) set.add(unmapped(a.address));
  own = { at: now, set };
  return set;
}

export type PeerIdentity = { readonly remote: false; readonly uid?: number } | { readonly remote: true };

/**
 * Who is on the other end of an accepted TCP connection: a local process (loopback, or any
 * address of this host, or a socket the kernel knows) with its uid when it can be read — the
 * caller refuses a local peer whose uid is unknown — or a remote host.
 */
export function tcpPeerIdentity(sock: SocketEnds): PeerIdentity {
  const ra = unmapped(sock.remoteAddress ?? '');
  if (isLoopbackHost(ra) || ownAddresses().has(ra)) {
    const uid = tcpPeerUid(sock);
    return uid === undefined ? { remote: false } : { remote: false, uid };
  }
  // Not an address we know: ask the kernel for the exact socket (a hash lookup, no table scan,
  // so a flood of remote peers costs little). An address added in the last second is found here.
  if (sockDiag && sock.localAddress && sock.remotePort !== undefined && sock.localPort !== undefined) {
    try {
      const uid = sockDiag(ra, sock.remotePort, unmapped(sock.localAddress), sock.localPort);
      if (uid !== undefined) return { remote: false, uid };
    } catch {
      sockDiag = undefined;
    }
  }
  return { remote: true };
}
