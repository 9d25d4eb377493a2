/**
 * The codec: one table of (typed message, exact bytes) checked in both directions for every query
 * and reply of the catalogue, then liberal reading, strict writing and defined failures.
 */
import t from 'tap';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import {
  LocalPmiError,
  PMI_RC,
  QUERIES,
  REPLIES,
  decodeQuery,
  decodeReply,
  failureReply,
  formatQuery,
  formatReply,
  replyNameOf,
  tokenize,
  isTokens,
  type Query,
  type Reply,
  type Tokens,
  type TokenizeFailure,
} from '../src/protocol/index.js';
import { queryVocabulary, replyVocabulary } from '../src/protocol/codec.js';
import type { Vocabulary } from '../src/protocol/tokenize.js';

const noNl = (s: string) => s.replace(/\n$/, '');

// ---- the table -----------------------------------------------------------------------------------

const queryTable: ReadonlyArray<readonly [Query, string]> = [
  [{ cmd: 'init', pmi_version: 1, pmi_subversion: 1 }, 'cmd=init pmi_version=1 pmi_subversion=1\n'],
  [{ cmd: 'initack', pmiid: 3 }, 'cmd=initack pmiid=3\n'],
  [{ cmd: 'get_maxes' }, 'cmd=get_maxes\n'],
  [{ cmd: 'get_appnum' }, 'cmd=get_appnum\n'],
  [{ cmd: 'get_my_kvsname' }, 'cmd=get_my_kvsname\n'],
  [{ cmd: 'get_universe_size' }, 'cmd=get_universe_size\n'],
  [{ cmd: 'put', kvsname: 'kvs_1', key: '-bcast-1-0', value: '2F6465762F' }, 'cmd=put kvsname=kvs_1 key=-bcast-1-0 value=2F6465762F\n'],
  [{ cmd: 'put', key: 'k', value: 'v' }, 'cmd=put key=k value=v\n'],
  [{ cmd: 'get', kvsname: 'kvs_1', key: 'PMI_process_mapping' }, 'cmd=get kvsname=kvs_1 key=PMI_process_mapping\n'],
  [{ cmd: 'get', key: 'hostname[1]' }, 'cmd=get key=hostname[1]\n'],
  [{ cmd: 'barrier_in' }, 'cmd=barrier_in\n'],
  [{ cmd: 'barrier_in', group: 'WORLD:0' }, 'cmd=barrier_in group=WORLD:0\n'],
  [{ cmd: 'finalize' }, 'cmd=finalize\n'],
  [{ cmd: 'abort', exitcode: 3 }, 'cmd=abort exitcode=3\n'],
  [{ cmd: 'abort', exitcode: -1, message: 'abort' }, 'cmd=abort exitcode=-1 message=abort\n'],
  [{ cmd: 'abort' }, 'cmd=abort\n'],
  [{ cmd: 'publish_name', service: 'svc0', port: 'tcp-port-0' }, 'cmd=publish_name service=svc0 port=tcp-port-0\n'],
  [{ cmd: 'unpublish_name', service: 'svc0' }, 'cmd=unpublish_name service=svc0\n'],
  [{ cmd: 'lookup_name', service: 'svc0' }, 'cmd=lookup_name service=svc0\n'],
];

