/**
 * What a PMI listener says to a peer speaking another protocol before closing: a web client gets a
 * real HTTP answer (so `curl` or a browser pointed at the PMI port shows why), anything else is
 * simply closed (a TLS, SSH or PMIx client cannot read text; the reason is logged).
 */
import type { ForeignProtocol } from './first-bytes.js';

const HTTP_TEXT = 'This is a PMI socket (pmibridge), not a web server. The tap, when enabled, serves HTTP on its own port (--tap).\n';

const HTTP_ANSWER = [
  'HTTP/1.1 400 Bad Request',
  'Content-Type: text/plain; charset=utf-8',
  'Connection: close',
  `Content-Length: ${Buffer.byteLength(HTTP_TEXT)}`,
  '',
  HTTP_TEXT,
].join('\r\n');

export function foreignAnswer(protocol: ForeignProtocol): string | null {
  return protocol === 'http' ? HTTP_ANSWER : null;
}
