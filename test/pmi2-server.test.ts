/**
 * PMI-2 ranks served by `run` and `serve`, with a real PMI-2 client (Slurm's libpmi2) and MPICH's
 * PMI-1 client in the same job; `--pmi-version`; and listeners facing other protocols
 * (issue 12, items 2 and 7). Every job here must end by itself: a hang is the failure.
 */
import t from 'tap';
import { connect } from 'node:net';
import { cliPath, collect, exitOf, runCli, runCommand, startCli, waitForLine } from './fixtures/cli.js';

const cliNode = process.execPath;
import { mpichMissing } from './fixtures/mpich.js';
import { pmi1Exchange, pmi2Exchange, pmi2Missing } from './fixtures/pmi2.js';
import { startTapped } from './fixtures/tap.js';

const skip = pmi2Missing() ?? mpichMissing() ?? false;

/** `OK pmi<V> rank=R size=N …` lines, one per rank that read every key back. */
function oks(stdout: string, version: 1 | 2): number {
  return stdout.split('\n').filter((l) => l.startsWith(`OK pmi${version} `)).length;
}

for (const n of [1, 2, 8]) {
  t.test(`run -n ${n}: PMI-2 ranks (Slurm libpmi2) over PMI_FD`, { skip }, async (t) => {
    const r = await runCli(['run', '-n', String(n), '--', pmi2Exchange()], { timeoutMs: 60_000 });
    t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr})`);
    t.equal(oks(r.stdout, 2), n, 'every rank read every key');
    t.match(r.stdout, `mapping=(vector,(0,1,${n}))`, 'PMI_process_mapping via info-getjobattr');
  });
}

t.test('run --pmi tcp -n 4: PMI-2 ranks over PMI_PORT, identified by fullinit (srcid = PMI_ID)', { skip }, async (t) => {
  const r = await runCli(['run', '--pmi', 'tcp', '-n', '4', '--', pmi2Exchange()], { timeoutMs: 60_000 });
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr})`);
  t.equal(oks(r.stdout, 2), 4);
  for (let rank = 0; rank < 4; rank++) t.match(r.stdout, `OK pmi2 rank=${rank} size=4`);
});

t.test('PMI-1 (MPICH) and PMI-2 (libpmi2) ranks in one job share the KVS', { skip }, async (t) => {
  const script = `if [ $((PMI_RANK % 2)) = 0 ]; then exec ${pmi2Exchange()}; else exec ${pmi1Exchange()}; fi`;
  for (const pmi of ['fd', 'tcp']) {
    const r = await runCli(['run', '--pmi', pmi, '-n', '4', '--', 'sh', '-c', script], { timeoutMs: 60_000 });
    t.equal(r.code, 0, `--pmi ${pmi}: exit 0 (stderr: ${r.stderr})`);
    t.equal(oks(r.stdout, 2), 2, `--pmi ${pmi}: two PMI-2 ranks read all four keys`);
    t.equal(oks(r.stdout, 1), 2, `--pmi ${pmi}: two PMI-1 ranks read all four keys`);
  }
});

t.test('serve -n 2: PMI-2 ranks started by hand with PMI_PORT and PMI_ID; serve exits 0', { skip }, async (t) => {
  const server = startCli(['serve', '-n', '2']);
  const out = collect(server);
  const [, port] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const ranks = [0, 1].map((id) => runCliRank(pmi2Exchange(), { PMI_PORT: String(port), PMI_ID: String(id) }));
  const results = await Promise.all(ranks);
  for (const r of results) t.equal(r.code, 0, `rank exit 0 (stderr: ${r.stderr})`);
  t.same((await exitOf(server, 20_000)).code, 0, `serve exits 0 (stderr: ${out.stderr})`);
});

t.test('run --pmi-version 1: a PMI-2 rank fails the job at once with a reason (no wait)', { skip }, async (t) => {
  const start = Date.now();
  const r = await runCli(['run', '--pmi-version', '1', '-n', '2', '--', pmi2Exchange()], { timeoutMs: 30_000 });
  t.not(r.code, 0);
  t.match(r.stderr, /speaks PMI-2, but this job serves PMI-1 only \(--pmi-version 1\); run it with --pmi-version 2 or any/);
  t.ok(Date.now() - start < 15_000, 'within seconds');
});

