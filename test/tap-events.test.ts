// Tap events without sockets: bus events through TapRecorder (parsing, latency, seq, time,
// redaction, flattening) and TapState (the snapshot a new observer gets).
import t from 'tap';
import type { BusEvent, Leg } from '../src/host/bus.js';
import { redactValues, TapRecorder, type TapEvent, type TapLineEvent, type TapStateEvent } from '../src/tap/event.js';
import { TapState } from '../src/tap/state.js';

type LineOpts = { conn?: number; session?: number; rank?: number };
const line = (leg: Leg, text: string, o: LineOpts = {}): Extract<BusEvent, { type: 'line' }> => ({ type: 'line', leg, line: text, ...o });

function recordLine(rec: TapRecorder, leg: Leg, text: string, o: LineOpts = {}): TapLineEvent {
  const ev = rec.record(line(leg, text, o));
  if (ev?.kind !== 'line') throw new Error(`expected a line event, got ${JSON.stringify(ev)}`);
  return ev;
}

function recordState(rec: TapRecorder, bus: BusEvent): TapStateEvent {
  const ev = rec.record(bus);
  if (ev?.kind !== 'state') throw new Error(`expected a state event, got ${JSON.stringify(ev)}`);
  return ev;
}

/** Busy-wait so that two events are measurably apart. */
function spin(ms: number): void {
  const end = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
  while (process.hrtime.bigint() < end);
}

t.test('a line is parsed into cmd and attrs', async (t) => {
  const rec = new TapRecorder('kvs_1_0', 'server', false);
  const put = recordLine(rec, 'client->server', 'cmd=put kvsname=kvs_1_0 key=k0 value=a=b', { conn: 1, rank: 0 });
  t.match(put, { v: 2, kind: 'line', job: 'kvs_1_0', leg: 'client->server', wire: 'pmi1', line: 'cmd=put kvsname=kvs_1_0 key=k0 value=a=b', cmd: 'put', conn: 1, rank: 0 });
  t.same({ ...put.attrs }, { kvsname: 'kvs_1_0', key: 'k0', value: 'a=b' }, 'attributes in wire order, a value may hold =');
  t.notOk('session' in put, 'no session on a server connection');

  const spawn = recordLine(rec, 'client->server', 'mcmd=spawn', { conn: 1 });
  t.equal(spawn.cmd, 'mcmd=spawn', 'a spawn block is named by its head');
  const junk = recordLine(rec, 'client->server', 'hello there', { conn: 1 });
  t.equal(junk.cmd, '', 'not PMI-1: empty cmd');
  t.same({ ...junk.attrs }, {}, 'and no attrs');
  t.equal(junk.line, 'hello there', 'the line itself is kept');

  const relayed = recordLine(rec, 'relay->upstream', 'cmd=barrier_in', { session: 3, rank: 2 });
  t.match(relayed, { session: 3, pmiid: 3, rank: 2 }, 'a relay session is also its pmiid');
  t.notOk('conn' in relayed);
});

t.test('a __proto__ attribute stays an inert key', async (t) => {
  const rec = new TapRecorder('job', 'server', false);
  const ev = recordLine(rec, 'client->server', 'cmd=put kvsname=job key=__proto__ value=x __proto__=polluted constructor=c toString=s', { conn: 1 });
  t.equal(Object.getPrototypeOf(ev.attrs), null, 'attrs has no prototype');
  t.ok(Object.hasOwn(ev.attrs, '__proto__'), '__proto__ is an own key');
  t.equal(ev.attrs['__proto__'], 'polluted');
  t.same(Object.entries(ev.attrs), [
    ['kvsname', 'job'],
    ['key', '__proto__'],
    ['value', 'x'],
    ['__proto__', 'polluted'],
    ['constructor', 'c'],
    ['toString', 's'],
  ], 'every attribute an own key, in wire order');
  t.equal(({} as Record<string, unknown>)['polluted'], undefined, 'Object.prototype untouched');
  const wire = JSON.parse(JSON.stringify(ev)) as { attrs: Record<string, string> };
  t.ok(Object.hasOwn(wire.attrs, '__proto__'), 'serialised as a plain key, and parsed back as one');
  t.equal(wire.attrs['__proto__'], 'polluted');
});

