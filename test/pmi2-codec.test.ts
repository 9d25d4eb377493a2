/**
 * The PMI-2 codec: one table of (typed message, exact frame) checked in both directions for every
 * command and response of the catalogue, the real frames of hydra's transcripts, then liberal
 * reading, strict writing, defined failures, and property tests.
 *
 * Reproduce a property failure with FC_SEED=<seed> (printed by fast-check).
 */
import t from 'tap';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import {
  LocalPmiError,
  PMI_RC,
  PMI2_QUERIES,
  PMI2_RESPONSES,
  decodePmi2Query,
  decodePmi2Response,
  encodeFrame,
  formatPmi2Query,
  formatPmi2Response,
  parseFrameHeader,
  pmi2FailureResponse,
  pmi2ResponseFor,
  pmi2ResponseNameOf,
  tokenizeFrame,
  isPmi2Tokens,
  type Pmi2Query,
  type Pmi2Response,
} from '../src/protocol/index.js';
import { isPmi1, listTranscripts, loadTranscript } from './fixtures/transcripts.js';

const seed = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};

/** A frame as peers write it: `%6u` then the body (independent of the code under test). */
const frame = (body: string) => `${String(body.length).padStart(6, ' ')}${body}`;
/** The body of a frame string (after its 6-byte header, which must match its length). */
function bodyOf(f: string): string {
  const h = parseFrameHeader(f.slice(0, 6));
  if (!h.ok || h.length !== f.length - 6) throw new Error(`bad frame ${JSON.stringify(f)}`);
  return f.slice(6);
}

// ---- the table -----------------------------------------------------------------------------------

const queryTable: ReadonlyArray<readonly [Pmi2Query, string]> = [
  [{ cmd: 'fullinit', pmirank: 0 }, 'cmd=fullinit;pmirank=0;'],
  [{ cmd: 'fullinit', pmijobid: 'kvs_1', pmirank: 3, threaded: false }, 'cmd=fullinit;pmijobid=kvs_1;pmirank=3;threaded=FALSE;'],
  [{ cmd: 'job-getid' }, 'cmd=job-getid;'],
  [{ cmd: 'job-getid', thrid: '0x7ffd1234' }, 'cmd=job-getid;thrid=0x7ffd1234;'],
  [{ cmd: 'job-connect', jobid: 'kvs_2' }, 'cmd=job-connect;jobid=kvs_2;'],
  [{ cmd: 'job-disconnect', jobid: 'kvs_2' }, 'cmd=job-disconnect;jobid=kvs_2;'],
  [{ cmd: 'kvs-put', key: 'probe-0', value: 'hello;from;0' }, 'cmd=kvs-put;key=probe-0;value=hello;;from;;0;'],
  [{ cmd: 'kvs-put', key: 'k', value: 'a b=c\nd' }, 'cmd=kvs-put;key=k;value=a b=c\nd;'],
  [{ cmd: 'kvs-fence' }, 'cmd=kvs-fence;'],
  [{ cmd: 'kvs-get', jobid: 'kvs_10713_0', srcid: -1, key: 'probe-1' }, 'cmd=kvs-get;jobid=kvs_10713_0;srcid=-1;key=probe-1;'],
  [{ cmd: 'kvs-get', key: 'k' }, 'cmd=kvs-get;key=k;'],
  [{ cmd: 'info-putnodeattr', key: 'node-0', value: 'nv0' }, 'cmd=info-putnodeattr;key=node-0;value=nv0;'],
  [{ cmd: 'info-getnodeattr', key: 'node-0', wait: false }, 'cmd=info-getnodeattr;key=node-0;wait=FALSE;'],
  [{ cmd: 'info-getnodeattr', key: 'node-0', wait: true }, 'cmd=info-getnodeattr;key=node-0;wait=TRUE;'],
  [{ cmd: 'info-getjobattr', key: 'PMI_process_mapping' }, 'cmd=info-getjobattr;key=PMI_process_mapping;'],
  [{ cmd: 'name-publish', name: 'svc', port: 'tag#0$port#5' }, 'cmd=name-publish;name=svc;port=tag#0$port#5;'],
  [{ cmd: 'name-publish', name: 'svc', port: 'p', info: new Map([['a', 'b']]) }, 'cmd=name-publish;name=svc;port=p;infokeycount=1;infokey0=a;infoval0=b;'],
  [{ cmd: 'name-unpublish', name: 'svc' }, 'cmd=name-unpublish;name=svc;'],
  [{ cmd: 'name-lookup', name: 'svc' }, 'cmd=name-lookup;name=svc;'],
  [
    {
      cmd: 'spawn',
      preput: new Map([['k', 'v']]),
      segments: [
        { subcmd: './a.out', maxprocs: 2, argv: ['x y', '-n'], info: new Map([['wdir', '/tmp']]) },
        { subcmd: './b', maxprocs: 1, argv: [], info: new Map() },
      ],
    },
    'cmd=spawn;ncmds=2;preputcount=1;ppkey0=k;ppval0=v;subcmd=./a.out;maxprocs=2;argc=2;argv0=x y;argv1=-n;infokeycount=1;infokey0=wdir;infoval0=/tmp;subcmd=./b;maxprocs=1;argc=0;infokeycount=0;',
  ],
  [{ cmd: 'spawn', thrid: 't1', preput: new Map(), segments: [] }, 'cmd=spawn;thrid=t1;ncmds=0;preputcount=0;'],
  [{ cmd: 'abort', isworld: true, msg: 'oops' }, 'cmd=abort;isworld=TRUE;msg=oops;'],
  [{ cmd: 'abort', exitcode: 3, msg: 'm' }, 'cmd=abort;exitcode=3;msg=m;'],
  [{ cmd: 'abort' }, 'cmd=abort;'],
  [{ cmd: 'finalize' }, 'cmd=finalize;'],
  [{ cmd: 'ring', 'ring-count': 1, 'ring-left': 'a', 'ring-right': 'b' }, 'cmd=ring;ring-count=1;ring-left=a;ring-right=b;'],
];