const replyTable: ReadonlyArray<readonly [Reply, string]> = [
  [{ cmd: 'response_to_init', rc: 0, pmi_version: 1, pmi_subversion: 1 }, 'cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n'],
  [{ cmd: 'response_to_init', rc: -1, msg: 'PMI-2_is_not_served_use_PMI-1' }, 'cmd=response_to_init rc=-1 msg=PMI-2_is_not_served_use_PMI-1\n'],
  [{ cmd: 'initack', rc: 3, msg: 'no_rank_9' }, 'cmd=initack rc=3 msg=no_rank_9\n'],
  [{ cmd: 'set', rc: 0, size: 2 }, 'cmd=set rc=0 size=2\n'],
  [{ cmd: 'maxes', rc: 0, kvsname_max: 256, keylen_max: 64, vallen_max: 1024 }, 'cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024\n'],
  [{ cmd: 'appnum', rc: 0, appnum: 42 }, 'cmd=appnum rc=0 appnum=42\n'],
  [{ cmd: 'my_kvsname', rc: 0, kvsname: 'bleepgorp' }, 'cmd=my_kvsname rc=0 kvsname=bleepgorp\n'],
  [{ cmd: 'universe_size', rc: 0, size: -1 }, 'cmd=universe_size rc=0 size=-1\n'],
  [{ cmd: 'put_result', rc: 0 }, 'cmd=put_result rc=0\n'],
  [{ cmd: 'put_result', rc: 5, msg: 'key_length_64_exceeds_max_63' }, 'cmd=put_result rc=5 msg=key_length_64_exceeds_max_63\n'],
  [{ cmd: 'get_result', rc: 0, value: '(vector,(0,1,2))' }, 'cmd=get_result rc=0 value=(vector,(0,1,2))\n'],
  [{ cmd: 'get_result', rc: 0, found: 'TRUE', value: 'v' }, 'cmd=get_result rc=0 found=TRUE value=v\n'],
  [{ cmd: 'get_result', rc: 4, msg: 'key_x_not_found' }, 'cmd=get_result rc=4 msg=key_x_not_found\n'],
  [{ cmd: 'barrier_out', rc: 0 }, 'cmd=barrier_out rc=0\n'],
  [{ cmd: 'barrier_out', rc: 0, tag: 0 }, 'cmd=barrier_out rc=0 tag=0\n'],
  [{ cmd: 'finalize_ack', rc: 0 }, 'cmd=finalize_ack rc=0\n'],
  [{ cmd: 'publish_result', rc: 0 }, 'cmd=publish_result rc=0\n'],
  [{ cmd: 'publish_result', rc: 0, info: 'ok' }, 'cmd=publish_result rc=0 info=ok\n'],
  [{ cmd: 'unpublish_result', rc: 1, msg: 'service_not_found' }, 'cmd=unpublish_result rc=1 msg=service_not_found\n'],
  [{ cmd: 'lookup_result', rc: 0, port: 'tcp-port-0' }, 'cmd=lookup_result rc=0 port=tcp-port-0\n'],
  [{ cmd: 'lookup_result', rc: 0, info: 'ok', port: 'p' }, 'cmd=lookup_result rc=0 info=ok port=p\n'],
  [{ cmd: 'spawn_result', rc: 0, errcodes: '0,0' }, 'cmd=spawn_result rc=0 errcodes=0,0\n'],
  [{ cmd: 'spawn_result', rc: -1, msg: 'spawn_is_not_supported_by_pmibridge' }, 'cmd=spawn_result rc=-1 msg=spawn_is_not_supported_by_pmibridge\n'],
  [{ cmd: 'error', rc: -1, msg: 'blank_line' }, 'cmd=error rc=-1 msg=blank_line\n'],
];

t.test('the table covers every query and reply of the catalogue', async (t) => {
  t.same(new Set(queryTable.map(([q]) => q.cmd)), new Set(Object.keys(QUERIES)), 'every query');
  const replies = new Set<string>(replyTable.map(([r]) => r.cmd));
  replies.add('initack'); // the 4-line success form has its own test below
  t.same(replies, new Set(Object.keys(REPLIES)), 'every reply');
});

t.test('queries: format gives exactly the bytes, decode gives the message back', async (t) => {
  for (const [query, line] of queryTable) {
    t.equal(formatQuery(query), line, `format ${query.cmd}`);
    const d = decodeQuery(noNl(line));
    t.ok(d.ok, `decode ${JSON.stringify(line)}`);
    if (d.ok) t.same(d.query, query, `decode ${JSON.stringify(line)} gives the message back`);
  }
});

t.test('replies: format gives exactly the bytes, decode gives the message back', async (t) => {
  for (const [reply, line] of replyTable) {
    t.equal(formatReply(reply), line, `format ${reply.cmd} rc=${reply.rc}`);
    const d = decodeReply(noNl(line));
    t.ok(d.ok, `decode ${JSON.stringify(line)}`);
    if (d.ok) t.same(d.reply, reply, `decode ${JSON.stringify(line)} gives the message back`);
  }
});

