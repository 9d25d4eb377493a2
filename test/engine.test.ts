/**
 * ServerEngine state machine, driven through in-memory connections (test/fixtures/engine-harness.ts).
 * The harness also checks every line the engine sends: `\n`-terminated, strictly parseable (no space
 * inside a value), accepted by decodeReply, rc first — and nothing is sent after a close.
 */
import t from 'tap';
import { LineFramer, formatSpawn } from '../src/protocol/index.js';
import { DEFAULT_MAX_STRIKES, ServerEngine } from '../src/server/index.js';
import { EngineHarness, attrsOf, cmdOf, rcOf } from './fixtures/engine-harness.js';

const INIT = 'cmd=init pmi_version=1 pmi_subversion=1';
const INIT_OK = 'cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1';

// ---- handshake -------------------------------------------------------------------------------------

t.test('initack binds the connection and answers exactly four lines', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const c = h.tcp();
  t.equal(c.rank, undefined, 'unbound before the handshake');
  t.same(c.send('cmd=initack pmiid=1'), ['cmd=initack rc=0 rank=1 size=2 appnum=0 debug=0', 'cmd=set size=2', 'cmd=set rank=1', 'cmd=set debug=0']);
  t.equal(c.rank, 1);
  t.match(h.eventsOf('bound'), [{ conn: c.id, rank: 1, how: 'initack' }]);
  t.same(c.send(INIT), [INIT_OK]);
  t.equal(h.engine.rankStates()[1]?.state, 'initialized');

  const d = new EngineHarness({ size: 4, appnum: 2, debug: 1 }).tcp();
  t.same(d.send('cmd=initack pmiid=3'), ['cmd=initack rc=0 rank=3 size=4 appnum=2 debug=1', 'cmd=set size=4', 'cmd=set rank=3', 'cmd=set debug=1'], 'appnum and debug options');
});

t.test('initack with an unknown pmiid: initack rc≠0 msg=… and close', async (t) => {
  for (const pmiid of ['2', '-1', '99', '123456789012345']) {
    const h = new EngineHarness({ size: 2 });
    const c = h.tcp();
    const got = c.send(`cmd=initack pmiid=${pmiid}`);
    t.equal(got.length, 1, `pmiid=${pmiid}: one line`);
    t.equal(cmdOf(got[0] ?? ''), 'initack');
    t.not(rcOf(got[0] ?? ''), 0, 'rc≠0');
    t.ok(attrsOf(got[0] ?? '').get('msg'), 'carries msg=');
    t.ok(c.closed, 'closed');
    t.match(h.eventsOf('refused'), [{ conn: c.id, code: 'E_UNKNOWN_PMIID' }]);
    t.equal(h.finished, null, 'the job goes on');
    t.same(c.send(INIT), [], 'nothing is answered after the close');
  }
});

t.test('initack for a rank bound to a live connection is refused; the original keeps working', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const orig = h.tcp();
  orig.send('cmd=initack pmiid=0');
  t.same(orig.send(INIT), [INIT_OK]);
  const impostor = h.tcp();
  const got = impostor.send('cmd=initack pmiid=0');
  t.same(got, ['cmd=initack rc=-1 msg=rank_0_is_already_connected']);
  t.ok(impostor.closed);
  t.notOk(orig.closed);
  t.equal(impostor.rank, undefined, 'the impostor never got the rank');
  impostor.disconnect();
  t.equal(h.finished, null, 'losing the refused connection is no failure');
  t.same(orig.send('cmd=get_maxes'), ['cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024']);
  t.equal(h.engine.rankStates()[0]?.conn, orig.id);

  // the same for a rank bound by the launcher's PMI_FD channel
  const fdRank = h.fd(1);
  const other = h.tcp();
  t.same(other.send('cmd=initack pmiid=1'), ['cmd=initack rc=-1 msg=rank_1_is_already_connected']);
  t.ok(other.closed);
  t.same(fdRank.send(INIT), [INIT_OK]);
});

t.test('init without a handshake binds the lowest free rank', async (t) => {
  const h = new EngineHarness({ size: 3 });
  const r0 = h.fd(0);
  const a = h.tcp();
  t.same(a.send(INIT), [INIT_OK]);
  t.equal(a.rank, 1, 'rank 0 is taken by the fd channel: lowest free is 1');
  t.match(h.eventsOf('bound').at(-1), { conn: a.id, rank: 1, how: 'anonymous' });
  const b = h.tcp();
  b.send(INIT);
  t.equal(b.rank, 2);
  const c = h.tcp();
  t.same(c.send(INIT), ['cmd=response_to_init rc=-1 msg=all_ranks_connected'], 'no rank left');
  t.ok(c.closed);
  t.notOk(r0.closed);

  // a rank whose connection left without speaking PMI is free again
  const h2 = new EngineHarness({ size: 2 });
  const quiet = h2.fd(0);
  quiet.disconnect();
  const anon = h2.tcp();
  anon.send(INIT);
  t.equal(anon.rank, 0, 'rank 0 is free again');
});

t.test('initack again before init is answered again; a different pmiid is refused without closing', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const c = h.tcp();
  const four = c.send('cmd=initack pmiid=1');
  t.same(c.send('cmd=initack pmiid=1'), four, 'same four lines');
  const wrong = c.send('cmd=initack pmiid=0');
  t.same(wrong, ['cmd=initack rc=-1 msg=connection_is_already_rank_1']);
  t.notOk(c.closed);
  t.same(c.send(INIT), [INIT_OK]);
  t.match(c.send('cmd=initack pmiid=1'), [/^cmd=initack rc=-1 /], 'after init the handshake is over');
});