const responseTable: ReadonlyArray<readonly [Pmi2Response, string]> = [
  [
    { cmd: 'fullinit-response', rc: 0, 'pmi-version': 2, 'pmi-subversion': 0, rank: 0, size: 2, appnum: 0, debugged: false, pmiverbose: false },
    'cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=0;size=2;appnum=0;debugged=FALSE;pmiverbose=FALSE;',
  ],
  [
    { cmd: 'fullinit-response', thrid: '0x1', rc: 0, 'pmi-version': 2, 'pmi-subversion': 0, rank: 5, size: 8, appnum: 1, 'spawner-jobid': 'kvs_1', debugged: true, pmiverbose: true },
    'cmd=fullinit-response;thrid=0x1;rc=0;pmi-version=2;pmi-subversion=0;rank=5;size=8;appnum=1;spawner-jobid=kvs_1;debugged=TRUE;pmiverbose=TRUE;',
  ],
  [{ cmd: 'fullinit-response', rc: -1, errmsg: 'no_rank_9' }, 'cmd=fullinit-response;rc=-1;errmsg=no_rank_9;'],
  [{ cmd: 'job-getid-response', rc: 0, jobid: 'kvs_10713_0_1854994759_vm' }, 'cmd=job-getid-response;rc=0;jobid=kvs_10713_0_1854994759_vm;'],
  [{ cmd: 'job-connect-response', rc: 0, kvscopy: false }, 'cmd=job-connect-response;rc=0;kvscopy=FALSE;'],
  [{ cmd: 'job-disconnect-response', rc: 0 }, 'cmd=job-disconnect-response;rc=0;'],
  [{ cmd: 'kvs-put-response', rc: 0 }, 'cmd=kvs-put-response;rc=0;'],
  [{ cmd: 'kvs-put-response', rc: 4, errmsg: 'missing_key' }, 'cmd=kvs-put-response;rc=4;errmsg=missing_key;'],
  [{ cmd: 'kvs-fence-response', rc: 0 }, 'cmd=kvs-fence-response;rc=0;'],
  [{ cmd: 'kvs-get-response', rc: 0, found: true, value: 'a;b' }, 'cmd=kvs-get-response;rc=0;found=TRUE;value=a;;b;'],
  [{ cmd: 'kvs-get-response', rc: 0, found: false }, 'cmd=kvs-get-response;rc=0;found=FALSE;'],
  [{ cmd: 'info-putnodeattr-response', rc: 0 }, 'cmd=info-putnodeattr-response;rc=0;'],
  [{ cmd: 'info-getnodeattr-response', rc: 0, found: true, value: 'nv0' }, 'cmd=info-getnodeattr-response;rc=0;found=TRUE;value=nv0;'],
  [{ cmd: 'info-getjobattr-response', rc: 0, found: true, value: '(vector,(0,1,1))' }, 'cmd=info-getjobattr-response;rc=0;found=TRUE;value=(vector,(0,1,1));'],
  [{ cmd: 'name-publish-response', rc: 0 }, 'cmd=name-publish-response;rc=0;'],
  [{ cmd: 'name-unpublish-response', rc: 1, errmsg: 'service_not_found' }, 'cmd=name-unpublish-response;rc=1;errmsg=service_not_found;'],
  [{ cmd: 'name-lookup-response', rc: 0, port: 'p#1' }, 'cmd=name-lookup-response;rc=0;port=p#1;value=p#1;'],
  [{ cmd: 'spawn-response', rc: 0, jobid: 'kvs_3', nerrs: 0, errcodes: '0,0' }, 'cmd=spawn-response;rc=0;jobid=kvs_3;nerrs=0;errcodes=0,0;'],
  [{ cmd: 'spawn-response', rc: -1, errmsg: 'spawn_is_not_supported' }, 'cmd=spawn-response;rc=-1;errmsg=spawn_is_not_supported;'],
  [{ cmd: 'finalize-response', rc: 0 }, 'cmd=finalize-response;rc=0;'],
  [{ cmd: 'ring-response', rc: 0, 'ring-count': 2, 'ring-left': 'l', 'ring-right': 'r' }, 'cmd=ring-response;rc=0;ring-count=2;ring-left=l;ring-right=r;'],
];

