/**
 * The relay's session engine (src/relay/engine.ts) driven in memory: clients on one side, a
 * scripted upstream PMI server on the other (test/fixtures/relay-harness.ts).
 *
 * Covered: the PMI_PORT handshake relayed (client answer delayed until the upstream's four lines
 * came, rank/size from the upstream), byte-exact forwarding, lock-step queueing, the inherited-fd
 * upstream, prepared sessions, refusals and id mapping, the hold rules (holdMs, 0, null, expiry),
 * takeover (after a disconnect, over a half-open connection, refused for another uid), what a
 * taken-over session answers itself (invariant queries, the in-flight request re-sent, a kept
 * reply, an identical put), finalize (also collected after a reconnect), upstream failures, abort,
 * spawn blocks, and a fast-check property over random interleavings.
 *
 * Reproduce a property failure with FC_SEED=<seed> (printed by fast-check) and FC_RUNS=<n>.
 */
import t from 'tap';
import fc from 'fast-check';
import type { RelayEngineOptions } from '../src/relay/engine.js';
import type { ClientFacts, ClientId, RelayAction } from '../src/relay/types.js';
import { formatSpawn } from '../src/protocol/index.js';
import { RelayHarness, type ServerScript } from './fixtures/relay-harness.js';

const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : undefined;
const numRuns = process.env.FC_RUNS ? Number(process.env.FC_RUNS) : 1000;
const params = { numRuns, ...(seed !== undefined ? { seed } : {}) };

// ---- helpers ------------------------------------------------------------------------------------

interface RelayOpts {
  readonly holdMs?: number | null;
  readonly mapId?: (pmiid: number) => number | undefined;
  readonly upstream?: RelayEngineOptions['upstream'];
  readonly autoConnect?: boolean;
  readonly server?: ServerScript | false;
}

function relay(o: RelayOpts = {}): RelayHarness {
  const engine: RelayEngineOptions = {
    upstream: o.upstream ?? { mode: 'socket' },
    holdMs: o.holdMs === undefined ? 60_000 : o.holdMs,
    ...(o.mapId ? { mapId: o.mapId } : {}),
  };
  return new RelayHarness({
    engine,
    ...(o.autoConnect !== undefined ? { autoConnect: o.autoConnect } : {}),
    ...(o.server !== undefined ? { server: o.server } : {}),
  });
}

const ME: ClientFacts = { transport: 'tcp', uid: 1000, peer: '127.0.0.1:40000' };
const OTHER: ClientFacts = { transport: 'tcp', uid: 1001, peer: '127.0.0.1:40001' };

const INIT = 'cmd=init pmi_version=1 pmi_subversion=1';
const STARTUP = [INIT, 'cmd=get_maxes', 'cmd=get_appnum', 'cmd=get_my_kvsname', 'cmd=get_universe_size'];
const PUT_A1 = 'cmd=put kvsname=kvs_upstream key=a value=1';
const PUT_A2 = 'cmd=put kvsname=kvs_upstream key=a value=2';
const GET_A = 'cmd=get kvsname=kvs_upstream key=a';
const BARRIER = 'cmd=barrier_in';
const FINALIZE = 'cmd=finalize';

/** The four lines a client gets for its initack. */
const initackLines = (rank: number, size: number, appnum = 0, debug = 0) => [
  `cmd=initack rc=0 rank=${rank} size=${size} appnum=${appnum} debug=${debug}`,
  `cmd=set size=${size}`,
  `cmd=set rank=${rank}`,
  `cmd=set debug=${debug}`,
];

/** Connect a client and send its PMI_PORT handshake; returns the client and what it got at once. */
function join(h: RelayHarness, pmiid: number, facts: ClientFacts = ME): { c: ClientId; got: string[] } {
  const c = h.connect(facts);
  h.line(c, `cmd=initack pmiid=${pmiid}`);
  return { c, got: h.take(c) };
}

/** Send a line and return the client's answer lines (if any came at once). */
function ask(h: RelayHarness, c: ClientId, line: string): string[] {
  h.line(c, line);
  return h.take(c);
}

const upstreamSends = (actions: readonly RelayAction[]) => actions.filter((a) => a.kind === 'upstream-send');
const count = (lines: readonly string[], line: string) => lines.filter((l) => l === line).length;

// ---- handshake, forwarding, lock-step -----------------------------------------------------------

t.test('socket upstream: the client initack opens a session and is answered after the upstream handshake', (t) => {
  const h = relay({ autoConnect: false, server: false });
  const c = h.connect(ME);
  const opened = h.line(c, 'cmd=initack pmiid=2');
  t.same(
    opened.filter((a) => a.kind === 'upstream-open'),
    [{ kind: 'upstream-open', session: 2, upstreamId: 2 }],
    'upstream-open for the PMI_ID',
  );
  t.same(h.eventsOf('session-opened'), [{ type: 'session-opened', session: 2, upstreamId: 2, client: c }]);
  t.same(h.upstream(2), [], 'nothing sent upstream before it connected');
  t.equal(h.state(2), 'opening');

  h.upstreamConnect(2);
  t.same(h.upstream(2), ['cmd=initack pmiid=2'], 'initack sent upstream once connected');
  t.same(h.take(c), [], 'client not answered yet');

  // The upstream gives another rank and size than the PMI_ID suggests: they are what the client gets.
  const handshake = ['cmd=initack rc=0 rank=5 size=8 appnum=1 debug=0', 'cmd=set size=8', 'cmd=set rank=5', 'cmd=set debug=0'];
  for (const line of handshake.slice(0, 3)) {
    h.upstreamLine(2, line);
    t.same(h.take(c), [], `still waiting after ${line}`);
    t.equal(h.engine.identityOf(2), null, 'identity unknown until the handshake completed');
  }
  h.upstreamLine(2, handshake[3] as string);
  t.same(h.take(c), initackLines(5, 8, 1), 'client answered with the upstream rank/size');
  t.same(h.eventsOf('handshaken'), [{ type: 'handshaken', session: 2, rank: 5, size: 8 }]);
  t.same(h.engine.identityOf(2), { rank: 5, size: 8, appnum: 1, debug: 0 });
  t.equal(h.state(2), 'ready');
  t.same(h.sent.get(c)?.length, 4, 'exactly one answer');
  t.end();
});

t.test('hydra ≤4.0 style bare initack line: rank/size come from the set lines', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 0);
  for (const line of ['cmd=initack', 'cmd=set size=3', 'cmd=set rank=2', 'cmd=set debug=1']) h.upstreamLine(0, line);
  t.same(h.take(c), initackLines(2, 3, 0, 1));
  t.end();
});

