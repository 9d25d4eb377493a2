// The uid of a loopback TCP peer: netlink sock_diag (primary) and /proc/net/tcp (fallback) agree.
import t from 'tap';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { tcpPeerUid } from '../src/transport/tcp-peer-uid.js';
import { tcpSocketUid } from '../src/transport/sock-diag.js';

for (const [listenHost, connectHost] of [['127.0.0.1', '127.0.0.1'], ['::1', '::1'], ['::', '127.0.0.1']] as const) {
  t.test(`peer uid, listening on ${listenHost}, client to ${connectHost}`, async (t) => {
    const srv = createServer();
    srv.listen(0, listenHost);
    await once(srv, 'listening');
    const client = connect((srv.address() as AddressInfo).port, connectHost);
    const [sock] = (await once(srv, 'connection')) as [Socket];
    const me = process.getuid?.();
    t.equal(tcpPeerUid(sock), me, 'sock_diag path');
    t.equal(tcpPeerUid(sock, '/proc/net/.'), me, '/proc/net/tcp path');
    const unmap = (a = '') => a.replace(/^::ffff:/, '');
    t.equal(tcpSocketUid(unmap(sock.remoteAddress), sock.remotePort ?? 0, unmap(sock.localAddress), sock.localPort ?? 0), me, 'direct sock_diag by 4-tuple');
    t.equal(tcpSocketUid('127.0.0.1', 1, '127.0.0.1', 2), undefined, 'no such socket: undefined, no throw');
    client.destroy();
    sock.destroy();
    srv.close();
  });
}