t.test('latency: only on the first reply line after a request on the same hop and connection', async (t) => {
  const rec = new TapRecorder('job', 'server', false);
  const req = recordLine(rec, 'client->server', 'cmd=initack pmiid=0', { conn: 1 });
  t.notOk('latencyNs' in req, 'requests have none');
  spin(2);
  const reply = recordLine(rec, 'server->client', 'cmd=initack rc=0 rank=0 size=2 appnum=0 debug=0', { conn: 1, rank: 0 });
  t.type(reply.latencyNs, 'number');
  t.equal(reply.latencyNs, Number(BigInt(reply.t) - BigInt(req.t)), 'exactly the time between the two events');
  t.ok((reply.latencyNs ?? 0) >= 2_000_000, 'at least the 2 ms waited');
  for (const set of ['cmd=set size=2', 'cmd=set rank=0', 'cmd=set debug=0']) {
    t.notOk('latencyNs' in recordLine(rec, 'server->client', set, { conn: 1, rank: 0 }), `${set}: not a reply of its own`);
  }

  // another connection's reply does not take this one's request
  recordLine(rec, 'client->server', 'cmd=get_maxes', { conn: 1, rank: 0 });
  t.notOk('latencyNs' in recordLine(rec, 'server->client', 'cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024', { conn: 2 }), 'conn 2 asked nothing');
  t.type(recordLine(rec, 'server->client', 'cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024', { conn: 1, rank: 0 }).latencyNs, 'number', 'conn 1 still gets its own');
  t.notOk('latencyNs' in recordLine(rec, 'server->client', 'cmd=error rc=-1', { conn: 1, rank: 0 }), 'an unsolicited line after the reply has none');

  // on a relay: each hop measures itself
  const relay = new TapRecorder('up', 'relay', false);
  recordLine(relay, 'client->relay', 'cmd=initack pmiid=4', { conn: 7 }); // its session is not known yet
  t.type(recordLine(relay, 'relay->client', 'cmd=initack rc=0 rank=4 size=8 appnum=0 debug=0', { conn: 7, session: 4, rank: 4 }).latencyNs, 'number', 'the client handshake is measured although the session was learned in between');
  recordLine(relay, 'client->relay', 'cmd=barrier_in', { conn: 7, session: 4, rank: 4 });
  recordLine(relay, 'relay->upstream', 'cmd=barrier_in', { session: 4, rank: 4 });
  const upstream = recordLine(relay, 'upstream->relay', 'cmd=barrier_out rc=0', { session: 4, rank: 4 });
  const toClient = recordLine(relay, 'relay->client', 'cmd=barrier_out rc=0', { conn: 7, session: 4, rank: 4 });
  t.type(upstream.latencyNs, 'number', 'upstream hop');
  t.type(toClient.latencyNs, 'number', 'client hop');
  t.ok((toClient.latencyNs ?? 0) >= (upstream.latencyNs ?? 0), 'the client waited at least as long as the upstream took');
  t.notOk('latencyNs' in recordLine(relay, 'upstream->relay', 'cmd=barrier_out rc=0', { session: 5 }), 'another session asked nothing');

  // the metrics' view of it: which command a reply answers, before record() consumes it
  recordLine(relay, 'relay->upstream', 'cmd=get kvsname=k key=a', { session: 4, rank: 4 });
  const reply2 = line('upstream->relay', 'cmd=get_result rc=0 value=1', { session: 4, rank: 4 });
  t.equal(relay.requestOf(reply2), 'get');
  relay.record(reply2);
  t.equal(relay.requestOf(reply2), undefined, 'consumed');
  t.equal(relay.requestOf(line('relay->upstream', 'cmd=get', { session: 4 })), undefined, 'a request answers nothing');
});