t.test('requests are forwarded byte-exact and replies delivered byte-exact', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 1);
  for (const line of initackLines(1, 2)) h.upstreamLine(1, line);
  t.same(h.take(c), initackLines(1, 2));

  const odd = ['cmd=put  kvsname=k key=a value=b ', 'cmd=get kvsname=k\tkey=a', 'cmd=frobnicate x=ÿ'];
  const replies = ['cmd=put_result rc=0 msg=success', 'cmd=get_result rc=0 found=TRUE value=b', 'cmd=frobnicate_result rc=0 x=\xa0'];
  odd.forEach((line, i) => {
    const acts = h.line(c, line);
    t.same(upstreamSends(acts), [{ kind: 'upstream-send', session: 1, data: `${line}\n` }], `forwarded as it came: ${JSON.stringify(line)}`);
    t.same(h.take(c), [], 'no answer before the upstream replied');
    h.upstreamLine(1, replies[i] as string);
    t.same(h.take(c), [replies[i]], 'reply delivered as it came');
  });
  t.end();
});

t.test('lock-step: a second request waits for the first reply', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 0);
  for (const line of initackLines(0, 2)) h.upstreamLine(0, line);
  h.take(c);

  h.line(c, GET_A);
  h.line(c, BARRIER);
  h.line(c, 'cmd=get kvsname=kvs_upstream key=b');
  t.same(h.upstream(0).slice(1), [GET_A], 'only the first request went upstream');
  h.upstreamLine(0, 'cmd=get_result rc=0 value=1');
  t.same(h.upstream(0).slice(1), [GET_A, BARRIER], 'the second went after the first reply');
  t.same(h.take(c), ['cmd=get_result rc=0 value=1']);
  h.upstreamLine(0, 'cmd=barrier_out rc=0');
  t.same(h.upstream(0).slice(1), [GET_A, BARRIER, 'cmd=get kvsname=kvs_upstream key=b']);
  h.upstreamLine(0, 'cmd=get_result rc=1');
  t.same(h.take(c), ['cmd=barrier_out rc=0', 'cmd=get_result rc=1'], 'replies in order');
  t.end();
});

