/**
 * Our stdout and stderr may go away while we run: a closed terminal (EIO after the hangup),
 * a reader that quit (EPIPE). Output then has nowhere to go, but a long-running command still has
 * ranks to stop and socket directories to remove: a failed write must not throw (an 'error'
 * event without a listener is an uncaught exception, which skips all of that).
 *
 * And Node 20 aborts at exit (SIGABRT, "Assertion failed" in ResetStdio) when it cannot restore
 * the state of a terminal that was hung up meanwhile (nodejs/node#51519, fixed in later versions
 * by nodejs/node#58200). It skips a descriptor that was closed, so one that was a terminal at
 * start and is one no more (isatty fails on a hung-up terminal) is closed on the way out.
 */
import { closeSync } from 'node:fs';
import { isatty } from 'node:tty';

const STDIO = [0, 1, 2] as const;

export function guardStdio(): void {
  const ignore = () => {};
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
  const wasTerminal = STDIO.map((fd) => isatty(fd));
  process.on('exit', () => {
    for (const fd of STDIO) {
      if (!wasTerminal[fd] || isatty(fd)) continue;
      try {
        closeSync(fd);
      } catch {
        // closed already
      }
    }
  });
}
