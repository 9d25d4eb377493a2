/**
 * The PMI-2 client (Pmi2Client) and `pmibridge pmi … --pmi-version 2`.
 *
 * 1. Against in-test socket servers that answer scripted frames: the wire it writes (init line,
 *    `fullinit;pmirank=`, no initack), liberal reading (missing rc, unknown attributes, both
 *    alignments of the header, frames split across reads), both ways of saying "not found",
 *    clear errors (rc≠0, a server closing mid-frame, a PMI-1 line for a frame, a timeout), a
 *    server that refuses PMI-2 — always a bounded time, never a hang.
 * 2. Against hydra (Debian's MPICH 4.0.2; a missing hydra fails in CI, is skipped elsewhere):
 *    `pmi exchange`/`info`/`put`/`get` over PMI_FD and `-pmi-port`, and the library's job and node
 *    attributes, name service and not-found answers from inside a hydra job.
 */
import t, { type Test } from 'tap';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointFromEnv, Pmi2Client, PMI2_REFUSED, type PmiEndpoint } from '../src/client/index.js';
import { RemotePmiError, WireFramer, type WireItem } from '../src/protocol/index.js';
import { envWithPmibridge, repoRoot, runCli, runCommand, until } from './fixtures/cli.js';
import { mpichMissing } from './fixtures/mpich.js';

/** A frame as peers write it: `%6u` then the body (independent of the code under test). */
const frame = (body: string) => `${String(body.length).padStart(6, ' ')}${body}`;

const REFUSAL = 'cmd=response_to_init rc=-1 msg=PMI-2_is_not_served_use_PMI-1\n';
const ACCEPT = 'cmd=response_to_init pmi_version=2 pmi_subversion=0 rc=0\n';

interface Fake {
  readonly endpoint: PmiEndpoint;
  readonly port: number;
  /** Every message received, as text (lines without `\n`, frame bodies without the header). */
  readonly seen: string[];
  /** Connections that ended (the client closed its side). */
  ended: number;
  close(): Promise<void>;
}

/**
 * A scripted PMI server on 127.0.0.1: `answer` gets each message (line or frame body) and writes
 * what it likes. The default `answer` accepts PMI-2 and answers fullinit / job-getid.
 */
async function fakeServer(t: Test, answer: (msg: string, sock: Socket, kind: WireItem['kind']) => void): Promise<Fake> {
  const sockets = new Set<Socket>();
  const fake: { seen: string[]; ended: number } = { seen: [], ended: 0 };
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.setNoDelay(true); // small writes leave one by one (the split-frame test relies on it)
    const framer = new WireFramer({ maxLine: 4096, detectForeign: false });
    sock.on('data', (chunk: Buffer) => {
      for (const item of framer.push(chunk)) {
        const text = item.kind === 'line' ? item.line : item.kind === 'frame' ? item.body : JSON.stringify(item);
        fake.seen.push(text);
        answer(text, sock, item.kind);
      }
    });
    sock.on('end', () => {
      fake.ended++;
      sock.end();
    });
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(close);
  return {
    endpoint: { mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: 3 },
    port,
    get seen() {
      return fake.seen;
    },
    get ended() {
      return fake.ended;
    },
    close,
  };
}

/** Answers by command name (frame bodies); init is accepted. Unlisted commands get no answer. */
function scripted(answers: Readonly<Record<string, string | ((body: string) => string)>>) {
  return (msg: string, sock: Socket) => {
    if (msg.startsWith('cmd=init ')) return void sock.write(ACCEPT);
    const cmd = /^cmd=([^;]*);/.exec(msg)?.[1] ?? '';
    const a = answers[cmd];
    if (a === undefined) return;
    sock.write(frame(typeof a === 'string' ? a : a(msg)));
  };
}

const BASIC = {
  fullinit: 'cmd=fullinit-response;rank=3;size=4;appnum=1;debugged=FALSE;pmiverbose=0;',
  'job-getid': 'cmd=job-getid-response;jobid=job-7;',
};

async function connected(t: Test, answers: Readonly<Record<string, string | ((body: string) => string)>>, timeoutMs = 10_000) {
  const fake = await fakeServer(t, scripted({ ...BASIC, ...answers }));
  const c = await Pmi2Client.connect(fake.endpoint, { timeoutMs });
  t.teardown(() => c.close());
  await c.init();
  return { fake, c };
}

