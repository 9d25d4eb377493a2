/**
 * The relay's per-barrier KVS cache (src/relay/kvs-cache.ts, used by src/relay/engine.ts), driven
 * in memory with the scripted upstream of test/fixtures/relay-harness.ts.
 *
 * Covered: after a barrier every key crosses the relay once however many sessions get it; the
 * same key asked by several sessions at once is fetched once (coalesced); a new barrier forgets
 * (a re-put value is seen); a put through the relay forgets its key at once; missing keys are never
 * remembered and waiters on a failed fetch ask on their own (no hang, no chain); a fetching session
 * whose upstream closes wakes its waiters; a waiter whose client went away keeps its answer for
 * the reconnecting client; `kvsCache: false` forwards every get.
 */
import t from 'tap';
import type { ClientId } from '../src/relay/types.js';
import { RelayHarness, type ServerScript } from './fixtures/relay-harness.js';

const ME = { transport: 'tcp', uid: 1000, peer: '127.0.0.1:40000' } as const;
const KVS = 'kvs_upstream';
const put = (k: string, v: string) => `cmd=put kvsname=${KVS} key=${k} value=${v}`;
const get = (k: string) => `cmd=get kvsname=${KVS} key=${k}`;

function relay(server: ServerScript = {}, kvsCache = true): RelayHarness {
  return new RelayHarness({ engine: { upstream: { mode: 'socket' }, holdMs: 60_000, kvsCache }, server });
}

/** n sessions 0..n-1, handshaken and initialized. */
function joinAll(h: RelayHarness, n: number): ClientId[] {
  const cs: ClientId[] = [];
  for (let i = 0; i < n; i++) {
    const c = h.connect(ME);
    h.line(c, `cmd=initack pmiid=${i}`);
    h.line(c, 'cmd=init pmi_version=1 pmi_subversion=1');
    h.take(c);
    cs.push(c);
  }
  return cs;
}

/** Every session enters the barrier; the server answers them all. */
function barrier(h: RelayHarness, cs: readonly ClientId[]): void {
  for (const c of cs) h.line(c, 'cmd=barrier_in');
  for (let i = 0; i < cs.length; i++) h.release(i);
  for (const c of cs) if (!h.take(c).includes('cmd=barrier_out rc=0')) throw new Error(`client ${c} got no barrier_out`);
}

const serverGets = (h: RelayHarness, n: number) => {
  let total = 0;
  for (let i = 0; i < n; i++) total += (h.serverGot.get(i) ?? []).filter((l) => l.startsWith('cmd=get ')).length;
  return total;
};

t.test('after a barrier, each key crosses the relay once however many sessions get it', (t) => {
  const n = 4;
  const h = relay();
  const cs = joinAll(h, n);
  cs.forEach((c, i) => h.line(c, put(`bc-${i}`, `card${i}`)));
  barrier(h, cs);
  for (const c of cs) {
    for (let k = 0; k < n; k++) {
      h.line(c, get(`bc-${k}`));
      t.same(h.take(c), [`cmd=get_result rc=0 value=card${k}`], `client ${c} key ${k}`);
    }
  }
  t.equal(serverGets(h, n), n, `${n} gets upstream for ${n * n} asked`);
  t.match(h.engine.cacheStats(), { epoch: 1, hits: n * n - n, fetches: n, entries: n });
  t.end();
});

t.test('the same key asked by several sessions at once is fetched once; all get the answer', (t) => {
  const n = 3;
  const h = relay({ deferred: new Set(['barrier_in', 'get']) });
  const cs = joinAll(h, n);
  h.line(cs[0] as ClientId, put('k', 'v'));
  h.take(cs[0] as ClientId);
  barrier(h, cs);
  for (const c of cs) h.line(c, get('k'));
  t.equal(serverGets(h, n), 1, 'one get upstream');
  for (const c of cs) t.same(h.take(c), [], 'nobody answered before the upstream');
  h.release(0);
  for (const c of cs) t.same(h.take(c), ['cmd=get_result rc=0 value=v'], `client ${c} answered`);
  // Lock-step still holds for a woken session: its next request goes out normally.
  h.line(cs[1] as ClientId, 'cmd=get_appnum');
  t.same(h.take(cs[1] as ClientId), ['cmd=appnum rc=0 appnum=0']);
  t.match(h.engine.cacheStats(), { coalesced: 2, fetches: 1 });
  t.end();
});