t.test('a whole rank through the scripted server', (t) => {
  const h = relay();
  const { c, got } = join(h, 3);
  t.same(got, initackLines(3, 4));
  t.same(ask(h, c, INIT), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1']);
  t.same(ask(h, c, 'cmd=get_maxes'), ['cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024']);
  t.same(ask(h, c, 'cmd=get_my_kvsname'), ['cmd=my_kvsname rc=0 kvsname=kvs_upstream']);
  t.same(ask(h, c, PUT_A1), ['cmd=put_result rc=0']);
  t.same(ask(h, c, BARRIER), [], 'barrier waits');
  h.release(3);
  t.same(h.take(c), ['cmd=barrier_out rc=0']);
  t.same(ask(h, c, GET_A), ['cmd=get_result rc=0 value=1']);
  t.same(ask(h, c, FINALIZE), ['cmd=finalize_ack rc=0']);
  t.same(h.serverGot.get(3), [INIT, 'cmd=get_maxes', 'cmd=get_my_kvsname', PUT_A1, BARRIER, GET_A, FINALIZE]);
  t.equal(h.closedByEngine.get(c), 'finalized');
  t.equal(h.upstreams.get(3)?.closedByEngine, 'finalized');
  t.equal(h.engine.openSessions, 0);
  t.end();
});

// ---- upstream on an inherited fd -----------------------------------------------------------------

t.test('fd upstream: no handshake upstream; a client bound by facts.pmiid sends init directly', (t) => {
  const identity = { rank: 3, size: 6, appnum: 0, debug: 0 };
  const h = relay({ upstream: { mode: 'fd', identity } });
  const c = h.connect({ transport: 'fd', pmiid: 0, peer: 'pid 42' });
  t.same(
    h.actions.filter((a) => a.kind === 'upstream-open'),
    [{ kind: 'upstream-open', session: 0, upstreamId: 0 }],
  );
  t.same(h.eventsOf('handshaken'), [{ type: 'handshaken', session: 0, rank: 3, size: 6 }], 'ready as soon as connected');
  t.same(h.upstream(0), [], 'no initack upstream');
  t.same(h.take(c), [], 'a bound client gets no unsolicited handshake');
  t.same(ask(h, c, INIT), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1']);
  t.same(h.upstream(0), [INIT], 'init forwarded as the first upstream line');
  t.same(h.engine.identityOf(0), identity);
  t.end();
});

t.test('fd upstream: a PMI_PORT client gets its initack from PMI_RANK/PMI_SIZE once the upstream is up', (t) => {
  const identity = { rank: 3, size: 6, appnum: 2, debug: 1 };
  const h = relay({ upstream: { mode: 'fd', identity }, autoConnect: false });
  const { c, got } = join(h, 7);
  t.same(got, [], 'waits for the upstream');
  h.upstreamConnect(7);
  t.same(h.take(c), initackLines(3, 6, 2, 1));
  t.same(h.upstream(7), []);
  t.end();
});

t.test('socket upstream, client bound by facts.pmiid: its init waits for the upstream handshake', (t) => {
  const h = relay({ autoConnect: false });
  const c = h.connect({ transport: 'fd', pmiid: 1 });
  h.line(c, INIT);
  t.same(h.upstream(1), [], 'nothing upstream before it connected');
  h.upstreamConnect(1);
  t.same(h.upstream(1), ['cmd=initack pmiid=1', INIT], 'init went after the handshake');
  t.same(h.take(c), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1'], 'no initack lines for a bound client');
  t.end();
});

// ---- prepare ------------------------------------------------------------------------------------

t.test('prepare opens a session with no client; a later client attaches', (t) => {
  const h = relay();
  h.prepare(4);
  t.same(h.eventsOf('session-opened'), [{ type: 'session-opened', session: 4, upstreamId: 4, client: null }]);
  t.same(h.upstream(4), ['cmd=initack pmiid=4']);
  t.equal(h.state(4), 'waiting');
  t.same(h.engine.identityOf(4), { rank: 4, size: 4, appnum: 0, debug: 0 });
  t.same(h.prepare(4), [], 'preparing again does nothing');

  const c = h.connect({ transport: 'fd', pmiid: 4 });
  t.equal(h.state(4), 'ready');
  t.same(h.eventsOf('taken-over'), [{ type: 'taken-over', session: 4, client: c, previous: null, wasHeld: false }]);
  t.same(ask(h, c, INIT), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1']);
  t.equal(h.actions.filter((a) => a.kind === 'upstream-open').length, 1, 'no second upstream');
  t.end();
});

t.test('prepare: a PMI_PORT client attaching to a waiting session is answered at once', (t) => {
  const h = relay();
  h.prepare(2);
  const { got } = join(h, 2);
  t.same(got, initackLines(2, 4));
  t.equal(h.state(2), 'ready');
  t.end();
});

t.test('prepare of an unmapped PMI_ID opens nothing', (t) => {
  const h = relay({ mapId: (id) => (id < 2 ? id : undefined) });
  h.prepare(5);
  t.equal(h.upstreams.size, 0);
  t.match(h.eventsOf('protocol-error'), [{ session: 5, message: /not served/ }]);
  t.end();
});

// ---- refusals and mapping -----------------------------------------------------------------------

t.test('first line not initack (and no facts.pmiid) is refused with a reply and a close', (t) => {
  for (const [line, reply] of [
    [INIT, /^cmd=response_to_init rc=-1 msg=\S+$/],
    ['cmd=get_maxes', /^cmd=error rc=-1 msg=\S+$/],
    ['garbage', /^cmd=error rc=-1 msg=\S+$/],
  ] as const) {
    const h = relay();
    const c = h.connect(ME);
    h.line(c, line);
    const got = h.take(c);
    t.equal(got.length, 1, `one reply to ${line}`);
    t.match(got[0], reply);
    t.ok(h.closedByEngine.has(c), 'closed');
    t.match(h.eventsOf('refused'), [{ client: c, code: 'E_NO_PMIID' }]);
    t.equal(h.upstreams.size, 0, 'no session');
    t.same(h.line(c, 'cmd=initack pmiid=0'), [], 'later lines of a refused client are ignored');
  }
  t.end();
});

t.test('initack without a numeric pmiid is refused', (t) => {
  const h = relay();
  const c = h.connect(ME);
  h.line(c, 'cmd=initack pmiid=x1');
  t.match(h.take(c), [/^cmd=initack rc=-1 msg=initack_needs_a_numeric_pmiid$/]);
  t.match(h.eventsOf('refused'), [{ code: 'E_BAD_PMIID' }]);
  t.ok(h.closedByEngine.has(c));
  t.end();
});

t.test('an unknown pmiid (mapId → undefined) is refused', (t) => {
  const h = relay({ mapId: (id) => (id < 2 ? id : undefined) });
  const { c, got } = join(h, 5);
  t.same(got, ['cmd=initack rc=-1 msg=no_session_for_pmiid_5']);
  t.ok(h.closedByEngine.has(c));
  t.match(h.eventsOf('refused'), [{ client: c, code: 'E_UNKNOWN_PMIID' }]);
  const bound = h.connect({ transport: 'fd', pmiid: 9 });
  t.same(h.take(bound), ['cmd=error rc=-1 msg=no_session_for_pmiid_9'], 'a bound client is refused in cmd=error');
  t.ok(h.closedByEngine.has(bound));
  t.equal(h.upstreams.size, 0);
  t.end();
});

t.test('id mapping with an offset maps the upstream pmiid; the session keeps the client PMI_ID', (t) => {
  const h = relay({ mapId: (id) => id + 100, server: { identity: (n) => ({ rank: n - 100, size: 2 }) } });
  const { c, got } = join(h, 1);
  t.same(h.actions.filter((a) => a.kind === 'upstream-open'), [{ kind: 'upstream-open', session: 1, upstreamId: 101 }]);
  t.same(h.upstream(1), ['cmd=initack pmiid=101']);
  t.same(got, initackLines(1, 2));
  t.same(h.engine.sessionStates(), [{ session: 1, state: 'ready', client: c, rank: 1 }]);
  t.end();
});

// ---- hold ---------------------------------------------------------------------------------------

t.test('disconnect before finalize: held, with a timer of holdMs', (t) => {
  const h = relay({ holdMs: 30_000 });
  const { c } = join(h, 0);
  ask(h, c, INIT);
  const acts = h.close(c, 'EOF');
  t.same(h.eventsOf('held'), [{ type: 'held', session: 0, holdMs: 30_000, reason: 'EOF' }]);
  t.same(acts.filter((a) => a.kind === 'timer-set'), [{ kind: 'timer-set', session: 0, ms: 30_000 }]);
  t.equal(acts.filter((a) => a.kind === 'upstream-close').length, 0, 'the upstream stays open');
  t.equal(h.state(0), 'held');
  t.equal(h.engine.openSessions, 1);
  t.end();
});

t.test('holdMs 0: the disconnect closes the upstream at once', (t) => {
  const h = relay({ holdMs: 0 });
  const { c } = join(h, 0);
  const acts = h.close(c);
  t.match(acts.filter((a) => a.kind === 'upstream-close'), [{ session: 0, reason: /hold 0/ }]);
  t.equal(acts.filter((a) => a.kind === 'timer-set').length, 0);
  t.equal(h.eventsOf('held').length, 0);
  t.equal(h.state(0), 'closed');
  const again = join(h, 0);
  t.match(again.got, [/^cmd=initack rc=-1 msg=session_0_is_closed$/], 'a closed session cannot be joined');
  t.match(h.eventsOf('refused'), [{ code: 'E_SESSION_OVER' }]);
  t.end();
});

t.test('holdMs null: held with no timer', (t) => {
  const h = relay({ holdMs: null });
  const { c } = join(h, 0);
  const acts = h.close(c);
  t.same(h.eventsOf('held'), [{ type: 'held', session: 0, holdMs: null, reason: 'peer closed the connection' }]);
  t.equal(acts.filter((a) => a.kind === 'timer-set' || a.kind === 'upstream-close').length, 0);
  t.equal(h.state(0), 'held');
  t.end();
});

t.test('hold expiry closes the upstream so the server sees a failed rank', (t) => {
  const h = relay({ holdMs: 500 });
  const { c } = join(h, 0);
  t.same(h.fire(0), [], 'a timer on a session that is not held does nothing');
  h.close(c);
  const acts = h.fire(0);
  t.match(h.eventsOf('hold-expired'), [{ session: 0, message: /did not reconnect within the hold time \(500 ms\)/ }]);
  t.match(acts.filter((a) => a.kind === 'upstream-close'), [{ session: 0 }]);
  t.equal(h.state(0), 'closed');
  t.same(h.fire(0), [], 'a second expiry does nothing');
  t.match(join(h, 0).got, [/^cmd=initack rc=-1/], 'too late to take it over');
  t.end();
});

t.test('a client gone while the upstream handshake is still running leaves the session held', (t) => {
  const h = relay({ autoConnect: false });
  const { c } = join(h, 0);
  h.close(c);
  t.equal(h.state(0), 'held');
  h.upstreamConnect(0);
  t.equal(h.state(0), 'held', 'still held after the handshake');
  const { got } = join(h, 0);
  t.same(got, initackLines(0, 4), 'the next client gets the handshake answer');
  t.equal(h.state(0), 'ready');
  t.end();
});

// ---- takeover -----------------------------------------------------------------------------------

t.test('takeover after a disconnect: the hold timer is cleared, the new client answered from the session', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a.c, INIT);
  h.close(a.c);
  const opens = h.actions.filter((x) => x.kind === 'upstream-open').length;
  const c = h.connect(ME);
  const acts = h.line(c, 'cmd=initack pmiid=0');
  t.same(acts.filter((x) => x.kind === 'timer-clear'), [{ kind: 'timer-clear', session: 0 }]);
  t.same(h.eventsOf('taken-over'), [{ type: 'taken-over', session: 0, client: c, previous: null, wasHeld: true }]);
  t.same(h.take(c), initackLines(0, 4), 'same handshake answer');
  t.same(upstreamSends(acts), [], 'nothing sent upstream');
  t.equal(h.actions.filter((x) => x.kind === 'upstream-open').length, opens, 'same upstream connection');
  t.equal(h.state(0), 'ready');
  t.equal(h.timers.size, 0);
  t.end();
});

t.test('takeover while the old connection still looks alive (half-open): the newer wins', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a.c, INIT);
  const b = h.connect(ME);
  h.line(b, 'cmd=initack pmiid=0');
  t.match(h.closedByEngine.get(a.c), /replaced by a newer connection for PMI_ID 0/);
  t.same(h.eventsOf('taken-over'), [{ type: 'taken-over', session: 0, client: b, previous: a.c, wasHeld: false }]);
  t.same(h.take(b), initackLines(0, 4));
  t.equal(h.actions.filter((x) => x.kind === 'timer-clear').length, 0);

  t.same(h.line(a.c, GET_A), [], 'stragglers from the old connection are ignored');
  const closing = h.close(a.c);
  t.equal(closing.length, 0, 'the old connection closing does not hold the session');
  t.equal(h.state(0), 'ready');
  t.same(ask(h, b, GET_A), ['cmd=get_result rc=1'], 'the new client carries on');
  t.end();
});