/** The error a promise rejects with (the test fails if it resolves). */
async function rejection(p: Promise<unknown>): Promise<RemotePmiError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof RemotePmiError) return err;
    throw err;
  }
  throw new Error('expected a RemotePmiError, the call succeeded');
}

t.test('init: the PMI-1 init line, then fullinit with pmirank=PMI_ID (no initack, also over PMI_PORT); missing rc = 0', async (t) => {
  const { fake, c } = await connected(t, {});
  t.same(fake.seen.slice(0, 3), ['cmd=init pmi_version=2 pmi_subversion=0', 'cmd=fullinit;pmirank=3;threaded=FALSE;', 'cmd=job-getid;']);
  t.match(c, { rank: 3, size: 4, appnum: 1, jobid: 'job-7', kvsname: 'job-7', debugged: false, pmiverbose: false, isInitialized: true });
});

t.test('fullinit: pmirank from PMI_RANK when there is no PMI_ID, -1 when neither', async (t) => {
  for (const [ep, want] of [
    [{ rank: 2 }, 'cmd=fullinit;pmirank=2;threaded=FALSE;'],
    [{}, 'cmd=fullinit;pmirank=-1;threaded=FALSE;'],
  ] as const) {
    const fake = await fakeServer(t, scripted(BASIC));
    const c = await Pmi2Client.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port: fake.port }, ...ep }, { timeoutMs: 10_000 });
    await c.init();
    t.equal(fake.seen[1], want);
    c.close();
  }
});

t.test('fullinit carries pmijobid when given (PMI_JOBID under Slurm, whose stepd requires it and threaded)', async (t) => {
  const fake = await fakeServer(t, scripted(BASIC));
  const sock = await new Promise<Socket>((resolve) => {
    const s: Socket = connect({ host: '127.0.0.1', port: fake.port }, () => resolve(s));
  });
  const c = new Pmi2Client(sock, { rank: 1 }, { timeoutMs: 10_000, pmijobid: '7.0' });
  await c.init();
  t.equal(fake.seen[1], 'cmd=fullinit;pmijobid=7.0;pmirank=1;threaded=FALSE;');
  c.close();
});

t.test('PMI_FD mode: pmirank is PMI_ID when set (as MPICH reads it), else PMI_RANK', async (t) => {
  t.match(endpointFromEnv({ PMI_FD: '5', PMI_ID: '2', PMI_RANK: '1', PMI_SIZE: '4' }), { mode: 'fd', fd: 5, pmiid: 2, rank: 1, size: 4 });
  t.notOk('pmiid' in endpointFromEnv({ PMI_FD: '5', PMI_RANK: '1' }));
  for (const [env, want] of [
    [{ PMI_FD: '5', PMI_ID: '2', PMI_RANK: '1' }, 'cmd=fullinit;pmirank=2;threaded=FALSE;'],
    [{ PMI_FD: '5', PMI_RANK: '1' }, 'cmd=fullinit;pmirank=1;threaded=FALSE;'],
  ] as const) {
    const fake = await fakeServer(t, scripted(BASIC));
    const sock = await new Promise<Socket>((resolve) => {
      const s: Socket = connect({ host: '127.0.0.1', port: fake.port }, () => resolve(s));
    });
    const c = new Pmi2Client(sock, endpointFromEnv(env), { timeoutMs: 10_000 });
    await c.init();
    t.equal(fake.seen[1], want, JSON.stringify(env));
    c.close();
  }
});

