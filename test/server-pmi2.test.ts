/**
 * The server engine's PMI-2 side (src/server/pmi2-requests.ts), sans I/O: PMI-2 ranks alone and
 * mixed with PMI-1 ranks in one job, identity from fullinit, `--pmi-version`, and the inputs a
 * listener can meet that are neither (bad frames, other protocols, truncation).
 * Frames are written and compared as bodies (the harness checks each header and decodes each
 * response as a strict client would).
 */
import t from 'tap';
import { EngineHarness, type TestConn } from './fixtures/engine-harness.js';

const INIT2 = 'cmd=init pmi_version=2 pmi_subversion=0';
const INIT2_OK = 'cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0';

/** A PMI_FD rank that speaks PMI-2: init line, then fullinit. */
function pmi2Rank(h: EngineHarness, rank: number): TestConn {
  const c = h.fd(rank);
  if (c.send(INIT2)[0] !== INIT2_OK) throw new Error('PMI-2 init refused');
  const got = c.frame(`cmd=fullinit;pmirank=${rank};threaded=FALSE;`);
  if (!got[0]?.startsWith('cmd=fullinit-response;rc=0;')) throw new Error(`fullinit failed: ${JSON.stringify(got)}`);
  return c;
}

t.test('fullinit answers what legacy MPICH, MPICH >= 4.1 and Slurm libpmi2 all require', async (t) => {
  const h = new EngineHarness({ size: 2, appnum: 3 });
  const c = h.fd(1);
  t.same(c.send(INIT2), [INIT2_OK], 'the PMI-1 init line is answered with version 2');
  t.same(c.frame('cmd=fullinit;pmirank=1;threaded=FALSE;'), ['cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=1;size=2;appnum=3;debugged=FALSE;pmiverbose=FALSE;']);
  t.same(c.frame('cmd=fullinit;pmirank=1;'), ['cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=1;size=2;appnum=3;debugged=FALSE;pmiverbose=FALSE;'], 'fullinit again is answered again');
  t.same(c.frame('cmd=job-getid;thrid=7;'), ['cmd=job-getid-response;thrid=7;rc=0;jobid=kvs_pmibridge_0;'], 'thrid is echoed first');
  t.equal(h.eventsOf('initialized').length, 1);
});

t.test('PMI-1 and PMI-2 ranks share one KVS: a fence and a barrier complete together', async (t) => {
  const h = new EngineHarness({ size: 3 });
  const p1 = h.fd(0);
  p1.send('cmd=init pmi_version=1 pmi_subversion=1');
  const a = pmi2Rank(h, 1);
  const b = pmi2Rank(h, 2);
  t.same(p1.send('cmd=put kvsname=kvs_pmibridge_0 key=from1 value=one'), ['cmd=put_result rc=0']);
  t.same(a.frame('cmd=kvs-put;key=froma;value=a;;b;'), ['cmd=kvs-put-response;rc=0;'], 'a value with an escaped ; (a;b)');
  t.same(b.frame('cmd=kvs-put;key=fromb;value=has space;'), ['cmd=kvs-put-response;rc=0;'], 'PMI-2 values may hold spaces');
  t.same(a.frame('cmd=kvs-get;jobid=kvs_pmibridge_0;srcid=0;key=from1;'), ['cmd=kvs-get-response;rc=0;found=FALSE;'], 'not visible before the fence (found=FALSE rc=0)');
  t.same(p1.send('cmd=barrier_in'), []);
  t.same(a.frame('cmd=kvs-fence;thrid=a1;'), []);
  t.same(b.frame('cmd=kvs-fence;'), ['cmd=kvs-fence-response;rc=0;'], 'the last one in completes it');
  t.same(p1.take(), ['cmd=barrier_out rc=0']);
  t.same(a.take(), ['cmd=kvs-fence-response;thrid=a1;rc=0;'], 'each fence answer echoes its own thrid');
  t.same(a.frame('cmd=kvs-get;jobid=kvs_pmibridge_0;srcid=0;key=from1;'), ['cmd=kvs-get-response;rc=0;found=TRUE;value=one;']);
  t.same(b.frame('cmd=kvs-get;key=froma;'), ['cmd=kvs-get-response;rc=0;found=TRUE;value=a;;b;'], 'escaped again when written');
  t.same(p1.send('cmd=get kvsname=kvs_pmibridge_0 key=froma'), ['cmd=get_result rc=0 value=a;b']);
  t.same(p1.send('cmd=get kvsname=kvs_pmibridge_0 key=fromb'), ['cmd=get_result rc=6 msg=value_contains_a_space_put_over_PMI-2'], 'a value PMI-1 cannot carry is refused, not sent broken');
  t.same(a.frame('cmd=kvs-get;jobid=another_job;key=from1;'), ['cmd=kvs-get-response;rc=0;found=FALSE;'], 'another job: not found');
  t.same(h.engine.barrierEpoch, 1);
});