t.test('takeover by another uid is refused; the owner keeps the session', (t) => {
  const h = relay();
  const a = join(h, 0, ME);
  const b = join(h, 0, OTHER);
  t.same(b.got, ['cmd=initack rc=-1 msg=pmiid_0_belongs_to_another_user']);
  t.ok(h.closedByEngine.has(b.c));
  t.notOk(h.closedByEngine.has(a.c), 'the owner is not touched');
  t.match(h.eventsOf('refused'), [{ client: b.c, code: 'E_WRONG_UID' }]);
  t.same(ask(h, a.c, INIT), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1']);

  h.close(a.c);
  const c = join(h, 0, OTHER);
  t.match(c.got, [/^cmd=initack rc=-1/], 'also refused while the session is held');
  t.equal(h.state(0), 'held');
  t.end();
});

t.test('a prepared session belongs to the uid of the first client that attached', (t) => {
  const h = relay();
  h.prepare(0);
  const a = h.connect({ transport: 'unix', uid: 1000, pmiid: 0 });
  ask(h, a, INIT);
  h.close(a);
  const b = join(h, 0, OTHER);
  t.match(b.got, [/^cmd=initack rc=-1 msg=pmiid_0_belongs_to_another_user$/], 'another uid cannot take it over');
  const c = join(h, 0, ME);
  t.same(c.got, initackLines(0, 4), 'the same uid can');
  t.end();
});

// ---- what a taken-over session answers itself -----------------------------------------------------

t.test('after a takeover, invariant queries are answered from the session', (t) => {
  for (const how of ['after a disconnect', 'over a half-open connection'] as const) {
    const h = relay();
    const a = join(h, 0);
    const answers = STARTUP.map((l) => ask(h, a.c, l));
    if (how === 'after a disconnect') h.close(a.c);
    const b = join(h, 0);
    const before = h.upstream(0).length;
    STARTUP.forEach((l, i) => t.same(ask(h, b.c, l), answers[i], `${how}: ${l} answered as before`));
    t.equal(h.upstream(0).length, before, `${how}: nothing sent upstream`);
    t.same(
      h.eventsOf('answered-locally').map((e) => e.cmd),
      STARTUP.map((l) => /^cmd=(\S+)/.exec(l)?.[1]),
    );
  }
  t.end();
});

t.test('a failed invariant query is not remembered', (t) => {
  let calls = 0;
  const h = relay({ server: { reply: (line) => (line.startsWith('cmd=get_appnum') ? `cmd=appnum rc=${calls++ === 0 ? -1 : 0} appnum=0` : null) } });
  const a = join(h, 0);
  t.same(ask(h, a.c, 'cmd=get_appnum'), ['cmd=appnum rc=-1 appnum=0']);
  t.same(ask(h, a.c, 'cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'asked upstream again');
  t.same(ask(h, a.c, 'cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'now from the session');
  t.equal(count(h.serverGot.get(0) ?? [], 'cmd=get_appnum'), 2);
  t.end();
});

for (const how of ['after a disconnect', 'over a half-open connection'] as const) {
  t.test(`the in-flight barrier_in re-sent by the new client (${how}) is not sent twice; the reply comes once`, (t) => {
    const h = relay();
    const a = join(h, 0);
    ask(h, a.c, INIT);
    t.same(ask(h, a.c, BARRIER), []);
    if (how === 'after a disconnect') h.close(a.c);
    const b = join(h, 0);
    const acts = h.line(b.c, BARRIER);
    t.same(upstreamSends(acts), [], 'not sent upstream again');
    t.match(h.eventsOf('replayed'), [{ session: 0, what: /barrier_in \(waiting for the reply already asked for\)/ }]);
    t.same(h.take(b.c), []);
    h.release(0);
    t.same(h.take(b.c), ['cmd=barrier_out rc=0'], 'the new client gets the reply');
    t.same(h.take(a.c), [], 'the old one gets nothing');
    t.equal(count(h.serverGot.get(0) ?? [], BARRIER), 1, 'the server saw one barrier_in');
    t.same(ask(h, b.c, GET_A), ['cmd=get_result rc=1'], 'the next request goes on normally');
    t.same(h.take(b.c), [], 'no second barrier_out');
    t.end();
  });
}

t.test('a restarted rank re-running its start-up does not wait behind, nor re-send, the in-flight barrier', (t) => {
  const h = relay();
  const a = join(h, 0);
  const answers = [...STARTUP, PUT_A1].map((l) => ask(h, a.c, l));
  ask(h, a.c, BARRIER);
  h.close(a.c);
  const b = join(h, 0);
  [...STARTUP, PUT_A1].forEach((l, i) => t.same(ask(h, b.c, l), answers[i], `${l} answered at once`));
  t.same(upstreamSends(h.line(b.c, BARRIER)), []);
  h.release(0);
  t.same(h.take(b.c), ['cmd=barrier_out rc=0']);
  t.same(h.serverGot.get(0), [...STARTUP, PUT_A1, BARRIER], 'the server saw every request once');
  t.end();
});

t.test('a reply that arrived while no client was connected is kept and delivered exactly once', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a.c, BARRIER);
  h.close(a.c);
  const arrived = h.release(0);
  t.equal(arrived.filter((x) => x.kind === 'client-send').length, 0, 'nobody to deliver it to');
  t.equal(h.state(0), 'held');
  const b = join(h, 0);
  const acts = h.line(b.c, BARRIER);
  t.same(upstreamSends(acts), [], 'not asked again');
  t.same(h.take(b.c), ['cmd=barrier_out rc=0'], 'the kept reply');
  t.match(h.eventsOf('replayed'), [{ what: /reply kept while disconnected/ }]);

  // The next barrier_in is a new barrier: it goes upstream.
  t.equal(upstreamSends(h.line(b.c, BARRIER)).length, 1, 'a later identical request is forwarded');
  t.same(h.take(b.c), []);
  h.release(0);
  t.same(h.take(b.c), ['cmd=barrier_out rc=0']);
  t.equal(count(h.serverGot.get(0) ?? [], BARRIER), 2);
  t.end();
});

t.test('a reply kept for a half-open client that is then replaced is delivered once to its successor', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a.c, BARRIER);
  const b = join(h, 0); // replaces a (half-open); b has not re-sent yet
  h.release(0);
  t.same(h.take(a.c), [], 'not written into the replaced connection');
  t.same(h.take(b.c), [], 'not pushed unasked');
  t.same(ask(h, b.c, BARRIER), ['cmd=barrier_out rc=0']);
  t.equal(count(h.serverGot.get(0) ?? [], BARRIER), 1);
  t.end();
});

t.test('after a takeover, reads pass a kept reply; a write voids it', (t) => {
  const h = relay();
  const a = join(h, 0);
  ask(h, a.c, PUT_A1);
  ask(h, a.c, BARRIER);
  h.close(a.c);
  h.release(0);
  const b = join(h, 0);
  const acts = h.line(b.c, GET_A);
  t.equal(upstreamSends(acts).length, 1, 'a read goes upstream');
  t.same(h.take(b.c), ['cmd=get_result rc=0 value=1'], 'and gets its own reply, not the kept one');
  t.same(h.eventsOf('protocol-error'), [], 'the kept reply survives a read (MPICH asks PMI_process_mapping before its barrier)');
  t.same(upstreamSends(h.line(b.c, BARRIER)), [], 'the re-sent barrier_in is not sent upstream again');
  t.same(h.take(b.c), ['cmd=barrier_out rc=0'], 'it gets the kept reply');
  // a write instead of the kept request: the client has moved on
  const c = join(h, 1);
  ask(h, c.c, BARRIER);
  h.close(c.c);
  h.release(1);
  const d = join(h, 1);
  t.equal(upstreamSends(h.line(d.c, PUT_A2)).length, 1, 'a put goes upstream');
  t.match(h.eventsOf('protocol-error'), [{ session: 1, message: /dropped the reply kept for "cmd=barrier_in"/ }]);
  t.equal(upstreamSends(h.line(d.c, BARRIER)).length, 1, 'a barrier_in now is a new request');
  t.end();
});

t.test('an identical put already acknowledged is answered locally; a different value is forwarded', (t) => {
  const h = relay();
  const a = join(h, 0);
  t.same(ask(h, a.c, PUT_A1), ['cmd=put_result rc=0']);
  h.close(a.c);
  const b = join(h, 0);
  const acts = h.line(b.c, PUT_A1);
  t.same(upstreamSends(acts), [], 'no duplicate put upstream');
  t.same(h.take(b.c), ['cmd=put_result rc=0']);
  t.match(h.eventsOf('answered-locally'), [{ cmd: /^put/ }]);
  const changed = h.line(b.c, PUT_A2);
  t.same(upstreamSends(changed), [{ kind: 'upstream-send', session: 0, data: `${PUT_A2}\n` }], 'a new value goes upstream');
  t.same(h.take(b.c), ['cmd=put_result rc=0']);
  t.equal(h.kvs.get('a'), '2');
  t.equal(upstreamSends(h.line(b.c, PUT_A1)).length, 1, 'the old value again is a change too');
  t.end();
});

t.test('a put the upstream refused is not remembered as acknowledged', (t) => {
  const h = relay({ server: { reply: (line) => (line.startsWith('cmd=put') ? 'cmd=put_result rc=-1 msg=duplicate_key' : null) } });
  const a = join(h, 0);
  t.same(ask(h, a.c, PUT_A1), ['cmd=put_result rc=-1 msg=duplicate_key']);
  t.equal(upstreamSends(h.line(a.c, PUT_A1)).length, 1, 'asked again');
  t.end();
});

// ---- finalize -----------------------------------------------------------------------------------

t.test('finalize: the ack is delivered, the session finalized, client and upstream closed', (t) => {
  const h = relay();
  const { c } = join(h, 0);
  ask(h, c, INIT);
  const acts = h.line(c, FINALIZE);
  t.same(h.take(c), ['cmd=finalize_ack rc=0']);
  t.same(h.eventsOf('finalized'), [{ type: 'finalized', session: 0 }]);
  t.same(acts.filter((a) => a.kind === 'client-close'), [{ kind: 'client-close', client: c, reason: 'finalized' }]);
  t.same(acts.filter((a) => a.kind === 'upstream-close'), [{ kind: 'upstream-close', session: 0, reason: 'finalized' }]);
  t.equal(h.state(0), 'finalized');
  t.equal(h.engine.openSessions, 0);
  t.same(h.close(c), [], 'the client going away afterwards holds nothing');
  t.same(h.upstreamClose(0), [], 'nor does the server closing');
  t.match(join(h, 0).got, [/^cmd=initack rc=-1 msg=session_0_is_finalized$/]);
  t.end();
});

t.test('a finalize ack kept while disconnected can still be collected by a reconnecting client', (t) => {
  const h = relay({ server: { deferred: new Set(['finalize']) } });
  const a = join(h, 0);
  ask(h, a.c, INIT);
  ask(h, a.c, FINALIZE);
  h.close(a.c);
  t.equal(h.state(0), 'held');
  h.release(0);
  t.equal(h.state(0), 'finalized', 'finalized upstream');
  const b = join(h, 0);
  t.same(b.got, initackLines(0, 4), 'the reconnecting client is admitted');
  const acts = h.line(b.c, FINALIZE);
  t.same(upstreamSends(acts), [], 'finalize not sent twice');
  t.same(h.take(b.c), ['cmd=finalize_ack rc=0']);
  t.equal(h.closedByEngine.get(b.c), 'finalized');
  t.equal(h.upstreams.get(0)?.closedByEngine, 'finalized');
  t.match(join(h, 0).got, [/^cmd=initack rc=-1 msg=session_0_is_finalized$/], 'collected once');
  t.same(h.fire(0), [], 'the old hold timer firing now does nothing');
  t.end();
});

t.test('after finalize, a request queued behind it and stray upstream lines go nowhere', (t) => {
  const h = relay({ server: { deferred: new Set(['finalize']) } });
  const { c } = join(h, 0);
  h.line(c, FINALIZE);
  h.line(c, GET_A); // not lock-step: queued behind the finalize
  const acts = h.release(0); // the harness throws on an upstream-send after upstream-close
  t.same(h.take(c), ['cmd=finalize_ack rc=0']);
  t.same(upstreamSends(acts), [], 'the queued request is void');
  t.same(h.upstreamLine(0, 'cmd=error rc=-1 msg=late').filter((a) => a.kind === 'client-send'), [], 'nothing for the finalized client');
  t.end();
});

t.test('a session closed before its upstream connected sends nothing on it', (t) => {
  const h = relay({ holdMs: 0, autoConnect: false });
  const c = h.connect({ transport: 'fd', pmiid: 0 });
  h.close(c);
  t.equal(h.state(0), 'closed');
  t.same(h.upstreamConnect(0), [], 'no initack on a connection already closed');
  t.end();
});

// ---- upstream failures --------------------------------------------------------------------------

t.test('the upstream closing unexpectedly closes the client with a reason', (t) => {
  const h = relay();
  const { c } = join(h, 0);
  ask(h, c, BARRIER);
  const acts = h.upstreamClose(0, 'ECONNRESET');
  t.match(acts.filter((a) => a.kind === 'client-close'), [{ client: c, reason: /the upstream server closed PMI_ID 0's connection \(ECONNRESET\)/ }]);
  t.match(h.eventsOf('session-closed'), [{ session: 0, reason: /ECONNRESET/ }]);
  t.equal(h.state(0), 'closed');
  t.same(h.line(c, GET_A), [], 'later lines are ignored');
  t.match(join(h, 0).got, [/^cmd=initack rc=-1 msg=session_0_is_closed$/]);
  t.end();
});

t.test('the upstream closing a held session closes it for good', (t) => {
  const h = relay();
  const a = join(h, 0);
  h.close(a.c);
  h.upstreamClose(0);
  t.equal(h.state(0), 'closed');
  t.match(join(h, 0).got, [/^cmd=initack rc=-1/]);
  t.same(h.fire(0), [], 'the hold timer firing later does nothing');
  t.end();
});

t.test('upstream handshake refused: waiting clients get initack rc=-1 and are closed', (t) => {
  const h = relay({ server: { identity: (n) => (n === 9 ? undefined : { rank: n, size: 4 }) } });
  const { c, got } = join(h, 9);
  t.same(got, ['cmd=initack rc=-1 msg=no_rank_for_9'], "the upstream's reason reaches the client");
  t.ok(h.closedByEngine.has(c));
  t.match(h.eventsOf('protocol-error'), [{ session: 9, message: /upstream refused PMI_ID 9: no_rank_for_9/ }]);
  t.match(h.actions.filter((a) => a.kind === 'upstream-close'), [{ session: 9 }]);
  t.match(h.eventsOf('session-closed'), [{ session: 9, refused: true }]);
  t.equal(h.state(9), undefined, 'a refused session is forgotten (relay-hardening.test.ts)');
  t.end();
});

t.test('upstream handshake refused after a takeover while opening: only the current client is answered', (t) => {
  const h = relay({ autoConnect: false, server: { identity: () => undefined } });
  const a = join(h, 3);
  const b = join(h, 3);
  t.ok(h.closedByEngine.has(a.c), 'the older connection was replaced');
  h.upstreamConnect(3); // the harness throws if the replaced connection is written to
  t.match(h.take(b.c), [/^cmd=initack rc=-1 msg=\S+$/]);
  t.ok(h.closedByEngine.has(b.c));
  t.end();
});

t.test('a malformed upstream handshake fails the session', (t) => {
  for (const lines of [['cmd=set size=4'], ['cmd=initack rc=0', 'cmd=set rank=1'], ['cmd=initack rc=0', 'cmd=set size=4', 'cmd=set rank=x']]) {
    const h = relay({ server: false });
    const { c } = join(h, 0);
    for (const l of lines) h.upstreamLine(0, l);
    t.same(h.take(c), ['cmd=initack rc=-1 msg=upstream_refused_the_handshake'], `after ${JSON.stringify(lines)}`);
    t.ok(h.closedByEngine.has(c));
    t.equal(h.state(0), 'closed');
  }
  t.end();
});

t.test('an unsolicited upstream line is passed to the client; overlong lines are reported', (t) => {
  const h = relay();
  const { c } = join(h, 0);
  h.upstreamLine(0, 'cmd=error rc=-1 msg=server_is_shutting_down');
  t.same(h.take(c), ['cmd=error rc=-1 msg=server_is_shutting_down']);
  t.match(h.eventsOf('protocol-error'), [{ message: /unsolicited upstream line/ }]);
  h.upstreamInput(0, { kind: 'overlong', prefix: 'cmd=get_result rc=0 value=xxx', length: 5000 });
  t.same(h.take(c), [], 'an overlong upstream line is dropped');
  h.input(c, { kind: 'overlong', prefix: 'cmd=put kvsname=k key=a value=yyy', length: 9000 });
  t.match(h.take(c), [/^cmd=error rc=8 msg=line_of_9000_bytes_too_long_for_the_relay_\(put\)$/]);
  t.same(h.upstream(0).slice(1), [], 'nothing of it went upstream');
  t.end();
});

// ---- abort, spawn -------------------------------------------------------------------------------

t.test('abort is forwarded and expects no reply', (t) => {
  const h = relay();
  const { c } = join(h, 0);
  const line = 'cmd=abort exitcode=3 message=boom';
  t.same(upstreamSends(h.line(c, line)), [{ kind: 'upstream-send', session: 0, data: `${line}\n` }]);
  t.same(h.take(c), []);
  t.equal(upstreamSends(h.line(c, GET_A)).length, 1, 'the next request is not queued behind it');
  t.same(h.take(c), ['cmd=get_result rc=1']);
  t.end();
});

const spawnBlock = formatSpawn({
  segments: [
    { nprocs: 2, execname: './a.out', args: ['x'], preput: new Map([['k', 'v']]), info: new Map([['wdir', '/tmp']]) },
    { nprocs: 1, execname: './b.out', args: [], preput: new Map(), info: new Map() },
  ],
})
  .slice(0, -1)
  .split('\n');

t.test('mcmd=spawn block (two segments) forwarded line by line, reply delivered after the last endcmd', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 0);
  for (const l of initackLines(0, 2)) h.upstreamLine(0, l);
  h.take(c);
  for (const l of spawnBlock) h.line(c, l);
  t.same(h.upstream(0).slice(1), spawnBlock, 'every line forwarded as it came');
  t.same(h.take(c), []);
  h.upstreamLine(0, 'cmd=spawn_result rc=0');
  t.same(h.take(c), ['cmd=spawn_result rc=0']);
  t.equal(upstreamSends(h.line(c, GET_A)).length, 1, 'the session is free again');
  t.end();
});

t.test('a spawn block sent while a request is in flight waits its turn (lock-step)', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 0);
  for (const l of initackLines(0, 2)) h.upstreamLine(0, l);
  h.take(c);
  h.line(c, GET_A);
  for (const l of spawnBlock) h.line(c, l);
  t.same(h.upstream(0).slice(1), [GET_A], 'the block waits');
  h.upstreamLine(0, 'cmd=get_result rc=1');
  t.same(h.take(c), ['cmd=get_result rc=1'], 'the get reply goes to the get');
  t.same(h.upstream(0).slice(1), [GET_A, ...spawnBlock], 'then the block, whole and in order');
  h.upstreamLine(0, 'cmd=spawn_result rc=0');
  t.same(h.take(c), ['cmd=spawn_result rc=0']);
  t.end();
});

