/**
 * Receipt of replies and the replay rules (src/relay/replay.ts), in memory: a reply the client
 * provably received (it spoke again, or the kernel says the bytes were taken) is never replayed;
 * one it did not (a frozen or stopped connection: `unread` > 0, or a reset) is kept and delivered
 * once to the client that takes the session over and re-sends the request, in every phase; a live
 * client's requests always go upstream (the re-put bug of issue 9); stalled sessions are reported.
 */
import t from 'tap';
import type { ClientFacts, ClientId } from '../src/relay/types.js';
import { formatSpawn } from '../src/protocol/index.js';
import { RelayHarness } from './fixtures/relay-harness.js';

const ME: ClientFacts = { transport: 'tcp', uid: 1000 };
const INIT = 'cmd=init pmi_version=1 pmi_subversion=1';
const KVS = 'kvs_upstream';
const put = (k: string, v: string) => `cmd=put kvsname=${KVS} key=${k} value=${v}`;
const get = (k: string) => `cmd=get kvsname=${KVS} key=${k}`;
const BARRIER = 'cmd=barrier_in';
const FINALIZE = 'cmd=finalize';

function relay(kvsCache = true): RelayHarness {
  return new RelayHarness({ engine: { upstream: { mode: 'socket' }, holdMs: 60_000, kvsCache } });
}

function join(h: RelayHarness, pmiid: number): ClientId {
  const c = h.connect(ME);
  h.line(c, `cmd=initack pmiid=${pmiid}`);
  h.take(c);
  return c;
}

function ask(h: RelayHarness, c: ClientId, line: string): string[] {
  h.line(c, line);
  return h.take(c);
}

const count = (lines: readonly string[], line: string) => lines.filter((l) => l === line).length;
const sentUp = (h: RelayHarness, s: number) => h.serverGot.get(s) ?? [];

/** Both sessions through one barrier (the server holds barrier_out until released). */
function barrier(h: RelayHarness, a: ClientId, b: ClientId): void {
  h.line(a, BARRIER);
  h.line(b, BARRIER);
  h.release(0);
  h.release(1);
  t.same([h.take(a), h.take(b)], [['cmd=barrier_out rc=0'], ['cmd=barrier_out rc=0']]);
}