t.test('commands before init are answered rc=1 in their own reply', async (t) => {
  const queries: ReadonlyArray<readonly [string, string]> = [
    ['cmd=get_maxes', 'maxes'],
    ['cmd=get_appnum', 'appnum'],
    ['cmd=get_my_kvsname', 'my_kvsname'],
    ['cmd=get_universe_size', 'universe_size'],
    ['cmd=put kvsname=k key=a value=b', 'put_result'],
    ['cmd=get kvsname=k key=a', 'get_result'],
    ['cmd=barrier_in', 'barrier_out'],
    ['cmd=finalize', 'finalize_ack'],
    ['cmd=publish_name service=s port=p', 'publish_result'],
    ['cmd=unpublish_name service=s', 'unpublish_result'],
    ['cmd=lookup_name service=s', 'lookup_result'],
  ];
  const h = new EngineHarness({ size: 2 });
  const unbound = h.tcp();
  const bound = h.fd(0);
  for (const [q, reply] of queries) {
    t.same(unbound.send(q), [`cmd=${reply} rc=1 msg=send_initack_or_init_first`], `unbound: ${q}`);
    t.same(bound.send(q), [`cmd=${reply} rc=1 msg=init_required`], `bound, no init: ${q}`);
  }
  t.notOk(unbound.closed, 'well-formed early commands do not count as garbage');
  t.notOk(bound.closed);
  t.equal(h.engine.barrierEpoch, 0, 'no barrier happened');
  t.equal(h.finished, null);
  t.same(unbound.send('cmd=abort exitcode=9'), [], 'abort from a connection that is no rank: no reply');
  t.equal(h.finished, null, '… and it cannot end the job');
  t.same(bound.send(INIT), [INIT_OK], 'init still works afterwards');
});

t.test('init again after success is answered again', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const c = h.fd(0);
  t.same(c.send(INIT), [INIT_OK]);
  t.same(c.send(INIT), [INIT_OK]);
  t.equal(h.eventsOf('initialized').length, 1, 'initialized once');
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0']);
});

t.test('init versions: 1.0 and 3.x refused, 2.0 switches to PMI-2, 1.1 ok on the same connection, 1.2 gets 1.1', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const c = h.fd(0);
  t.same(c.send('cmd=init pmi_version=1 pmi_subversion=0'), ['cmd=response_to_init rc=-1 msg=pmi_version_1.0_not_supported_need_1.1']);
  t.same(c.send('cmd=init pmi_version=2 pmi_subversion=0'), ['cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0'], 'PMI-2 is served (--pmi-version any)');
  t.same(c.send('cmd=init pmi_version=3 pmi_subversion=0'), ['cmd=response_to_init rc=-1 msg=pmi_version_3.0_not_supported_need_1.1']);
  t.same(c.send('cmd=get_maxes'), ['cmd=maxes rc=1 msg=init_required'], 'a refused init leaves the rank uninitialized');
  t.same(c.send('cmd=init pmi_subversion=2 pmi_version=1'), [INIT_OK], '1.2 is answered with 1.1 (as flux)');
  t.same(c.send(INIT), [INIT_OK]);
  t.notOk(c.closed);
});

t.test('get_maxes, get_appnum, get_my_kvsname, get_universe_size', async (t) => {
  const h = new EngineHarness({ size: 3 });
  const [c] = h.initAll();
  if (!c) return;
  t.same(c.send('cmd=get_maxes'), ['cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024'], 'hydra maxes');
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0']);
  t.same(c.send('cmd=get_my_kvsname'), ['cmd=my_kvsname rc=0 kvsname=kvs_pmibridge_0']);
  t.same(c.send('cmd=get_universe_size'), ['cmd=universe_size rc=0 size=3'], 'universe size defaults to size');
  t.same(c.send('cmd=get_my_kvsname extra=ignored'), ['cmd=my_kvsname rc=0 kvsname=kvs_pmibridge_0'], 'unknown attributes ignored');

  const o = new EngineHarness({ size: 1, appnum: 42, kvsname: 'bleepgorp', universeSize: -1, limits: { kvsnameMax: 64, vallenMax: 512 } });
  const [d] = o.initAll();
  if (!d) return;
  t.same(d.send('cmd=get_maxes'), ['cmd=maxes rc=0 kvsname_max=64 keylen_max=64 vallen_max=512']);
  t.same(d.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=42']);
  t.same(d.send('cmd=get_my_kvsname'), ['cmd=my_kvsname rc=0 kvsname=bleepgorp']);
  t.same(d.send('cmd=get_universe_size'), ['cmd=universe_size rc=0 size=-1'], 'hydra-style -1');
});

t.test('constructor rejects impossible jobs', async (t) => {
  t.throws(() => new ServerEngine({ size: 0 }), TypeError);
  t.throws(() => new ServerEngine({ size: 1.5 }), TypeError);
  t.throws(() => new ServerEngine({ size: 1, kvsname: 'a b' }), TypeError);
  t.throws(() => new ServerEngine({ size: 1, kvsname: '' }), TypeError);
  t.throws(() => new ServerEngine({ size: 1, kvsname: 'k'.repeat(256) }), TypeError, 'kvsname must fit kvsname_max with its NUL');
  t.throws(() => new ServerEngine({ size: 1, limits: { keylenMax: 0 } }), TypeError);
});

// ---- KVS -------------------------------------------------------------------------------------------------

t.test('PMI_process_mapping is preset', async (t) => {
  const [c] = new EngineHarness({ size: 4 }).initAll();
  t.same(c?.send('cmd=get kvsname=kvs_pmibridge_0 key=PMI_process_mapping'), ['cmd=get_result rc=0 value=(vector,(0,1,4))']);
  const [d] = new EngineHarness({ size: 1, processMapping: '(vector,(0,2,1))' }).initAll();
  t.same(d?.send('cmd=get key=PMI_process_mapping'), ['cmd=get_result rc=0 value=(vector,(0,2,1))']);
  const [e] = new EngineHarness({ size: 1, processMapping: null }).initAll();
  t.same(e?.send('cmd=get key=PMI_process_mapping'), ['cmd=get_result rc=4 msg=key_PMI_process_mapping_not_found'], 'null leaves it unset');
});

t.test('a put is visible only after the next barrier, not even to its own rank before', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  t.same(r0.send('cmd=put kvsname=kvs_pmibridge_0 key=-bcast-1-0 value=2F6465762F'), ['cmd=put_result rc=0']);
  t.same(r0.send('cmd=get kvsname=kvs_pmibridge_0 key=-bcast-1-0'), ['cmd=get_result rc=4 msg=key_-bcast-1-0_not_found'], 'own put invisible before the barrier');
  t.same(r1.send('cmd=get kvsname=kvs_pmibridge_0 key=-bcast-1-0'), ['cmd=get_result rc=4 msg=key_-bcast-1-0_not_found']);
  t.same(h.barrier([r0, r1]), [['cmd=barrier_out rc=0'], ['cmd=barrier_out rc=0']]);
  for (const c of [r0, r1]) t.same(c.send('cmd=get kvsname=kvs_pmibridge_0 key=-bcast-1-0'), ['cmd=get_result rc=0 value=2F6465762F']);
  t.same(r1.send('cmd=get kvsname=some_other_kvs key=-bcast-1-0'), ['cmd=get_result rc=0 value=2F6465762F'], 'kvsname is ignored (hydra)');
  t.equal(h.engine.barrierEpoch, 1);
});

