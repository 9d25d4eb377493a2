// A server under attack keeps serving its job: refused peers cost it no file descriptors, floods of
// connections, keys, names or bad lines are bounded, and each limit is answered in words.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { JobServer, type JobServerOptions } from '../src/host/job-server.js';
import type { BusEvent } from '../src/host/bus.js';
import { PmiClient } from '../src/client/index.js';
import { cliPath, exitOf, runCli, until, waitForLine } from './fixtures/cli.js';
import { OTHER_USER, otherUid, otherUserMissing } from './fixtures/other-user.js';
import { netns, netnsMissing } from './fixtures/netns.js';
import { fdsOf, holdConnections, idle, within } from './fixtures/idle-socket.js';

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

async function jobServer(t: Test, opts: Partial<JobServerOptions> & { size: number }) {
  const server = new JobServer({ kvsname: 'kvs_hard_0', ...opts });
  const events: BusEvent[] = [];
  server.bus.subscribe((e) => events.push(e));
  t.teardown(() => server.close());
  const listener = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  const port = listener.address.kind === 'tcp' ? listener.address.port : 0;
  return { server, events, port };
}

async function rank(port: number, id: number): Promise<void> {
  const c = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: id }, { timeoutMs: 20_000 });
  await c.init();
  await c.barrier();
  await c.finalize();
}

t.test('a connection that never identifies itself is closed after --identify-timeout, told why, and logged', async (t) => {
  const { server, events, port } = await jobServer(t, { size: 1, identifyTimeoutMs: 500 });
  const silent = idle(port);
  const chatty = idle(port);
  await once(chatty.socket, 'connect');
  chatty.socket.write('cmd=get_maxes\n'); // well-formed, but no identification
  const identified = idle(port);
  await once(identified.socket, 'connect');
  identified.socket.write('cmd=initack pmiid=0\n');
  t.equal(await within(silent.closed, 10_000), true, 'the silent connection is closed');
  t.equal(await within(chatty.closed, 10_000), true, 'so is one that only asked questions');
  t.equal(silent.text(), 'cmd=error rc=-1 msg=no_initack_or_init_within_500ms\n', 'told why');
  t.match(chatty.text(), /cmd=maxes rc=1 .*\ncmd=error rc=-1 msg=no_initack_or_init_within_500ms\n$/);
  const refusals = events.filter((e) => e.type === 'engine' && e.event.type === 'refused' && e.event.code === 'E_IDENTIFY_TIMEOUT');
  t.equal(refusals.length, 2, 'each closed connection is a refusal event (logged at warn)');
  t.match(refusals[0], { event: { message: /sent no valid initack or init within 500ms of connecting \(--identify-timeout\)/ } });
  t.equal(await within(identified.closed, 1500), 'timeout', 'the identified connection stays');
  t.equal(server.limits.size, 1);
  identified.socket.destroy();
});

t.test('a flood of connections that never identify cannot keep a rank out: the oldest are closed to make room', async (t) => {
  const { server, port } = await jobServer(t, { size: 2, maxConnections: 50 });
  const flood = Array.from({ length: 200 }, () => idle(port));
  t.teardown(() => flood.forEach((f) => f.socket.destroy()));
  await until('the flood to be accepted or closed', () => flood.every((f) => f.socket.readyState === 'open' || f.socket.destroyed), 15_000);
  await until('the server to settle at its limit', () => server.limits.size <= 50, 15_000);
  t.ok(server.limits.size <= 50, `the server holds ${server.limits.size} connections (limit 50)`);
  await Promise.all([rank(port, 0), rank(port, 1)]);
  t.same(await server.done, { ok: true, exitCode: 0, reason: 'all 2 ranks finalized' }, 'both ranks got in and the job completed');
  const evicted = flood.filter((f) => f.text() === 'cmd=error rc=-1 msg=closed_to_make_room_identify_with_initack_or_init_at_once\n').length;
  t.ok(evicted >= 150, `${evicted} flood connections were closed with a reason`);
});

t.test('when every connection of a peer is a rank, one more is refused with the limit in words', async (t) => {
  const { events, port } = await jobServer(t, { size: 2, maxConnectionsPerPeer: 2 });
  const c0 = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: 0 }, { timeoutMs: 20_000 });
  const c1 = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: 1 }, { timeoutMs: 20_000 });
  const extra = idle(port);
  t.equal(await within(extra.closed, 10_000), true, 'refused and closed');
  const uid = process.getuid?.() ?? 0;
  t.equal(extra.text(), `cmd=error rc=-1 msg=too_many_connections_from_uid_${uid}_limit_2\n`);
  t.match(events.find((e) => e.type === 'peer-refused'), { reason: new RegExp(`uid ${uid} already holds 2 connections, the limit per peer \\(raise it with --max-connections-per-peer\\)`) });
  await Promise.all([c0, c1].map(async (c) => (await c.init(), await c.barrier(), await c.finalize())));
});