t.test('unknown attributes and words in responses are ignored; the header may be left-aligned', async (t) => {
  const { c } = await connected(t, {
    'kvs-get': 'cmd=kvs-get-response;zzz=1;found=TRUE;thrid=;value=v;;1;shiny;rc=0;extra=;',
    'info-getjobattr': 'cmd=info-getjobattr-response;found=TRUE;value=(vector,(0,4,1));color=blue;',
  });
  t.equal(await c.get('k'), 'v;1', 'value read (`;;` is one `;`), other attributes ignored');
  t.equal(await c.getJobAttr('PMI_process_mapping'), '(vector,(0,4,1))');
  const left = await fakeServer(t, (msg, sock) => {
    if (msg.startsWith('cmd=init ')) return void sock.write(ACCEPT);
    const body = msg.startsWith('cmd=fullinit;') ? BASIC.fullinit : 'cmd=job-getid-response;jobid=left;rc=0;';
    sock.write(`${String(body.length).padEnd(6, ' ')}${body}`); // `23    `: legacy MPICH and Slurm
  });
  const l = await Pmi2Client.connect(left.endpoint, { timeoutMs: 10_000 });
  t.teardown(() => l.close());
  await l.init();
  t.equal(l.jobid, 'left');
});

t.test('not found: found=FALSE with rc=0 (Slurm, hydra 4.0) and rc≠0 (hydra ≥ 4.1) mean the same', async (t) => {
  const { c } = await connected(t, {
    'kvs-get': (b) => (b.includes('key=old;') ? 'cmd=kvs-get-response;found=FALSE;rc=0;' : b.includes('key=new;') ? 'cmd=kvs-get-response;rc=1;errmsg=key_new_not_found;' : 'cmd=kvs-get-response;found=TRUE;value=here;'),
    'info-getjobattr': 'cmd=info-getjobattr-response;found=FALSE;rc=0;',
    'info-getnodeattr': 'cmd=info-getnodeattr-response;found=FALSE;',
    'name-lookup': 'cmd=name-lookup-response;found=FALSE;rc=1;',
  });
  t.equal(await c.tryGet('old'), undefined, 'found=FALSE rc=0');
  t.equal(await c.tryGet('new'), undefined, 'rc=1');
  t.equal(await c.tryGet('k', { jobid: 'job-7', srcid: 0 }), 'here');
  const old = await rejection(c.get('old'));
  t.match(old, { code: 'E_NOT_FOUND', message: /kvs-get: key "old" not found/ });
  const neu = await rejection(c.get('new'));
  t.match(neu, { code: 'E_NOT_FOUND', rc: 1, errmsg: 'key_new_not_found', message: /not found \(rc=1: key_new_not_found\)/ });
  t.equal(await c.getJobAttr('universeSize'), undefined, 'unknown job attribute: undefined');
  t.equal(await c.universeSize(), -1, 'no universeSize: -1 (not available)');
  t.equal(await c.getNodeAttr('nope'), undefined);
  t.match(await rejection(c.lookup('svc')), { code: 'E_NOT_FOUND', rc: 1, message: /name-lookup: name "svc" not found/ });
});

t.test('every operation writes its frame and reads its response', async (t) => {
  const { fake, c } = await connected(t, {
    'kvs-put': 'cmd=kvs-put-response;rc=0;',
    'kvs-fence': 'cmd=kvs-fence-response;',
    'info-putnodeattr': 'cmd=info-putnodeattr-response;rc=0;',
    'info-getnodeattr': 'cmd=info-getnodeattr-response;found=TRUE;value=nv;rc=0;',
    'info-getjobattr': 'cmd=info-getjobattr-response;found=TRUE;value=8;rc=0;',
    'name-publish': 'cmd=name-publish-response;rc=0;',
    'name-lookup': 'cmd=name-lookup-response;value=p-1;found=TRUE;rc=0;',
    'name-unpublish': 'cmd=name-unpublish-response;rc=0;',
    finalize: 'cmd=finalize-response;rc=0;',
  });
  await c.put('a', 'x;y');
  await c.fence();
  await c.putNodeAttr('n', 'nv');
  t.equal(await c.getNodeAttr('n', true), 'nv');
  t.equal(await c.universeSize(), 8);
  await c.publish('svc', 'p-1');
  t.equal(await c.lookup('svc'), 'p-1', 'the legacy `value` spelling of port is read too');
  await c.unpublish('svc');
  await c.finalize();
  t.equal(c.isInitialized, false);
  t.same(fake.seen.slice(3), [
    'cmd=kvs-put;key=a;value=x;;y;',
    'cmd=kvs-fence;',
    'cmd=info-putnodeattr;key=n;value=nv;',
    'cmd=info-getnodeattr;key=n;wait=TRUE;',
    'cmd=info-getjobattr;key=universeSize;',
    'cmd=name-publish;name=svc;port=p-1;',
    'cmd=name-lookup;name=svc;',
    'cmd=name-unpublish;name=svc;',
    'cmd=finalize;',
  ]);
  await until('the client to close its end after finalize', () => fake.ended === 1, 10_000);
  t.pass('finalize closes the connection');
});