t.test('a repeated put: the last value wins', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  t.same(c.send('cmd=put key=k value=first'), ['cmd=put_result rc=0']);
  t.same(c.send('cmd=put key=k value=second-put'), ['cmd=put_result rc=0']);
  h.barrier([c]);
  t.same(c.send('cmd=get key=k'), ['cmd=get_result rc=0 value=second-put']);
  c.send('cmd=put key=k value=third');
  t.same(c.send('cmd=get key=k'), ['cmd=get_result rc=0 value=second-put'], 'the committed value until the next barrier');
  h.barrier([c]);
  t.same(c.send('cmd=get key=k'), ['cmd=get_result rc=0 value=third']);
});

t.test('limits and codes', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  const { keylenMax, vallenMax, kvsnameMax } = h.engine.limits;
  const key = (n: number) => 'k'.repeat(n);
  const val = (n: number) => 'v'.repeat(n);

  t.match(c.send(`cmd=put kvsname=kvs_pmibridge_0 key=${key(keylenMax)} value=x`), [/^cmd=put_result rc=5 msg=key_length_64_exceeds_max_63$/], 'key of keylen_max bytes → 5');
  t.match(c.send(`cmd=get kvsname=kvs_pmibridge_0 key=${key(keylenMax)}`), [/^cmd=get_result rc=5 /], 'get with it → 5');
  t.same(c.send(`cmd=put kvsname=kvs_pmibridge_0 key=${key(keylenMax - 1)} value=x`), ['cmd=put_result rc=0'], 'key of keylen_max-1 bytes is fine');

  t.match(c.send(`cmd=put kvsname=kvs_pmibridge_0 key=big value=${val(vallenMax)}`), [/^cmd=put_result rc=7 msg=value_length_1024_exceeds_max_1023$/], 'value of vallen_max bytes → 7');
  t.same(c.send(`cmd=put kvsname=kvs_pmibridge_0 key=big value=${val(vallenMax - 1)}`), ['cmd=put_result rc=0'], 'value of vallen_max-1 bytes is fine');

  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 value=x'), ['cmd=put_result rc=4 msg=missing_key'], 'missing key → 4');
  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 key=a'), ['cmd=put_result rc=6 msg=missing_value'], 'missing value → 6');
  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 key=empty value='), ['cmd=put_result rc=6 msg=empty_value'], 'empty value → 6 (MPICH >= 4.1 cannot read back value=)');
  t.same(c.send('cmd=get kvsname=kvs_pmibridge_0'), ['cmd=get_result rc=4 msg=missing_key'], 'get without key → 4');
  t.same(c.send('cmd=get kvsname=kvs_pmibridge_0 key=no_such_key'), ['cmd=get_result rc=4 msg=key_no_such_key_not_found'], 'unknown key → 4');
  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 key=sp value=a b'), ['cmd=put_result rc=6 msg=value_contains_a_space'], 'value with a space → 6');
  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 key=cr value=ab\r'), ['cmd=put_result rc=6 msg=value_contains_a_control_character'], 'value with a CR → 6 (it could not be written back)');
  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 key= value=x'), ['cmd=put_result rc=4 msg=empty_key'], 'empty key → 4');
  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 key=PMI_process_mapping value=x'), ['cmd=put_result rc=4 msg=keys_starting_with_PMI_are_reserved'], 'PMI_ keys are reserved');
  t.match(c.send(`cmd=put kvsname=${'n'.repeat(kvsnameMax)} key=a value=x`), [/^cmd=put_result rc=8 /], 'kvsname of kvsname_max bytes → 8');

  h.barrier([c]);
  t.same(c.send(`cmd=get kvsname=kvs_pmibridge_0 key=big`), [`cmd=get_result rc=0 value=${val(vallenMax - 1)}`], 'the vallen_max-1 value round-trips');
  t.same(c.send(`cmd=get kvsname=kvs_pmibridge_0 key=${key(keylenMax - 1)}`), ['cmd=get_result rc=0 value=x']);
  t.same(c.send('cmd=get key=sp'), ['cmd=get_result rc=4 msg=key_sp_not_found'], 'refused puts stored nothing');
  t.same(c.send('cmd=get key=cr'), ['cmd=get_result rc=4 msg=key_cr_not_found']);
  t.same(c.send('cmd=get key=empty'), ['cmd=get_result rc=4 msg=key_empty_not_found']);
  t.notOk(c.closed, 'refused puts are not garbage');
});

t.test('an empty value is refused with rc=6 (MPICH >= 4.1 cannot read value= back)', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  t.same(c.send('cmd=put kvsname=kvs_pmibridge_0 key=k value='), ['cmd=put_result rc=6 msg=empty_value']);
  t.same(c.send('cmd=put key=k value=   '), ['cmd=put_result rc=6 msg=empty_value'], 'trailing blanks only: still empty');
  t.same(h.eventsOf('put'), [], 'nothing stored');
  t.same(c.send('cmd=put key=j value=0'), ['cmd=put_result rc=0'], 'a one-byte value is fine');
  h.barrier([c]);
  t.same(c.send('cmd=get key=k'), ['cmd=get_result rc=4 msg=key_k_not_found'], 'the refused key stays unset');
  t.same(c.send('cmd=get key=j'), ['cmd=get_result rc=0 value=0']);
  t.notOk(c.closed);
});

t.test('__proto__ and friends are ordinary KVS keys', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  for (const k of ['__proto__', 'constructor', 'hasOwnProperty', 'toString']) {
    t.match(c.send(`cmd=get key=${k}`), [/^cmd=get_result rc=4 msg=key_\S+_not_found$/], `${k} not there before`);
    t.same(c.send(`cmd=put key=${k} value=v-${k}`), ['cmd=put_result rc=0']);
  }
  h.barrier([c]);
  for (const k of ['__proto__', 'constructor', 'hasOwnProperty', 'toString']) {
    t.same(c.send(`cmd=get key=${k}`), [`cmd=get_result rc=0 value=v-${k}`]);
  }
  t.equal(h.engine.kvsKeys, 5, '4 keys + PMI_process_mapping');
  t.equal(({} as Record<string, unknown>)['v-__proto__'], undefined);
  t.same(c.send('cmd=publish_name service=__proto__ port=p'), ['cmd=publish_result rc=0']);
  t.same(c.send('cmd=lookup_name service=__proto__'), ['cmd=lookup_result rc=0 port=p']);
});

