/**
 * Which programs start the rank themselves, as a child they control: debuggers and tracers.
 * `wrap --pmi auto` gives such a rank PMI_PORT (loopback TCP) instead of PMI_FD, because
 * - lldb closes every inherited fd but 0–2 in the program it launches, so PMI_FD=3 names a
 *   closed fd, or whatever file the rank opens first (debuggers-and-checkpoint.md §1b–1d), and
 *   MPICH's client prefers PMI_FD over PMI_PORT without checking it;
 * - the others keep fd 3 today, but they open files of their own and run the rank under their
 *   control; an address the rank dials itself does not depend on what they do with fds.
 * Plain programs keep PMI_FD, the one thing every client (flux's, old MPICH) understands.
 *
 * Only the program's basename is looked at (a wrapper such as `env … lldb` is not seen through:
 * use --pmi tcp there).
 */
import { basename } from 'node:path';

const TOOLS: readonly RegExp[] = [
  /^lldb(-\d+(\.\d+)*)?$/, // lldb, lldb-14, lldb-14.0
  /^(cuda-|roc)?gdb(-multiarch)?$/, // gdb, gdb-multiarch, cuda-gdb, rocgdb
  /^gdbserver$/,
  /^valgrind(\.bin)?$/,
  /^rr$/,
  /^[sl]trace$/, // strace, ltrace
  /^(cgdb|ddd|heaptrack)$/,
];

/** Does `prog` (a path or a name on PATH) start the rank itself under its control? */
export function startsRankItself(prog: string): boolean {
  const name = basename(prog);
  return TOOLS.some((re) => re.test(name));
}

/** The names `--help` lists. */
export const TOOL_NAMES = 'lldb, lldb-<version>, gdb, gdb-multiarch, gdbserver, cuda-gdb, rocgdb, cgdb, ddd, valgrind, rr, strace, ltrace, heaptrack';
