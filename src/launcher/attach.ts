/**
 * `--attach`: a rank the user starts by hand (typically under a debugger) instead of us. `run
 * --attach` and `wrap --attach` print the same instructions from here, so the two cannot drift
 * apart, and tests (test/fixtures/attach.ts) parse one format: the `  env PMI_PORT=…` line.
 *
 * A hand-started rank always gets PMI_PORT (+PMI_ID), never PMI_FD: lldb closes every inherited
 * fd but 0–2 in the program it launches, and there is no fd to inherit from a second terminal
 * anyway. MPICH parses PMI_PORT only as host:port, so the port is loopback TCP.
 */
import { shellQuote } from '../util/shell-quote.js';
import { rankVars } from './rank-env.js';

export interface AttachTarget {
  readonly rank: number;
  readonly size: number;
  /** host:port of the server or relay the rank must connect to. */
  readonly pmiPort: string;
  /** The PMI_ID to send (default: the rank). */
  readonly pmiid?: number;
  /** The program and its arguments, as the user gave them. */
  readonly command: readonly string[];
}

/** The exact PMI variables the hand-started rank needs. */
export function attachVars(t: AttachTarget): Record<string, string> {
  return rankVars(t.rank, t.size, { mode: 'port', pmiPort: t.pmiPort, ...(t.pmiid !== undefined ? { pmiid: t.pmiid } : {}) });
}

/** The instructions, as one string (one write: several wraps may share hydra's stderr). */
export function attachText(t: AttachTarget, who = 'pmibridge'): string {
  const vars = attachVars(t);
  const env = `env ${shellQuote(Object.entries(vars).map(([k, v]) => `${k}=${v}`))}`;
  const cmd = shellQuote(t.command);
  return [
    `${who}: rank ${t.rank} is not started; start it yourself, e.g. under a debugger, with:`,
    `  ${env} ${cmd}`,
    `  ${env} lldb --batch -o run -- ${cmd}`,
    `  ${env} gdb -batch -ex run --args ${cmd}`,
    `${who}: waiting for rank ${t.rank} to connect (PMI_PORT=${t.pmiPort}, PMI_ID=${vars['PMI_ID'] ?? t.rank})…`,
    '',
  ].join('\n');
}

export function printAttach(out: NodeJS.WritableStream, t: AttachTarget, who?: string): void {
  out.write(attachText(t, who));
}