t.test('a single-line cmd=spawn is an ordinary command: one reply, the session goes on', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 0);
  for (const l of initackLines(0, 2)) h.upstreamLine(0, l);
  h.take(c);
  h.line(c, 'cmd=spawn nprocs=1');
  h.upstreamLine(0, 'cmd=spawn_result rc=-1 msg=unknown_command');
  t.same(h.take(c), ['cmd=spawn_result rc=-1 msg=unknown_command']);
  h.line(c, FINALIZE);
  t.same(h.upstream(0).slice(-1), [FINALIZE], 'the next request goes upstream at once (not swallowed as a block line)');
  h.upstreamLine(0, 'cmd=finalize_ack rc=0');
  t.same(h.take(c), ['cmd=finalize_ack rc=0'], 'finalize acknowledged');
  t.end();
});

t.test('an mcmd= block refused before its endcmd: the early answer is the reply, the endcmd awaits nothing', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 0);
  for (const l of initackLines(0, 2)) h.upstreamLine(0, l);
  h.take(c);
  h.line(c, 'mcmd=x');
  h.upstreamLine(0, 'cmd=spawn_result rc=-1 msg=malformed_spawn');
  t.same(h.take(c), ['cmd=spawn_result rc=-1 msg=malformed_spawn']);
  h.line(c, 'nprocs=1');
  h.line(c, 'endcmd');
  h.line(c, GET_A);
  t.same(h.upstream(0).slice(-3), ['nprocs=1', 'endcmd', GET_A], 'the get is not held behind the refused block');
  h.upstreamLine(0, 'cmd=get_result rc=1');
  t.same(h.take(c), ['cmd=get_result rc=1'], 'and its reply reaches the client');
  t.end();
});

