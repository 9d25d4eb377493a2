// The relay's listeners hold the same line as the server's: connections that never send initack
// are timed out or make room for real ranks, a peer's connections are bounded, and each limit is
// answered in words (host/connection-limits.ts, shared with the server).
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { JobServer } from '../src/host/job-server.js';
import { RelayHost, relayMaxConnections, type RelayHostOptions } from '../src/host/relay-host.js';
import type { BusEvent } from '../src/host/bus.js';
import { PmiClient } from '../src/client/index.js';
import { cliPath, exitOf, runCli, until, waitForLine } from './fixtures/cli.js';
import { fdsOf, holdConnections, idle, within } from './fixtures/idle-socket.js';

/** A JobServer of `size` ranks upstream, a RelayHost on loopback TCP in front of it. */
async function relayed(t: Test, size: number, opts: Partial<RelayHostOptions> = {}) {
  const server = new JobServer({ size, kvsname: 'kvs_relay_limits_0' });
  t.teardown(() => server.close());
  const up = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  const relay = new RelayHost({ upstream: { kind: 'address', address: up.address }, holdMs: 0, ...opts });
  const events: BusEvent[] = [];
  relay.bus.subscribe((e) => events.push(e));
  t.teardown(() => relay.close());
  const l = await relay.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  return { server, relay, events, port: l.address.kind === 'tcp' ? l.address.port : 0 };
}

async function rank(port: number, id: number): Promise<void> {
  const c = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: id }, { timeoutMs: 20_000 });
  await c.init();
  await c.barrier();
  await c.finalize();
}

t.test('relay: a connection that never sends initack is closed after the identify timeout, told why, and logged', async (t) => {
  const { relay, events, port } = await relayed(t, 1, { identifyTimeoutMs: 500 });
  const silent = idle(port);
  const identified = idle(port);
  await once(identified.socket, 'connect');
  identified.socket.write('cmd=initack pmiid=0\n');
  t.equal(await within(silent.closed, 10_000), true, 'the silent connection is closed');
  t.equal(silent.text(), 'cmd=error rc=-1 msg=no_initack_or_init_within_500ms\n', 'told why');
  t.match(events.find((e) => e.type === 'peer-refused'), { reason: /sent no valid initack or init within 500ms of connecting \(--identify-timeout\); closed/ });
  t.equal(await within(identified.closed, 1500), 'timeout', 'the identified connection stays');
  t.equal(relay.limits.size, 1);
  identified.socket.destroy();
});

t.test('relay: a flood of connections that never identify cannot keep ranks out', async (t) => {
  const { server, relay, port } = await relayed(t, 2, { maxConnections: 50 });
  const flood = Array.from({ length: 200 }, () => idle(port));
  t.teardown(() => flood.forEach((f) => f.socket.destroy()));
  await until('the flood to be accepted or closed', () => flood.every((f) => f.socket.readyState === 'open' || f.socket.destroyed), 15_000);
  await until('the relay to settle at its limit', () => relay.limits.size <= 50, 15_000);
  await Promise.all([rank(port, 0), rank(port, 1)]);
  t.same(await server.done, { ok: true, exitCode: 0, reason: 'all 2 ranks finalized' }, 'both ranks got in through the relay and the job completed');
  const evicted = flood.filter((f) => f.text() === 'cmd=error rc=-1 msg=closed_to_make_room_identify_with_initack_or_init_at_once\n').length;
  t.ok(evicted >= 150, `${evicted} flood connections were closed with a reason`);
});

t.test('relay: when every connection of a peer has a session, one more is refused with the limit in words', async (t) => {
  const { events, port } = await relayed(t, 2, { maxConnectionsPerPeer: 2 });
  const c0 = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: 0 }, { timeoutMs: 20_000 });
  const c1 = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: 1 }, { timeoutMs: 20_000 });
  const extra = idle(port);
  t.equal(await within(extra.closed, 10_000), true, 'refused and closed');
  const uid = process.getuid?.() ?? 0;
  t.equal(extra.text(), `cmd=error rc=-1 msg=too_many_connections_from_uid_${uid}_limit_2\n`);
  t.match(events.find((e) => e.type === 'peer-refused'), { reason: /already holds 2 connections, the limit per peer \(raise it with --max-connections-per-peer\)/ });
  await Promise.all([c0, c1].map(async (c) => (await c.init(), await c.barrier(), await c.finalize())));
});

t.test('relay default: half the fd limit (each session also holds an upstream connection)', async (t) => {
  t.equal(relayMaxConnections(1024), 480, '1024 fds: (1024/2 + 32) - 64 reserved');
  t.equal(relayMaxConnections(1_048_576), 4096);
  t.equal(relayMaxConnections(undefined), 4096);
});

t.test('relay under a 128-fd limit: 500 held connections that never identify cannot keep a rank out (defaults)', async (t) => {
  const server = spawn(process.execPath, [cliPath, 'serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => server.kill('SIGKILL'));
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(127\.0\.0\.1:\d+)$/);
  const relay = spawn('prlimit', ['--nofile=128:128', '--', process.execPath, cliPath, 'relay', '--upstream', upstream as string, '--sessions', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => relay.kill('SIGKILL'));
  let stderr = '';
  relay.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, port] = await waitForLine(relay, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  const held = await holdConnections(Number(port), 500);
  t.teardown(() => held.forEach((s) => s.destroy()));
  const fds = fdsOf(relay.pid as number);
  t.ok(fds < 128, `the relay stays below its fd limit (${fds} fds open)`);
  const r = await runCli(['pmi', 'info'], { env: { ...process.env, PMI_PORT: `127.0.0.1:${port}`, PMI_ID: '0' }, timeoutMs: 20_000 }).catch((e: Error) => ({ code: -1, stderr: e.message }));
  t.equal(r.code, 0, `the rank joins through the relay (stderr: ${r.stderr.slice(0, 300)})`);
  t.equal((await exitOf(relay, 20_000)).code, 0, 'the relay completed its session');
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
  t.notMatch(stderr, /EMFILE/, 'no accept() failed for lack of descriptors');
});