t.test('the tables cover every command and response of the catalogue', async (t) => {
  const queries = new Set(queryTable.map(([q]) => q.cmd));
  for (const name of Object.keys(PMI2_QUERIES)) t.ok(queries.has(name as Pmi2Query['cmd']), `command ${name}`);
  const responses = new Set(responseTable.map(([r]) => r.cmd));
  for (const name of Object.keys(PMI2_RESPONSES)) t.ok(responses.has(name as Pmi2Response['cmd']), `response ${name}`);
  for (const [name, def] of Object.entries(PMI2_QUERIES)) {
    if (def.response !== null) t.ok(Object.hasOwn(PMI2_RESPONSES, def.response), `${name} answers in a catalogued response`);
    t.equal(pmi2ResponseNameOf(name), def.response);
  }
});

t.test('every command: typed → exact frame → the same typed command', async (t) => {
  for (const [query, body] of queryTable) {
    const wire = formatPmi2Query(query);
    t.equal(wire, frame(body), `format ${query.cmd}`);
    const d = decodePmi2Query(body);
    t.ok(d.ok, `decode ${body}`);
    if (d.ok) t.same(d.query, query, `round trip ${body}`);
    t.equal(formatPmi2Query(d.ok ? d.query : query), wire, `re-format ${query.cmd}`);
  }
});

t.test('every response: typed → exact frame → the same typed response', async (t) => {
  for (const [response, body] of responseTable) {
    const wire = formatPmi2Response(response);
    t.equal(wire, frame(body), `format ${response.cmd}`);
    const d = decodePmi2Response(body);
    t.ok(d.ok, `decode ${body}`);
    if (d.ok) t.same(d.response, response, `round trip ${body}`);
  }
});

t.test('the frame the issue quotes, byte for byte', async (t) => {
  t.equal(formatPmi2Query({ cmd: 'fullinit', pmirank: 0 }), '    23cmd=fullinit;pmirank=0;');
});

// ---- real frames ---------------------------------------------------------------------------------