t.test('job attributes as hydra answers them; node attributes with wait', async (t) => {
  const h = new EngineHarness({ size: 2, universeSize: 8 });
  const a = pmi2Rank(h, 0);
  const b = pmi2Rank(h, 1);
  t.same(a.frame('cmd=info-getjobattr;key=PMI_process_mapping;'), ['cmd=info-getjobattr-response;rc=0;found=TRUE;value=(vector,(0,1,2));']);
  t.same(a.frame('cmd=info-getjobattr;key=universeSize;'), ['cmd=info-getjobattr-response;rc=0;found=TRUE;value=8;']);
  t.same(a.frame('cmd=info-getjobattr;key=PMI_hwloc_xmlfile;'), ['cmd=info-getjobattr-response;rc=0;found=FALSE;']);
  t.same(a.frame('cmd=info-getnodeattr;key=shm;'), ['cmd=info-getnodeattr-response;rc=0;found=FALSE;']);
  t.same(a.frame('cmd=info-getnodeattr;key=shm;wait=TRUE;thrid=w;'), [], 'wait: no answer until the key is put');
  t.same(b.frame('cmd=info-putnodeattr;key=shm;value=/dev/shm/x;'), ['cmd=info-putnodeattr-response;rc=0;']);
  t.same(a.take(), ['cmd=info-getnodeattr-response;thrid=w;rc=0;found=TRUE;value=/dev/shm/x;'], 'the waiter is answered by the put');
  t.same(b.frame('cmd=info-getnodeattr;key=shm;wait=TRUE;'), ['cmd=info-getnodeattr-response;rc=0;found=TRUE;value=/dev/shm/x;']);
});

t.test('name service: publish, lookup (port and value: both readers), unpublish, shared with PMI-1', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const a = pmi2Rank(h, 0);
  const p1 = h.fd(1);
  p1.send('cmd=init pmi_version=1 pmi_subversion=1');
  t.same(a.frame('cmd=name-publish;name=svc;port=tag#0$;'), ['cmd=name-publish-response;rc=0;']);
  t.same(a.frame('cmd=name-publish;name=svc;port=again;'), ['cmd=name-publish-response;rc=1;errmsg=service_svc_already_published;']);
  t.same(p1.send('cmd=lookup_name service=svc'), ['cmd=lookup_result rc=0 port=tag#0$']);
  t.same(a.frame('cmd=name-lookup;name=svc;'), ['cmd=name-lookup-response;rc=0;port=tag#0$;value=tag#0$;found=TRUE;']);
  t.same(a.frame('cmd=name-unpublish;name=svc;'), ['cmd=name-unpublish-response;rc=0;']);
  t.same(a.frame('cmd=name-lookup;name=svc;'), ['cmd=name-lookup-response;rc=1;errmsg=service_not_found;']);
});

t.test('finalize and abort', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const a = pmi2Rank(h, 0);
  const b = pmi2Rank(h, 1);
  t.same(a.frame('cmd=finalize;'), ['cmd=finalize-response;rc=0;']);
  t.ok(a.closed, 'closed after finalize-response, as for PMI-1');
  t.same(b.frame('cmd=finalize;thrid=9;'), ['cmd=finalize-response;thrid=9;rc=0;']);
  t.same(h.finished, { ok: true, exitCode: 0, reason: 'all 2 ranks finalized' });

  const h2 = new EngineHarness({ size: 2 });
  const c = pmi2Rank(h2, 1);
  t.same(c.frame('cmd=abort;isworld=TRUE;msg=out of memory;'), [], 'abort has no response');
  t.match(h2.finished, { ok: false, exitCode: 1, rank: 1, reason: 'rank 1 called abort with exit code 1: out of memory' });
  const h3 = new EngineHarness({ size: 1 });
  pmi2Rank(h3, 0).frame('cmd=abort;exitcode=7;message=bye;');
  t.match(h3.finished, { ok: false, exitCode: 7, reason: 'rank 0 called abort with exit code 7: bye' }, 'MPICH >= 4.1 spelling');
});