t.test('abort: one frame, no response awaited, connection closed', async (t) => {
  const { fake, c } = await connected(t, {});
  await c.abort(7, 'bye now');
  await until('the client to close its end after abort', () => fake.ended === 1, 10_000);
  t.equal(fake.seen.at(-1), 'cmd=abort;isworld=TRUE;exitcode=7;msg=bye now;');
});

t.test('rc≠0 is a RemotePmiError with rc and errmsg', async (t) => {
  const { c } = await connected(t, { 'kvs-put': 'cmd=kvs-put-response;rc=6;errmsg=value_too_long;' });
  t.match(await rejection(c.put('k', 'v')), { name: 'RemotePmiError', code: 'E_RC', rc: 6, errmsg: 'value_too_long', message: 'kvs-put failed with rc=6: value_too_long' });
});

t.test('a frame split across reads (header and body cut anywhere) reads as one', async (t) => {
  const body = 'cmd=kvs-get-response;found=TRUE;value=split-value;rc=0;';
  const whole = frame(body);
  for (const cuts of [[1], [3, 6], [6], [7, 20], Array.from({ length: whole.length - 1 }, (_, i) => i + 1)]) {
    const fake = await fakeServer(t, (msg, sock) => {
      if (msg.startsWith('cmd=init ')) return void sock.write(ACCEPT);
      if (!msg.startsWith('cmd=kvs-get;')) return void scripted(BASIC)(msg, sock);
      // one write per piece, each after the previous one has left (so the client reads them apart)
      const bounds = [0, ...cuts, whole.length];
      const pieces = bounds.slice(1).map((end, i) => whole.slice(bounds[i], end));
      let i = 0;
      const next = () => {
        const p = pieces[i++];
        if (p !== undefined) sock.write(p, () => setTimeout(next, 2));
      };
      next();
    });
    const c = await Pmi2Client.connect(fake.endpoint, { timeoutMs: 10_000 });
    await c.init();
    t.equal(await c.get('k'), 'split-value', `cut at ${cuts.length > 3 ? 'every byte' : cuts.join(',')}`);
    c.close();
  }
});

t.test('a server that closes mid-frame: a clear error at once, no hang (no timeout set)', async (t) => {
  const fake = await fakeServer(t, (msg, sock) => {
    if (!msg.startsWith('cmd=kvs-get;')) return void scripted(BASIC)(msg, sock);
    sock.end('    45cmd=kvs-get-response;fou');
  });
  const c = await Pmi2Client.connect(fake.endpoint);
  t.teardown(() => c.close());
  await c.init();
  const t0 = performance.now();
  const err = await rejection(c.get('k'));
  t.match(err.message, /closed the connection in the middle of a PMI-2 frame \(24 of 45 bytes came\) \(waiting for the response to kvs-get\)/);
  t.ok(performance.now() - t0 < 5_000, 'at once');
  t.match(await rejection(c.fence()), { message: /closed the connection|connection closed/ }, 'and every later call fails too');
  // closing inside the header, and between messages
  for (const cut of ['    4', '']) {
    const f = await fakeServer(t, (msg, sock) => {
      if (!msg.startsWith('cmd=kvs-fence;')) return void scripted(BASIC)(msg, sock);
      sock.end(cut);
    });
    const c2 = await Pmi2Client.connect(f.endpoint);
    await c2.init();
    t.match((await rejection(c2.fence())).message, /closed the connection/, `cut ${JSON.stringify(cut)}`);
    c2.close();
  }
});