// ---- barrier -----------------------------------------------------------------------------------------------

t.test('a barrier over N ranks answers all of them when the last one enters', async (t) => {
  const N = 5;
  const h = new EngineHarness({ size: N });
  const ranks = h.initAll();
  for (let round = 1; round <= 3; round++) {
    for (let i = 0; i < N - 1; i++) {
      t.same(ranks[i]?.send('cmd=barrier_in'), [], `round ${round}: rank ${i} waits`);
      t.equal(h.engine.rankStates()[i]?.state, 'in-barrier');
    }
    t.same(ranks[N - 1]?.send('cmd=barrier_in'), ['cmd=barrier_out rc=0'], `round ${round}: the last rank completes it`);
    for (let i = 0; i < N - 1; i++) t.same(ranks[i]?.take(), ['cmd=barrier_out rc=0'], `round ${round}: rank ${i} released`);
    t.equal(h.engine.barrierEpoch, round);
  }
  t.equal(h.eventsOf('barrier-complete').length, 3);
});

t.test('a barrier_in group= (PMI 1.2) is accepted and ignored', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  t.same(c?.send('cmd=barrier_in group=WORLD:0'), ['cmd=barrier_out rc=0']);
});

t.test('a duplicate barrier_in is answered rc≠0; the barrier still completes once', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  t.same(r0.send('cmd=barrier_in'), []);
  const dup = r0.send('cmd=barrier_in');
  t.equal(dup.length, 1);
  t.equal(cmdOf(dup[0] ?? ''), 'barrier_out');
  t.not(rcOf(dup[0] ?? ''), 0, 'rc≠0');
  t.same(dup, ['cmd=barrier_out rc=-1 msg=already_in_barrier']);
  t.same(r1.send('cmd=barrier_in'), ['cmd=barrier_out rc=0']);
  t.same(r0.take(), ['cmd=barrier_out rc=0'], 'exactly one barrier_out rc=0 for the rank');
  t.equal(h.engine.barrierEpoch, 1);
});

t.test('finalize inside a barrier is refused; a barrier that can never complete fails', async (t) => {
  const h = new EngineHarness({ size: 3 });
  const [r0, r1, r2] = h.initAll();
  if (!r0 || !r1 || !r2) return;
  r0.send('cmd=barrier_in');
  t.same(r0.send('cmd=finalize'), ['cmd=finalize_ack rc=-1 msg=finalize_while_in_barrier']);
  t.notOk(r0.closed);
  t.same(r1.send('cmd=finalize'), ['cmd=finalize_ack rc=0']);
  t.same(r0.take(), [], 'still possible: rank 2 may enter');
  t.same(r2.send('cmd=finalize'), ['cmd=finalize_ack rc=0']);
  t.same(r0.take(), ['cmd=barrier_out rc=-1 msg=a_rank_finalized_without_entering_the_barrier'], 'impossible now: failed, not hung');
  t.same(r0.send('cmd=get key=PMI_process_mapping'), ['cmd=get_result rc=0 value=(vector,(0,1,3))'], 'the rank keeps working');
  t.same(r0.send('cmd=finalize'), ['cmd=finalize_ack rc=0']);
  t.match(h.finished, { ok: true, exitCode: 0 });
});

// ---- finalize, abort, disconnect ------------------------------------------------------------------------

t.test('finalize: finalize_ack, close, and the job ends ok when every rank finalized', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  t.same(r0.send('cmd=finalize'), ['cmd=finalize_ack rc=0']);
  t.ok(r0.closed, 'closed after finalize_ack (as hydra)');
  t.equal(r0.closeReason, 'finalized');
  t.equal(h.finished, null, 'not over while rank 1 runs');
  t.same(r0.send('cmd=get_maxes'), [], 'nothing after the close');
  r0.disconnect();
  t.equal(h.finished, null, 'the EOF after finalize is clean');
  t.match(h.eventsOf('disconnected'), [{ conn: r0.id, rank: 0, clean: true }]);
  t.same(r1.send('cmd=finalize'), ['cmd=finalize_ack rc=0']);
  t.same(h.finished, { ok: true, exitCode: 0, reason: 'all 2 ranks finalized' });
  t.same(r1.send('cmd=get_maxes'), []);
  t.same(h.engine.rankStates().map((s) => s.state), ['finalized', 'finalized']);
  const again = h.tcp();
  t.same(again.send('cmd=initack pmiid=1'), [], 'the job is over: input is ignored');
});

t.test('abort: job finished with exitcode & 255, no reply', async (t) => {
  const cases: ReadonlyArray<readonly [string, number, RegExp]> = [
    ['cmd=abort exitcode=3', 3, /rank 0 called abort with exit code 3$/],
    ['cmd=abort exitcode=-1', 255, /exit code -1/],
    ['cmd=abort exitcode=263', 7, /exit code 263/],
    ['cmd=abort exitcode=0', 0, /exit code 0/],
    ['cmd=abort', 1, /exit code 1/],
    ['cmd=abort exit_code=5 error_msg=out of memory on node 3', 5, /exit code 5: out of memory on node 3$/],
    ['cmd=abort exitcode=1 message=abort', 1, /: abort$/],
  ];
  for (const [line, code, reason] of cases) {
    const h = new EngineHarness({ size: 2 });
    const [r0, r1] = h.initAll();
    if (!r0 || !r1) return;
    r1.send('cmd=barrier_in');
    t.same(r0.send(line), [], `${line}: no reply`);
    t.match(h.finished, { ok: false, exitCode: code, rank: 0, reason }, line);
    t.same(r1.take(), [], 'the waiting rank is not answered (the host kills it)');
    t.same(r1.send('cmd=get_maxes'), [], 'input after the end is ignored');
  }
  const early = new EngineHarness({ size: 2 });
  const bound = early.fd(1);
  t.same(bound.send('cmd=abort exitcode=4'), [], 'a bound rank may abort before init');
  t.match(early.finished, { ok: false, exitCode: 4, rank: 1 });
});

t.test('a rank that sent init and disconnects before finalize fails the job with a clear reason', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  r0.send('cmd=barrier_in');
  r1.disconnect();
  t.same(h.finished, {
    ok: false,
    exitCode: 1,
    reason: 'rank 1 closed its PMI connection before finalize (the process died or closed the socket)',
    rank: 1,
  });
  t.match(h.eventsOf('rank-failed'), [{ rank: 1 }]);
  t.match(h.eventsOf('disconnected'), [{ conn: r1.id, rank: 1, clean: false }]);
  t.equal(h.engine.rankStates()[1]?.state, 'failed');
});

