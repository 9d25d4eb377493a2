/**
 * PMI return codes and pmibridge's protocol problems, in one table each.
 *
 * The numeric codes are PMI-1's (RFC 13 / flux `pmi.h`), so flux clients map them to the same
 * PMI_ERR_* names and MPICH clients treat any non-zero value as failure. A problem carries the rc to
 * answer with, a stable `code` for logs and tests, a wire `msg` (never a space: legacy MPICH
 * rejects a reply with one) and a sentence for people.
 */

export const PMI_RC = {
  SUCCESS: 0,
  FAIL: -1,
  ERR_INIT: 1,
  ERR_NOMEM: 2,
  ERR_INVALID_ARG: 3,
  ERR_INVALID_KEY: 4,
  ERR_INVALID_KEY_LENGTH: 5,
  ERR_INVALID_VAL: 6,
  ERR_INVALID_VAL_LENGTH: 7,
  ERR_INVALID_LENGTH: 8,
  ERR_INVALID_NUM_ARGS: 9,
  ERR_INVALID_ARGS: 10,
  ERR_INVALID_NUM_PARSED: 11,
  ERR_INVALID_KEYVALP: 12,
  ERR_INVALID_SIZE: 13,
} as const;

const RC_TEXT: Readonly<Record<number, string>> = {
  0: 'success',
  [-1]: 'operation failed',
  1: 'PMI not initialized (send init first)',
  2: 'out of memory',
  3: 'invalid argument',
  4: 'invalid key argument',
  5: 'invalid key length argument',
  6: 'invalid val argument',
  7: 'invalid val length argument',
  8: 'invalid length argument',
  9: 'invalid number of arguments',
  10: 'invalid args argument',
  11: 'invalid num_parsed length argument',
  12: 'invalid keyvalp argument',
  13: 'invalid size argument',
};

/** A sentence for a PMI return code (like flux's pmi_strerror). */
export function rcText(rc: number): string {
  return RC_TEXT[rc] ?? `unknown PMI error ${rc}`;
}

/**
 * Make a `msg=` value that every client parses: no spaces, no newlines, no NUL, bounded length.
 * Legacy MPICH stops a value at a space and then fails on the remainder ("unexpected key delimiter").
 */
export function wireMsg(text: string): string {
  const cleaned = text.replace(/[\s\0]+/g, '_').replace(/_+/g, '_');
  return cleaned.length > 200 ? cleaned.slice(0, 200) : cleaned || 'error';
}

/** A failure the engine answers with: rc on the wire, a stable code, and words for people. */
export interface Problem {
  /** Stable identifier, e.g. `E_KEY_TOO_LONG`; documented in the README's error table. */
  readonly code: string;
  /** PMI return code sent as `rc=`. */
  readonly rc: number;
  /** Sent as `msg=` (no spaces). */
  readonly msg: string;
  /** Logged; says what happened and what to do. */
  readonly detail: string;
}

export function problem(code: string, rc: number, msg: string, detail: string): Problem {
  return { code, rc, msg: wireMsg(msg), detail };
}

/** Thrown when *we* are asked to write something the protocol cannot carry (a caller bug). */
export class LocalPmiError extends Error {
  constructor(message: string, readonly code = 'E_LOCAL') {
    super(message);
    this.name = 'LocalPmiError';
  }
}

/** A failure reported by, or caused by, the peer: a reply with rc≠0 or an unparsable line. */
export class RemotePmiError extends Error {
  constructor(
    message: string,
    readonly rc: number = PMI_RC.FAIL,
    readonly code = 'E_REMOTE',
    /** The peer's own words: PMI-2 `errmsg`, PMI-1 `msg` (when it sent one). */
    readonly errmsg?: string,
  ) {
    super(message);
    this.name = 'RemotePmiError';
  }
}