t.test('serve under a 128-fd limit: 500 held connections of our own uid that never identify cannot keep a rank out (defaults)', async (t) => {
  const server = spawn('prlimit', ['--nofile=128:128', '--', process.execPath, cliPath, 'serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => server.kill('SIGKILL'));
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, port] = await waitForLine(server, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  const held = await holdConnections(Number(port), 500);
  t.teardown(() => held.forEach((s) => s.destroy()));
  const fds = fdsOf(server.pid as number);
  t.ok(fds < 128, `the server stays below its fd limit (${fds} fds open)`);
  const r = await runCli(['pmi', 'info'], { env: { ...process.env, PMI_PORT: `127.0.0.1:${port}`, PMI_ID: '0' }, timeoutMs: 20_000 }).catch((e: Error) => ({ code: -1, stderr: e.message }));
  t.equal(r.code, 0, `the rank joins (stderr: ${r.stderr.slice(0, 300)})`);
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
  t.notMatch(stderr, /EMFILE/, 'no accept() failed for lack of descriptors');
});

t.test('serve --listen tcp://0.0.0.0:0 checks the uid of a local process that connects through a non-loopback address; remote peers are admitted and logged', { skip: netnsMissing() ?? otherUserMissing() ?? false }, async (t) => {
  // Two private namespaces joined by a veth pair: "host" (10.77.0.1, the server's) and "remote" (10.77.0.2).
  const host = await netns(t);
  const remote = await netns(t);
  await host.exec('ip', ['link', 'add', 'pmib-a', 'type', 'veth', 'peer', 'name', 'pmib-b', 'netns', remote.name]);
  await host.exec('ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'pmib-a']);
  await host.exec('ip', ['link', 'set', 'pmib-a', 'up']);
  await remote.exec('ip', ['addr', 'add', '10.77.0.2/24', 'dev', 'pmib-b']);
  await remote.exec('ip', ['link', 'set', 'pmib-b', 'up']);

  const server = host.cli(['serve', '-n', '2', '--listen', 'tcp://0.0.0.0:0', '--log-level', 'info']);
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, port] = await waitForLine(server, /^PMI_PORT=0\.0\.0\.0:(\d+)$/);
  const address = `10.77.0.1:${port}`;

  // another uid on the server's own host, through its non-loopback address
  const probe = `const s=require('net').connect(${port},'10.77.0.1');let b='';s.on('data',d=>b+=d);s.on('error',e=>console.log('error',e.code));s.on('close',()=>console.log(JSON.stringify(b)));s.write('cmd=initack pmiid=0\\n');`;
  const intruder = host.spawn('runuser', ['-u', OTHER_USER, '--', 'env', '-i', process.execPath, '-e', probe]);
  const [said] = await waitForLine(intruder, /^".*"$/, 15_000);
  t.match(said, new RegExp(`cmd=error rc=-1 msg=uid_${otherUid()}_not_allowed`), 'a local process of another uid is refused, though it came through 10.77.0.1');

  // our uid, locally through 10.77.0.1: rank 0; a process on the remote namespace: rank 1
  const env = (id: number) => ['env', `PMI_PORT=${address}`, `PMI_ID=${id}`, process.execPath, cliPath, 'pmi', 'info'];
  const r0 = host.spawn(env(0)[0] as string, env(0).slice(1));
  const r1 = remote.spawn(env(1)[0] as string, env(1).slice(1));
  t.equal((await exitOf(r0, 20_000)).code, 0, 'our uid through the non-loopback address is served');
  t.equal((await exitOf(r1, 20_000)).code, 0, 'the remote peer is served');
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
  const remoteLines = stderr.split('\n').filter((l) => /another host, admitted without a uid check/.test(l));
  t.equal(remoteLines.length, 1, 'the remote connection is logged once');
  t.match(remoteLines[0], /"level":40.*10\.77\.0\.2:\d+/, 'at warn (shown by default), with its address');
  t.notMatch(stderr, /10\.77\.0\.1:\d+\)?: a peer on another host/, 'local connections are not called remote');
});

t.test('serve: the limits are flags, each answered in words', async (t) => {
  const server = spawn(process.execPath, [cliPath, 'serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0', '--kvs-max-keys', '3', '--max-names', '1', '--identify-timeout', '1s', '--max-connections', '10', '--max-connections-per-peer', '5'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => server.kill('SIGKILL'));
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, port] = await waitForLine(server, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  const silent = idle(Number(port));
  t.equal(await within(silent.closed, 10_000), true, '--identify-timeout 1s: an idle connection is closed');
  t.equal(silent.text(), 'cmd=error rc=-1 msg=no_initack_or_init_within_1s\n');
  const c = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port: Number(port) }, pmiid: 0 }, { timeoutMs: 20_000 });
  await c.init();
  await c.put('a', '1');
  await c.put('b', '2'); // with the preset PMI_process_mapping: 3 keys
  const full = await c.put('c', '3').then(() => null, (e: { rc?: number; message?: string }) => e);
  t.equal(full?.rc, 2, '--kvs-max-keys 3: the 4th key is refused rc=2');
  t.match(full?.message, /kvs_full_3_keys/);
  await c.request({ cmd: 'publish_name', service: 's1', port: 'p1' } as never);
  const names = await c.request({ cmd: 'publish_name', service: 's2', port: 'p2' } as never).then(() => null, (e: { rc?: number; message?: string }) => e);
  t.equal(names?.rc, 2, '--max-names 1: a second service is refused rc=2');
  await c.barrier();
  await c.finalize();
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
  t.match(stderr, /sent no valid initack or init within 1s of connecting \(--identify-timeout\)/, 'the timeout is logged');
  t.match(stderr, /raise it with --kvs-max-keys/);
  t.match(stderr, /raise it with --max-names/);
  for (const [flag, value] of [['--identify-timeout', '0'], ['--identify-timeout', 'soon'], ['--kvs-max-keys', '0'], ['--max-connections', 'x']]) {
    const r = await runCli(['serve', '-n', '1', flag as string, value as string], { timeoutMs: 10_000 });
    t.equal(r.code, 2, `${flag} ${value}: a usage error (${r.stderr.split('\n')[0]})`);
  }
});