t.test('seq strictly increasing over live events; t a decimal ns string; per-observer messages number nothing', async (t) => {
  const rec = new TapRecorder('job', 'server', false);
  const hello0 = rec.hello();
  t.match(hello0, { kind: 'hello', seq: 0, role: 'server', redact: false, schema: 2, v: 2, job: 'job' }, 'before any event: seq 0');
  const bus: BusEvent[] = [
    { type: 'listening', pmiPort: '127.0.0.1:1' },
    { type: 'engine', event: { type: 'connected', conn: 1, facts: { transport: 'tcp' } } },
    line('client->server', 'cmd=initack pmiid=0', { conn: 1 }),
    { type: 'engine', event: { type: 'bound', conn: 1, rank: 0, how: 'initack' } },
    line('server->client', 'cmd=initack rc=0 rank=0 size=1 appnum=0 debug=0', { conn: 1, rank: 0 }),
    { type: 'transport-error', message: 'not for observers' },
    { type: 'closed', conn: 1, reason: 'eof', rank: 0 },
  ];
  const evs = bus.map((b) => rec.record(b)).filter((e): e is TapEvent => e !== null);
  t.equal(evs.length, bus.length - 1, 'transport errors are not tap events');
  t.same(evs.map((e) => e.seq), [1, 2, 3, 4, 5, 6], 'seq 1, 2, 3… without holes');
  t.equal(rec.lastSeq, 6);
  const nowNs = BigInt(Date.now()) * 1_000_000n;
  let prev = 0n;
  for (const e of evs) {
    t.match(e.t, /^[1-9]\d{18}$/, 'decimal ns (19 digits in this century)');
    const ns = BigInt(e.t);
    t.ok(ns >= prev, 'never goes back');
    t.ok(ns > nowNs - 5_000_000_000n && ns < nowNs + 5_000_000_000n, 'wall-clock time');
    prev = ns;
  }
  t.ok(BigInt(evs[4]?.t ?? '0') - BigInt(evs[0]?.t ?? '0') < 5_000_000_000n);
  const ns1 = BigInt(recordLine(rec, 'client->server', 'cmd=get_maxes', { conn: 1 }).t);
  const ns2 = BigInt(recordLine(rec, 'client->server', 'cmd=get_maxes', { conn: 1 }).t);
  t.ok(ns2 > ns1, 'sub-millisecond resolution: two events in a row differ');

  // hello, snapshot and gap belong to one observer: they take no seq of the shared stream
  const hello = rec.hello();
  const snap = rec.snapshot({ ranks: [] });
  t.equal(hello.seq, 8, 'hello: the last event the observer will not receive live');
  t.equal(snap.seq, 8, 'snapshot: the last event it includes');
  t.equal(rec.gap(3, 8).seq, 8, 'gap: the last event it stands for');
  t.match(rec.gap(3, 8), { kind: 'gap', dropped: 3 });
  t.equal(rec.record(line('client->server', 'cmd=barrier_in', { conn: 1 }))?.seq, 9, 'the next live event follows on');
});

t.test('--tap-redact values: value= hidden in line and attrs for put and get_result', async (t) => {
  const rec = new TapRecorder('job', 'server', true);
  t.match(rec.hello(), { redact: true });
  const put = recordLine(rec, 'client->server', 'cmd=put kvsname=job key=card value=secret-business-card', { conn: 1, rank: 0 });
  t.equal(put.line, 'cmd=put kvsname=job key=card value=<redacted:20>');
  t.same({ ...put.attrs }, { kvsname: 'job', key: 'card', value: '<redacted:20>' }, 'the key stays visible');
  const got = recordLine(rec, 'server->client', 'cmd=get_result rc=0 value=secret-business-card', { conn: 1, rank: 0 });
  t.equal(got.line, 'cmd=get_result rc=0 value=<redacted:20>');
  t.same({ ...got.attrs }, { rc: '0', value: '<redacted:20>' });
  const hydra = recordLine(rec, 'upstream->relay', 'cmd=get_result rc=0 msg=success value=a b c', { session: 0 });
  t.equal(hydra.line, 'cmd=get_result rc=0 msg=success value=<redacted:5>', 'a value with spaces (flux) is hidden whole');
  t.notMatch(JSON.stringify([put, got, hydra]), /secret|a b c/, 'nowhere in the events');
  const ask = recordLine(rec, 'client->server', 'cmd=get kvsname=job key=value', { conn: 1 });
  t.equal(ask.line, 'cmd=get kvsname=job key=value', 'no value= attribute: unchanged');
  t.equal(redactValues('cmd=put kvsname=job key=k value='), 'cmd=put kvsname=job key=k value=<redacted:0>');
  t.equal(redactValues('cmd=put kvsname=job key=k\tvalue=xyz'), 'cmd=put kvsname=job key=k\tvalue=<redacted:3>');
  t.equal(redactValues('cmd=put kvsname=job key=xvalue=1'), 'cmd=put kvsname=job key=xvalue=1', 'only a value= attribute');
  t.equal(redactValues('cmd=get_result rc=0 value=secret found=TRUE'), 'cmd=get_result rc=0 value=<redacted:6> found=TRUE', "hydra 4.1's trailing found= stays, and the length is the value's");

  const plain = new TapRecorder('job', 'server', false);
  t.equal(recordLine(plain, 'client->server', 'cmd=put kvsname=job key=card value=v', { conn: 1 }).line, 'cmd=put kvsname=job key=card value=v', 'without --tap-redact: as on the wire');
});