t.test('a new barrier forgets: a re-put value is seen after it', (t) => {
  const h = relay();
  const cs = joinAll(h, 2);
  h.line(cs[0] as ClientId, put('k', 'old'));
  barrier(h, cs);
  h.line(cs[1] as ClientId, get('k'));
  t.same(h.take(cs[1] as ClientId), ['cmd=get_result rc=0 value=old']);
  h.line(cs[0] as ClientId, put('k', 'new'));
  h.take(cs[0] as ClientId);
  barrier(h, cs);
  h.line(cs[1] as ClientId, get('k'));
  t.same(h.take(cs[1] as ClientId), ['cmd=get_result rc=0 value=new'], 'asked upstream again in the new epoch');
  t.equal(serverGets(h, 2), 2);
  t.end();
});

t.test('a put through the relay forgets its key at once (flux shows a rank its pending puts)', (t) => {
  const h = relay();
  const cs = joinAll(h, 2);
  h.line(cs[0] as ClientId, put('k', 'a'));
  barrier(h, cs);
  h.line(cs[1] as ClientId, get('k'));
  h.line(cs[0] as ClientId, put('k', 'b')); // the scripted server shows puts at once
  h.take(cs[0] as ClientId);
  h.take(cs[1] as ClientId);
  h.line(cs[1] as ClientId, get('k'));
  t.same(h.take(cs[1] as ClientId), ['cmd=get_result rc=0 value=b']);
  t.end();
});

t.test('missing keys are never remembered; waiters on a failed fetch ask on their own', (t) => {
  const n = 3;
  const h = relay({ deferred: new Set(['barrier_in', 'get']) });
  const cs = joinAll(h, n);
  barrier(h, cs);
  for (const c of cs) h.line(c, get('nope'));
  t.equal(serverGets(h, n), 1, 'coalesced while the first fetch is out');
  h.release(0);
  t.same(h.take(cs[0] as ClientId), ['cmd=get_result rc=1']);
  t.equal(serverGets(h, n), n, 'the two waiters asked at once, each on its own session');
  h.release(1);
  h.release(2);
  for (const c of cs.slice(1)) t.same(h.take(c), ['cmd=get_result rc=1'], `client ${c} got the server's own answer`);
  h.line(cs[0] as ClientId, get('nope'));
  h.release(0);
  t.equal(serverGets(h, n), n + 1, 'asked again: not remembered');
  t.end();
});

t.test("a fetching session's upstream closing wakes its waiters, who ask on their own", (t) => {
  const h = relay({ deferred: new Set(['barrier_in', 'get']) });
  const cs = joinAll(h, 2);
  h.line(cs[0] as ClientId, put('k', 'v'));
  barrier(h, cs);
  h.line(cs[0] as ClientId, get('k'));
  h.line(cs[1] as ClientId, get('k'));
  t.equal(serverGets(h, 2), 1);
  h.upstreamClose(0, 'server went away');
  t.equal(serverGets(h, 2), 2, 'the waiter sent its own get');
  h.release(1);
  t.same(h.take(cs[1] as ClientId), ['cmd=get_result rc=0 value=v']);
  t.end();
});

t.test('a waiter whose client went away keeps the answer for the reconnecting client', (t) => {
  const h = relay({ deferred: new Set(['barrier_in', 'get']) });
  const cs = joinAll(h, 2);
  h.line(cs[0] as ClientId, put('k', 'v'));
  barrier(h, cs);
  h.line(cs[0] as ClientId, get('k'));
  h.line(cs[1] as ClientId, get('k'));
  h.close(cs[1] as ClientId);
  h.release(0);
  const again = h.connect(ME);
  h.line(again, 'cmd=initack pmiid=1');
  h.take(again);
  h.line(again, get('k'));
  t.same(h.take(again), ['cmd=get_result rc=0 value=v'], 'kept reply delivered');
  t.equal(serverGets(h, 2), 1, 'never asked twice');
  t.end();
});

t.test('kvsCache: false forwards every get', (t) => {
  const n = 3;
  const h = relay({}, false);
  const cs = joinAll(h, n);
  cs.forEach((c, i) => h.line(c, put(`bc-${i}`, `card${i}`)));
  barrier(h, cs);
  for (const c of cs) for (let k = 0; k < n; k++) h.line(c, get(`bc-${k}`));
  t.equal(serverGets(h, n), n * n);
  t.equal(h.engine.cacheStats(), null);
  t.end();
});