t.test('a PMI-1 line where a frame belongs, and an unknown response: clear errors', async (t) => {
  const { c } = await connected(t, {});
  const fake2 = await fakeServer(t, (msg, sock) => {
    if (msg.startsWith('cmd=kvs-fence;')) return void sock.write('cmd=error rc=-1 msg=what\n');
    if (msg.startsWith('cmd=kvs-put;')) return void sock.write(frame('cmd=kvs-fence-response;rc=0;'));
    scripted(BASIC)(msg, sock);
  });
  c.close();
  const c2 = await Pmi2Client.connect(fake2.endpoint, { timeoutMs: 10_000 });
  t.teardown(() => c2.close());
  await c2.init();
  t.match(await rejection(c2.put('k', 'v')), { code: 'E_BAD_REPLY', message: /expected cmd=kvs-put-response to kvs-put, got cmd=kvs-fence-response/ });
  t.match(await rejection(c2.fence()), { code: 'E_BAD_REPLY', message: /answered kvs-fence with a PMI-1 line, not a PMI-2 frame: "cmd=error rc=-1 msg=what"/ });
});

t.test('timeout: a server that never answers fails the call after timeoutMs', async (t) => {
  const fake = await fakeServer(t, scripted({ 'job-getid': BASIC['job-getid'] }));
  const c = await Pmi2Client.connect(fake.endpoint, { timeoutMs: 300 });
  const t0 = performance.now();
  t.match(await rejection(c.init()), { code: 'E_TIMEOUT', message: /no reply from the PMI server within 300 ms/ });
  t.ok(performance.now() - t0 < 3_000);
});

t.test('lock-step: concurrent calls go one at a time', async (t) => {
  let inFlight = 0;
  let maxInFlight = 0;
  const fake = await fakeServer(t, (msg, sock) => {
    if (!msg.startsWith('cmd=kvs-put;')) return void scripted(BASIC)(msg, sock);
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    setTimeout(() => {
      inFlight--;
      sock.write(frame('cmd=kvs-put-response;rc=0;'));
    }, 5);
  });
  const c = await Pmi2Client.connect(fake.endpoint, { timeoutMs: 10_000 });
  t.teardown(() => c.close());
  await c.init();
  await Promise.all(Array.from({ length: 10 }, (_, i) => c.put(`k${i}`, 'v')));
  t.equal(maxInFlight, 1);
  t.equal(fake.seen.filter((m) => m.startsWith('cmd=kvs-put;')).length, 10);
});

t.test('a server that refuses PMI-2: E_PMI2_REFUSED, within bounded time, whether it stays open, closes, or offers PMI-1', async (t) => {
  const variants: Array<[string, (sock: Socket) => void, RegExp]> = [
    ['refuses, stays open', (s) => s.write(REFUSAL), /refused PMI-2: PMI-2_is_not_served_use_PMI-1; it serves PMI-1 only: use PMI-1 instead/],
    ['refuses, closes', (s) => s.end(REFUSAL), /refused PMI-2: PMI-2_is_not_served_use_PMI-1/],
    ['offers 1.1 with rc=0', (s) => s.write('cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n'), /refused PMI-2 \(it offered PMI 1\.1\)/],
    ['hangs up without a word', (s) => s.end(), /closed the connection instead of answering cmd=init pmi_version=2 .*use PMI-1 instead/],
  ];
  for (const [name, act, re] of variants) {
    const fake = await fakeServer(t, (msg, sock) => {
      if (msg.startsWith('cmd=init ')) act(sock);
    });
    const c = await Pmi2Client.connect(fake.endpoint); // no timeout: the answer alone must end it
    const t0 = performance.now();
    const err = await rejection(c.init());
    t.match(err, { code: PMI2_REFUSED, message: re }, name);
    t.ok(performance.now() - t0 < 5_000, `${name}: at once`);
    c.close();
  }
});

// ---- the CLI --------------------------------------------------------------------------------------