t.test('the second segment of a block refused early: its endcmd awaits nothing', (t) => {
  const h = relay({ server: false });
  const { c } = join(h, 0);
  for (const l of initackLines(0, 2)) h.upstreamLine(0, l);
  h.take(c);
  const endOfFirst = spawnBlock.indexOf('endcmd');
  for (const l of spawnBlock.slice(0, endOfFirst + 2)) h.line(c, l); // first segment + mcmd=spawn
  h.upstreamLine(0, 'cmd=spawn_result rc=-1 msg=bad_segment');
  t.same(h.take(c), ['cmd=spawn_result rc=-1 msg=bad_segment']);
  for (const l of spawnBlock.slice(endOfFirst + 2)) h.line(c, l);
  h.line(c, GET_A);
  t.same(h.upstream(0).slice(-1), [GET_A], 'the session is free after the last endcmd');
  t.end();
});

// ---- property -----------------------------------------------------------------------------------

type Op =
  | { readonly k: 'connect'; readonly transport: 'tcp' | 'unix' | 'fd'; readonly pmiid: number | null; readonly uid: number | null }
  | { readonly k: 'line'; readonly who: number; readonly line: string }
  | { readonly k: 'overlong'; readonly who: number }
  | { readonly k: 'close'; readonly who: number }
  | { readonly k: 'up-connect'; readonly s: number }
  | { readonly k: 'up-line'; readonly s: number; readonly line: string }
  | { readonly k: 'up-overlong'; readonly s: number }
  | { readonly k: 'up-close'; readonly s: number }
  | { readonly k: 'timer'; readonly s: number }
  | { readonly k: 'prepare'; readonly s: number }
  | { readonly k: 'release'; readonly s: number };

