/**
 * Exit codes of every pmibridge command (documented in the README). A job's own status passes
 * through: 0 when it succeeded, the abort code after PMI_Abort, a failing rank's exit code.
 */
export const EXIT = {
  OK: 0,
  /** The job or command failed (a rank dropped PMI, a PMI call was refused, …). */
  FAILURE: 1,
  /** Bad command line: the message says what was wrong, `--help` shows the usage. */
  USAGE: 2,
  /** A rank's program could not be started (not found / not executable), like a shell's 127. */
  CANNOT_START: 127,
  /** 128 + signal number: interrupted (SIGINT → 130, SIGTERM → 143). */
  SIGNAL_BASE: 128,
} as const;
