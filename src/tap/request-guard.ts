/**
 * What the tap decides from a request's target, `Host` and `Origin` alone, before the token and
 * before routing. Pure functions of the request: they never throw, whatever a client sends.
 *
 * - The request target must be a well-formed origin-form (`/path?query`, RFC 3986 characters) or
 *   absolute-form `http(s)://…` URL; anything else is a 400. (Every real client percent-encodes
 *   what it sends; `new URL()` on an odd target threw and took the whole process down.)
 * - DNS rebinding: a page from `evil.example` whose name is re-pointed at 127.0.0.1 reaches the
 *   tap as a same-origin request, cookies and all — but its `Host` still says `evil.example`. So
 *   on a TCP tap the Host's name (and an absolute-form target's) must be one this tap answers to:
 *   `localhost`, `127.0.0.1`, `[::1]` or the listening address (any of the machine's addresses and
 *   its hostname when bound to a wildcard address); else 421. The port is not compared, so that
 *   a tunnel (`ssh -L 9000:127.0.0.1:PORT`) keeps working. A Unix-socket tap takes any Host: no
 *   browser reaches it without a proxy the user set up, and SO_PEERCRED guards it.
 * - Cross-origin pages: a request with an `Origin` (browsers send one with every WebSocket, and
 *   with cross-origin fetches) is served only when that origin is this very host (same-origin,
 *   http or https); else 403. Programs (Prometheus, `pmibridge tap`) send no Origin.
 */
import type { IncomingMessage } from 'node:http';
import { hostname, networkInterfaces } from 'node:os';
import type { PmiAddress } from '../protocol/address.js';

export type Verdict = { readonly ok: true; readonly target: URL } | { readonly ok: false; readonly status: 400 | 403 | 421; readonly why: string };

/** RFC 3986 path and query characters (pchar, `/`, `?`) and well-formed %-escapes only. */
const ORIGIN_FORM = /^\/(?:[\w\-.~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*(?:\?(?:[\w\-.~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?$/;
/** host[:port]: a DNS name or IPv4 literal, or a bracketed IPv6 literal. */
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(\d{1,5}))?$/;
/** The placeholder host of an origin-form target (not a name anyone can register: RFC 2606). */
const PLACEHOLDER = 'tap.invalid';

/** The target as a URL, or null when it is malformed. */
export function requestTarget(raw: string | undefined): { url: URL; absolute: boolean } | null {
  if (raw === undefined) return null;
  try {
    if (ORIGIN_FORM.test(raw)) return { url: new URL(`http://${PLACEHOLDER}${raw}`), absolute: false };
    // absolute-form (RFC 9112 §3.2.2): servers must accept it; its host is checked like Host's
    if (/^https?:\/\/[^\s]*$/i.test(raw)) return { url: new URL(raw), absolute: true };
  } catch {
    // not a URL at all: malformed, like anything else that falls through
  }
  return null;
}

export class RequestGuard {
  /** Host names this tap answers to (lower case, IPv6 in brackets); null: any (Unix socket). */
  private readonly names: ReadonlySet<string> | null;

  constructor(listen: PmiAddress) {
    if (listen.kind === 'unix') {
      this.names = null;
      return;
    }
    const names = new Set(['localhost', '127.0.0.1', '[::1]', bracket(listen.host)]);
    if (listen.host === '0.0.0.0' || listen.host === '::' || listen.host === '') {
      // bound to every address: whatever the machine is called or reached as
      names.add(hostname().toLowerCase());
      for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (!a.address.includes('%')) names.add(bracket(a.address));
    }
    this.names = names;
  }

  check(req: IncomingMessage): Verdict {
    const target = requestTarget(req.url);
    if (!target) return { ok: false, status: 400, why: 'malformed request target' };
    const host = req.headers.host;
    if (this.names !== null) {
      if (host === undefined) return { ok: false, status: 400, why: 'no Host header' };
      const m = HOST.exec(host);
      if (!m) return { ok: false, status: 400, why: 'malformed Host header' };
      if (!this.names.has((m[1] ?? '').toLowerCase())) return { ok: false, status: 421, why: `Host ${JSON.stringify(host.slice(0, 100))} is not this tap's address (use 127.0.0.1, localhost or the address it printed)` };
      if (target.absolute && !this.names.has(target.url.hostname.toLowerCase())) return { ok: false, status: 421, why: `request for ${JSON.stringify(target.url.host.slice(0, 100))}, not this tap` };
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !sameOrigin(origin, host)) return { ok: false, status: 403, why: `cross-origin request from ${JSON.stringify(origin.slice(0, 100))}` };
    return { ok: true, target: target.url };
  }
}

/** `Origin` names the very host the request was sent to (scheme http or https). */
function sameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined || !HOST.test(host)) return false;
  const m = /^(https?):\/\/([^/?#\s]+)$/i.exec(origin); // "null", paths, userinfo… are not ours
  if (!m || m[2]?.includes('@')) return false;
  try {
    const scheme = (m[1] ?? '').toLowerCase();
    return new URL(`${scheme}://${m[2] ?? ''}`).host === new URL(`${scheme}://${host}`).host;
  } catch {
    return false;
  }
}

function bracket(host: string): string {
  const h = host.toLowerCase();
  return h.includes(':') && !h.startsWith('[') ? `[${h}]` : h;
}