t.test("hydra 4.0.2's PMI-2 transcripts: every frame decodes, every response re-formats to an equal one", async (t) => {
  const files = listTranscripts().filter((f) => f.includes('pmi2'));
  t.ok(files.length >= 2, `PMI-2 transcripts: ${files.join(', ')}`);
  let frames = 0;
  for (const f of files) {
    for (const e of loadTranscript(f)) {
      if (isPmi1(e.data)) continue;
      frames++;
      const body = bodyOf(e.data); // clients write the length left-aligned, hydra right-aligned
      if (e.dir === 'C') {
        const d = decodePmi2Query(body);
        t.ok(d.ok, `${f}:${e.lineNo} ${body}`);
        if (d.ok) {
          const again = decodePmi2Query(bodyOf(formatPmi2Query(d.query)));
          t.ok(again.ok && isDeepStrictEqual(again.query, d.query), `${f}:${e.lineNo} re-formats`);
        }
      } else {
        const d = decodePmi2Response(body);
        t.ok(d.ok, `${f}:${e.lineNo} ${body}`);
        if (d.ok) {
          const again = decodePmi2Response(bodyOf(formatPmi2Response(d.response)));
          t.ok(again.ok && isDeepStrictEqual(again.response, d.response), `${f}:${e.lineNo} re-formats`);
        }
      }
    }
  }
  t.ok(frames >= 30, `${frames} frames`);
});

t.test('the left-aligned header of legacy clients and the right-aligned one of hydra read the same', async (t) => {
  for (const h of ['    23', '23    ', '  23  ', '000023']) t.same(parseFrameHeader(h), { ok: true, length: 23 }, JSON.stringify(h));
  for (const h of ['      ', ' 2 3  ', '+23   ', '-1    ', '2x    ', '0x17  ', '23', '       ']) t.equal(parseFrameHeader(h).ok, false, JSON.stringify(h));
});

// ---- liberal reading -----------------------------------------------------------------------------

t.test('any order, aliases, unknown attributes kept aside, the first of a repeated one wins', async (t) => {
  const d = decodePmi2Query('cmd=kvs-put;value=v;__proto__=x;key=k;key=other;constructor=y;');
  t.ok(d.ok);
  if (!d.ok) return;
  t.same(d.query, { cmd: 'kvs-put', key: 'k', value: 'v', extra: new Map([['__proto__', 'x'], ['constructor', 'y']]) });
  t.same(d.tokens.repeated, ['key']);
  t.equal(Object.getPrototypeOf(d.query), Object.prototype, 'a peer cannot set the prototype');
  const a = decodePmi2Query('cmd=abort;message=m;exitcode=2;msg=second;');
  t.ok(a.ok && isDeepStrictEqual(a.query, { cmd: 'abort', msg: 'm', exitcode: 2 }), 'message is msg (MPICH ≥ 4.1), the first wins');
  const r = decodePmi2Response('cmd=name-lookup-response;rc=0;value=p;');
  t.ok(r.ok && isDeepStrictEqual(r.response, { cmd: 'name-lookup-response', rc: 0, port: 'p' }), "Slurm's value= is the port");
});

t.test('separators: ;; is one ;, the last ; may be missing, spaces before keys, a NUL after the last pair ends the frame, bare words', async (t) => {
  const cases: ReadonlyArray<readonly [string, Pmi2Query]> = [
    ['cmd=kvs-put;key=k;value=a;;b;;;', { cmd: 'kvs-put', key: 'k', value: 'a;b;' }],
    ['cmd=kvs-put;key=k;value=;;', { cmd: 'kvs-put', key: 'k', value: ';' }],
    ['cmd=kvs-put;key=k;value=v', { cmd: 'kvs-put', key: 'k', value: 'v' }],
    ['cmd=kvs-put; key=k;\nvalue= v ;', { cmd: 'kvs-put', key: 'k', value: ' v ' }],
    ['cmd=kvs-put;key=k;value=;', { cmd: 'kvs-put', key: 'k', value: '' }],
    ['cmd=kvs-put;key=k=1;value=x=y;', { cmd: 'kvs-put', key: 'k=1', value: 'x=y' }],
    ['cmd=finalize;\0\0\0\0\0\0', { cmd: 'finalize' }],
    ['cmd=finalize;\0\x7f\x01\0\xff\0', { cmd: 'finalize' }],
    ['cmd=kvs-put;key=k;value=a\0junk', { cmd: 'kvs-put', key: 'k', value: 'a' }],
    ['cmd=finalize;junk;=v;', { cmd: 'finalize' }],
    ['cmd=kvs-get;key=\xff\xe9;', { cmd: 'kvs-get', key: '\xff\xe9' }],
  ];
  for (const [body, q] of cases) {
    const d = decodePmi2Query(body);
    t.ok(d.ok && isDeepStrictEqual(d.query, q), JSON.stringify(body));
  }
  const tok = tokenizeFrame('cmd=finalize;junk;=v;');
  t.ok(isPmi2Tokens(tok) && isDeepStrictEqual(tok.bare, ['junk', '=v']), 'bare words are kept');
});

