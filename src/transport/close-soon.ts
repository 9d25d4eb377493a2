/**
 * Ending a connection without leaving its file descriptor to the peer's goodwill.
 *
 * `socket.end()` only half-closes: our FIN goes out after what we wrote, but the descriptor is
 * released only when the peer closes its side too. A peer that never does (another uid we
 * refused, a flooder, a crashed-but-not-dead process) would keep one of our descriptors per
 * connection, and enough of them stop real ranks from connecting (EMFILE). So every end is
 * followed by a destroy once what we wrote has reached the kernel (plus `graceMs`, for the peer's
 * FIN to arrive and close things the ordinary way), and in any case after `maxMs`.
 *
 * Destroying after 'finish' loses nothing we wrote: the bytes are in the kernel's send queue,
 * which close() still delivers, followed by the FIN that end() already queued.
 */
import type { Socket } from 'node:net';

/** Wait after 'finish' before destroying, for the peer's own close. */
export const CLOSE_GRACE_MS = 1000;
/** Destroy by then even if what we wrote was never taken (a peer that does not read). */
export const CLOSE_MAX_MS = 10_000;

/** `beforeDestroy`: last look at the socket while its fd is open (what the peer left unread). */
export function destroyAfterEnd(socket: Socket, graceMs = CLOSE_GRACE_MS, maxMs = CLOSE_MAX_MS, beforeDestroy?: () => void): void {
  if (socket.destroyed) return;
  const destroy = () => {
    clearTimeout(hard);
    if (socket.destroyed) return;
    beforeDestroy?.();
    socket.destroy();
  };
  const hard = setTimeout(destroy, maxMs);
  hard.unref();
  const afterFinish = () => {
    if (graceMs <= 0) return destroy();
    setTimeout(destroy, graceMs).unref();
  };
  if (socket.writableFinished) afterFinish();
  else socket.once('finish', afterFinish);
  socket.once('close', () => clearTimeout(hard));
}
