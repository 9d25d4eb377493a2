/**
 * PMI_PORT address grammar, shared by client, server, launcher and relay.
 *
 *   host:port              TCP, MPICH's only form (host: name or IPv4 literal)
 *   tcp://host:port        TCP, explicit (as MPICH's developers proposed)
 *   tcp://[v6addr]:port    TCP over IPv6
 *   unix:///abs/path       Unix stream socket (pmibridge/flux extension)
 *   /abs/path              Unix stream socket, bare path (flux's proposal)
 *
 * Anything else is rejected with a message listing these forms. MPICH clients understand only
 * `host:port`, so `formatAddress` writes TCP addresses that way whenever it can.
 */
import { isIPv6 } from 'node:net';

export type PmiAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

export const ADDRESS_FORMS = 'host:port, tcp://host:port, tcp://[ipv6]:port, unix:///absolute/path, or /absolute/path';

/** sun_path is 108 bytes on Linux, including the NUL. */
export const UNIX_PATH_MAX = 107;

export class AddressError extends Error {
  constructor(input: string, why: string) {
    super(`invalid PMI address ${JSON.stringify(input)}: ${why}; accepted forms: ${ADDRESS_FORMS}`);
    this.name = 'AddressError';
  }
}

export interface ParseOptions {
  /** Allow port 0 (listen on an ephemeral port). Connecting needs a real port. */
  readonly allowPortZero?: boolean;
}

const HOST_RE = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$/;

function parsePort(input: string, text: string, opts: ParseOptions): number {
  if (!/^\d{1,5}$/.test(text)) throw new AddressError(input, `port ${JSON.stringify(text)} is not a number`);
  const port = Number(text);
  if (port > 65535) throw new AddressError(input, `port ${port} is above 65535`);
  if (port === 0 && !opts.allowPortZero) throw new AddressError(input, 'port 0 can only be used to listen');
  return port;
}

function parseHostPort(input: string, rest: string, opts: ParseOptions, schemeGiven: boolean): PmiAddress {
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (!schemeGiven) throw new AddressError(input, 'an IPv6 address needs the tcp:// scheme, e.g. tcp://[::1]:5000');
    if (close < 0 || rest[close + 1] !== ':') throw new AddressError(input, 'expected [ipv6]:port');
    const host = rest.slice(1, close);
    if (!isIPv6(host)) throw new AddressError(input, `${JSON.stringify(host)} is not an IPv6 address`);
    return { kind: 'tcp', host, port: parsePort(input, rest.slice(close + 2), opts) };
  }
  const colon = rest.lastIndexOf(':');
  if (colon < 0) throw new AddressError(input, 'missing :port');
  const host = rest.slice(0, colon);
  if (host.includes(':')) throw new AddressError(input, 'an IPv6 address must be written tcp://[addr]:port');
  if (!HOST_RE.test(host)) throw new AddressError(input, `${JSON.stringify(host)} is not a host name or IPv4 address`);
  return { kind: 'tcp', host, port: parsePort(input, rest.slice(colon + 1), opts) };
}

function unixAddress(input: string, path: string): PmiAddress {
  if (!path.startsWith('/')) throw new AddressError(input, 'a Unix socket path must be absolute');
  if (path.includes('\0')) throw new AddressError(input, 'path contains a NUL byte');
  if (Buffer.byteLength(path) > UNIX_PATH_MAX) {
    throw new AddressError(input, `Unix socket path is ${Buffer.byteLength(path)} bytes; the limit is ${UNIX_PATH_MAX}`);
  }
  return { kind: 'unix', path };
}

export function parseAddress(input: string, opts: ParseOptions = {}): PmiAddress {
  const s = input.trim();
  if (s === '') throw new AddressError(input, 'empty');
  if (s.startsWith('unix://')) return unixAddress(input, s.slice('unix://'.length));
  if (s.startsWith('/')) return unixAddress(input, s);
  if (s.startsWith('tcp://')) return parseHostPort(input, s.slice('tcp://'.length).replace(/\/$/, ''), opts, true);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) throw new AddressError(input, `unknown scheme ${s.slice(0, s.indexOf(':'))}`);
  return parseHostPort(input, s, opts, false);
}

/**
 * The PMI_PORT value for an address: `host:port` for TCP (what MPICH parses), `tcp://[…]:port`
 * for IPv6 (MPICH cannot reach those anyway), `unix:///path` for Unix sockets.
 */
export function formatAddress(addr: PmiAddress): string {
  if (addr.kind === 'unix') return `unix://${addr.path}`;
  return isIPv6(addr.host) ? `tcp://[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

/** Is this a loopback host (the only TCP hosts pmibridge binds to unless told otherwise)? */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