t.test('pmi … --help documents --pmi-version; a bad value is a usage error (exit 2)', async (t) => {
  for (const sub of ['info', 'put', 'get', 'barrier', 'exchange']) {
    const h = await runCli(['pmi', sub, '--help']);
    t.equal(h.code, 0);
    t.match(h.stdout, /--pmi-version 1\|2 .*PMI-2.*\(default: 1\)/, `pmi ${sub} --help`);
  }
  t.match((await runCli(['pmi', '--help'])).stdout, /--pmi-version 2 speaks PMI-2/);
  for (const bad of ['3', 'two', '', '1.1']) {
    const r = await runCli(['pmi', 'exchange', '--pmi-version', bad], { env: envWithPmibridge({ PMI_PORT: '127.0.0.1:1', PMI_ID: '0' }) });
    t.equal(r.code, 2, `--pmi-version ${JSON.stringify(bad)} exits 2`);
    t.match(r.stderr, new RegExp(`--pmi-version must be 1 or 2, got "${bad.replace('.', '\\.')}"`));
    t.match(r.stderr, /Try 'pmibridge pmi exchange --help'/);
  }
});

t.test('pmi exchange --pmi-version 2 against a server that refuses PMI-2: exit 1 at once, saying so and what to do', async (t) => {
  for (const [name, act] of [
    ['stays open', (s: Socket) => s.write(REFUSAL)],
    ['closes', (s: Socket) => s.end(REFUSAL)],
  ] as const) {
    const fake = await fakeServer(t, (msg, sock) => {
      if (msg.startsWith('cmd=init ')) act(sock);
    });
    const r = await runCli(['pmi', 'exchange', '--pmi-version', '2'], { env: envWithPmibridge({ PMI_PORT: `127.0.0.1:${fake.port}`, PMI_ID: '0' }), timeoutMs: 30_000 });
    t.not(r.code, 0, `${name}: fails`);
    t.equal(r.code, 1);
    t.ok(r.ms < 15_000, `${name}: in ${Math.round(r.ms)} ms`);
    t.match(r.stderr, /pmibridge pmi: the PMI server refused PMI-2: PMI-2_is_not_served_use_PMI-1; .*--pmi-version 1, the default/, name);
    t.same(fake.seen, ['cmd=init pmi_version=2 pmi_subversion=0'], `${name}: nothing sent after the refusal`);
  }
});

const hydraSkip = mpichMissing() ?? false;
const okLines = (out: string) => out.split('\n').filter((l) => /^exchange: rank \d+\/\d+ read \d+ keys from \d+ ranks: OK/.test(l)).length;
const HYDRA_MODES = [
  ['PMI_FD', []],
  ['-pmi-port', ['-pmi-port', '-launcher', 'fork']],
] as const;

for (const [mode, flags] of HYDRA_MODES) {
  for (const n of [1, 2, 4]) {
    t.test(`mpiexec.hydra ${flags.join(' ')} -n ${n} pmibridge pmi exchange --pmi-version 2 (${mode})`, { skip: hydraSkip }, async (t) => {
      const r = await runCommand('mpiexec.hydra', [...flags, '-n', String(n), 'pmibridge', 'pmi', 'exchange', '--pmi-version', '2', '--count', '2'], { timeoutMs: 90_000 });
      t.equal(r.code, 0, `hydra exits 0 (stderr: ${r.stderr})`);
      t.equal(okLines(r.stdout), n, `${n} rank(s) OK`);
      for (let rank = 0; rank < n; rank++) t.match(r.stdout, new RegExp(`^exchange: rank ${rank}/${n} read ${2 * n} keys`, 'm'));
      t.equal(r.stderr, '', 'hydra has nothing to complain about');
    });
  }

  t.test(`mpiexec.hydra ${flags.join(' ')} -n 2 pmibridge pmi info --json --pmi-version 2 (${mode})`, { skip: hydraSkip }, async (t) => {
    const r = await runCommand('mpiexec.hydra', [...flags, '-n', '2', 'pmibridge', 'pmi', 'info', '--json', '--pmi-version', '2'], { timeoutMs: 90_000 });
    t.equal(r.code, 0, r.stderr);
    const infos = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.same(infos.map((i) => i['rank']).sort(), [0, 1]);
    for (const info of infos) {
      t.same(Object.keys(info).sort(), ['appnum', 'kvsname', 'maxes', 'pmiVersion', 'rank', 'size', 'universeSize'], 'the PMI-1 keys plus pmiVersion');
      t.match(info, { size: 2, appnum: 0, kvsname: /^kvs_\d+_/, pmiVersion: 2, maxes: null });
      t.type(info['universeSize'], 'number');
    }
    t.equal(infos[0]?.['kvsname'], infos[1]?.['kvsname'], 'one job id');
  });

  t.test(`pmi put in rank 0, pmi get in rank 1 pair up over PMI-2 under hydra (${mode})`, { skip: hydraSkip }, async (t) => {
    const script = 'if [ "${PMI_RANK:-$PMI_ID}" = 0 ]; then pmibridge pmi put --pmi-version 2 color=blue shape=round; else pmibridge pmi get --pmi-version 2 shape color; fi';
    const r = await runCommand('mpiexec.hydra', [...flags, '-n', '2', 'sh', '-c', script], { timeoutMs: 90_000 });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^rank 0: put 2 key\(s\)$/m);
    t.match(r.stdout, /^shape=round\ncolor=blue$/m);
    const b = await runCommand('mpiexec.hydra', [...flags, '-n', '3', 'pmibridge', 'pmi', 'barrier', '--count', '4', '--json', '--pmi-version', '2'], { timeoutMs: 90_000 });
    t.equal(b.code, 0, b.stderr);
    t.equal(b.stdout.trim().split('\n').filter((l) => (JSON.parse(l) as { barriers: number }).barriers === 4).length, 3, 'barrier = kvs-fence, 4 times in 3 ranks');
  });
}