t.test('a rank the server closed for bad lines fails the job with that reason, not "it closed its connection"', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0] = h.initAll();
  if (!r0) return;
  for (let i = 0; i < 8; i++) r0.send('garbage');
  t.ok(r0.closed, 'closed after 8 bad lines in a row');
  r0.disconnect();
  t.match(h.finished, { ok: false, exitCode: 1, rank: 0, reason: /^rank 0's PMI connection was closed by the server before finalize: it sent 8 bad lines in a row \(last: / });
});

t.test('a rank that never spoke PMI may disconnect: no failure, and it may come back', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const quiet = h.fd(1);
  const r0 = h.fd(0);
  r0.send(INIT);
  quiet.disconnect();
  t.equal(h.finished, null, 'not a failure');
  t.match(h.eventsOf('disconnected'), [{ conn: quiet.id, rank: 1, clean: true }]);
  t.same(h.engine.rankStates()[1], { rank: 1, state: 'waiting', conn: null });
  const back = h.fd(1);
  t.same(back.send(INIT), [INIT_OK], 'the rank can connect again');
  r0.send('cmd=finalize');
  back.send('cmd=finalize');
  t.match(h.finished, { ok: true });

  const h2 = new EngineHarness({ size: 1 });
  const stranger = h2.tcp();
  stranger.send('cmd=get_maxes');
  stranger.disconnect();
  t.equal(h2.finished, null, 'an unbound connection leaving is nothing');
});

t.test('the launcher binding: out-of-range or duplicate PMI_FD ranks are refused', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const bad = h.fd(2);
  t.ok(bad.closed, 'rank 2 of 2 refused');
  t.same(h.sent.get(bad.id), [], 'refused without a reply (nothing was asked)');
  const r0 = h.fd(0);
  const dup = h.fd(0);
  t.ok(dup.closed);
  t.notOk(r0.closed);
  t.match(h.eventsOf('refused'), [{ conn: bad.id, code: 'E_UNKNOWN_PMIID' }, { conn: dup.id, code: 'E_PMIID_IN_USE' }]);
  t.throws(() => h.engine.connect(r0.id, { transport: 'fd' }), TypeError, 'reusing a connection id is a host bug');
});

t.test('a finalized or failed rank cannot join again', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0] = h.initAll();
  r0?.send('cmd=finalize');
  r0?.disconnect();
  const again = h.tcp();
  t.same(again.send('cmd=initack pmiid=0'), ['cmd=initack rc=-1 msg=rank_0_already_finalized']);
  t.ok(again.closed);
});

// ---- name service --------------------------------------------------------------------------------------------

t.test('publish_name, lookup_name, unpublish_name and their failures', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  t.same(r0.send('cmd=lookup_name service=svc0'), ['cmd=lookup_result rc=1 msg=service_not_found']);
  t.same(r0.send('cmd=publish_name service=svc0 port=tcp-port-0'), ['cmd=publish_result rc=0']);
  t.same(r1.send('cmd=publish_name service=svc0 port=other'), ['cmd=publish_result rc=1 msg=service_svc0_already_published']);
  t.same(r1.send('cmd=lookup_name service=svc0'), ['cmd=lookup_result rc=0 port=tcp-port-0'], 'visible to every rank at once');
  t.same(r1.send('cmd=unpublish_name service=svc0'), ['cmd=unpublish_result rc=0']);
  t.same(r0.send('cmd=unpublish_name service=svc0'), ['cmd=unpublish_result rc=1 msg=service_not_found']);
  t.same(r0.send('cmd=lookup_name service=svc0'), ['cmd=lookup_result rc=1 msg=service_not_found']);
  t.same(r0.send('cmd=publish_name service=svc0'), ['cmd=publish_result rc=3 msg=missing_port']);
  t.same(r0.send('cmd=publish_name service=s2 port=p\r'), ['cmd=publish_result rc=3 msg=port_contains_a_control_character'], 'a port lookup_name could not write back');
  t.same(r0.send('cmd=lookup_name service=s2'), ['cmd=lookup_result rc=1 msg=service_not_found']);
});

t.test('an empty service or port is refused: lookup_name could never answer port= (MPICH >= 4.1 rejects it)', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [r0] = h.initAll();
  if (!r0) return;
  t.same(r0.send('cmd=publish_name service=svc port='), ['cmd=publish_result rc=3 msg=empty_port'], 'empty port');
  t.same(r0.send('cmd=lookup_name service=svc'), ['cmd=lookup_result rc=1 msg=service_not_found'], 'nothing was published');
  t.same(r0.send('cmd=publish_name service= port=p'), ['cmd=publish_result rc=3 msg=empty_service'], 'empty service');
  t.same(r0.send('cmd=lookup_name service='), ['cmd=lookup_result rc=3 msg=empty_service']);
  t.same(r0.send('cmd=unpublish_name service='), ['cmd=unpublish_result rc=3 msg=empty_service']);
  t.same(r0.send('cmd=publish_name service=svc port=p'), ['cmd=publish_result rc=0'], 'a real one still works');
  t.same(r0.send('cmd=lookup_name service=svc'), ['cmd=lookup_result rc=0 port=p']);
  t.notOk(r0.closed);
});

t.test('the KVS is bounded in keys and bytes: a put beyond either is refused rc=2, the job goes on', async (t) => {
  const h = new EngineHarness({ size: 2, processMapping: null, limits: { kvsMaxKeys: 3, kvsMaxBytes: 40 } });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  t.same(r0.send('cmd=put key=a value=1'), ['cmd=put_result rc=0']);
  t.same(r0.send('cmd=put key=b value=2'), ['cmd=put_result rc=0']);
  t.same(r1.send('cmd=put key=c value=3'), ['cmd=put_result rc=0']);
  t.same(r1.send('cmd=put key=d value=4'), ['cmd=put_result rc=2 msg=kvs_full_3_keys'], 'a 4th key: refused, with the limit');
  t.match(h.eventsOf('protocol-error').at(-1), { code: 'E_KVS_FULL', message: /3 keys.*--kvs-max-keys/ });
  t.same(r1.send('cmd=put key=c value=33'), ['cmd=put_result rc=0'], 'replacing a key is no new key');
  t.same(r0.send(`cmd=put key=a value=${'x'.repeat(40)}`), ['cmd=put_result rc=2 msg=kvs_full_40_bytes'], 'too many bytes: refused');
  t.match(h.eventsOf('protocol-error').at(-1), { code: 'E_KVS_FULL', message: /40 bytes.*--kvs-max-bytes/ });
  t.same(h.barrier([r0, r1]), [['cmd=barrier_out rc=0'], ['cmd=barrier_out rc=0']], 'the barrier completes');
  t.same(r1.send('cmd=get key=c'), ['cmd=get_result rc=0 value=33']);
  t.same(r1.send('cmd=get key=d'), ['cmd=get_result rc=4 msg=key_d_not_found'], 'the refused key is not there');
  t.same(r0.send('cmd=put key=b value=22'), ['cmd=put_result rc=0'], 'a committed key can still be replaced');
  t.notOk(r0.closed || r1.closed, 'nobody is disconnected for it');
});

