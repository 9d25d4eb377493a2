// A server under attack keeps serving its job: refused peers cost it no file descriptors, floods of
// connections, keys, names or bad lines are bounded, and each limit is answered in words.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { JobServer } from '../src/host/job-server.js';
import { cliPath, exitOf, runCli, until, waitForLine } from './fixtures/cli.js';
import { OTHER_USER, otherUid, otherUserMissing } from './fixtures/other-user.js';

/**
 * A node client run as the other uid: opens `n` connections to 127.0.0.1:port and never closes
 * them (allowHalfOpen: our FIN does not make it close), prints one JSON line once the server ended
 * each of them (or after 20 s), then holds everything until its stdin ends.
 */
const holder = String.raw`
const net = require('net');
const port = Number(process.argv[1]);
const n = Number(process.argv[2]);
let settled = 0, refused = 0, ended = 0, reported = false;
const socks = [];
const report = () => { if (!reported) { reported = true; console.log(JSON.stringify({ n, refused, ended })); } };
for (let i = 0; i < n; i++) {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socks.push(s);
  let buf = '', done = false;
  const settle = () => { if (!done) { done = true; if (++settled === n) report(); } };
  s.on('data', (d) => { buf += d; });
  s.on('end', () => { if (/uid_\d+_not_allowed/.test(buf)) refused++; });
  s.on('end', () => { ended++; settle(); });
  s.on('error', settle);
  s.on('close', settle);
}
setTimeout(report, 20000);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

function startHolder(port: number, n: number): ChildProcess {
  return spawn('runuser', ['-u', OTHER_USER, '--', 'env', '-i', process.execPath, '-e', holder, String(port), String(n)], { stdio: ['pipe', 'pipe', 'pipe'] });
}

const fdsOf = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

t.test('connections refused for their uid are closed by the server at once: another uid holding 500 of them cannot starve a 256-fd server', { skip: otherUserMissing() ?? false }, async (t) => {
  const server = spawn('prlimit', ['--nofile=256:256', '--', process.execPath, cliPath, 'serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => server.kill('SIGKILL'));
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, port] = await waitForLine(server, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  const attacker = startHolder(Number(port), 500);
  t.teardown(() => attacker.kill('SIGKILL'));
  const [report] = await waitForLine(attacker, /^\{.*\}$/, 30_000);
  const r = JSON.parse(report) as { n: number; refused: number; ended: number };
  t.ok(r.refused > 0, `the other uid was told why (${r.refused} of ${r.n} refusals read)`);
  t.ok(r.ended >= r.refused, `and each refused connection was closed by the server (${r.ended} ended)`);
  const fds = fdsOf(server.pid as number);
  t.ok(fds < 100, `while the other uid still holds its connections open, the server has ${fds} fds open`);

  const rank = await runCli(['pmi', 'info'], { env: { ...process.env, PMI_PORT: `127.0.0.1:${port}`, PMI_ID: '0' }, timeoutMs: 20_000 }).catch((e: Error) => ({ code: -1, stderr: e.message }));
  t.equal(rank.code, 0, `the real rank joins and is served (stderr: ${rank.stderr.slice(0, 500)})`);
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
  t.match(stderr, new RegExp(`uid ${otherUid()} is not allowed`), 'refusals logged');
  attacker.stdin?.end();
});

t.test('a connection the server closed (refused pmiid, bad lines, finalize) is released even if the peer never closes its end', async (t) => {
  const server = new JobServer({ size: 1, kvsname: 'kvs_hard_0' });
  t.teardown(() => server.close());
  const listener = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  const port = listener.address.kind === 'tcp' ? listener.address.port : 0;
  const conns = (server as unknown as { connections: Map<number, unknown> }).connections;
  const held: Socket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  for (const payload of ['cmd=initack pmiid=99\n', 'junk\n'.repeat(8)]) {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    held.push(s);
    s.on('error', () => undefined);
    s.resume();
    await once(s, 'connect');
    s.write(payload);
    await once(s, 'end'); // the server's FIN: it is done with us; we keep our end open
  }
  await until('the server to release both connections', () => conns.size === 0, 15_000);
  t.equal(conns.size, 0, 'both closed connections are gone on the server side');
});