t.test('booleans: TRUE/FALSE in any case, yes/no, integers (hydra ≥ 4.1 writes pmiverbose=0)', async (t) => {
  for (const [raw, v] of [['TRUE', true], ['true', true], ['True', true], ['yes', true], ['1', true], ['2', true], ['FALSE', false], ['false', false], ['no', false], ['0', false]] as const) {
    const d = decodePmi2Query(`cmd=info-getnodeattr;key=k;wait=${raw};`);
    t.ok(d.ok && d.query.cmd === 'info-getnodeattr' && d.query.wait === v, `wait=${raw}`);
  }
  const r = decodePmi2Response('cmd=fullinit-response;rc=0;rank=1;size=4;appnum=0;pmiverbose=0;');
  t.ok(r.ok && isDeepStrictEqual(r.response, { cmd: 'fullinit-response', rc: 0, rank: 1, size: 4, appnum: 0, pmiverbose: false }), "hydra ≥ 4.1's fullinit-response");
});

t.test('responses: rc missing is 0; a failed response needs none of its attributes', async (t) => {
  const ok = decodePmi2Response('cmd=kvs-get-response;found=FALSE;');
  t.ok(ok.ok && ok.response.rc === 0);
  const failed = decodePmi2Response('cmd=kvs-get-response;rc=1;');
  t.ok(failed.ok && isDeepStrictEqual(failed.response, { cmd: 'kvs-get-response', rc: 1 }), "hydra ≥ 4.1's not found (no errmsg: its bug)");
  const bad = decodePmi2Response('cmd=kvs-get-response;rc=0;value=v;');
  t.ok(!bad.ok && bad.problem.code === 'E_BAD_REPLY', 'a successful response without found');
  const unknown = decodePmi2Response('cmd=auth-response;authinfo=3;');
  t.ok(!unknown.ok && unknown.problem.code === 'E_UNKNOWN_REPLY');
});

t.test('lists: indexed from 0 or 1, counts inferred when absent, a repeated key keeps its first value', async (t) => {
  const base1 = decodePmi2Query('cmd=spawn;ncmds=1;preputcount=0;subcmd=a;maxprocs=1;argc=2;argv1=x;argv2=y;infokeycount=0;');
  t.ok(base1.ok && base1.query.cmd === 'spawn' && isDeepStrictEqual(base1.query.segments[0]?.argv, ['x', 'y']), 'argv1… (pmi-2.0.txt says base=1)');
  const noCounts = decodePmi2Query('cmd=spawn;subcmd=a;maxprocs=1;argv0=x;infokey0=k;infoval0=v;');
  t.ok(
    noCounts.ok &&
      isDeepStrictEqual(noCounts.query, { cmd: 'spawn', preput: new Map(), segments: [{ subcmd: 'a', maxprocs: 1, argv: ['x'], info: new Map([['k', 'v']]) }] }),
    'no ncmds, preputcount, argc, infokeycount',
  );
  const dup = decodePmi2Query('cmd=spawn;ncmds=1;preputcount=2;ppkey0=k;ppval0=first;ppkey1=k;ppval1=second;subcmd=a;maxprocs=1;argc=0;');
  t.ok(dup.ok && dup.query.cmd === 'spawn' && isDeepStrictEqual(dup.query.preput, new Map([['k', 'first']])));
  const legacy = decodePmi2Query('cmd=name-publish;name=s;port=p;infokeycount=0;');
  t.ok(legacy.ok && isDeepStrictEqual(legacy.query, { cmd: 'name-publish', name: 's', port: 'p' }), "the legacy client's infokeycount=0");
});

t.test('spawn: each subcmd opens a segment; thrid after the segments (MPICH ≥ 4.1 appends it) belongs to the command', async (t) => {
  const d = decodePmi2Query('cmd=spawn;ncmds=2;preputcount=0;subcmd=a;maxprocs=2;argc=1;argv0=-v;infokeycount=0;subcmd=b;maxprocs=1;argc=0;infokeycount=0;thrid=0x55;');
  t.ok(d.ok);
  if (!d.ok || d.query.cmd !== 'spawn') return;
  t.equal(d.query.thrid, '0x55');
  t.same(
    d.query.segments.map((s) => [s.subcmd, s.maxprocs, s.argv]),
    [
      ['a', 2, ['-v']],
      ['b', 1, []],
    ],
  );
  const extra = decodePmi2Query('cmd=spawn;ncmds=1;subcmd=a;maxprocs=1;argc=0;color=red;');
  t.ok(extra.ok && extra.query.cmd === 'spawn' && isDeepStrictEqual(extra.query.segments[0]?.extra, new Map([['color', 'red']])), 'unknown in a segment: its extra');
});