t.test('state events are flattened', async (t) => {
  const rec = new TapRecorder('job', 'server', false);
  const connected = recordState(rec, { type: 'engine', event: { type: 'connected', conn: 1, facts: { transport: 'unix', uid: 1000, peer: 'pid 7 uid 1000' } } });
  t.match(connected, { kind: 'state', event: 'connected', conn: 1, 'facts.transport': 'unix', 'facts.uid': 1000, 'facts.peer': 'pid 7 uid 1000' });
  t.notOk('facts' in connected, 'no nested object');
  t.notOk('type' in connected, 'the bus type became `event`');
  const finished = recordState(rec, { type: 'engine', event: { type: 'job-finished', status: { ok: false, exitCode: 3, reason: 'rank 1 aborted', rank: 1 } } });
  t.match(finished, { event: 'job-finished', 'status.ok': false, 'status.exitCode': 3, 'status.reason': 'rank 1 aborted', 'status.rank': 1 });
  t.notOk('status' in finished);
  t.match(recordState(rec, { type: 'engine', event: { type: 'barrier', entered: 1, size: 2, epoch: 0, rank: 1 } }), { event: 'barrier', entered: 1, size: 2, epoch: 0, rank: 1 });
  const taken = recordState(rec, { type: 'relay', event: { type: 'taken-over', session: 2, client: 5, previous: null, wasHeld: true } });
  t.match(taken, { event: 'taken-over', session: 2, client: 5, wasHeld: true });
  t.equal(taken['previous'], null, 'null stays a value');
  t.match(recordState(rec, { type: 'peer-refused', peer: 'tap observer unix', reason: 'uid 1001 may not observe this job', uid: 1001 }), { event: 'refused-peer', peer: 'tap observer unix', reason: 'uid 1001 may not observe this job', uid: 1001 });
  t.notOk('uid' in recordState(rec, { type: 'peer-refused', peer: '10.0.0.1:5', reason: 'remote' }), 'uid only when known');
  t.match(recordState(rec, { type: 'listening', pmiPort: 'unix:///x' }), { event: 'listening', pmiPort: 'unix:///x' });
  t.match(recordState(rec, { type: 'closed', conn: 4, reason: 'eof', rank: 3 }), { event: 'closed', conn: 4, reason: 'eof', rank: 3 });
  for (const e of [connected, finished, taken]) t.match(e, { v: 2, job: 'job', kind: 'state' }, 'common fields not overwritten');
});

/** Bus events through a recorder into a state, as the tap server does. */
function feed(role: 'server' | 'relay', events: BusEvent[]): TapState {
  const rec = new TapRecorder('job', role, false);
  const state = new TapState();
  for (const b of events) {
    const ev = rec.record(b);
    if (ev) state.apply(ev);
  }
  return state;
}