t.test('the name service is bounded in entries: a publish beyond it is refused rc=2', async (t) => {
  const h = new EngineHarness({ size: 1, limits: { maxNames: 2 } });
  const [r0] = h.initAll();
  if (!r0) return;
  t.same(r0.send('cmd=publish_name service=s1 port=p1'), ['cmd=publish_result rc=0']);
  t.same(r0.send('cmd=publish_name service=s2 port=p2'), ['cmd=publish_result rc=0']);
  t.same(r0.send('cmd=publish_name service=s3 port=p3'), ['cmd=publish_result rc=2 msg=name_service_full_2_services'], 'a 3rd: refused');
  t.match(h.eventsOf('protocol-error').at(-1), { code: 'E_NAMES_FULL', message: /--max-names/ });
  t.same(r0.send('cmd=unpublish_name service=s1'), ['cmd=unpublish_result rc=0']);
  t.same(r0.send('cmd=publish_name service=s3 port=p3'), ['cmd=publish_result rc=0'], 'room again after an unpublish');
});

// ---- spawn ---------------------------------------------------------------------------------------------------

t.test('a spawn block is answered once, after its last segment, with rc=-1', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  const block = formatSpawn({
    segments: [
      { nprocs: 2, execname: './child', args: ['a b'], preput: new Map([['k', 'v']]), info: new Map([['wdir', '/tmp']]) },
      { nprocs: 1, execname: './other', args: [], preput: new Map(), info: new Map() },
    ],
  });
  const lines = block.slice(0, -1).split('\n');
  const answers = lines.map((l) => c.send(l));
  t.same(answers.slice(0, -1).flat(), [], 'nothing before the end of the request');
  t.same(answers.at(-1), ['cmd=spawn_result rc=-1 msg=spawn_is_not_supported_by_pmibridge']);
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'the connection goes on');
  t.same(c.send('mcmd=spawn'), [], 'a second block starts');
  t.same(c.send('garbage-line'), ['cmd=spawn_result rc=-1 msg=malformed_spawn_request'], 'a malformed block is answered in spawn_result, at once');
  t.same(c.send('cmd=barrier_in'), [], 'the rest of the failed block is swallowed, even a line that looks like a query');
  t.same(c.send('endcmd'), [], '… up to and including its endcmd');
  t.same(c.send('cmd=barrier_in'), ['cmd=barrier_out rc=0'], 'after the endcmd lines are queries again');
  t.equal(h.engine.barrierEpoch, 1, 'one barrier, not two');
});

t.test('a failed spawn block is answered once and swallowed up to its endcmd (as flux)', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  const lines = formatSpawn({ segments: [{ nprocs: 2, execname: './child', args: ['x'], preput: new Map(), info: new Map() }] }).slice(0, -1).split('\n');
  // break the block at its second line; the client goes on writing the rest of it
  const answers = ['mcmd=spawn', 'garbage-line', ...lines.slice(1)].map((l) => c.send(l));
  t.same(answers[1], ['cmd=spawn_result rc=-1 msg=malformed_spawn_request'], 'answered once, at the bad line');
  t.same([...answers.slice(0, 1), ...answers.slice(2)].flat(), [], 'nothing else for the whole block');
  t.equal(h.eventsOf('protocol-error').filter((e) => e.code === 'E_BAD_SPAWN').length, 1, 'counted as one bad line');
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'the connection goes on after the endcmd');

  // any mcmd= line opens a block up to its endcmd (hydra's framing): an unknown one is answered
  // once, at once, and the rest of its block swallowed — not read as separate commands
  t.same(c.send('mcmd=foo'), ['cmd=spawn_result rc=-1 msg=malformed_spawn_request']);
  t.same(['nprocs=1', 'endcmd'].map((l) => c.send(l)).flat(), [], 'the rest of its block gets no answer');
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'the next command is answered');

  // a segment that fails at its own endcmd has nothing left to swallow
  for (const l of ['mcmd=spawn', 'execname=e', 'totspawns=1']) t.same(c.send(l), []);
  t.same(c.send('endcmd'), ['cmd=spawn_result rc=-1 msg=malformed_spawn_request'], 'a segment without nprocs');
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'the next query is answered, not swallowed');
  t.notOk(c.closed);
});

t.test('a failed spawn block without endcmd is answered again after maxSpawnLines lines', async (t) => {
  const h = new EngineHarness({ size: 1, limits: { maxSpawnLines: 4 } });
  const [c] = h.initAll();
  if (!c) return;
  t.same(c.send('mcmd=spawn'), []);
  t.same(c.send('nprocs=1'), []);
  t.same(c.send('=oops'), ['cmd=spawn_result rc=-1 msg=malformed_spawn_request']);
  for (let i = 1; i <= 4; i++) t.same(c.send(`cmd=get_appnum`), [], `swallowed line ${i} of 4`);
  t.same(c.send('cmd=get_appnum'), ['cmd=spawn_result rc=-1 msg=malformed_spawn_request'], 'no endcmd within 4 lines: answered once more');
  t.match(h.eventsOf('protocol-error').at(-1), { code: 'E_BAD_SPAWN', message: /no endcmd within 4 lines/ });
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'and lines are queries again');

  // cut at the line limit inside a segment: the rest of the segment is swallowed too
  const block = formatSpawn({ segments: [{ nprocs: 1, execname: 'e', args: [], preput: new Map(), info: new Map() }] }).slice(0, -1).split('\n');
  const answers = block.map((l) => c.send(l));
  t.same(answers[4], ['cmd=spawn_result rc=-1 msg=malformed_spawn_request'], 'the 5th line of a 4-line limit');
  t.same([...answers.slice(0, 4), ...answers.slice(5)].flat(), [], 'answered once for the whole block');
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0']);
  t.notOk(c.closed);
});