t.test('initack success is four lines: initack, set size, set rank, set debug', async (t) => {
  const reply: Reply = { cmd: 'initack', rc: 0, rank: 1, size: 2, appnum: 0, debug: 0 };
  const bytes = 'cmd=initack rc=0 rank=1 size=2 appnum=0 debug=0\ncmd=set size=2\ncmd=set rank=1\ncmd=set debug=0\n';
  t.equal(formatReply(reply), bytes);
  const lines = bytes.slice(0, -1).split('\n');
  t.equal(lines.length, 4);
  const decoded = lines.map((l) => decodeReply(l));
  t.same(
    decoded.map((d) => (d.ok ? d.reply : d.problem)),
    [reply, { cmd: 'set', rc: 0, size: 2 }, { cmd: 'set', rc: 0, rank: 1 }, { cmd: 'set', rc: 0, debug: 0 }],
  );

  const spawned: Reply = { cmd: 'initack', rc: 0, rank: 0, size: 4, appnum: 1, 'spawner-jobid': 'kvs_7', debug: 2 };
  const spawnedBytes = 'cmd=initack rc=0 rank=0 size=4 appnum=1 spawner-jobid=kvs_7 debug=2\ncmd=set size=4\ncmd=set rank=0\ncmd=set debug=2\n';
  t.equal(formatReply(spawned), spawnedBytes, 'spawner-jobid in catalogue order');
  const first = decodeReply(spawnedBytes.split('\n')[0] as string);
  t.same(first.ok && first.reply, spawned);

  t.equal(
    formatReply({ cmd: 'initack', rc: 0, rank: 5, size: 6 }),
    'cmd=initack rc=0 rank=5 size=6\ncmd=set size=6\ncmd=set rank=5\ncmd=set debug=0\n',
    'debug defaults to 0 in the set line',
  );
  t.throws(() => formatReply({ cmd: 'initack', rc: 0, rank: 1 }), LocalPmiError, 'a successful initack needs size');
  t.equal(formatReply({ cmd: 'initack', rc: -1, msg: 'rank_1_is_already_connected' }), 'cmd=initack rc=-1 msg=rank_1_is_already_connected\n', 'a failed initack is one line');
});

// ---- liberal reading -------------------------------------------------------------------------------

t.test('any attribute order', async (t) => {
  const a = decodeQuery('cmd=put value=v key=k kvsname=n');
  t.same(a.ok && a.query, { cmd: 'put', kvsname: 'n', key: 'k', value: 'v' });
  const b = decodeQuery('cmd=init pmi_subversion=1 pmi_version=1');
  t.same(b.ok && b.query, { cmd: 'init', pmi_version: 1, pmi_subversion: 1 });
  const hydraLegacy = decodeReply('cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0');
  t.same(hydraLegacy.ok && hydraLegacy.reply, { cmd: 'response_to_init', rc: 0, pmi_version: 1, pmi_subversion: 1 }, 'rc last (hydra <= 4.0)');
  const lookup = decodeReply('cmd=lookup_result port=tcp-port-0 info=ok rc=0 msg=success');
  t.same(lookup.ok && lookup.reply, { cmd: 'lookup_result', rc: 0, msg: 'success', info: 'ok', port: 'tcp-port-0' });
});

t.test('missing rc reads as 0; a repeated attribute keeps the first value (as hydra and MPICH read it)', async (t) => {
  const r = decodeReply('cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024');
  t.same(r.ok && r.reply, { cmd: 'maxes', rc: 0, kvsname_max: 256, keylen_max: 64, vallen_max: 1024 });
  const q = decodeQuery('cmd=get key=a key=b');
  t.same(q.ok && q.query, { cmd: 'get', key: 'a' });
  const tk = tokenize('cmd=put kvsname=k key=a value=x key=b value=y');
  t.same(isTokens(tk) && [[...tk.attrs], tk.repeated], [[['kvsname', 'k'], ['key', 'a'], ['value', 'x']], ['key', 'value']]);
});

t.test('unknown attributes are kept in extra, in wire order', async (t) => {
  const q = decodeQuery('cmd=get_my_kvsname extra=ignored zeta=1 alpha=2');
  t.ok(q.ok);
  if (!q.ok) return;
  t.equal(q.query.cmd, 'get_my_kvsname');
  t.same([...(q.query.extra ?? [])], [['extra', 'ignored'], ['zeta', '1'], ['alpha', '2']]);
  const r = decodeReply('cmd=barrier_out rc=0 tag=7 group=WORLD:0');
  t.ok(r.ok);
  if (r.ok) {
    t.same([...(r.reply.extra ?? [])], [['group', 'WORLD:0']]);
    t.equal(r.reply.cmd === 'barrier_out' && r.reply.tag, 7);
  }
  const plain = decodeQuery('cmd=barrier_in');
  t.equal(plain.ok && 'extra' in plain.query, false, 'no extra when there is none');
});

t.test('aliases exit_code / error_msg are read as exitcode / message', async (t) => {
  const flux = decodeQuery('cmd=abort exit_code=3 error_msg=rank 3 gave up');
  t.same(flux.ok && flux.query, { cmd: 'abort', exitcode: 3, message: 'rank 3 gave up' });
  const mpich = decodeQuery('cmd=abort exitcode=-1 message=abort');
  t.same(mpich.ok && mpich.query, { cmd: 'abort', exitcode: -1, message: 'abort' });
  t.equal(formatQuery({ cmd: 'abort', exitcode: 3, message: 'x' }), 'cmd=abort exitcode=3 message=x\n', 'we write the main names');
});