t.test('over PMI_PORT the rank comes from fullinit: pmirank, srcid (Slurm libpmi2 with PMI_ID), or the lowest free one', async (t) => {
  const h = new EngineHarness({ size: 3 });
  const x = h.tcp();
  t.same(x.send(INIT2), [INIT2_OK]);
  t.equal(x.rank, undefined, 'not bound by the init line');
  t.match(x.frame('cmd=fullinit;pmirank=2;'), [/^cmd=fullinit-response;rc=0;.*rank=2;size=3;/]);
  t.equal(x.rank, 2);
  const y = h.tcp();
  y.send(INIT2);
  t.match(y.frame('cmd=fullinit;pmijobid=7.0;srcid=1;threaded=FALSE;'), [/^cmd=fullinit-response;rc=0;.*rank=1;/]);
  const dup = h.tcp();
  dup.send(INIT2);
  t.same(dup.frame('cmd=fullinit;pmirank=2;'), ['cmd=fullinit-response;rc=-1;errmsg=rank_2_is_already_connected;']);
  t.ok(dup.closed, 'an impersonation is refused and closed');
  const z = h.tcp();
  z.send(INIT2);
  t.match(z.frame('cmd=fullinit;'), [/^cmd=fullinit-response;rc=0;.*rank=0;/], 'no id: the lowest free rank');
  t.equal(h.finished, null, 'the job goes on');
  const fd = h.connect({ transport: 'fd', rank: 0 }, 99);
  t.ok(fd.closed, '(rank 0 is taken)');
});

t.test('a PMI_FD rank whose fullinit names another rank is refused in PMI-2', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const c = h.fd(0);
  c.send(INIT2);
  t.same(c.frame('cmd=fullinit;pmirank=1;'), ['cmd=fullinit-response;rc=3;errmsg=this_connection_is_rank_0_not_1;']);
});

t.test('--pmi-version 1: a PMI-2 rank is told so in its protocol and the job ends with the reason', async (t) => {
  const h = new EngineHarness({ size: 2, pmiVersions: '1' });
  const c = h.fd(1);
  t.same(c.send(INIT2), ['cmd=response_to_init rc=-1 msg=this_job_serves_PMI-1_only']);
  t.ok(c.closed);
  t.match(h.finished, { ok: false, exitCode: 1, rank: 1, reason: /rank 1 speaks PMI-2, but this job serves PMI-1 only \(--pmi-version 1\); run it with --pmi-version 2 or any/ });

  const h2 = new EngineHarness({ size: 2, pmiVersions: '1' });
  const d = h2.tcp();
  t.same(d.frame('cmd=fullinit;pmirank=0;'), ['cmd=fullinit-response;rc=-1;errmsg=this_job_serves_PMI-1_only;'], 'a frame with no init line first: answered in PMI-2');
  t.match(h2.finished, { ok: false, reason: /a client on connection \d+ speaks PMI-2/ });
});

t.test('--pmi-version 2: a PMI-1 rank is refused the same way', async (t) => {
  const h = new EngineHarness({ size: 2, pmiVersions: '2' });
  const c = h.fd(0);
  t.same(c.send('cmd=init pmi_version=1 pmi_subversion=1'), ['cmd=response_to_init rc=-1 msg=this_job_serves_PMI-2_only']);
  t.match(h.finished, { ok: false, rank: 0, reason: /rank 0 speaks PMI-1, but this job serves PMI-2 only/ });
  const h2 = new EngineHarness({ size: 1, pmiVersions: '2' });
  const d = pmi2Rank(h2, 0);
  t.same(d.frame('cmd=finalize;'), ['cmd=finalize-response;rc=0;'], 'PMI-2 is served');
});

