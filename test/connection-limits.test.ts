// The connection ledger alone: per-peer and total limits, evicting the oldest unidentified, timeouts.
import t from 'tap';
import { ConnectionLimits } from '../src/host/connection-limits.js';
import { defaultMaxConnections } from '../src/host/job-server.js';
import { fdLimit } from '../src/transport/fd-limit.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

t.test('per peer: at the limit the peer\'s own oldest unidentified connection makes room; with none, refused', async (t) => {
  const l = new ConnectionLimits({ maxTotal: 100, maxPerPeer: 3, identifyTimeoutMs: null });
  t.same(l.admit(1, 'uid 5', 'uid 5', 0), { ok: true, evict: [] });
  t.same(l.admit(2, 'uid 5', 'uid 5', 1), { ok: true, evict: [] });
  l.identified(1); // a rank now
  t.same(l.admit(3, 'uid 6', 'uid 6', 2), { ok: true, evict: [] }, 'another peer is not counted against uid 5');
  t.same(l.admit(4, 'uid 5', 'uid 5', 3), { ok: true, evict: [] });
  const a = l.admit(5, 'uid 5', 'uid 5', 4);
  t.match(a, { ok: true, evict: [{ id: 2, msg: 'closed_to_make_room_identify_with_initack_or_init_at_once', reason: /uid 5 opened more than 3 connections/ }] }, 'uid 5\'s oldest unidentified (2, not the rank 1, not uid 6\'s 3) is evicted');
  l.identified(4);
  l.identified(5);
  const refused = l.admit(6, 'uid 5', 'uid 5', 5);
  t.match(refused, { ok: false, msg: 'too_many_connections_from_uid_5_limit_3', reason: /--max-connections-per-peer/ }, 'all three are ranks: refused');
  l.release(4);
  t.same(l.admit(7, 'uid 5', 'uid 5', 6), { ok: true, evict: [] }, 'room after a close');
  t.equal(l.size, 4);
});

t.test('total: the oldest unidentified of anyone makes room; with none, refused', async (t) => {
  const l = new ConnectionLimits({ maxTotal: 2, maxPerPeer: 10, identifyTimeoutMs: null });
  l.admit(1, 'a', 'a', 0);
  l.admit(2, 'b', 'b', 0);
  t.match(l.admit(3, 'c', 'c', 0), { ok: true, evict: [{ id: 1 }] });
  l.identified(2);
  l.identified(3);
  t.match(l.admit(4, 'd', 'd', 0), { ok: false, msg: 'too_many_connections_limit_2', reason: /--max-connections/ });
  t.equal(l.size, 2);
});

t.test('unidentified connections expire oldest first; identified ones never', async (t) => {
  const l = new ConnectionLimits({ maxTotal: 10, maxPerPeer: 10, identifyTimeoutMs: 30_000 });
  l.admit(1, 'a', 'a', 0);
  l.admit(2, 'a', 'a', 10_000);
  l.admit(3, 'a', 'a', 20_000);
  l.identified(2);
  t.same(l.expired(29_999), []);
  t.match(l.expired(30_000), [{ id: 1, msg: 'no_initack_or_init_within_30s', reason: /within 30s/ }]);
  t.same(l.expired(45_000), [], 'the identified one stays');
  t.match(l.expired(50_000), [{ id: 3 }]);
  t.equal(l.size, 1);
  t.same(new ConnectionLimits({ maxTotal: 1, maxPerPeer: 1, identifyTimeoutMs: null }).expired(1e12), [], 'no timeout: never');
  t.match(new ConnectionLimits({ maxTotal: 9, maxPerPeer: 9, identifyTimeoutMs: 1500 }).admit(1, 'a', 'a', 0) && 'ok', 'ok');
});

t.test('default total fits the fd limit', async (t) => {
  t.equal(defaultMaxConnections(2, undefined), 4098, 'no known limit: size + 4096');
  t.equal(defaultMaxConnections(2, 1_048_576), 4098);
  t.equal(defaultMaxConnections(2, 256), 192, 'a 256-fd process keeps 64 fds for everything else');
  t.equal(defaultMaxConnections(2, 40), 16, 'never below 16');
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-limits-'));
  writeFileSync(join(dir, 'limits'), 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n');
  t.equal(fdLimit(join(dir, 'limits')), 1024, 'the soft limit from /proc/self/limits');
  t.equal(fdLimit(join(dir, 'missing')), undefined);
  t.ok((fdLimit() ?? 1) > 0, 'this process has one');
});
