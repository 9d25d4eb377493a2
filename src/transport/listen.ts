/**
 * Listening sockets for PMI_PORT: TCP and Unix stream sockets.
 *
 * Secure by default:
 * - TCP binds loopback unless the address names another host (hydra listens on all interfaces
 *   with no authentication; we do not), and port 0 means an ephemeral port.
 * - A Unix socket without a path lives in a fresh private directory (mkdtemp: mode 0700) that is
 *   removed on close. An explicit path gets its parent directory created 0700 when missing, and a
 *   stale socket file there is replaced — any other kind of file is left alone and is an error.
 * - Every Unix peer's uid is read with SO_PEERCRED, every loopback TCP peer's from /proc/net/tcp;
 *   a uid other than ours (or one named in `allowUids`) is answered `cmd=error rc=-1 msg=…` and
 *   disconnected, and the refusal reported.
 */
import { mkdtempSync, mkdirSync, lstatSync, unlinkSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { formatAddress, type PmiAddress } from '../protocol/address.js';
import { destroyAfterEnd } from './close-soon.js';
import { tcpPeerIdentity, tcpPeerUid } from './tcp-peer-uid.js';

export interface AcceptedPeer {
  readonly transport: 'tcp' | 'unix';
  readonly uid?: number;
  readonly pid?: number;
  readonly peer: string;
  /** A TCP peer on another host: no uid can be checked (admitted; the host logs it). */
  readonly remote?: boolean;
}

export interface ListenOptions {
  /** uids admitted on Unix sockets besides our own. */
  readonly allowUids?: readonly number[];
  /** A connection that passed the checks. */
  onConnection(socket: Socket, peer: AcceptedPeer): void;
  /** A connection that was refused (logged by the caller). */
  onRefused?(peer: AcceptedPeer, reason: string): void;
  /** Accept-time failures (EMFILE…): the listener keeps going. */
  onError?(err: Error): void;
  /** listen() backlog; Node's default 511 drops SYNs in a connect storm (1 s retry). */
  readonly backlog?: number;
}

export interface Listener {
  /** The bound address (port 0 resolved). */
  readonly address: PmiAddress;
  /** The PMI_PORT value clients use. */
  readonly pmiPort: string;
  close(): Promise<void>;
}

export const DEFAULT_BACKLOG = 4096;

export async function listen(addr: PmiAddress, opts: ListenOptions): Promise<Listener> {
  return addr.kind === 'tcp' ? listenTcp(addr, opts) : listenUnix(addr.path, opts);
}

/** A Unix socket in a new private (0700) directory, for `run` and `serve --listen unix`. */
export function privateSocketPath(): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-'));
  return { dir, path: join(dir, 'pmi.sock') };
}

function bind(server: Server, target: { port: number; host: string } | { path: string }, backlog: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ ...target, backlog }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Stop accepting; resolve when open connections are gone, or after a second at most. */
function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    setTimeout(resolve, 1000).unref();
    server.close(() => resolve());
  });
}

/** Admit a peer whose uid is ours or allowed; otherwise tell it why, close it, report it. */
function admit(socket: Socket, peer: AcceptedPeer, opts: ListenOptions): void {
  const myUid = process.getuid?.() ?? -1;
  if (peer.uid !== undefined && (peer.uid === myUid || opts.allowUids?.includes(peer.uid))) {
    opts.onConnection(socket, peer);
    return;
  }
  const reason = peer.uid === undefined ? 'the peer uid could not be determined' : `uid ${peer.uid} is not allowed (server uid ${myUid}; admit it with --allow-uid ${peer.uid})`;
  opts.onRefused?.(peer, reason);
  refuseSocket(socket, `cmd=error rc=-1 msg=${peer.uid === undefined ? 'peer_uid_unknown' : `uid_${peer.uid}_not_allowed`}\n`);
}

/** How long a refused peer has, after our line is written, to close its side the ordinary way. */
export const REFUSE_GRACE_MS = 250;
/** Refused connections given that grace at once; beyond, a flood's are closed without it. */
export const REFUSE_GRACE_MAX = 32;
let inGrace = 0;

/**
 * Tell a refused peer why, then close the connection entirely shortly after the line is written: a
 * peer that keeps its end open must not keep one of our descriptors too. What it sends meanwhile
 * is read and dropped. The short grace matters: a client typically writes its first line right
 * after connecting; if our descriptor were gone by the time that line arrives, its write fails
 * (EPIPE on a Unix socket, a reset on TCP) and many clients then drop the reason we sent unread.
 * Only a few refusals at a time get it, so a flood of refused connections costs a bounded number
 * of descriptors.
 */
