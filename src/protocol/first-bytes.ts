/**
 * What protocol does a connection speak? Decided from its first bytes, sans I/O, so that a
 * listener can answer or close at once, with a reason, instead of waiting for a newline that a
 * TLS or PMIx client will never send.
 *
 * - PMI-1: `cmd=` or `mcmd=` (hydra `check_pmi_cmd`, MPICH `PMIU_check_full_cmd`).
 * - PMI-2: a digit, possibly after spaces (the 6-byte length header; `pmi2-frame.ts` judges the
 *   rest of it).
 * - HTTP: a method and a space (`GET `, `POST `, …, and `PRI ` of the HTTP/2 preface).
 * - TLS: a handshake record, 0x16 0x03 (every TLS and SSL 3 ClientHello).
 * - SSH: the client banner `SSH-`.
 * - PMIx: its connect message starts with a header whose pindex is -1 and tag UINT32_MAX
 *   (openpmix `ptl_base_fns.c`, since v3: 8 bytes of 0xff).
 * - binary: a NUL or another control byte (but tab, CR, LF) or a byte ≥ 0x80 first.
 * - text: anything else readable (a garbage line: a PMI-1 server answers it as one).
 *
 * The answer depends on the bytes only, never on how they were split: with fewer bytes than a
 * signature needs, it is `need-more` until `ended` (the peer closed, or a caller's timer ran out).
 * At most OPENING_BYTES are ever needed.
 */
import { headerStep, type HeaderProgress } from './pmi2-frame.js';

export type ForeignProtocol = 'http' | 'tls' | 'ssh' | 'pmix' | 'binary';

export type Opening =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'empty' }
  | { readonly kind: 'pmi1' }
  | { readonly kind: 'pmi2' }
  | { readonly kind: 'text' }
  | { readonly kind: 'foreign'; readonly protocol: ForeignProtocol; readonly reason: string };

/** Bytes that always suffice to decide (the longest signature is 8). */
export const OPENING_BYTES = 16;

const ascii = (s: string): readonly number[] => Array.from(s, (c) => c.charCodeAt(0));

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE', 'PRI'];

type Result = Exclude<Opening, { kind: 'need-more' | 'empty' }>;

const SIGNATURES: ReadonlyArray<readonly [readonly number[], Result]> = [
  [ascii('cmd='), { kind: 'pmi1' }],
  [ascii('mcmd='), { kind: 'pmi1' }],
  ...HTTP_METHODS.map((m): readonly [readonly number[], Result] => [
    ascii(`${m} `),
    { kind: 'foreign', protocol: 'http', reason: `an HTTP ${m} request, not PMI: this is a PMI socket, not a web server` },
  ]),
  [ascii('SSH-'), { kind: 'foreign', protocol: 'ssh', reason: 'an SSH client banner, not PMI' }],
  [[0x16, 0x03], { kind: 'foreign', protocol: 'tls', reason: 'a TLS ClientHello, not PMI: PMI is plain text, without TLS' }],
  [
    [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    { kind: 'foreign', protocol: 'pmix', reason: 'a PMIx connection header: the client speaks PMIx, not PMI-1 or PMI-2 (use a PMIx server, or a PMI-1/PMI-2 build of the MPI)' },
  ],
];

function isDigitOrSpace(b: number): boolean {
  return b === 0x20 || (b >= 0x30 && b <= 0x39);
}

function isBinary(b: number): boolean {
  return (b < 0x20 && b !== 9 && b !== 10 && b !== 13) || b >= 0x7f;
}

/** Classify the first bytes of a connection; `ended`: no more will come. */
export function classifyOpening(head: Uint8Array, ended = false): Opening {
  if (head.length === 0) return ended ? { kind: 'empty' } : { kind: 'need-more' };
  const b0 = head[0] as number;
  if (isDigitOrSpace(b0)) {
    const p: HeaderProgress = { digits: 0, trailing: false };
    for (let i = 0; i < head.length && i < 6; i++) {
      const step = headerStep(p, head[i] as number);
      if (p.digits > 0) return { kind: 'pmi2' }; // a length has begun (good or bad: the framer judges)
      if (step === 'not-a-header') return { kind: 'text' }; // spaces, then something else: a line
    }
    if (head.length >= 6) return { kind: 'text' }; // six spaces: not a length
    return ended ? { kind: 'text' } : { kind: 'need-more' };
  }
  let maybe = false;
  for (const [sig, result] of SIGNATURES) {
    const n = Math.min(sig.length, head.length);
    let i = 0;
    while (i < n && head[i] === sig[i]) i++;
    if (i < n) continue;
    if (n === sig.length) return result;
    maybe = true; // head is a proper prefix of this signature
  }
  if (maybe && !ended) return { kind: 'need-more' };
  if (isBinary(b0)) {
    return { kind: 'foreign', protocol: 'binary', reason: `binary data (first byte 0x${b0.toString(16).padStart(2, '0')}), not PMI` };
  }
  return { kind: 'text' };
}