t.test('serve --pmi-version 1 -n 2 with PMI-2 ranks: refused in their protocol, and serve ends instead of waiting', { skip }, async (t) => {
  const server = startCli(['serve', '--pmi-version', '1', '-n', '2']);
  const out = collect(server);
  const [, port] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const rank = await runCliRank(pmi2Exchange(), { PMI_PORT: String(port), PMI_ID: '0' });
  t.not(rank.code, 0, 'the PMI-2 client fails PMI2_Init');
  const end = await exitOf(server, 15_000);
  t.not(end.code, 0, 'serve exits non-zero by itself');
  t.match(out.stderr, /speaks PMI-2, but this job serves PMI-1 only/);
});

t.test('run --pmi-version 2: a PMI-1 (MPICH) rank is refused the same way; PMI-2 ranks run', { skip }, async (t) => {
  const bad = await runCli(['run', '--pmi-version', '2', '-n', '2', '--', pmi1Exchange()], { timeoutMs: 30_000 });
  t.not(bad.code, 0);
  t.match(bad.stderr, /speaks PMI-1, but this job serves PMI-2 only/);
  const good = await runCli(['run', '--pmi-version', '2', '-n', '2', '--', pmi2Exchange()], { timeoutMs: 30_000 });
  t.equal(good.code, 0, `exit 0 (stderr: ${good.stderr})`);
});

t.test('--pmi-version with a bad value is a usage error', async (t) => {
  const r = await runCli(['run', '--pmi-version', '3', '-n', '1', '--', 'true'], { timeoutMs: 20_000 });
  t.equal(r.code, 2);
  t.match(r.stderr, /--pmi-version must be 1, 2 or any/);
});

t.test('PMI2_Abort fails the job with the rank and its message', { skip }, async (t) => {
  const r = await runCli(['run', '-n', '2', '--', pmi2Exchange(), 'abort'], { timeoutMs: 30_000 });
  t.not(r.code, 0);
  t.match(r.stderr, /rank 0 called abort with exit code 1: pmi-exchange was asked to abort/);
});