// ---- bad input ------------------------------------------------------------------------------------------------

t.test('an overlong line is answered in its own reply with rc=8', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0] = h.initAll(1);
  const tcp = h.tcp();
  if (!r0) return;
  const max = h.engine.limits.maxLine;
  t.same(r0.overlong('cmd=put kvsname=kvs_pmibridge_0 key=k value=AAAA', 5000), [`cmd=put_result rc=8 msg=line_of_5000_bytes_exceeds_limit_${max}`]);
  t.match(r0.overlong('cmd=get kvsname=kvs key=kkkkkkkk', 2000), [/^cmd=get_result rc=8 /]);
  t.match(tcp.overlong('cmd=initack pmiid=00000000', 3000), [/^cmd=initack rc=8 /]);
  t.match(r0.overlong('cmd=bogus xxxxxx', 3000), [/^cmd=error rc=8 /], 'an unknown command: cmd=error');
  t.match(r0.overlong('xxxxxxxxxxxxxx', 3000), [/^cmd=error rc=8 /]);
  t.match(tcp.overlong('cmd=abort exitcode=1 message=xxxx', 3000), [/^cmd=error rc=8 /], 'a too long abort from a connection that is no rank: a bad line');
  t.equal(h.finished, null, '… which cannot end the job');
  t.same(r0.send('cmd=get_maxes'), ['cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024'], 'the connection goes on');

  // end to end through a framer sized like the engine
  const framer = new LineFramer(max);
  const bytes = Buffer.from(`cmd=put kvsname=kvs_pmibridge_0 key=big value=${'F'.repeat(max)}\ncmd=get_appnum\n`, 'latin1');
  const got: string[] = [];
  for (const f of framer.push(bytes)) {
    h.apply(h.engine.receive(r0.id, f));
    got.push(...r0.take());
  }
  t.match(got, [/^cmd=put_result rc=8 msg=line_of_\d+_bytes_exceeds_limit_1408$/, 'cmd=appnum rc=0 appnum=0']);

  // a rank whose abort is too long still gets its abort
  t.same(r0.overlong('cmd=abort exitcode=1 message=xxxx', 3000), [], 'a too long abort from a rank: no reply');
  t.match(h.finished, { ok: false, exitCode: 1, rank: 0, reason: /^rank 0 called abort with exit code 1: malformed abort request \(a 3000-byte line\)$/ });
});

t.test('a malformed abort from a rank still aborts the job (exit code 1); from a stranger it is a bad line', async (t) => {
  const cases = ['cmd=abort exitcode=abc', 'cmd=abort exitcode=1.5 error_msg=oops', 'cmd=abort exit_code=', 'cmd=abort exitcode=99999999999999999'];
  for (const line of cases) {
    const h = new EngineHarness({ size: 2 });
    const [r0, r1] = h.initAll();
    if (!r0 || !r1) return;
    r1.send('cmd=barrier_in');
    t.same(r0.send(line), [], `${line}: no reply`);
    t.match(h.finished, { ok: false, exitCode: 1, rank: 0, reason: /malformed abort request/ }, `${line}: the job ends with exit code 1`);
    t.match(h.eventsOf('aborted'), [{ conn: r0.id, rank: 0, exitCode: 1, message: /^malformed abort request \(/ }]);
    t.same(r1.take(), [], 'the waiting rank is not answered (the host kills it)');
  }
  const early = new EngineHarness({ size: 2 });
  const bound = early.fd(1);
  t.same(bound.send('cmd=abort exitcode=x'), [], 'a bound rank before init');
  t.match(early.finished, { ok: false, exitCode: 1, rank: 1, reason: /malformed abort request/ });

  const h = new EngineHarness({ size: 1 });
  const stranger = h.tcp();
  t.same(stranger.send('cmd=abort exitcode=abc'), ['cmd=error rc=3 msg=exitcode_is_not_an_integer'], 'an unbound connection: answered as a bad line');
  t.equal(h.finished, null, '… and it cannot end the job');
  t.match(h.eventsOf('protocol-error'), [{ conn: stranger.id }]);
  t.notOk(stranger.closed);
});

t.test('garbage, blank, NUL, PMI-2 and unknown commands: cmd=error rc=-1 msg=…', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  const cases: ReadonlyArray<readonly [string, string]> = [
    ['', 'cmd=error rc=-1 msg=blank_line'],
    ['  ', 'cmd=error rc=-1 msg=blank_line'],
    ['cmd=get key=a\0', 'cmd=error rc=-1 msg=line_contains_a_NUL_byte'],
    ['    38cmd=fullinit;pmirank=0;threaded=FALSE;', 'cmd=error rc=-1 msg=PMI-2_is_not_served_use_PMI-1'],
    ['hello', 'cmd=error rc=-1 msg=not_a_PMI-1_line_expected_cmd='],
    ['cmd=bogus_command', 'cmd=error rc=-1 msg=unknown_command_bogus_command'],
    ['cmd=', 'cmd=error rc=-1 msg=empty_command_name'],
  ];
  for (const [line, answer] of cases) t.same(c.send(line), [answer], JSON.stringify(line));
  t.notOk(c.closed, `${cases.length} bad lines < ${DEFAULT_MAX_STRIKES}`);
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], 'a good line in between');
  t.same(c.send('cmd=init pmi_version=x pmi_subversion=1'), ['cmd=response_to_init rc=3 msg=pmi_version_is_not_an_integer'], 'a known command with a bad attribute is answered in its own reply');
  t.notOk(c.closed);
});

t.test('8 consecutive bad lines close the connection; other ranks finish the job', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  const stray = h.tcp();
  for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) {
    t.same(stray.send(`garbage ${i}`), ['cmd=error rc=-1 msg=not_a_PMI-1_line_expected_cmd='], `bad line ${i}`);
    t.notOk(stray.closed);
  }
  t.same(stray.send('cmd=bogus'), ['cmd=error rc=-1 msg=unknown_command_bogus'], 'the 8th bad line is still answered…');
  t.ok(stray.closed, '… and then the connection is closed');
  t.match(stray.closeReason, /^8 bad lines in a row/);
  t.same(stray.send('cmd=get_maxes'), [], 'nothing after the close');
  stray.disconnect();
  t.equal(h.finished, null);
  t.same(h.barrier([r0, r1]), [['cmd=barrier_out rc=0'], ['cmd=barrier_out rc=0']]);
  r0.send('cmd=finalize');
  r1.send('cmd=finalize');
  t.match(h.finished, { ok: true, exitCode: 0 });
});