/** A rank program using the library from dist/ (as a user would, `import … from 'pmibridge'`). */
function libraryRank(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-pmi2-'));
  const file = join(dir, 'rank.mjs');
  writeFileSync(
    file,
    `import { Pmi2Client } from ${JSON.stringify(join(repoRoot, 'dist/src/index.js'))};
const c = await Pmi2Client.connect(undefined, { timeoutMs: 30000 });
await c.init();
const out = { rank: c.rank, size: c.size, jobid: c.jobid };
out.mapping = await c.getJobAttr('PMI_process_mapping');
out.noAttr = await c.getJobAttr('no-such-attribute');
out.universeSize = await c.universeSize();
if (c.rank === 0) await c.putNodeAttr('node-key', 'node-value');
out.nodeAttr = await c.getNodeAttr('node-key', true);
await c.put('k' + c.rank, 'v' + c.rank);
await c.fence();
out.peer = await c.get('k' + ((c.rank + 1) % c.size));
out.missing = await c.tryGet('no-such-key');
out.missingErr = await c.get('no-such-key').then(() => null, (e) => e.code);
await c.publish('svc' + c.rank, 'port-' + c.rank);
out.lookup = await c.lookup('svc' + c.rank);
out.lookupMissing = await c.lookup('no-such-service').then(() => null, (e) => [e.code, e.rc]);
await c.unpublish('svc' + c.rank);
await c.fence();
await c.finalize();
console.log(JSON.stringify(out));
`,
  );
  return file;
}

t.test('the library against hydra: job and node attributes, kvs, name service, not found (PMI_FD and -pmi-port)', { skip: hydraSkip }, async (t) => {
  const rank = libraryRank();
  for (const [mode, flags] of HYDRA_MODES) {
    const r = await runCommand('mpiexec.hydra', [...flags, '-n', '2', process.execPath, rank], { timeoutMs: 90_000 });
    t.equal(r.code, 0, `${mode}: ${r.stderr}`);
    const outs = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).sort((a, b) => (a['rank'] as number) - (b['rank'] as number));
    t.equal(outs.length, 2, mode);
    outs.forEach((o, i) => {
      t.match(o, {
        rank: i,
        size: 2,
        jobid: /^kvs_/,
        mapping: /^\(vector,\(\d+,\d+,\d+\)\)$/, // hydra 4.0.2 says (vector,(0,1,1)) here, as over PMI-1
        nodeAttr: 'node-value',
        peer: `v${(i + 1) % 2}`,
        missingErr: 'E_NOT_FOUND',
        lookup: `port-${i}`,
        lookupMissing: ['E_NOT_FOUND', 1],
      }, `${mode} rank ${i}`);
      t.equal(o['noAttr'], undefined, 'unknown job attribute: not found');
      t.equal(o['missing'], undefined, 'unknown key: not found');
      t.equal(o['universeSize'], -1, 'hydra 4.0.2 has no universeSize job attribute over PMI-2');
    });
  }
});