t.test('= inside values', async (t) => {
  const q = decodeQuery('cmd=put kvsname=k key=a=b value=x=y=z');
  t.same(q.ok && q.query, { cmd: 'put', kvsname: 'k', key: 'a=b', value: 'x=y=z' });
  const seg = decodeQuery('cmd=put kvsname=kvs_fake_0 key=-allgather-shm-1-0 value=segments=5');
  t.same(seg.ok && seg.query, { cmd: 'put', kvsname: 'kvs_fake_0', key: '-allgather-shm-1-0', value: 'segments=5' }, 'MPICH segment head');
  const r = decodeReply('cmd=get_result rc=0 value=a=b c=d');
  t.same(r.ok && r.reply, { cmd: 'get_result', rc: 0, value: 'a=b c=d' }, 'an unknown key=… inside free text stays text');
});

t.test('runs of spaces and tabs separate tokens', async (t) => {
  const q = decodeQuery('cmd=get   kvsname=k\t\tkey=a \t ');
  t.same(q.ok && q.query, { cmd: 'get', kvsname: 'k', key: 'a' });
  const r = decodeReply('cmd=maxes  kvsname_max=64\tkeylen_max=64   vallen_max=1024');
  t.same(r.ok && r.reply, { cmd: 'maxes', rc: 0, kvsname_max: 64, keylen_max: 64, vallen_max: 1024 });
});

t.test('value=a b c is read as text (flux writes values with spaces)', async (t) => {
  const q = decodeQuery('cmd=put kvsname=k key=a value=a b c');
  t.same(q.ok && q.query, { cmd: 'put', kvsname: 'k', key: 'a', value: 'a b c' });
  const r = decodeReply('cmd=get_result rc=0 value=a b c');
  t.same(r.ok && r.reply, { cmd: 'get_result', rc: 0, value: 'a b c' });
  const qq = decodeQuery('cmd=put value=a b key=k');
  t.same(qq.ok && qq.query, { cmd: 'put', key: 'k', value: 'a b' }, 'a known attribute after the text ends it');
});

t.test('hydra 4.1/4.2 value=v found=TRUE: found is split off', async (t) => {
  const r = decodeReply('cmd=get_result rc=0 value=v found=TRUE');
  t.same(r.ok && r.reply, { cmd: 'get_result', rc: 0, value: 'v', found: 'TRUE' });
  const quirk = decodeReply('cmd=get_result rc=0 value=a = b found=TRUE');
  t.same(quirk.ok && quirk.reply, { cmd: 'get_result', rc: 0, value: 'a = b', found: 'TRUE' }, "flux's keyval test: a = b");
  const h43 = decodeReply('cmd=get_result rc=0 found=TRUE value=a = b');
  t.same(h43.ok && h43.reply, { cmd: 'get_result', rc: 0, found: 'TRUE', value: 'a = b' }, 'hydra 4.3 order');
  const legacy = decodeReply('cmd=get_result rc=0 msg=success value=(vector,(0,1,1))');
  t.same(legacy.ok && legacy.reply, { cmd: 'get_result', rc: 0, msg: 'success', value: '(vector,(0,1,1))' }, 'hydra <= 4.0');
});

t.test('__proto__ stays inert', async (t) => {
  const q = decodeQuery('cmd=get kvsname=k key=__proto__ __proto__=polluted constructor=x');
  t.ok(q.ok);
  if (!q.ok) return;
  t.equal(q.query.cmd === 'get' && q.query.key, '__proto__', 'a __proto__ key is just a key');
  t.ok(q.query.extra instanceof Map);
  t.equal(q.query.extra?.get('__proto__'), 'polluted');
  t.equal(q.query.extra?.get('constructor'), 'x');
  t.equal(Object.getPrototypeOf(q.query), Object.prototype, 'the query object keeps its prototype');
  t.equal(Object.hasOwn(q.query, '__proto__'), false);
  t.equal(({} as Record<string, unknown>)['polluted'], undefined, 'Object.prototype untouched');
  const r = decodeReply('cmd=put_result rc=0 __proto__=x');
  t.ok(r.ok);
  if (r.ok) {
    t.equal(r.reply.extra?.get('__proto__'), 'x');
    t.equal(Object.getPrototypeOf(r.reply), Object.prototype);
  }
  t.equal(formatQuery({ cmd: 'put', kvsname: 'k', key: '__proto__', value: 'v' }), 'cmd=put kvsname=k key=__proto__ value=v\n');
});