t.test('barrier_out written into a frozen connection is kept and handed to the successor once', (t) => {
  for (const how of ['replaced while the old connection looks alive', 'the old connection reset'] as const) {
    const h = relay();
    const a = join(h, 0);
    ask(h, a, INIT);
    h.line(a, BARRIER);
    h.release(0); // delivered into a connection whose peer never acknowledges it
    h.unreadBytes.set(a, how.startsWith('replaced') ? 21 : undefined);
    if (how.endsWith('reset')) h.close(a, 'socket error: ECONNRESET');
    const b = join(h, 0);
    t.match(h.eventsOf('reply-kept'), [{ session: 0, request: '"cmd=barrier_in"', unread: how.startsWith('replaced') ? 21 : null }], how);
    t.same(ask(h, b, INIT), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1'], 'init answered from the session');
    t.same(ask(h, b, BARRIER), ['cmd=barrier_out rc=0'], `${how}: the kept barrier_out, at once`);
    t.equal(count(sentUp(h, 0), BARRIER), 1, 'the server saw one barrier_in');
    // The next barrier is a new one.
    h.line(b, BARRIER);
    t.equal(count(sentUp(h, 0), BARRIER), 2, 'the next barrier_in goes upstream');
  }
  t.end();
});

t.test('a reply the client provably received is never replayed', (t) => {
  for (const proof of ['a later request', 'the kernel (all bytes acknowledged)'] as const) {
    const h = relay();
    const a = join(h, 0);
    h.line(a, BARRIER);
    h.release(0);
    t.same(h.take(a), ['cmd=barrier_out rc=0']);
    if (proof === 'a later request') {
      ask(h, a, 'cmd=get_maxes');
      h.unreadBytes.set(a, 500); // whatever the kernel says now, the client spoke after its reply
    }
    const b = join(h, 0);
    t.same(h.eventsOf('reply-kept').filter((e) => /barrier/.test(e.request)), [], proof);
    t.same(ask(h, b, BARRIER), [], `${proof}: the identical barrier_in is a new barrier, it waits`);
    t.equal(count(sentUp(h, 0), BARRIER), 2, 'and went upstream');
  }
  t.end();
});

t.test('every phase: the reply lost in a frozen connection is kept; the re-sent request gets it once', (t) => {
  const phases: Array<{ name: string; setup: (h: RelayHarness, a: ClientId, other: ClientId) => void; request: string; reply: RegExp; upstreamOnce: string | null }> = [
    { name: 'put', setup: () => {}, request: put('k', 'v0'), reply: /^cmd=put_result rc=0$/, upstreamOnce: put('k', 'v0') },
    { name: 'get, cache miss', setup: (h, a, o) => { ask(h, a, put('k', 'v1')); barrier(h, a, o); }, request: get('k'), reply: /^cmd=get_result rc=0 value=v1$/, upstreamOnce: get('k') },
    { name: 'get, cache hit', setup: (h, a, o) => { ask(h, a, put('k', 'v1')); barrier(h, a, o); ask(h, o, get('k')); }, request: get('k'), reply: /^cmd=get_result rc=0 value=v1$/, upstreamOnce: null },
    { name: 'finalize', setup: () => {}, request: FINALIZE, reply: /^cmd=finalize_ack rc=0$/, upstreamOnce: FINALIZE },
  ];
  for (const p of phases) {
    const h = relay();
    const a = join(h, 0);
    const o = join(h, 1);
    p.setup(h, a, o);
    t.match(ask(h, a, p.request), [p.reply], `${p.name}: answered`);
    h.unreadBytes.set(a, 40);
    const b = join(h, 0);
    t.equal(h.liveClients().includes(b), true, `${p.name}: the successor is admitted`);
    t.match(ask(h, b, p.request), [p.reply], `${p.name}: the re-sent request gets the kept reply`);
    if (p.upstreamOnce) t.equal(count(sentUp(h, 0), p.upstreamOnce), 1, `${p.name}: asked upstream once`);
    t.match(h.eventsOf('replayed'), [{ what: /reply kept while disconnected/ }]);
  }
  t.end();
});

t.test('a spawn block (two segments) whose result was lost is swallowed when re-sent and answered with the kept result', (t) => {
  const h = new RelayHarness({ engine: { upstream: { mode: 'socket' }, holdMs: 60_000 }, server: false });
  const c = h.connect(ME);
  h.line(c, 'cmd=initack pmiid=0');
  for (const l of ['cmd=initack rc=0 rank=0 size=2 appnum=0 debug=0', 'cmd=set size=2', 'cmd=set rank=0', 'cmd=set debug=0']) h.upstreamLine(0, l);
  h.take(c);
  const block = formatSpawn({
    segments: [
      { nprocs: 2, execname: './a.out', args: ['x'], preput: new Map([['k', 'v']]), info: new Map() },
      { nprocs: 1, execname: './b.out', args: [], preput: new Map(), info: new Map() },
    ],
  })
    .split('\n')
    .filter(Boolean);
  for (const l of block) h.line(c, l);
  h.upstreamLine(0, 'cmd=spawn_result rc=0');
  t.same(h.take(c), ['cmd=spawn_result rc=0']);
  h.unreadBytes.set(c, 30);
  const b = h.connect(ME);
  h.line(b, 'cmd=initack pmiid=0');
  h.take(b);
  const before = h.upstream(0).length;
  const got: string[] = [];
  block.forEach((l, i) => {
    const answer = ask(h, b, l);
    if (i < block.length - 1) t.same(answer, [], `nothing before the last endcmd (line ${i})`);
    got.push(...answer);
  });
  t.same(got, ['cmd=spawn_result rc=0'], 'the kept reply, once, after the last endcmd');
  t.equal(h.upstream(0).length, before, 'nothing spawned twice');
  t.end();
});

t.test('a live client re-putting an older value: the put goes upstream (issue 9 repro)', (t) => {
  for (const cache of [true, false]) {
    const h = relay(cache);
    const r0 = join(h, 0);
    const r1 = join(h, 1);
    ask(h, r0, put('w', 'A'));
    barrier(h, r0, r1);
    ask(h, r1, put('w', 'B'));
    barrier(h, r0, r1);
    t.same(ask(h, r0, get('w')), ['cmd=get_result rc=0 value=B']);
    ask(h, r0, put('w', 'A'));
    t.equal(count(sentUp(h, 0), put('w', 'A')), 2, `cache ${cache}: the repeated put reached the server`);
    barrier(h, r0, r1);
    t.same(ask(h, r1, get('w')), ['cmd=get_result rc=0 value=A'], `cache ${cache}: the last writer wins, as direct`);
    t.same(h.eventsOf('answered-locally').filter((e) => e.cmd.startsWith('put')), []);
  }
  t.end();
});

t.test('a restarted rank re-doing its puts of the epoch catches up locally; once live, puts go upstream', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a, INIT);
  ask(h, a, put('k', '1'));
  h.line(a, BARRIER); // in flight when the rank dies
  h.close(a);
  h.release(0); // the barrier completes while it is away: kept
  const b = join(h, 0);
  t.same(ask(h, b, INIT), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1']);
  t.same(ask(h, b, put('k', '1')), ['cmd=put_result rc=0'], 're-put acknowledged locally');
  t.same(ask(h, b, BARRIER), ['cmd=barrier_out rc=0'], 'the kept barrier_out');
  t.equal(count(sentUp(h, 0), put('k', '1')), 1, 'one put upstream');
  t.equal(count(sentUp(h, 0), BARRIER), 1, 'one barrier upstream');
  ask(h, b, put('k', '1'));
  t.equal(count(sentUp(h, 0), put('k', '1')), 2, 'after the catch-up the same put is a new write');
  // a put of another value ends the catch-up at once
  const c = relay();
  const x = join(c, 0);
  ask(c, x, put('k', '1'));
  c.close(x);
  const y = join(c, 0);
  ask(c, y, put('k', '2'));
  ask(c, y, put('k', '1'));
  t.equal(count(sentUp(c, 0), put('k', '1')), 2, 'a re-put after a new write goes upstream');
  t.end();
});