export function refuseSocket(socket: Socket, line: string): void {
  socket.on('error', () => socket.destroy());
  socket.on('data', () => undefined);
  socket.end(line);
  if (inGrace >= REFUSE_GRACE_MAX) return destroyAfterEnd(socket, 0);
  inGrace++;
  socket.once('close', () => inGrace--);
  destroyAfterEnd(socket, REFUSE_GRACE_MS);
}

async function listenTcp(addr: Extract<PmiAddress, { kind: 'tcp' }>, opts: ListenOptions): Promise<Listener> {
  const server = createServer({ noDelay: true }, (socket) => {
    socket.setNoDelay(true);
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    // A process of this machine — through loopback or through any other address of ours — is
    // checked by uid. A remote peer cannot be identified (binding a non-loopback address is an
    // explicit, warned-about choice); it is admitted and marked, and the host logs it.
    const who = tcpPeerIdentity(socket);
    if (who.remote) {
      opts.onConnection(socket, { transport: 'tcp', peer, remote: true });
      return;
    }
    admit(socket, { transport: 'tcp', peer: `${peer}${who.uid !== undefined ? ` uid ${who.uid}` : ''}`, ...(who.uid !== undefined ? { uid: who.uid } : {}) }, opts);
  });
  server.on('error', (err) => opts.onError?.(err));
  await bind(server, { host: addr.host, port: addr.port }, opts.backlog ?? DEFAULT_BACKLOG);
  const info = server.address() as AddressInfo;
  // Advertise the host as given (a name like localhost stays a name), with the real port.
  const bound: PmiAddress = { kind: 'tcp', host: addr.host, port: info.port };
  return { address: bound, pmiPort: formatAddress(bound), close: () => closeServer(server) };
}

function prepareSocketPath(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  unlinkSync(path); // a stale socket from an earlier run
}

async function listenUnix(path: string, opts: ListenOptions, ownDir?: string): Promise<Listener> {
  const { peerCred } = await import('./peercred.js');
  const server = createServer((socket) => {
    let peer: AcceptedPeer = { transport: 'unix', peer: 'unix peer' };
    try {
      const cred = peerCred(socket);
      if (cred) peer = { transport: 'unix', uid: cred.uid, pid: cred.pid, peer: `pid ${cred.pid} uid ${cred.uid}` };
    } catch (err) {
      opts.onError?.(err as Error);
    }
    admit(socket, peer, opts);
  });
  server.on('error', (err) => opts.onError?.(err));
  if (!ownDir) prepareSocketPath(path);
  await bind(server, { path }, opts.backlog ?? DEFAULT_BACKLOG);
  const address: PmiAddress = { kind: 'unix', path };
  return {
    address,
    pmiPort: formatAddress(address),
    close: async () => {
      await closeServer(server);
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
}

/**
 * Serve a listening socket we inherited (systemd socket activation). Whether it is a Unix or a TCP
 * socket is read from the bound address; peers are admitted by uid like on our own listeners.
 */
export async function listenInherited(fd: number, opts: ListenOptions): Promise<Listener> {
  const { peerCred, boundAddress } = await import('./peercred.js');
  const bound = boundAddress(fd);
  if (!bound) throw new Error(`inherited fd ${fd} is not a socket we can serve`);
  const unix = bound.family === 'unix';
  const server = createServer((socket) => {
    if (unix) {
      const cred = peerCred(socket);
      admit(socket, cred ? { transport: 'unix', uid: cred.uid, pid: cred.pid, peer: `pid ${cred.pid} uid ${cred.uid}` } : { transport: 'unix', peer: 'unix peer' }, opts);
      return;
    }
    socket.setNoDelay(true);
    const uid = tcpPeerUid(socket);
    admit(socket, { transport: 'tcp', peer: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`, ...(uid !== undefined ? { uid } : {}) }, opts);
  });
  server.on('error', (err) => opts.onError?.(err));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address: PmiAddress = bound.family === 'unix' ? { kind: 'unix', path: bound.path } : { kind: 'tcp', host: bound.host, port: bound.port };
  return { address, pmiPort: formatAddress(address), close: () => closeServer(server) };
}

/** Listen on a Unix socket in a new private directory that is removed on close. */
export async function listenPrivateUnix(opts: ListenOptions): Promise<Listener> {
  const { dir, path } = privateSocketPath();
  return listenUnix(path, opts, dir);
}