t.test('trailing CR is not stripped (nobody does)', async (t) => {
  const q = decodeQuery('cmd=get key=a\r');
  t.same(q.ok && q.query, { cmd: 'get', key: 'a\r' });
});

t.test("flux keyval.c cases: a key that is a substring of another is not that key", async (t) => {
  const q = decodeQuery('cmd=get fookey=1');
  t.equal(q.ok, false);
  if (!q.ok) {
    t.equal(q.problem.rc, PMI_RC.ERR_INVALID_KEY);
    t.equal(q.reply, 'get_result');
  }
  const neg = decodeReply('cmd=universe_size rc=0 size=-1');
  t.same(neg.ok && neg.reply, { cmd: 'universe_size', rc: 0, size: -1 }, 'negative integers');
});

// ---- strict writing --------------------------------------------------------------------------------

t.test('a value that a client could not parse back throws LocalPmiError', async (t) => {
  for (const bad of ['a b', 'a\nb', 'a\tb', 'a\rb', 'a\0b', ' ']) {
    t.throws(() => formatQuery({ cmd: 'put', key: 'k', value: bad }), LocalPmiError, `query value ${JSON.stringify(bad)}`);
    t.throws(() => formatReply({ cmd: 'get_result', rc: 0, value: bad }), LocalPmiError, `reply value ${JSON.stringify(bad)}`);
  }
  t.throws(() => formatReply({ cmd: 'put_result', rc: 1, msg: 'has a space' }), { name: 'LocalPmiError', code: 'E_UNSAFE_VALUE' }, 'msg too');
  t.throws(() => formatQuery({ cmd: 'get', key: 'a b' }), LocalPmiError, 'key too');
  t.throws(() => formatReply({ cmd: 'maxes', rc: 0, kvsname_max: 1.5, keylen_max: 1, vallen_max: 1 }), LocalPmiError, 'a non-integer int');
  t.throws(() => formatReply({ cmd: 'nope', rc: 0 } as unknown as Reply), LocalPmiError, 'an unknown reply name');
});

t.test('rc first, value last, single spaces, one newline', async (t) => {
  const reply = { value: 'v', found: 'TRUE', msg: 'm', rc: 0, cmd: 'get_result' } as const;
  t.equal(formatReply(reply), 'cmd=get_result rc=0 msg=m found=TRUE value=v\n');
  t.equal(formatQuery({ value: 'v', key: 'k', kvsname: 'n', cmd: 'put' }), 'cmd=put kvsname=n key=k value=v\n');
  t.equal(formatQuery({ message: 'm', exitcode: 1, cmd: 'abort' }), 'cmd=abort exitcode=1 message=m\n', 'free text last in queries');
  t.equal(formatReply({ cmd: 'lookup_result', port: 'p', info: 'ok', rc: 0 }), 'cmd=lookup_result rc=0 info=ok port=p\n');
});

t.test('failureReply answers in the given reply command', async (t) => {
  t.equal(failureReply('get_result', { rc: 4, msg: 'key_x_not_found' }), 'cmd=get_result rc=4 msg=key_x_not_found\n');
  t.equal(failureReply('initack', { rc: 3, msg: 'no_rank' }), 'cmd=initack rc=3 msg=no_rank\n', 'no set lines on failure');
  t.equal(failureReply('error', { rc: -1, msg: 'blank_line' }), 'cmd=error rc=-1 msg=blank_line\n');
  t.equal(replyNameOf('spawn'), 'spawn_result');
  t.equal(replyNameOf('abort'), null, 'abort has no reply');
  t.equal(replyNameOf('bogus'), undefined);
  t.equal(replyNameOf('__proto__'), undefined, 'names are looked up with hasOwn');
});

// ---- failures ------------------------------------------------------------------------------------------

t.test('lines that are not PMI-1 queries', async (t) => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    ['', 'E_BLANK_LINE'],
    ['   \t', 'E_BLANK_LINE'],
    ['\r', 'E_BLANK_LINE'],
    ['cmd=get key=a\0b', 'E_NUL_BYTE'],
    ['    38cmd=fullinit;pmirank=0;threaded=FALSE;', 'E_PMI2'],
    ['38    cmd=fullinit;pmirank=0;threaded=FALSE;', 'E_PMI2'],
    ['hello there', 'E_NOT_PMI1'],
    [' cmd=get_maxes', 'E_NOT_PMI1'],
    ['cmd=', 'E_NO_COMMAND'],
    ['cmd= key=a', 'E_NO_COMMAND'],
  ];
  for (const [line, code] of cases) {
    const d = decodeQuery(line);
    t.equal(d.ok, false, JSON.stringify(line));
    if (d.ok) continue;
    t.equal(d.problem.code, code, `${JSON.stringify(line)} → ${code}`);
    t.equal(d.problem.rc, PMI_RC.FAIL);
    t.equal(d.reply, undefined, 'no query to answer in');
    t.notMatch(d.problem.msg, /\s/, 'msg has no whitespace');
  }
});

