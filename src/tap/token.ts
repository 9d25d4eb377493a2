/**
 * The tap's bearer token: generated at start (and printed), or read from --tap-token-file, which is
 * created with a fresh token (mode 0600) when missing. Compared in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, writeFileSync, statSync } from 'node:fs';

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}

export function tokenFromFile(path: string): { token: string; created: boolean } {
  try {
    const st = statSync(path);
    if ((st.mode & 0o077) !== 0) throw new Error(`${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    const token = readFileSync(path, 'utf8').trim();
    if (token.length < 16) throw new Error(`${path} holds a token shorter than 16 characters`);
    return { token, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const token = newToken();
    writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
    return { token, created: true };
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