// ---- defined failures ----------------------------------------------------------------------------

t.test('a failure names the rc, the response to answer in and the thrid to echo', async (t) => {
  const cases: ReadonlyArray<readonly [string, string, number, string | null | undefined, string?]> = [
    ['cmd=kvs-put;thrid=7;value=v;', 'E_MISSING_ATTRIBUTE', PMI_RC.ERR_INVALID_KEY, 'kvs-put-response', '7'],
    ['cmd=kvs-put;key=k;', 'E_MISSING_ATTRIBUTE', PMI_RC.ERR_INVALID_VAL, 'kvs-put-response'],
    ['cmd=job-connect;', 'E_MISSING_ATTRIBUTE', PMI_RC.ERR_INVALID_ARG, 'job-connect-response'],
    ['cmd=fullinit;pmirank=zero;', 'E_BAD_INTEGER', PMI_RC.ERR_INVALID_ARG, 'fullinit-response'],
    ['cmd=info-getnodeattr;key=k;wait=maybe;', 'E_BAD_BOOLEAN', PMI_RC.ERR_INVALID_ARG, 'info-getnodeattr-response'],
    ['cmd=abort;exitcode=x;', 'E_BAD_INTEGER', PMI_RC.ERR_INVALID_ARG, null],
    ['cmd=kvs-exchange;thrid=9;', 'E_UNKNOWN_COMMAND', PMI_RC.FAIL, 'kvs-exchange-response', '9'],
    ['cmd=bad name!;', 'E_UNKNOWN_COMMAND', PMI_RC.FAIL, undefined],
    ['cmd=spawn;ncmds=1;subcmd=a;maxprocs=1;argc=99999999;argv0=x;', 'E_BAD_COUNT', PMI_RC.ERR_INVALID_NUM_ARGS, 'spawn-response'],
    ['cmd=spawn;ncmds=1;subcmd=a;maxprocs=1;argc=2;argv0=x;argv2=y;', 'E_BAD_COUNT', PMI_RC.ERR_INVALID_NUM_ARGS, 'spawn-response'],
    ['cmd=spawn;ncmds=1;preputcount=1;ppkey0=k;subcmd=a;maxprocs=1;argc=0;', 'E_BAD_COUNT', PMI_RC.ERR_INVALID_NUM_ARGS, 'spawn-response'],
    ['cmd=spawn;ncmds=3;subcmd=a;maxprocs=1;argc=0;', 'E_BAD_COUNT', PMI_RC.ERR_INVALID_NUM_ARGS, 'spawn-response'],
    ['cmd=spawn;ncmds=1;subcmd=a;argc=0;', 'E_MISSING_ATTRIBUTE', PMI_RC.ERR_INVALID_ARG, 'spawn-response'],
    ['cmd=spawn;ncmds=-1;', 'E_BAD_INTEGER', PMI_RC.ERR_INVALID_ARG, 'spawn-response'],
    ['', 'E_BLANK_FRAME', PMI_RC.FAIL, undefined],
    ['  \n', 'E_BLANK_FRAME', PMI_RC.FAIL, undefined],
    ['key=k;cmd=kvs-get;', 'E_NOT_PMI2', PMI_RC.FAIL, undefined],
    ['cmd=;', 'E_NO_COMMAND', PMI_RC.FAIL, undefined],
    ['cmd=kvs-put;key=k\0;value=v;', 'E_NUL_BYTE', PMI_RC.FAIL, undefined],
    ['\0cmd=kvs-put;', 'E_NUL_BYTE', PMI_RC.FAIL, undefined],
  ];
  for (const [body, code, rc, response, thrid] of cases) {
    const d = decodePmi2Query(body);
    t.notOk(d.ok, JSON.stringify(body));
    if (d.ok) continue;
    t.equal(d.problem.code, code, `${JSON.stringify(body)}: ${code}`);
    t.equal(d.problem.rc, rc, `${JSON.stringify(body)}: rc ${rc}`);
    t.equal(d.response, response, `${JSON.stringify(body)}: answered in ${String(response)}`);
    t.equal(d.thrid, thrid, `${JSON.stringify(body)}: thrid`);
    t.notMatch(d.problem.msg, /[\s;]/, 'the errmsg is one word');
  }
  t.equal(pmi2ResponseFor('kvs-get'), 'kvs-get-response');
  t.equal(pmi2ResponseFor('abort'), null);
});