t.test('a good line resets the count of bad lines', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  for (let round = 0; round < 3; round++) {
    for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) c.send('');
    t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=0 appnum=0'], `round ${round}`);
  }
  t.notOk(c.closed);
  const strict = new EngineHarness({ size: 1, maxStrikes: 2 });
  const [d] = strict.initAll();
  d?.send('x');
  t.notOk(d?.closed);
  d?.send('x');
  t.ok(d?.closed, 'maxStrikes is configurable');
});

t.test('well-formed but refused commands never count as bad lines, and reset the count', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const unbound = h.tcp();
  const bound = h.fd(1);
  const refused = ['cmd=get_maxes', 'cmd=put kvsname=k key=a value=b', 'cmd=get key=a', 'cmd=barrier_in', 'cmd=finalize'];
  for (let i = 0; i < 20; i++) {
    const q = refused[i % refused.length] as string;
    t.match(unbound.send(q), [/^cmd=\S+ rc=1 msg=send_initack_or_init_first$/], `unbound #${i + 1}: ${q}`);
    t.match(bound.send(q), [/^cmd=\S+ rc=1 msg=init_required$/], `bound #${i + 1}: ${q}`);
  }
  t.notOk(unbound.closed, '20 refused commands before identifying: still open');
  t.notOk(bound.closed, '20 refused commands before init: still open');
  t.same(bound.send(INIT), [INIT_OK], 'init then works');
  t.same(unbound.send(INIT), [INIT_OK], 'init without a handshake then works too');
  t.equal(unbound.rank, 0);

  // a refused query between bad lines resets the count: 7 bad, 1 refused, 7 bad is no close
  const c = new EngineHarness({ size: 1 }).fd(0);
  for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) c.send('garbage');
  t.same(c.send('cmd=get_appnum'), ['cmd=appnum rc=1 msg=init_required'], 'refused, not garbage');
  for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) c.send('garbage');
  t.notOk(c.closed, 'the refused query reset the count');
  t.same(c.send(INIT), [INIT_OK]);
  const after: ReadonlyArray<readonly [string, string]> = [
    ['cmd=init pmi_version=2 pmi_subversion=0', 'cmd=response_to_init rc=-1 msg=already_initialized_with_PMI-1'],
    ['cmd=put key=PMI_x value=1', 'cmd=put_result rc=4 msg=keys_starting_with_PMI_are_reserved'],
    ['cmd=put key=e value=', 'cmd=put_result rc=6 msg=empty_value'],
    ['cmd=get key=nope', 'cmd=get_result rc=4 msg=key_nope_not_found'],
    ['cmd=initack pmiid=0', 'cmd=initack rc=-1 msg=connection_is_already_rank_0'],
  ];
  for (const [q, answer] of after) {
    for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) c.send('');
    t.same(c.send(q), [answer], `after init: ${q} is refused…`);
    t.notOk(c.closed, '… and resets the count');
  }
  for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) c.send('');
  t.notOk(c.closed);
  t.same(c.send('cmd=bogus'), ['cmd=error rc=-1 msg=unknown_command_bogus'], 'an unknown command is a bad line');
  t.ok(c.closed, '8 bad lines in a row still close');
  t.match(c.closeReason, /^8 bad lines in a row \(last: unknown command cmd=bogus\)$/);
});

t.test('a malformed spawn block is one bad line; a complete spawn request resets the count', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const [c] = h.initAll();
  if (!c) return;
  const block = formatSpawn({ segments: [{ nprocs: 1, execname: 'e', args: [], preput: new Map(), info: new Map() }] }).slice(0, -1).split('\n');
  for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) c.send('garbage');
  t.same(block.map((l) => c.send(l)).flat(), ['cmd=spawn_result rc=-1 msg=spawn_is_not_supported_by_pmibridge'], 'a whole, well-formed spawn request: refused…');
  for (let i = 1; i < DEFAULT_MAX_STRIKES; i++) c.send('garbage');
  t.notOk(c.closed, '… and it reset the count');

  const d = new EngineHarness({ size: 1 }).initAll()[0];
  if (!d) return;
  for (let i = 1; i < DEFAULT_MAX_STRIKES - 1; i++) d.send('garbage');
  d.send('mcmd=spawn');
  t.same(d.send('garbage'), ['cmd=spawn_result rc=-1 msg=malformed_spawn_request'], 'the 7th bad line');
  for (const l of ['x', 'y', 'z', 'endcmd']) t.same(d.send(l), [], `swallowed ${l}`);
  t.notOk(d.closed, 'swallowed lines are not counted');
  t.same(d.send('garbage'), ['cmd=error rc=-1 msg=not_a_PMI-1_line_expected_cmd='], 'the 8th');
  t.ok(d.closed);
});

t.test('a rank closed for garbage after init fails the job when the host reports the EOF', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0] = h.initAll();
  if (!r0) return;
  for (let i = 0; i < DEFAULT_MAX_STRIKES; i++) r0.send('garbage');
  t.ok(r0.closed);
  r0.disconnect();
  t.match(h.finished, { ok: false, rank: 0 });
});

t.test('a rank closed for garbage while in a barrier is not written to when the barrier completes', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0, r1] = h.initAll();
  if (!r0 || !r1) return;
  t.same(r0.send('cmd=barrier_in'), []);
  for (let i = 0; i < DEFAULT_MAX_STRIKES; i++) r0.send('garbage');
  t.ok(r0.closed);
  // the harness throws if the engine sends to r0 after its close
  t.same(r1.send('cmd=barrier_in'), ['cmd=barrier_out rc=0']);
  t.same(h.sent.get(r0.id)?.filter((l) => l.startsWith('cmd=barrier_out')), [], 'no barrier_out after the close');
  r0.disconnect();
  t.match(h.finished, { ok: false, rank: 0 });
});

t.test('fail() ends the job from outside, once', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const [r0] = h.initAll(1);
  h.apply(h.engine.fail({ ok: false, exitCode: 9, reason: 'rank 1 was killed by signal 9', rank: 1 }));
  t.same(h.finished, { ok: false, exitCode: 9, reason: 'rank 1 was killed by signal 9', rank: 1 });
  t.same(h.engine.fail({ ok: true, exitCode: 0, reason: 'again' }), [], 'idempotent');
  t.same(r0?.send('cmd=get_maxes'), []);
  t.same(h.engine.finished, h.finished);
});