t.test('snapshot of a server: ranks, barrier, keys, outcome', async (t) => {
  const events: BusEvent[] = [];
  for (const rank of [1, 0]) {
    events.push(
      { type: 'engine', event: { type: 'connected', conn: rank + 1, facts: { transport: 'tcp' } } },
      line('client->server', `cmd=initack pmiid=${rank}`, { conn: rank + 1 }),
      { type: 'engine', event: { type: 'bound', conn: rank + 1, rank, how: 'initack' } },
      line('client->server', 'cmd=init pmi_version=1 pmi_subversion=1', { conn: rank + 1, rank }),
      { type: 'engine', event: { type: 'initialized', conn: rank + 1, rank } },
      line('client->server', `cmd=put kvsname=job key=k${rank} value=v`, { conn: rank + 1, rank }),
    );
  }
  events.push(line('client->server', 'cmd=barrier_in', { conn: 2, rank: 1 }), { type: 'engine', event: { type: 'barrier', entered: 1, size: 2, epoch: 0, rank: 1 } });
  const mid = feed('server', events).snapshot();
  t.same(
    mid.ranks.map((r) => [r.rank, r.session, r.state, r.lastCmd]),
    [
      [0, null, 'initialized', 'put'],
      [1, null, 'in-barrier', 'barrier_in'],
    ],
    'sorted by rank, with state and last command',
  );
  t.match(mid.ranks[1]?.since, /^\d+$/);
  t.not(mid.ranks[1]?.since, '0');
  t.same(mid.barrier, { epoch: 0, entered: 1, size: 2 });
  t.equal(mid.kvsKeys, 2, 'keys put so far');
  t.equal(mid.finished, null);

  events.push(
    line('client->server', 'cmd=barrier_in', { conn: 1, rank: 0 }),
    { type: 'engine', event: { type: 'barrier', entered: 2, size: 2, epoch: 0, rank: 0 } },
    { type: 'engine', event: { type: 'barrier-complete', epoch: 1, committed: 2, keys: 3 } },
    line('server->client', 'cmd=barrier_out rc=0', { conn: 1, rank: 0 }),
    line('server->client', 'cmd=barrier_out rc=0', { conn: 2, rank: 1 }),
    { type: 'engine', event: { type: 'finalized', conn: 1, rank: 0, finalized: 1, size: 2 } },
    { type: 'engine', event: { type: 'job-finished', status: { ok: true, exitCode: 0, reason: 'all ranks finalized' } } },
  );
  const end = feed('server', events).snapshot();
  t.same(end.ranks.map((r) => [r.rank, r.state]), [
    [0, 'finalized'],
    [1, 'initialized'],
  ]);
  t.same(end.barrier, { epoch: 1, entered: 0, size: 2 });
  t.equal(end.kvsKeys, 3, 'the server counts its preset key too');
  t.same(end.finished, { 'status.ok': true, 'status.exitCode': 0, 'status.reason': 'all ranks finalized' });
});

t.test('snapshot of a relay: a session view merges with its rank once known, and stays one view', async (t) => {
  const events: BusEvent[] = [
    { type: 'relay', event: { type: 'session-opened', session: 5, upstreamId: 5, client: 1 } },
    { type: 'relay', event: { type: 'session-opened', session: 6, upstreamId: 6, client: 2 } },
    line('relay->upstream', 'cmd=initack pmiid=5', { session: 5 }),
  ];
  const early = feed('relay', events).snapshot();
  t.same(early.ranks.map((r) => [r.rank, r.session, r.state]), [
    [null, 5, 'connecting'],
    [null, 6, 'connecting'],
  ], 'sessions before the upstream named their rank');

  events.push(
    { type: 'relay', event: { type: 'handshaken', session: 5, rank: 2, size: 8 } },
    line('client->relay', 'cmd=init pmi_version=1 pmi_subversion=1', { conn: 1, session: 5, rank: 2 }),
    line('client->relay', 'cmd=barrier_in', { conn: 1, session: 5, rank: 2 }),
  );
  const merged = feed('relay', events).snapshot();
  t.same(merged.ranks.map((r) => [r.rank, r.session, r.state, r.lastCmd]), [
    [2, 5, 'in-barrier', 'barrier_in'],
    [null, 6, 'connecting', ''],
  ], 'session 5 is rank 2 now: one view, ranks first');

  // events that name only the session still find the merged view
  events.push({ type: 'relay', event: { type: 'held', session: 5, holdMs: 1000, reason: 'eof' } });
  t.same(feed('relay', events).snapshot().ranks.map((r) => [r.rank, r.session, r.state]), [
    [2, 5, 'held'],
    [null, 6, 'connecting'],
  ], 'held');
  events.push(
    { type: 'relay', event: { type: 'taken-over', session: 5, client: 3, previous: null, wasHeld: true } },
    line('relay->client', 'cmd=barrier_out rc=0', { conn: 3, session: 5, rank: 2 }),
  );
  t.same(feed('relay', events).snapshot().ranks.map((r) => [r.rank, r.state]), [
    [2, 'initialized'],
    [null, 'connecting'],
  ], 'taken over, then out of the barrier');
  // a client frozen with its reply unread (a checkpoint): stalled, not lost; then it reads it
  events.push({ type: 'relay', event: { type: 'stalled', session: 5, unread: 21 } });
  t.same(feed('relay', events).snapshot().ranks.map((r) => [r.rank, r.state]), [
    [2, 'stalled'],
    [null, 'connecting'],
  ], 'stalled');
  events.push({ type: 'relay', event: { type: 'resumed', session: 5 } });
  t.same(feed('relay', events).snapshot().ranks.map((r) => [r.rank, r.state]), [
    [2, 'connected'],
    [null, 'connecting'],
  ], 'resumed');
  events.push({ type: 'relay', event: { type: 'finalized', session: 5 } }, { type: 'relay', event: { type: 'hold-expired', session: 6, message: 'gone' } });
  const end = feed('relay', events).snapshot();
  t.same(end.ranks.map((r) => [r.rank, r.session, r.state]), [
    [2, 5, 'finalized'],
    [null, 6, 'failed'],
  ], 'still one view per session');
});

