/**
 * The connection-limit check both hosts (JobServer, RelayHost) run on a peer a listener admitted
 * by uid: counted per uid (local peers) or address (remote peers); refused in words when there is
 * no room; otherwise the connections to close to make room are returned for the host to close.
 */
import type { Socket } from 'node:net';
import { refuseSocket, type AcceptedPeer } from '../transport/listen.js';
import type { ObserverBus } from './bus.js';
import type { ConnectionLimits, Eviction } from './connection-limits.js';

/** null: refused (told why, logged, closed); else the evictions to carry out. */
export function admitPeer(limits: ConnectionLimits, id: number, socket: Socket, peer: AcceptedPeer, bus: ObserverBus): readonly Eviction[] | null {
  const key = peer.uid !== undefined ? `uid ${peer.uid}` : peer.transport === 'tcp' ? (socket.remoteAddress ?? '?').replace(/^::ffff:/i, '') : 'unix peer';
  const admission = limits.admit(id, key, key, performance.now());
  if (admission.ok) return admission.evict;
  bus.emit({ type: 'peer-refused', peer: peer.peer, reason: admission.reason, ...(peer.uid !== undefined ? { uid: peer.uid } : {}) });
  refuseSocket(socket, `cmd=error rc=-1 msg=${admission.msg}\n`);
  return null;
}