t.test('the puts of an epoch stay re-sendable while the barrier_out that ends it is unconfirmed', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a, put('k', '1'));
  h.line(a, BARRIER);
  h.release(0); // delivered, not read
  h.unreadBytes.set(a, 21);
  const b = join(h, 0); // restarted from scratch: re-puts, then its barrier
  t.same(ask(h, b, put('k', '1')), ['cmd=put_result rc=0']);
  t.same(ask(h, b, BARRIER), ['cmd=barrier_out rc=0']);
  t.equal(count(sentUp(h, 0), put('k', '1')), 1);
  t.equal(count(sentUp(h, 0), BARRIER), 1);
  t.end();
});

t.test('ticks: a reply left unread is reported stalled, and resumed once read; no verdict after one tick', (t) => {
  const h = relay();
  const a = join(h, 0);
  h.line(a, BARRIER);
  h.release(0);
  h.unreadBytes.set(a, 21);
  h.feed({ kind: 'tick' });
  t.equal(h.state(0), 'ready', 'one tick: not yet');
  h.feed({ kind: 'tick' });
  t.equal(h.state(0), 'stalled');
  t.same(h.eventsOf('stalled'), [{ type: 'stalled', session: 0, unread: 21 }]);
  h.feed({ kind: 'tick' });
  t.equal(h.eventsOf('stalled').length, 1, 'reported once');
  h.unreadBytes.set(a, 0); // e.g. restored in place (criu restore --tcp-established), then read
  h.feed({ kind: 'tick' });
  t.equal(h.state(0), 'ready');
  t.same(h.eventsOf('resumed'), [{ type: 'resumed', session: 0 }]);
  // confirmed by the kernel: a takeover now replays nothing
  const b = join(h, 0);
  h.line(b, BARRIER);
  t.equal(count(sentUp(h, 0), BARRIER), 2);
  t.same(h.eventsOf('reply-kept'), []);
  t.end();
});

t.test('a stalled client that speaks again is resumed', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a, 'cmd=get_maxes');
  h.unreadBytes.set(a, 60);
  h.feed({ kind: 'tick' });
  h.feed({ kind: 'tick' });
  t.equal(h.state(0), 'stalled');
  t.same(ask(h, a, 'cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0']);
  t.equal(h.state(0), 'ready');
  t.equal(h.eventsOf('resumed').length, 1);
  t.end();
});