t.test('snapshot of a relay: a session the upstream refused leaves no view behind; a failed one stays', async (t) => {
  // Any client may name any PMI_ID: a view kept per refused one grew the relay's tap without bound.
  const events: BusEvent[] = [];
  for (let id = 10; id < 1010; id++) {
    events.push(
      line('client->relay', `cmd=initack pmiid=${id}`, { conn: id }),
      { type: 'relay', event: { type: 'session-opened', session: id, upstreamId: id, client: id } },
      line('relay->upstream', `cmd=initack pmiid=${id}`, { session: id }),
      line('upstream->relay', `cmd=initack rc=-1 msg=no_rank_${id}`, { session: id }),
      line('relay->client', `cmd=initack rc=-1 msg=no_rank_${id}`, { conn: id, session: id }),
      { type: 'relay', event: { type: 'session-closed', session: id, reason: `upstream refused PMI_ID ${id}`, refused: true } },
    );
  }
  events.push(
    { type: 'relay', event: { type: 'session-opened', session: 3, upstreamId: 3, client: 1 } },
    { type: 'relay', event: { type: 'session-closed', session: 3, reason: 'the upstream server closed it' } },
  );
  t.same(feed('relay', events).snapshot().ranks.map((r) => [r.rank, r.session, r.state]), [[null, 3, 'closed']], 'only the session that failed is shown');
});

t.test('schema 2: a PMI-2 frame is a line event with wire pmi2, its command and pairs; --tap-redact values hides its values', async (t) => {
  const rec = new TapRecorder('job', 'server', false);
  const put = rec.record({ type: 'line', leg: 'client->server', wire: 'pmi2', line: 'cmd=kvs-put;key=k0;value=a;;b;', conn: 1, rank: 0 });
  t.match(put, { v: 2, kind: 'line', wire: 'pmi2', cmd: 'kvs-put', line: 'cmd=kvs-put;key=k0;value=a;;b;' });
  t.same(put?.kind === 'line' ? { ...put.attrs } : null, { key: 'k0', value: 'a;b' }, 'pairs unescaped');
  const reply = rec.record({ type: 'line', leg: 'server->client', wire: 'pmi2', line: 'cmd=kvs-put-response;rc=0;', conn: 1, rank: 0 });
  t.match(reply, { wire: 'pmi2', cmd: 'kvs-put-response' });
  t.type(reply?.kind === 'line' ? reply.latencyNs : undefined, 'number', 'latency measured as for PMI-1');
  const pmi1 = rec.record({ type: 'line', leg: 'client->server', line: 'cmd=barrier_in', conn: 2 });
  t.match(pmi1, { wire: 'pmi1', cmd: 'barrier_in' });

  const hidden = new TapRecorder('job', 'server', true);
  const get = hidden.record({ type: 'line', leg: 'server->client', wire: 'pmi2', line: 'cmd=kvs-get-response;rc=0;found=TRUE;value=se;;cret;', conn: 1 });
  t.match(get, { line: 'cmd=kvs-get-response;rc=0;found=TRUE;value=<redacted:7>;' }, 'the unescaped length (se;cret)');
  const spawn = hidden.record({ type: 'line', leg: 'client->server', wire: 'pmi2', line: 'cmd=spawn;ncmds=1;preputcount=1;ppkey0=k;ppval0=secret;subcmd=a;maxprocs=1;infokeycount=1;infokey0=wdir;infoval0=/home/x;', conn: 1 });
  t.match(spawn, { line: 'cmd=spawn;ncmds=1;preputcount=1;ppkey0=k;ppval0=<redacted:6>;subcmd=a;maxprocs=1;infokeycount=1;infokey0=wdir;infoval0=<redacted:7>;' });
  const state = hidden.record({ type: 'relay', event: { type: 'protocol-error', message: 'client 3 speaks PMI-2 ("cmd=kvs-put;key=k;value=secret;")' } });
  t.notMatch(JSON.stringify(state), /secret/, 'a frame quoted in a message is redacted too');
});