const IDS = 4;
const clientLineArb = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: IDS - 1 }).map((n) => `cmd=initack pmiid=${n}`) },
  {
    weight: 10,
    arbitrary: fc.constantFrom(
      ...STARTUP,
      PUT_A1,
      PUT_A2,
      GET_A,
      BARRIER,
      BARRIER,
      FINALIZE,
      'cmd=abort exitcode=1',
      'cmd=initack pmiid=x',
      'cmd=initack',
      ...spawnBlock,
      'endcmd',
      '',
      'garbage',
      'cmd=',
      '      cmd=fullinit',
    ),
  },
);
const upLineArb = fc.constantFrom(
  'cmd=initack rc=0 rank=0 size=2 appnum=0 debug=0',
  'cmd=initack',
  'cmd=set size=2',
  'cmd=set rank=1',
  'cmd=set debug=0',
  'cmd=initack rc=-1 msg=no',
  'cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1',
  'cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024',
  'cmd=put_result rc=0',
  'cmd=get_result rc=0 value=1',
  'cmd=barrier_out rc=0',
  'cmd=finalize_ack rc=0',
  'cmd=spawn_result rc=0',
  'cmd=error rc=-1 msg=x',
  '',
  'garbage',
);
const sArb = fc.nat({ max: IDS - 1 });
const whoArb = fc.nat({ max: 30 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('connect' as const),
      transport: fc.constantFrom('tcp' as const, 'unix' as const, 'fd' as const),
      pmiid: fc.option(sArb, { freq: 3 }),
      uid: fc.option(fc.constantFrom(1000, 1001), { freq: 4 }),
    }),
  },
  { weight: 10, arbitrary: fc.record({ k: fc.constant('line' as const), who: whoArb, line: clientLineArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('overlong' as const), who: whoArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('close' as const), who: whoArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('up-connect' as const), s: sArb }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('up-line' as const), s: sArb, line: upLineArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('up-overlong' as const), s: sArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('up-close' as const), s: sArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('timer' as const), s: sArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('prepare' as const), s: sArb }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('release' as const), s: sArb }) },
);

const configArb = fc.record({
  mode: fc.constantFrom('socket' as const, 'fd' as const),
  holdMs: fc.constantFrom(0, 25, null),
  mapping: fc.constantFrom('identity' as const, 'offset' as const, 'partial' as const),
  scripted: fc.boolean(),
});

interface Config {
  readonly mode: 'socket' | 'fd';
  readonly holdMs: number | null;
  readonly mapping: 'identity' | 'offset' | 'partial';
  readonly scripted: boolean;
}