t.test('failure responses: in the response the client waits for, with its thrid', async (t) => {
  t.equal(pmi2FailureResponse('kvs-put-response', { rc: 4, msg: 'missing_key' }, '7'), frame('cmd=kvs-put-response;thrid=7;rc=4;errmsg=missing_key;'));
  t.equal(pmi2FailureResponse('x-response', { rc: -1, msg: 'unknown_command_x' }), frame('cmd=x-response;rc=-1;errmsg=unknown_command_x;'));
  const d = decodePmi2Response(bodyOf(pmi2FailureResponse('kvs-get-response', { rc: 1, msg: 'not;found' })));
  t.ok(d.ok && isDeepStrictEqual(d.response, { cmd: 'kvs-get-response', rc: 1, errmsg: 'not;found' }), 'escaped and read back');
});

// ---- strict writing ------------------------------------------------------------------------------

t.test('a successful response gets the attributes every client needs', async (t) => {
  t.equal(
    formatPmi2Response({ cmd: 'fullinit-response', rc: 0, rank: 1, size: 2, appnum: 0 }),
    frame('cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=1;size=2;appnum=0;debugged=FALSE;pmiverbose=FALSE;'),
    'legacy clients need the versions and TRUE/FALSE booleans, MPICH ≥ 4.1 needs pmiverbose',
  );
  t.throws(() => formatPmi2Response({ cmd: 'fullinit-response', rc: 0, rank: 1, size: 2 }), LocalPmiError, 'appnum is required');
  t.throws(() => formatPmi2Response({ cmd: 'kvs-get-response', rc: 0 }), LocalPmiError, 'found is required');
  t.doesNotThrow(() => formatPmi2Response({ cmd: 'kvs-get-response', rc: 1 }), 'not on a failure');
});

t.test('what no reader could take back is never written', async (t) => {
  t.throws(() => formatPmi2Query({ cmd: 'kvs-put', key: 'k', value: 'a\0b' }), LocalPmiError, 'NUL in a value');
  t.throws(() => formatPmi2Query({ cmd: 'kvs-put', key: 'k', value: 'ƒ' }), LocalPmiError, 'a character beyond one byte');
  t.throws(() => formatPmi2Query({ cmd: 'kvs-put', key: 'k', value: 'x'.repeat(1_000_000) }), LocalPmiError, 'longer than 6 digits can say');
  t.throws(() => encodeFrame('kvs-put', [['a;b', 'v']]), LocalPmiError, 'a ; in a key');
  t.throws(() => encodeFrame('kvs-put', [['a=b', 'v']]), LocalPmiError, 'a = in a key');
  t.throws(() => encodeFrame('kvs put', []), LocalPmiError, 'a space in the command');
  t.throws(() => encodeFrame('', []), LocalPmiError, 'no command');
  t.throws(() => formatPmi2Query({ cmd: 'kvs-put', key: 'k' } as unknown as Pmi2Query), LocalPmiError, 'a required attribute');
  t.throws(() => formatPmi2Query({ cmd: 'fullinit', pmirank: 1.5 }), LocalPmiError, 'not an integer');
  t.throws(() => formatPmi2Query({ cmd: 'kvs-get', key: 'k', srcid: '1' } as unknown as Pmi2Query), LocalPmiError, 'a string for an integer');
  t.throws(() => formatPmi2Query({ cmd: 'nope' } as unknown as Pmi2Query), LocalPmiError);
  t.throws(() => formatPmi2Response({ cmd: 'nope-response', rc: 0 } as unknown as Pmi2Response), LocalPmiError);
});

// ---- properties ----------------------------------------------------------------------------------

