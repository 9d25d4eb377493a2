import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

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

/**
 * Signal the process group `pgid` of a child started with `detached: true` (setsid), which leads
 * a group of its own: whatever it starts — a wrapper script's program, a shell's background job —
 * stays in that group unless it leaves on purpose. Only while the leader has not been reaped is
 * `pgid` surely still ours: see leftoverGroups for a group whose leader is gone.
 */
export function signalGroup(pgid: number | undefined, sig: NodeJS.Signals | 0): boolean {
  if (pgid === undefined || !Number.isInteger(pgid) || pgid <= 1) return false; // never -0 or -1: our own group, everyone
  try {
    process.kill(-pgid, sig);
    return true;
  } catch {
    return false; // ESRCH: nobody left in it
  }
}

/**
 * The groups among `pgids`, whose leaders we have reaped, that still have living members
 * (leftover grandchildren), from /proc (Linux; none elsewhere, where we cannot tell).
 * While a member lives the kernel does not hand the group's number out as a pid; once the
 * group is empty it may, and a new process with that pid may lead a group of the same number
 * that is not ours: so a group is counted only while no process has its number as pid.
 * A zombie does not count: a killed grandchild whose parent died too is re-parented, and stays a
 * zombie when nothing reaps it (a container's minimal init), yet it is still a member for kill(2).
 */
export function leftoverGroups(pgids: readonly number[]): number[] {
  if (pgids.length === 0) return [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const wanted = new Set(pgids);
  const living = new Set<number>();
  const reused = new Set<number>();
  for (const name of entries) {
    if (name.charCodeAt(0) > 57) continue; // not a pid
    const pid = Number(name);
    if (wanted.has(pid)) reused.add(pid);
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, so split after its last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const g = Number(pgrp);
    if (state !== 'Z' && state !== 'X' && wanted.has(g)) living.add(g);
  }
  return pgids.filter((g) => living.has(g) && !reused.has(g));
}