t.test('bad PMI-2 input: answered in the response its client waits for, counted, never fatal to others', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const c = pmi2Rank(h, 0);
  const other = pmi2Rank(h, 1);
  t.same(c.frame('cmd=kvs-gett;key=x;thrid=3;'), ['cmd=kvs-gett-response;thrid=3;rc=-1;errmsg=unknown_command_kvs-gett;']);
  t.same(c.frame('cmd=kvs-put;key=x;'), ['cmd=kvs-put-response;rc=6;errmsg=missing_value;']);
  t.same(c.frame('cmd=spawn;ncmds=1;subcmd=./a;maxprocs=2;argc=0;'), ['cmd=spawn-response;rc=-1;errmsg=spawn_is_not_supported_by_pmibridge;']);
  t.same(c.frame('cmd=ring;ring-count=1;ring-left=a;ring-right=b;'), ['cmd=ring-response;rc=-1;errmsg=ring_is_not_supported_by_pmibridge;']);
  t.same(c.frame('cmd=kvs-fence;'), []);
  t.same(c.frame('cmd=kvs-fence;'), ['cmd=kvs-fence-response;rc=-1;errmsg=already_in_fence;']);
  t.same(c.frame('cmd=finalize;'), ['cmd=finalize-response;rc=-1;errmsg=finalize_while_in_fence;']);
  t.same(other.frame('cmd=kvs-fence;'), ['cmd=kvs-fence-response;rc=0;']);
  t.same(c.take(), ['cmd=kvs-fence-response;rc=0;'], 'the fence still completes');
  t.same(c.item({ kind: 'overlong', wire: 'pmi2', prefix: 'cmd=kvs-put;key=big;value=xxxx', length: 900_000 }), ['cmd=kvs-put-response;rc=8;errmsg=frame_of_900000_bytes_exceeds_limit;']);
  for (let i = 0; i < 7; i++) c.frame('');
  t.ok(c.closed, '8 bad frames in a row close the connection');
  c.disconnect();
  t.match(h.finished, { ok: false, reason: /rank 0's PMI connection was closed by the server before finalize: it sent 8 bad PMI-2 messages in a row/ });
  const h2 = new EngineHarness({ size: 1 });
  const d = h2.fd(0);
  d.send(INIT2);
  t.same(d.frame('cmd=kvs-put;key=a;value=b;'), ['cmd=kvs-put-response;rc=1;errmsg=fullinit_required;'], 'before fullinit');
});

t.test('other protocols and unreadable streams: answered or closed with a reason; a rank lost so fails the job', async (t) => {
  const h = new EngineHarness({ size: 2 });
  const probe = h.tcp();
  const got = probe.item({ kind: 'foreign', protocol: 'http', reason: 'an HTTP GET request, not PMI: this is a PMI socket, not a web server', prefix: 'GET ' });
  t.match(got, [/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*This is a PMI socket \(pmibridge\), not a web server/]);
  t.ok(probe.closed);
  const tls = h.tcp();
  t.same(tls.item({ kind: 'foreign', protocol: 'tls', reason: 'a TLS ClientHello, not PMI: PMI is plain text, without TLS', prefix: '\x16\x03' }), [], 'TLS: closed without a word it could not read');
  t.ok(tls.closed);
  t.match(h.eventsOf('protocol-error').map((e) => e.message), ['an HTTP GET request, not PMI: this is a PMI socket, not a web server', 'a TLS ClientHello, not PMI: PMI is plain text, without TLS']);
  t.equal(h.finished, null, 'unidentified connections: the job goes on');
  const rank = h.fd(1);
  rank.item({ kind: 'foreign', protocol: 'pmix', reason: 'a PMIx connection header', prefix: '\xff' });
  t.ok(rank.closed);
  rank.disconnect();
  t.match(h.finished, { ok: false, rank: 1, reason: /rank 1's PMI connection was closed by the server before finalize: it sent a PMIx connection header/ });

  const h2 = new EngineHarness({ size: 1 });
  const c = pmi2Rank(h2, 0);
  c.item({ kind: 'bad-frame', header: '  -12x', detail: 'PMI-2 length header "  -12x" is not a decimal number padded with spaces' });
  t.ok(c.closed);
  c.disconnect();
  t.match(h2.finished, { ok: false, reason: /it sent a bad PMI-2 frame \(PMI-2 length header/ });

  const h3 = new EngineHarness({ size: 1 });
  const e = h3.tcp();
  t.same(e.item({ kind: 'truncated', wire: 'pmi2', prefix: 'cmd=kvs-', length: 9, declared: 30 }), []);
  t.match(h3.eventsOf('protocol-error'), [{ code: 'E_TRUNCATED' }], 'a message cut short is reported');
});

t.test('kvs-get answers are formatted once per fence epoch, and a new epoch answers the new value', async (t) => {
  const h = new EngineHarness({ size: 1 });
  const c = pmi2Rank(h, 0);
  c.frame('cmd=kvs-put;key=k;value=one;');
  c.frame('cmd=kvs-fence;');
  t.same(c.frame('cmd=kvs-get;key=k;'), ['cmd=kvs-get-response;rc=0;found=TRUE;value=one;']);
  t.same(c.frame('cmd=kvs-get;key=k;'), ['cmd=kvs-get-response;rc=0;found=TRUE;value=one;'], 'from the cache: the same bytes');
  t.same(c.frame('cmd=kvs-get;key=k;thrid=5;'), ['cmd=kvs-get-response;thrid=5;rc=0;found=TRUE;value=one;'], 'a thrid is echoed (not cached)');
  c.frame('cmd=kvs-put;key=k;value=two;');
  t.same(c.frame('cmd=kvs-get;key=k;'), ['cmd=kvs-get-response;rc=0;found=TRUE;value=one;'], 'before the fence: the committed value');
  c.frame('cmd=kvs-fence;');
  t.same(c.frame('cmd=kvs-get;key=k;'), ['cmd=kvs-get-response;rc=0;found=TRUE;value=two;'], 'after it: the new one');
});