t.test('unknown command: rc -1, no reply name, tokens kept', async (t) => {
  const d = decodeQuery('cmd=bogus_command a=1');
  t.equal(d.ok, false);
  if (d.ok) return;
  t.equal(d.problem.code, 'E_UNKNOWN_COMMAND');
  t.equal(d.problem.rc, -1);
  t.equal(d.cmd, 'bogus_command');
  t.equal(d.reply, undefined);
  const proto = decodeQuery('cmd=__proto__');
  t.equal(!proto.ok && proto.problem.code, 'E_UNKNOWN_COMMAND', 'cmd=__proto__ is just unknown');
  const toString = decodeQuery('cmd=toString');
  t.equal(!toString.ok && toString.problem.code, 'E_UNKNOWN_COMMAND');
});

t.test('mcmd= is handed to the spawn assembler', async (t) => {
  const d = decodeQuery('mcmd=spawn');
  t.equal(d.ok, false);
  if (!d.ok) {
    t.equal(d.problem.code, 'E_MCMD');
    t.equal(d.reply, 'spawn_result');
  }
});

t.test('missing required attributes → the rc of the catalogue, in the query’s reply', async (t) => {
  const cases: ReadonlyArray<readonly [string, number, string]> = [
    ['cmd=init pmi_version=1', PMI_RC.ERR_INVALID_ARG, 'response_to_init'],
    ['cmd=init', PMI_RC.ERR_INVALID_ARG, 'response_to_init'],
    ['cmd=initack', PMI_RC.ERR_INVALID_ARG, 'initack'],
    ['cmd=put kvsname=k value=v', PMI_RC.ERR_INVALID_KEY, 'put_result'],
    ['cmd=put kvsname=k key=a', PMI_RC.ERR_INVALID_VAL, 'put_result'],
    ['cmd=put', PMI_RC.ERR_INVALID_KEY, 'put_result'],
    ['cmd=get kvsname=k', PMI_RC.ERR_INVALID_KEY, 'get_result'],
    ['cmd=publish_name service=s', PMI_RC.ERR_INVALID_ARG, 'publish_result'],
    ['cmd=publish_name port=p', PMI_RC.ERR_INVALID_ARG, 'publish_result'],
    ['cmd=unpublish_name', PMI_RC.ERR_INVALID_ARG, 'unpublish_result'],
    ['cmd=lookup_name', PMI_RC.ERR_INVALID_ARG, 'lookup_result'],
  ];
  for (const [line, rc, reply] of cases) {
    const d = decodeQuery(line);
    t.equal(d.ok, false, line);
    if (d.ok) continue;
    t.equal(d.problem.code, 'E_MISSING_ATTRIBUTE', line);
    t.equal(d.problem.rc, rc, `${line} → rc ${rc}`);
    t.equal(d.reply, reply, `${line} answered in ${reply}`);
  }
  t.equal(QUERIES.put.attrs.key.missingRc, PMI_RC.ERR_INVALID_KEY, 'the rc comes from the catalogue');
  t.equal(QUERIES.put.attrs.value.missingRc, PMI_RC.ERR_INVALID_VAL);
});

t.test('integers must be integers', async (t) => {
  for (const line of [
    'cmd=init pmi_version=1.0 pmi_subversion=1',
    'cmd=init pmi_version=one pmi_subversion=1',
    'cmd=init pmi_version= pmi_subversion=1',
    'cmd=initack pmiid=0x1',
    'cmd=initack pmiid=1e3',
    'cmd=initack pmiid=1234567890123456',
    'cmd=abort exitcode=--1',
  ]) {
    const d = decodeQuery(line);
    t.equal(d.ok, false, line);
    if (d.ok) continue;
    t.equal(d.problem.code, 'E_BAD_INTEGER', line);
    t.equal(d.problem.rc, PMI_RC.ERR_INVALID_ARG);
    t.equal(d.reply, replyNameOf(d.cmd ?? ''), 'answered in the query’s reply');
  }
  const ok = decodeQuery('cmd=initack pmiid=+7');
  t.same(ok.ok && ok.query, { cmd: 'initack', pmiid: 7 }, 'a sign is fine');
  const big = decodeQuery('cmd=initack pmiid=123456789012345');
  t.same(big.ok && big.query, { cmd: 'initack', pmiid: 123456789012345 }, '15 digits are fine');
  const bad = decodeReply('cmd=put_result rc=zero');
  t.equal(!bad.ok && bad.problem.code, 'E_BAD_INTEGER', 'replies too');
});

