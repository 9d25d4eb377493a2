import type { ChildProcess } from 'node:child_process';

/**
 * Signal a child process only if it really runs. After a failed spawn (ENOENT) Node's
 * ChildProcess.kill() can reach pid 0 — our own process group (seen: it terminated the test
 * runner that had started us).
 */
export function signalChild(child: ChildProcess, sig: NodeJS.Signals): void {
  const pid = child.pid;
  if (pid === undefined || pid <= 0 || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}