const byteChar = fc.integer({ min: 1, max: 255 }).map((c) => String.fromCharCode(c));
const nasty = fc.constantFrom(';', ';;', '=', ' ', '\n', '\r', '\t', '\xff', 'cmd=', 'a', '0');
const text = fc.oneof(fc.string({ unit: byteChar, maxLength: 12 }), fc.array(nasty, { maxLength: 6 }).map((a) => a.join('')));
const word = fc.string({ unit: fc.constantFrom(...'abcXYZ019_-.:#/'.split('')), minLength: 1, maxLength: 10 });
const int = fc.integer({ min: -1000, max: 1_000_000 });
const kv = fc.uniqueArray(fc.tuple(text, text), { maxLength: 3, selector: ([k]) => k }).map((a) => new Map(a));
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });

/** A plain command without its undefined properties (they are not written, so they do not come back). */
function q(o: object): Pmi2Query {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as unknown as Pmi2Query;
}

const queryArb: fc.Arbitrary<Pmi2Query> = fc.oneof(
  fc.record({ pmijobid: opt(word), pmirank: opt(int), threaded: opt(fc.boolean()), thrid: opt(word) }).map((r) => q({ cmd: 'fullinit', ...r })),
  fc.record({ key: text, value: text, thrid: opt(word) }).map((r) => q({ cmd: 'kvs-put', ...r })),
  fc.record({ jobid: opt(text), srcid: opt(int), key: text }).map((r) => q({ cmd: 'kvs-get', ...r })),
  fc.record({ key: text, wait: opt(fc.boolean()) }).map((r) => q({ cmd: 'info-getnodeattr', ...r })),
  fc.record({ name: text, port: text, info: kv }).map((r) => q({ cmd: 'name-publish', name: r.name, port: r.port, info: r.info.size ? r.info : undefined })),
  fc.record({ isworld: opt(fc.boolean()), exitcode: opt(int), msg: opt(text) }).map((r) => q({ cmd: 'abort', ...r })),
  fc
    .record({
      preput: kv,
      segments: fc.array(fc.record({ subcmd: text, maxprocs: int, argv: fc.array(text, { maxLength: 4 }), info: kv }), { maxLength: 3 }),
    })
    .map((r) => q({ cmd: 'spawn', preput: r.preput, segments: r.segments.map((s) => ({ ...s })) })),
);

t.test('property: any command → frame → the same command', async (t) => {
  fc.assert(
    fc.property(queryArb, (q) => {
      const wire = formatPmi2Query(q);
      const d = decodePmi2Query(bodyOf(wire));
      return d.ok && isDeepStrictEqual(d.query, q);
    }),
    { numRuns: 500, ...seed },
  );
  t.pass('500 runs');
});

t.test('property: any bytes decode to a command or a defined failure, never a throw', async (t) => {
  const names = [...Object.keys(PMI2_QUERIES), 'x'];
  const attrNames = ['key', 'value', 'thrid', 'subcmd', 'argc', 'argv0', 'argv1', 'ncmds', 'infokey0', 'infoval0', 'infokeycount', 'wait', 'pmirank', '__proto__'];
  const body = fc.oneof(
    fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 40 }),
    fc
      .tuple(fc.constantFrom(...names), fc.array(fc.tuple(fc.constantFrom(...attrNames), fc.oneof(text, int.map(String))), { maxLength: 8 }))
      .map(([n, pairs]) => `cmd=${n};${pairs.map(([k, v]) => `${k}=${v};`).join('')}`),
  );
  /** What a command looks like once written: unknown attributes are not written. */
  const written = (q: Pmi2Query): unknown => {
    const { extra: _e, ...rest } = q;
    if (rest.cmd !== 'spawn') return rest;
    return { ...rest, segments: rest.segments.map(({ extra: _x, ...s }) => s) };
  };
  fc.assert(
    fc.property(body, (b) => {
      const d = decodePmi2Query(b);
      if (d.ok) {
        // Whatever we read, we can write, and it reads back the same.
        const again = decodePmi2Query(bodyOf(formatPmi2Query(d.query)));
        return again.ok && isDeepStrictEqual(again.query, written(d.query));
      }
      return typeof d.problem.rc === 'number' && !/[\s;]/.test(d.problem.msg) && (d.cmd === undefined || d.response !== undefined || !/^[\w-]+$/.test(d.cmd));
    }),
    { numRuns: 3000, ...seed },
  );
  t.pass('3000 runs');
});