/** What a listener says to `bytes` and how long until it closes (bounded: 10 s is a failure). */
function probe(port: string, bytes: Buffer): Promise<{ reply: string; closedMs: number }> {
  const [host, p] = [port.slice(0, port.lastIndexOf(':')), Number(port.slice(port.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const s = connect({ host, port: p });
    let reply = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer or close within 10 s after ${JSON.stringify(bytes.toString('latin1'))}`));
    }, 10_000);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, closedMs: Date.now() - start });
    });
  });
}

const FOREIGN: ReadonlyArray<readonly [string, Buffer, RegExp]> = [
  ['HTTP', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 Bad Request[\s\S]*not a web server/],
  ['TLS ClientHello', Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]), /^$/],
  ['SSH banner', Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), /^$/],
  ['PMIx connect header', Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]), /^$/],
  ['binary', Buffer.from([0x00, 0x01, 0x02, 0x03]), /^$/],
  ['a PMI-2 frame with a bad length', Buffer.from('  12x4cmd=fullinit;'), /^$/],
];

t.test('serve: every foreign protocol is answered or closed at once, logged, and the job goes on', { skip }, async (t) => {
  const server = startCli(['serve', '-n', '1']);
  const out = collect(server);
  const [, port] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  for (const [what, bytes, reply] of FOREIGN) {
    const r = await probe(String(port), bytes);
    t.match(r.reply, reply, `${what}: answer`);
    t.ok(r.closedMs < 5_000, `${what}: closed within ${r.closedMs} ms`);
  }
  const rank = await runCliRank(pmi2Exchange(), { PMI_PORT: String(port), PMI_ID: '0' });
  t.equal(rank.code, 0, `a real rank still runs (stderr: ${rank.stderr})`);
  t.equal((await exitOf(server, 20_000)).code, 0);
  for (const word of ['HTTP GET', 'TLS ClientHello', 'SSH client banner', 'PMIx', 'binary data', 'PMI-2 length header']) t.match(out.stderr, word, `logged: ${word}`);
});

/** A rank process started by the test (not by pmibridge), with extra environment. */
function runCliRank(exe: string, env: Record<string, string>): ReturnType<typeof runCommand> {
  return runCommand(exe, [], { env: { ...cleanEnv(), ...env }, timeoutMs: 30_000 });
}

t.test("pmibridge's own PMI-2 client against its server: pmi exchange --pmi-version 2, alone and mixed with PMI-1", async (t) => {
  const r = await runCli(['run', '-n', '4', '--', 'pmibridge', 'pmi', 'exchange', '--pmi-version', '2', '--count', '3'], { timeoutMs: 60_000 });
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr})`);
  t.equal(r.stdout.match(/read 12 keys from 4 ranks: OK/g)?.length, 4);
  const mixed = 'if [ $((PMI_RANK % 2)) = 0 ]; then exec pmibridge pmi exchange --pmi-version 2; else exec pmibridge pmi exchange; fi';
  const m = await runCli(['run', '--pmi', 'tcp', '-n', '4', '--', 'sh', '-c', mixed], { timeoutMs: 60_000 });
  t.equal(m.code, 0, `mixed: exit 0 (stderr: ${m.stderr})`);
  t.equal(m.stdout.match(/read 4 keys from 4 ranks: OK/g)?.length, 4);
  const refused = await runCli(['run', '--pmi-version', '1', '-n', '1', '--', 'pmibridge', 'pmi', 'info', '--pmi-version', '2'], { timeoutMs: 30_000 });
  t.equal(refused.code, 1);
  t.match(refused.stderr, /the PMI server refused PMI-2/);
});

t.test("relay: every foreign protocol on its listener is answered or closed at once, logged, and its session still works", async (t) => {
  const server = startCli(['serve', '-n', '1', '--listen', 'unix']);
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const relay = startCli(['relay', '--upstream', String(upstream), '--listen', 'tcp://127.0.0.1:0', '--sessions', '1']);
  const out = collect(relay);
  const [, port] = await waitForLine(relay, /^PMI_PORT=(127\.0\.0\.1:\d+)$/);
  for (const [what, bytes, reply] of FOREIGN) {
    const r = await probe(String(port), bytes);
    t.match(r.reply, reply, `${what}: answer`);
    t.ok(r.closedMs < 5_000, `${what}: closed within ${r.closedMs} ms`);
  }
  const rank = await runCommand(cliNode, [cliPath, 'pmi', 'info'], { env: { ...cleanEnv(), PMI_PORT: String(port), PMI_ID: '0' }, timeoutMs: 30_000 });
  t.equal(rank.code, 0, `a real rank through the relay still runs (stderr: ${rank.stderr})`);
  t.equal((await exitOf(relay, 20_000)).code, 0);
  t.equal((await exitOf(server, 20_000)).code, 0);
  for (const word of ['HTTP GET', 'TLS ClientHello', 'SSH client banner', 'PMIx', 'binary data', 'PMI-2 length header']) t.match(out.stderr, word, `logged: ${word}`);
});

t.test('the tap port: non-HTTP bytes are closed at once; the job goes on', async (t) => {
  const { child: server, tapPort } = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0']);
  for (const [what, bytes] of FOREIGN.filter(([w]) => w !== 'HTTP')) {
    const r = await probe(`127.0.0.1:${tapPort}`, bytes);
    t.ok(r.closedMs < 5_000, `${what}: closed within ${r.closedMs} ms`);
    t.notMatch(r.reply, /200 OK|101 Switching/, `${what}: never served`);
  }
  server.kill('SIGTERM');
  t.equal((await exitOf(server, 30_000)).code, 128 + 15, 'serve was still serving, and ends on SIGTERM');
});

function cleanEnv(): NodeJS.ProcessEnv {
  const clean = { ...process.env };
  for (const k of ['PMI_FD', 'PMI_PORT', 'PMI_ID', 'PMI_RANK', 'PMI_SIZE']) delete clean[k];
  return clean;
}
