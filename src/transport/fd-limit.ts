/**
 * The process's file-descriptor limit (RLIMIT_NOFILE, soft), from /proc/self/limits. Node raises
 * the soft limit to the hard one at start-up, so this is what accept() will run into.
 */
import { readFileSync } from 'node:fs';

/** The soft limit, or undefined when it cannot be read (not Linux) or is unlimited. */
export function fdLimit(path = '/proc/self/limits'): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  return m?.[1] && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
}