t.test('reply decoding failures', async (t) => {
  const unknown = decodeReply('cmd=keyval_cache a=1');
  t.equal(!unknown.ok && unknown.problem.code, 'E_UNKNOWN_REPLY');
  const mcmd = decodeReply('mcmd=spawn');
  t.equal(!mcmd.ok && mcmd.problem.code, 'E_UNKNOWN_REPLY');
  const blank = decodeReply('');
  t.equal(!blank.ok && blank.problem.code, 'E_BAD_REPLY');
  const missing = decodeReply('cmd=maxes rc=0 kvsname_max=256 keylen_max=64');
  t.equal(!missing.ok && missing.problem.code, 'E_BAD_REPLY', 'a successful reply lacking a required attribute');
  const missingValue = decodeReply('cmd=get_result rc=0');
  t.equal(!missingValue.ok && missingValue.problem.msg, 'reply_missing_value');
  const failed = decodeReply('cmd=get_result rc=-1 msg=key_no_such_key_not_found value=unknown');
  t.same(failed.ok && failed.reply, { cmd: 'get_result', rc: -1, msg: 'key_no_such_key_not_found', value: 'unknown' }, 'hydra legacy not-found');
  const failedBare = decodeReply('cmd=lookup_result rc=1');
  t.same(failedBare.ok && failedBare.reply, { cmd: 'lookup_result', rc: 1 }, 'a failure needs no required attributes');
  const badVersion = decodeReply('cmd=response_to_init rc=0 pmi_version=one');
  t.equal(!badVersion.ok && badVersion.problem.code, 'E_BAD_INTEGER', 'an optional attribute that is present must still be well-formed');
});

t.test('a bare response_to_init rc=0 is accepted (pmi_version/pmi_subversion optional, as legacy MPICH)', async (t) => {
  const bare = decodeReply('cmd=response_to_init rc=0');
  t.ok(bare.ok, 'accepted');
  t.same(bare.ok && bare.reply, { cmd: 'response_to_init', rc: 0 });
  const noRc = decodeReply('cmd=response_to_init');
  t.same(noRc.ok && noRc.reply, { cmd: 'response_to_init', rc: 0 }, 'missing rc reads as 0 here too');
  const one = decodeReply('cmd=response_to_init rc=0 pmi_version=1');
  t.same(one.ok && one.reply, { cmd: 'response_to_init', rc: 0, pmi_version: 1 }, 'either version alone');
  const full = decodeReply('cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1');
  t.same(full.ok && full.reply, { cmd: 'response_to_init', rc: 0, pmi_version: 1, pmi_subversion: 1 }, 'the full reply is unchanged');
  t.equal(formatReply({ cmd: 'response_to_init', rc: 0 }), 'cmd=response_to_init rc=0\n', 'and it can be written');
});

t.test('property: any writable query and reply decodes back to itself', async (t) => {
  const word = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'a=b', '=', 'x'), fc.stringMatching(/^[!-~]{1,20}$/));
  const seed = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};
  fc.assert(
    fc.property(word, word, word, (kvsname, key, value) => {
      const q: Query = { cmd: 'put', kvsname, key, value };
      const d = decodeQuery(noNl(formatQuery(q)));
      return d.ok && isDeepStrictEqual(d.query, q);
    }),
    { numRuns: 300, ...seed },
  );
  fc.assert(
    fc.property(word, fc.integer({ min: -1, max: 13 }), (value, rc) => {
      const r: Reply = { cmd: 'get_result', rc, value };
      const d = decodeReply(noNl(formatReply(r)));
      return d.ok && isDeepStrictEqual(d.reply, r);
    }),
    { numRuns: 300, ...seed },
  );
  fc.assert(
    fc.property(word, word, fc.constantFrom(' ', '\t', '\n', '\r', '\0'), (a, b, bad) => {
      try {
        formatQuery({ cmd: 'put', key: 'k', value: `${a}${bad}${b}` });
        return false;
      } catch (e) {
        return e instanceof LocalPmiError;
      }
    }),
    { numRuns: 200, ...seed },
  );
  t.pass('round trips');
});

/**
 * The reading rules stated in tokenize.ts, written the obvious way (split on runs of spaces and
 * tabs, one word at a time). The tokenizer itself scans with indexes for speed; it must read
 * every line exactly as this does.
 */
