// `wrap --checkpoint`: a rank that CRIU dumps (SIGKILL, its connection frozen by the network lock)
// does not end its wrap; the session is kept for the restored process, here one that reconnects
// with the same PMI_ID and re-sends its pending barrier_in (the kept barrier_out comes once), and
// wrap exits 0 once that rank finalized. A rank that really dies (its connection closes) still
// ends wrap at once with 137. In a private network namespace (iptables stands in for CRIU's lock).
import t from 'tap';
import { collect, exitOf, until, waitForLine } from './fixtures/cli.js';
import { netns, netnsMissing, RawClient, type Netns } from './fixtures/netns.js';
import { rawClientScript } from './fixtures/raw-client.js';
import { envWithPmibridge } from './fixtures/cli.js';

const skip = netnsMissing() ?? false;

async function job(t: Parameters<typeof netns>[0]) {
  const ns = await netns(t);
  const server = ns.cli(['serve', '-n', '2', '--listen', 'unix']);
  const serverLogs = collect(server);
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  // wrap's child is the raw client: its stdio is wrap's, so the RawClient reads it through wrap.
  const wrap = ns.cli(['wrap', '--checkpoint', '--upstream', upstream as string, '--', process.execPath, rawClientScript()], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: envWithPmibridge({ PMI_ID: '0' }),
  });
  let wrapErr = '';
  wrap.stderr?.on('data', (d: Buffer) => (wrapErr += d.toString()));
  const a = new RawClient(wrap, 'A (under wrap)');
  await a.handshake(0);
  const rankPid = Number((await ns.exec('ps', ['-o', 'pid=', '--ppid', String(wrap.pid)])).trim());
  const wrapPort = Number(/127\.0\.0\.1:(\d+)/.exec(await ns.exec('ss', ['-ltnH']))?.[1]);
  return { ns, server, serverLogs, upstream: upstream as string, wrap, a, rankPid, wrapPort, wrapErr: () => wrapErr };
}

async function kill(ns: Netns, pid: number): Promise<void> {
  await ns.exec('kill', ['-KILL', String(pid)]);
}

t.test('a rank dumped in a barrier (SIGKILL, connection frozen): wrap keeps the session; the restored rank gets its barrier_out once and finalizes; wrap exits 0', { skip }, async (t) => {
  const j = await job(t);
  j.a.send('cmd=barrier_in');
  const local = await j.a.localPort;
  t.ok(local && j.wrapPort, 'TCP from the rank to wrap');
  await j.ns.dropBoth(local as number, j.wrapPort);
  await kill(j.ns, j.rankPid);
  await until('wrap to say it keeps the session', () => /--checkpoint: keeping its session/.test(j.wrapErr()), 10_000);
  t.match(j.wrapErr(), new RegExp(`PMI_PORT=127\\.0\\.0\\.1:${j.wrapPort} PMI_ID=0`), 'and how a reconnecting client reaches it');
  const b = j.ns.rawClient(j.upstream, 'B');
  await b.handshake(1);
  await b.request('cmd=barrier_in', /^cmd=barrier_out rc=0/, 'B: barrier_out (rank 0 entered before its dump)');
  t.equal(j.wrap.exitCode, null, 'wrap still runs');
  const restored = j.ns.rawClient(`127.0.0.1:${j.wrapPort}`, 'A restored');
  await restored.handshake(0);
  await restored.request('cmd=barrier_in', /^cmd=barrier_out rc=0$/, 'the kept barrier_out, at once');
  await restored.none(500, 'nothing more');
  await restored.request('cmd=finalize', /^cmd=finalize_ack rc=0/, 'finalize_ack');
  await b.request('cmd=finalize', /^cmd=finalize_ack rc=0/, 'B: finalize_ack');
  t.equal((await exitOf(j.wrap, 15_000)).code, 0, `wrap exits 0 once the restored rank finalized (${j.wrapErr()})`);
  t.equal((await exitOf(j.server, 15_000)).code, 0, `serve saw a normal job (${j.serverLogs.stderr.slice(-400)})`);
});

t.test('a rank that really dies (its connection closes) still ends wrap --checkpoint at once, with 137', { skip }, async (t) => {
  const j = await job(t);
  j.a.send('cmd=barrier_in');
  await kill(j.ns, j.rankPid);
  const exit = await exitOf(j.wrap, 15_000);
  t.equal(exit.code, 137, 'the SIGKILL, as without --checkpoint');
  t.match(j.wrapErr(), /ended without PMI finalize|its PMI connection closed: it died/, `says why (${j.wrapErr()})`);
  t.equal((await exitOf(j.server, 15_000)).code, 1, 'the server saw a failed rank');
});

t.test('--checkpoint with --pmi fd is a usage error', async (t) => {
  const { runCli } = await import('./fixtures/cli.js');
  const r = await runCli(['wrap', '--checkpoint', '--pmi', 'fd', '--upstream', 'unix:///nonexistent', '--', 'true']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--checkpoint needs --pmi tcp/);
});