function runScenario(config: Config, ops: readonly Op[]): void {
  const mapId = config.mapping === 'offset' ? (n: number) => n + 10 : config.mapping === 'partial' ? (n: number) => (n === IDS - 1 ? undefined : n) : undefined;
  const h = relay({
    upstream: config.mode === 'socket' ? { mode: 'socket' } : { mode: 'fd', identity: { rank: 0, size: 1, appnum: 0, debug: 0 } },
    holdMs: config.holdMs,
    ...(mapId ? { mapId } : {}),
    autoConnect: config.scripted,
    server: config.scripted ? { deferred: new Set(['barrier_in', 'finalize']), identity: (n) => (n === 2 ? undefined : { rank: n % 4, size: 4 }) } : false,
  });
  const clients: ClientId[] = [];
  const pick = (who: number): ClientId | undefined => (clients.length ? clients[who % clients.length] : undefined);
  for (const op of ops) {
    switch (op.k) {
      case 'connect': {
        const facts: ClientFacts = { transport: op.transport, ...(op.pmiid !== null ? { pmiid: op.pmiid } : {}), ...(op.uid !== null ? { uid: op.uid } : {}) };
        clients.push(h.connect(facts));
        break;
      }
      case 'line':
      case 'overlong': {
        const c = pick(op.who);
        if (c === undefined || h.gone.has(c)) break; // the host reads nothing after a close
        if (op.k === 'line') h.line(c, op.line);
        else h.input(c, { kind: 'overlong', prefix: 'cmd=put kvsname=k key=a value=', length: 70_000 });
        break;
      }
      case 'close': {
        const c = pick(op.who);
        if (c !== undefined && !h.gone.has(c)) h.close(c);
        break;
      }
      case 'up-connect': {
        const u = h.upstreams.get(op.s);
        if (u && !u.connected && u.closedByServer === null) h.upstreamConnect(op.s);
        break;
      }
      case 'up-line':
      case 'up-overlong':
      case 'release': {
        const u = h.upstreams.get(op.s);
        if (!u?.connected || u.closedByServer !== null) break;
        if (op.k === 'up-line') h.upstreamLine(op.s, op.line);
        else if (op.k === 'up-overlong') h.upstreamInput(op.s, { kind: 'overlong', prefix: 'cmd=get_result rc=0 value=', length: 70_000 });
        else if (h.heldReplies(op.s).length > 0) h.release(op.s);
        break;
      }
      case 'up-close': {
        const u = h.upstreams.get(op.s);
        if (u && u.closedByServer === null) h.upstreamClose(op.s, 'server went away');
        break;
      }
      case 'timer':
        if (h.timers.has(op.s)) h.fire(op.s);
        break;
      case 'prepare':
        h.prepare(op.s);
        break;
    }
    // The engine's view agrees with the host's: a session's client is one the host still has.
    for (const s of h.engine.sessionStates()) {
      if (s.client !== null && (!h.isKnownClient(s.client) || h.gone.has(s.client))) throw new Error(`session ${s.session} names client ${s.client}, which the host closed or never had`);
      if (!h.upstreams.has(s.session)) throw new Error(`session ${s.session} exists without an upstream-open`);
    }
    for (const e of h.events) {
      if ('client' in e && e.client !== null && e.client !== undefined && !h.isKnownClient(e.client)) throw new Error(`event ${e.type} names unknown client ${e.client}`);
    }
    if (h.engine.openSessions > h.engine.sessionStates().length) throw new Error('more open sessions than sessions');
  }
}

t.test('property: random interleavings never throw and every action refers to known clients and sessions', (t) => {
  fc.assert(
    fc.property(configArb, fc.array(opArb, { minLength: 1, maxLength: 80, size: 'max' }), (config, ops) => runScenario(config, ops)),
    params,
  );
  t.pass(`${numRuns} random scenarios`);
  t.end();
});

t.test('property: a scripted rank per PMI_ID, disconnected and replaced at random, sees each reply at most once', (t) => {
  // Each PMI_ID runs its program (startup, put, barrier, get, finalize) over a sequence of
  // connections; a connection may drop (or be left half-open) at any point, and its successor
  // re-sends the request in flight. Replies reach the rank at most once per request sent, and
  // the server sees each put/barrier_in/finalize at most once per PMI_ID.
  const program = [...STARTUP, PUT_A1, BARRIER, GET_A, FINALIZE];
  const stepArb = fc.record({ s: fc.nat({ max: 2 }), what: fc.constantFrom('next' as const, 'next' as const, 'next' as const, 'drop' as const, 'half-open' as const, 'release' as const) });
  fc.assert(
    fc.property(fc.array(stepArb, { minLength: 1, maxLength: 120, size: 'max' }), (steps) => {
      const h = relay({ holdMs: null });
      type Rank = { client: ClientId | null; pc: number; waiting: boolean; abandoned: ClientId[]; lost: boolean };
      const rank: Rank[] = [0, 1, 2].map(() => ({ client: null, pc: 0, waiting: false, abandoned: [], lost: false }));
      for (const { s, what } of steps) {
        const r = rank[s] as Rank;
        // A reply written into a half-open connection before the takeover is lost (the relay cannot
        // know); the rank re-sends, and the server then sees that request twice.
        for (const old of r.abandoned) if (h.take(old).some((l) => !l.startsWith('cmd=set') && !l.startsWith('cmd=initack'))) r.lost = true;
        if (r.pc >= program.length) continue;
        if (what === 'release') {
          if (h.heldReplies(s).length > 0) h.release(s);
        } else if (what === 'drop' || what === 'half-open') {
          if (r.client !== null && what === 'drop') h.close(r.client);
          else if (r.client !== null) r.abandoned.push(r.client);
          r.client = null;
        } else if (r.client === null) {
          const { c, got } = join(h, s);
          if (h.closedByEngine.has(c)) throw new Error(`rank ${s} could not reconnect: ${JSON.stringify(got)}`);
          r.client = c;
          if (r.waiting) h.line(c, program[r.pc] as string); // re-send the request in flight
        } else if (!r.waiting) {
          h.line(r.client, program[r.pc] as string);
          r.waiting = true;
        }
        // Collect answers.
        if (r.client !== null) {
          const got = h.take(r.client).filter((l) => !l.startsWith('cmd=set') && !l.startsWith('cmd=initack'));
          if (got.length > 1) throw new Error(`rank ${s} got ${got.length} replies at once: ${JSON.stringify(got)}`);
          if (got.length === 1) {
            if (!r.waiting) throw new Error(`rank ${s} got an unasked reply ${got[0]}`);
            r.waiting = false;
            r.pc++;
          }
        }
      }
      for (const s of [0, 1, 2]) {
        if (rank[s]?.lost) continue;
        const server = h.serverGot.get(s) ?? [];
        for (const line of [PUT_A1, BARRIER, FINALIZE, ...STARTUP]) {
          if (count(server, line) > 1) throw new Error(`server saw ${line} ${count(server, line)} times for PMI_ID ${s}`);
        }
      }
    }),
    params,
  );
  t.pass('no duplicate upstream request, no duplicate reply');
  t.end();
});