function referenceTokenize(line: string, vocabulary?: Vocabulary): Tokens | TokenizeFailure {
  if (line.length === 0 || /^[ \t\r]*$/.test(line)) return { reason: 'blank', detail: 'blank line (a PMI-1 line starts with cmd=)' };
  if (line.includes('\0')) return { reason: 'nul', detail: 'line contains a NUL byte' };
  let head: 'cmd' | 'mcmd';
  if (line.startsWith('cmd=')) head = 'cmd';
  else if (line.startsWith('mcmd=')) head = 'mcmd';
  else if (/^[ \d]{6}cmd=/.test(line)) return { reason: 'pmi2', detail: 'PMI-2 framed message (PMI-2 is not served; the client must use PMI-1)' };
  else return { reason: 'not-pmi1', detail: `not a PMI-1 line (must start with cmd=): ${JSON.stringify(line.length > 60 ? `${line.slice(0, 60)}…` : line)}` };
  const words = line.split(/[ \t]+/);
  const name = (words[0] ?? '').slice(head.length + 1);
  if (name.length === 0) return { reason: 'no-name', detail: 'empty command name after cmd=' };
  const vocab = vocabulary?.(head, name);
  const attrs = new Map<string, string>();
  const bare: string[] = [];
  const repeated: string[] = [];
  let lastKey: string | undefined;
  for (const w of words.slice(1)) {
    if (w === '') continue;
    const eq = w.indexOf('=');
    const inText = lastKey !== undefined && vocab?.text.has(lastKey) === true;
    if (eq > 0 && !(inText && !vocab?.known.has(w.slice(0, eq)))) {
      const key = w.slice(0, eq);
      if (attrs.has(key)) {
        repeated.push(key); // the first value stays
        lastKey = undefined;
        continue;
      }
      attrs.set(key, w.slice(eq + 1));
      lastKey = key;
    } else if (inText) {
      attrs.set(lastKey as string, `${attrs.get(lastKey as string) ?? ''} ${w}`);
    } else {
      bare.push(w);
    }
  }
  return { head, name, attrs, bare, repeated };
}

t.test('the tokenizer reads every line as the plain split-based reading does', async (t) => {
  const seed = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};
  const fragment = fc.constantFrom(
    'cmd=', 'mcmd=', 'get', 'put', 'get_result', 'abort', 'init', 'spawn', 'key', 'value', 'found', 'message', 'exitcode',
    'exit_code', 'kvsname', 'rc', 'msg', '=', '==', ' ', '  ', '\t', ' \t ', '\r', '\0', '0', '12', 'a', 'TRUE', '123456', '\xff',
  );
  const key = fc.constantFrom('key', 'value', 'found', 'message', 'exitcode', 'exit_code', 'error_msg', 'kvsname', 'rc', 'msg', 'x', '');
  const text = fc.array(fc.constantFrom('a', 'b', '=', '1', '\r', 'TRUE'), { maxLength: 3 }).map((f) => f.join(''));
  const word = fc.oneof(fc.tuple(key, text).map(([k, v]) => `${k}=${v}`), text);
  const sep = fc.constantFrom(' ', '\t', '  ', ' \t');
  const head = fc.constantFrom('cmd=get', 'cmd=put', 'cmd=get_result', 'cmd=abort', 'cmd=init', 'mcmd=spawn', 'cmd=', 'cmd==x', '   12cmd=get');
  const line = fc.oneof(
    fc.array(fragment, { maxLength: 24 }).map((f) => f.join('')),
    fc.array(fragment, { maxLength: 24 }).map((f) => `cmd=${f.join('')}`),
    fc.tuple(head, fc.array(fc.tuple(sep, word), { maxLength: 10 }), fc.constantFrom('', ' ', '\t ')).map(([h, ws, tail]) => h + ws.map(([s, w]) => s + w).join('') + tail),
  );
  const flat = (x: Tokens | TokenizeFailure) => ('reason' in x ? x : { ...x, attrs: [...x.attrs] }); // Map order matters
  fc.assert(
    fc.property(line, (l) => {
      for (const v of [undefined, queryVocabulary, replyVocabulary]) {
        const got = flat(tokenize(l, v));
        const want = flat(referenceTokenize(l, v));
        if (!isDeepStrictEqual(got, want)) throw new Error(`${JSON.stringify(l)}: ${JSON.stringify(got)} != ${JSON.stringify(want)}`);
      }
      return true;
    }),
    { numRuns: 5000, ...seed },
  );
  t.pass('same tokens, same failures');
});
