/**
 * Why a program could not be started, in words that say what to do. A missing or unusable
 * program fails every rank alike, so the program is named; running out of fds or processes
 * depends on how many ranks came before, so the rank is named, with the limit that was hit.
 */
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The soft limits a spawn can run into. Read before spawning: out of fds, /proc cannot be read. */
export interface SpawnLimits {
  readonly openFiles?: string;
  readonly processes?: string;
}

/** This process's soft limits from /proc/self/limits (Linux); empty elsewhere. */
export function readSpawnLimits(): SpawnLimits {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return {};
  }
  const soft = (name: string) => text.split('\n').find((l) => l.startsWith(name))?.slice(name.length).trim().split(/\s+/)[0];
  const openFiles = soft('Max open files');
  const processes = soft('Max processes');
  return { ...(openFiles ? { openFiles } : {}), ...(processes ? { processes } : {}) };
}

/**
 * `found`: programProblem found the program, so an ENOENT from exec is about what the program
 * needs to run: the interpreter of its #! line, or the dynamic loader of a binary.
 */
export function spawnFailure(err: NodeJS.ErrnoException, prog: string, limits: SpawnLimits, rank?: number, found = false): string {
  const which = rank === undefined ? 'cannot start' : `cannot start rank ${rank}`;
  switch (err.code) {
    case 'ENOENT':
      return found ? `cannot start ${prog}: its interpreter (the #! line) or dynamic loader was not found` : `cannot start ${prog}: not found`;
    case 'EACCES':
      return `cannot start ${prog}: not executable`;
    case 'ENOEXEC':
      return `cannot start ${prog}: not an executable format (a script without a #! line?)`;
    case 'E2BIG':
      return `cannot start ${prog}: its arguments and environment are too long`;
    case 'EMFILE':
      return `${which}: too many open files (${limitText(limits.openFiles, 'fd', 'ulimit -n')})`;
    case 'ENFILE':
      return `${which}: the system's open file table is full (see /proc/sys/fs/file-max, or start fewer ranks)`;
    case 'EAGAIN':
      return `${which}: too many processes (${limitText(limits.processes, 'process', 'ulimit -u')})`;
    case 'ENOMEM':
      return `${which}: out of memory`;
    default:
      return `${which}: ${err.message}`;
  }
}

function limitText(limit: string | undefined, what: string, raise: string): string {
  return `${limit !== undefined ? `the ${what} limit is ${limit}` : `the ${what} limit was reached`}: raise it with ${raise}, or start fewer ranks`;
}

/**
 * Look the program up once, as execvp will for each rank, so that a missing one is said at once
 * rather than after a check of N ranks' needs. ENOENT: nowhere; EACCES: found, but not an
 * executable file. Undefined when it looks runnable — or when there is no PATH to search, left
 * to spawn — which the first spawn confirms or not (a #! interpreter that is missing, say).
 */
export function programProblem(prog: string, path: string | undefined): 'ENOENT' | 'EACCES' | undefined {
  if (!prog.includes('/') && path === undefined) return undefined;
  const candidates = prog.includes('/') ? [prog] : (path ?? '').split(':').map((dir) => join(dir || '.', prog));
  let denied = false;
  for (const candidate of candidates) {
    try {
      if (!statSync(candidate).isFile()) {
        denied = true; // a directory, a device: execvp says EACCES
        continue;
      }
      accessSync(candidate, fsConstants.X_OK);
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') denied = true;
    }
  }
  return denied ? 'EACCES' : 'ENOENT';
}
