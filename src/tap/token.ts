/**
 * The tap's bearer token: generated at start (and printed), or read from --tap-token-file, which is
 * created with a fresh token (mode 0600) when missing. Compared in constant time.
 *
 * A token file is trusted only when it is ours alone: a regular file owned by our uid, readable by
 * nobody else. A file someone else owns (planted in a shared directory, say) holds a token its
 * owner knows and can change, whatever its mode says.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs';

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}

/**
 * `create`: the serving side makes a missing file with a fresh token; a viewer (`pmibridge tap
 * --token-file`) does not, and trusts the file on the same terms (the token it presents is then
 * one nobody else could have planted or read).
 */
export function tokenFromFile(path: string, create = true): { token: string; created: boolean } {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!create) throw new Error(`${path} does not exist: give the file the tap was started with (--tap-token-file), or the token it printed (--token)`, { cause: err });
    const token = newToken();
    writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
    return { token, created: true };
  }
  try {
    // the file opened, not the path again: what is checked is what is read
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${path} is not a regular file; give the path of a token file (a fresh one is created when it is missing)`);
    const me = process.getuid?.();
    if (me !== undefined && st.uid !== me) throw new Error(`${path} belongs to uid ${st.uid}, not to uid ${me} (this process): its owner knows the token and can change it; use a token file of your own (a tap started with --tap-token-file creates a fresh one where none exists)`);
    if ((st.mode & 0o077) !== 0) throw new Error(`${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    const token = readFileSync(fd, 'utf8').trim();
    if (token.length < 16) throw new Error(`${path} holds a token shorter than 16 characters`);
    return { token, created: false };
  } finally {
    closeSync(fd);
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time comparison (equal-length digests, so lengths leak nothing either). */
export function tokenMatches(presented: string | undefined | null, token: string): boolean {
  return timingSafeEqual(digest(presented ?? ''), digest(token)) && presented !== undefined && presented !== null;
}

/** The token a request presents: `Authorization: Bearer …` (programs) or `?token=` (browsers). */
export function presentedToken(headers: { authorization?: string | undefined }, target: URL): string | undefined {
  const h = headers.authorization;
  if (h && /^bearer /i.test(h)) return h.slice(7).trim(); // the scheme is case-insensitive (RFC 7235)
  return target.searchParams.get('token') ?? undefined;
}
