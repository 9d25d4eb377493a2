// The tap end to end, with the built CLI: authentication (token, and the peer's uid on a Unix
// tap), the token file, slow observers (never slowing the job), the event stream of a real MPICH
// job through the relay compared with the bytes on the wire, `pmibridge tap`, and redaction.
import t, { type Test } from 'tap';
import { request } from 'node:http';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { envWithPmibridge, exitOf, runCli, runCommand, startCli, waitForLine, collect, until } from './fixtures/cli.js';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';
import { asOther, otherUid, otherUserMissing } from './fixtures/other-user.js';

/** A tap event as observers receive it (schema v1). */
interface Ev {
  readonly v: number;
  readonly seq: number;
  readonly t: string;
  readonly job: string;
  readonly kind: string;
  readonly leg?: string;
  readonly line?: string;
  readonly cmd?: string;
  readonly attrs?: Record<string, string>;
  readonly conn?: number;
  readonly session?: number;
  readonly rank?: number;
  readonly latencyNs?: number;
  readonly event?: string;
  readonly dropped?: number;
  readonly [field: string]: unknown;
}

const live = (e: Ev) => e.kind === 'line' || e.kind === 'state';



/** `p`, or `fallback` after `ms` (the timer does not keep the test alive). */
const orAfter = <T>(p: Promise<T>, ms: number, fallback: T): Promise<T> => Promise.race([p, new Promise<T>((resolve) => setTimeout(() => resolve(fallback), ms).unref())]);

interface Tapped {
  readonly child: ChildProcess;
  readonly out: { stdout: string; stderr: string };
  /** The PMI_PORT the job (or relay) listens on. */
  readonly port: string;
  /** As printed: ws://127.0.0.1:PORT, or the Unix socket path. */
  readonly url: string;
  readonly token: string;
}

/** Start `serve`/`relay` with a tap; wait for its PMI_PORT and the tap line on stderr. */
async function startTapped(t: Test, args: readonly string[], env?: NodeJS.ProcessEnv, token?: string): Promise<Tapped> {
  const child = startCli(args, env ? { env } : {});
  t.teardown(() => void child.kill('SIGKILL'));
  const out = collect(child);
  const [, port] = await waitForLine(child, /^PMI_PORT=(\S+)$/);
  await until('the tap line', () => /tap on \S+/.test(out.stderr));
  const m = /tap on (\S+)(?: token=(\S+))?/.exec(out.stderr);
  const found = token ?? m?.[2];
  if (!m?.[1] || !found) throw new Error(`no tap line with a token: ${out.stderr}`);
  return { child, out, port: port as string, url: m[1], token: found };
}

/** WebSocket URL of a tap address. */
const wsUrl = (url: string) => (url.startsWith('/') ? `ws+unix://${url}:/tap` : `${url}/tap`);

interface Observer {
  readonly ws: WebSocket;
  readonly events: Ev[];
  /** Resolves once hello and snapshot arrived. */
  readonly ready: Promise<void>;
  /** Resolves with the close code. */
  readonly closed: Promise<number>;
}

function observe(t: Test, url: string, token: string, onOpen?: (ws: WebSocket) => void): Observer {
  const ws = new WebSocket(wsUrl(url), { headers: { authorization: `Bearer ${token}` } });
  t.teardown(() => ws.terminate());
  const events: Ev[] = [];
  let readyResolve!: () => void;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  if (onOpen) ws.on('open', () => onOpen(ws));
  ws.on('message', (data: Buffer) => {
    events.push(JSON.parse(data.toString()) as Ev);
    if (events.length === 2) readyResolve();
  });
  ws.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => ws.on('close', (code: number) => resolve(code)));
  return { ws, events, ready, closed };
}

/** HTTP status of a WebSocket upgrade: 101 when accepted, else what the refusal said. */
function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('unexpected-response', (req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      req.destroy();
    });
    ws.on('open', () => {
      resolve(101);
      ws.terminate();
    });
    ws.on('error', reject);
  });
}

function httpGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const httpUrl = (url: string) => url.replace(/^ws:/, 'http:');

/** A rank as pmibridge's own client. */
const rank = (port: string, id: number, args: readonly string[]) => runCli(['pmi', ...args], { env: envWithPmibridge({ PMI_PORT: port, PMI_ID: String(id) }), timeoutMs: 60_000 });

/** The seq of live events an observer saw is 1 more each time, following its snapshot. */
function contiguous(t: Test, events: readonly Ev[], what: string): void {
  const snap = events[1];
  t.equal(events[0]?.kind, 'hello', `${what}: hello first`);
  t.equal(snap?.kind, 'snapshot', `${what}: snapshot second`);
  t.equal(events[0]?.seq, snap?.seq, `${what}: hello and snapshot at the same stream position`);
  let expect = (snap?.seq ?? 0) + 1;
  let holes = 0;
  for (const e of events.slice(2)) {
    if (e.seq !== expect) holes++;
    expect = e.seq + 1;
  }
  t.equal(holes, 0, `${what}: live events numbered ${(snap?.seq ?? 0) + 1}…${expect - 1} without a hole`);
}

t.test('auth: a token for the WebSocket, / and /metrics; pmibridge tap says why it is refused', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0']);
  t.match(s.url, /^ws:\/\/127\.0\.0\.1:\d+$/, 'loopback, a free port');
  t.match(s.out.stderr, new RegExp(`monitor: ${httpUrl(s.url).replace(/\./g, '\\.')}/\\?token=${s.token}`), 'the monitor URL is printed');
  const watcher = observe(t, s.url, s.token);
  await watcher.ready;
  t.match(watcher.events[0], { v: 2, kind: 'hello', role: 'server', redact: false, schema: 2 });

  t.equal(await upgradeStatus(`${s.url}/tap`), 401, 'upgrade without a token');
  t.equal(await upgradeStatus(`${s.url}/tap`, { authorization: `Bearer ${s.token}x` }), 401, 'upgrade with a wrong token');
  t.equal(await upgradeStatus(`${s.url}/tap?token=nope`), 401, 'upgrade with a wrong ?token=');
  t.equal(await upgradeStatus(`${s.url}/tap`, { authorization: `Basic ${s.token}` }), 401, 'not a bearer token');
  t.equal(await upgradeStatus(`${s.url}/tap?token=${s.token}`), 101, 'upgrade with ?token=');
  t.equal(await upgradeStatus(`${s.url}/`, { authorization: `Bearer ${s.token}` }), 101, 'upgrade with Bearer, on / too');
  t.equal(await upgradeStatus(`${s.url}/elsewhere`, { authorization: `Bearer ${s.token}` }), 404, 'only / and /tap');

  const http = httpUrl(s.url);
  const noToken = await httpGet(`${http}/`);
  t.equal(noToken.status, 401, 'GET / without a token');
  t.notMatch(noToken.body, /<html|<script/i, 'and no page');
  t.equal((await httpGet(`${http}/metrics`)).status, 401, 'GET /metrics without a token');
  t.equal((await httpGet(`${http}/metrics?token=wrong`)).status, 401, 'GET /metrics with a wrong token');
  const page = await httpGet(`${http}/?token=${s.token}`);
  t.equal(page.status, 200, 'GET /?token=');
  t.match(page.type, /^text\/html/);
  t.equal((await httpGet(`${http}/`, { authorization: `Bearer ${s.token}` })).status, 200, 'GET / with Bearer');
  const metrics = await httpGet(`${http}/metrics`, { authorization: `Bearer ${s.token}` });
  t.equal(metrics.status, 200, 'GET /metrics with Bearer');
  t.match(metrics.body, /pmibridge_requests_total/);
  t.equal((await httpGet(`${http}/metrics?token=${s.token}`)).status, 200, 'GET /metrics?token=');

  const viewer = await runCli(['tap', s.url, '--token', 'not-the-token'], { timeoutMs: 15_000 });
  t.equal(viewer.code, 1, 'pmibridge tap with a wrong token exits 1');
  t.match(viewer.stderr, /refused: HTTP 401 \(wrong or missing token\)/, 'saying why');
  t.equal(viewer.stdout, '');

  const refusals = watcher.events.filter((e) => e.event === 'refused-peer');
  t.equal(refusals.length, 5, 'each upgrade refused for its token is a state event for observers (not the 404)');
  t.ok(refusals.every((e) => e['reason'] === 'missing or wrong token'));
  t.notMatch(JSON.stringify(watcher.events), s.token, 'the token never appears in events');

  t.equal((await rank(s.port, 0, ['info'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0, 'the job ends normally');
  t.equal(await watcher.closed, 1001, 'observers are told the job finished');
});

t.test('--metrics-public: /metrics without the token, nothing else', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '2', '--tap', 'ws://127.0.0.1:0', '--metrics-public']);
  t.equal((await rank(s.port, 0, ['info'])).code, 0, 'rank 0 done, rank 1 still to come');
  const http = httpUrl(s.url);
  const metrics = await httpGet(`${http}/metrics`);
  t.equal(metrics.status, 200, '/metrics without a token');
  t.match(metrics.type, /^text\/plain/);
  t.match(metrics.body, /^pmibridge_requests_total\{cmd="init",leg="server->client",result="ok"\} 1$/m, 'requests by command, hop and result');
  t.match(metrics.body, /^pmibridge_requests_total\{cmd="finalize",leg="server->client",result="ok"\} 1$/m);
  t.match(metrics.body, /^pmibridge_request_duration_seconds_count\{cmd="init",leg="server->client"\} 1$/m, 'latency per hop');
  t.match(metrics.body, /^pmibridge_ranks\{state="finalized"\} 1$/m, 'ranks by state');
  t.equal((await httpGet(`${http}/`)).status, 401, 'the monitor still needs the token');
  t.equal(await upgradeStatus(`${s.url}/tap`), 401, 'and so does the stream');
  t.equal((await rank(s.port, 1, ['info'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0);
});

t.test('a Unix tap admits only our uid (SO_PEERCRED), even with the right token', { skip: otherUserMissing() ?? false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-'));
  chmodSync(dir, 0o755); // reachable by the other user, so SO_PEERCRED (not file modes) must stop it
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'tap.sock');
  const s = await startTapped(t, ['serve', '-n', '1', '--tap', sock]);
  t.equal(s.url, sock, 'the tap is the socket path');
  t.match(s.out.stderr, `watch with: pmibridge tap ${sock}`, 'and how to watch it');
  chmodSync(sock, 0o777);

  const watcher = observe(t, sock, s.token);
  await watcher.ready;
  t.match(watcher.events[0], { kind: 'hello', role: 'server' }, 'our uid with the token: admitted');
  const viewer = startCli(['tap', sock, '--token', s.token, '--json']);
  t.teardown(() => void viewer.kill('SIGKILL'));
  const viewerOut = collect(viewer);
  await waitForLine(viewer, /"kind":"hello"/);

  const other = otherUid();
  const get = await asOther(`GET /?token=${s.token} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`, sock);
  t.equal(get.code, 0, 'probe ran');
  t.match(get.stdout, /HTTP\/1\.1 403 Forbidden/, `GET / as uid ${other} with the right token: 403`);
  t.match(get.stdout, new RegExp(`uid ${other} may not observe this job`), 'told why');
  t.notMatch(get.stdout, /<html/i, 'no page');
  const upgrade = await asOther(
    `GET /tap HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${s.token}\r\n\r\n`,
    sock,
  );
  t.match(upgrade.stdout, /HTTP\/1\.1 403 Forbidden/, 'the WebSocket upgrade as the other uid: 403');
  t.notMatch(upgrade.stdout, /101 Switching/);
  const metrics = await asOther(`GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${s.token}\r\nConnection: close\r\n\r\n`, sock);
  t.match(metrics.stdout, /HTTP\/1\.1 403 Forbidden/, '/metrics too');
  t.equal(await upgradeStatus(wsUrl(sock)), 401, 'our uid without a token: 401');

  await until('the refusal reaches observers', () => watcher.events.some((e) => e.event === 'refused-peer' && e['reason'] === `uid ${other} may not observe this job`));
  t.equal((await rank(s.port, 0, ['info'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0, 'the job completed');
  t.equal((await exitOf(viewer, 15_000)).code, 0, 'pmibridge tap on the Unix socket exits 0 when the job ends');
  const shown = viewerOut.stdout.trim().split('\n').map((l) => JSON.parse(l) as Ev);
  t.ok(shown.some((e) => e.kind === 'line' && e.cmd === 'finalize' && e.leg === 'client->server'), 'and it saw the rank');
  t.notOk(existsSync(sock), 'the tap socket is removed');
});

t.test('--tap-token-file: created 0600 and never printed, reused, refused when others can read it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'tap-token');

  const job = async (what: string) => {
    const first = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0', '--tap-token-file', file], undefined, 'from the file');
    const token = readFileSync(file, 'utf8').trim();
    t.equal(statSync(file).mode & 0o777, 0o600, `${what}: mode 0600`);
    t.match(token, /^[A-Za-z0-9_-]{32}$/, `${what}: a fresh random token`);
    t.match(first.out.stderr, `tap on ${first.url} (token in ${file})`, `${what}: the file is named`);
    t.match(first.out.stderr, /monitor: http:\/\/127\.0\.0\.1:\d+\/\?token=<token>/, `${what}: the monitor URL without the token`);
    t.notMatch(first.out.stderr + first.out.stdout, token, `${what}: the token is not printed`);
    t.equal((await httpGet(`${httpUrl(first.url)}/metrics`, { authorization: `Bearer ${token}` })).status, 200, `${what}: the token from the file is the tap's`);
    t.equal((await rank(first.port, 0, ['info'])).code, 0);
    t.equal((await exitOf(first.child)).code, 0);
    return token;
  };
  const created = await job('created');
  const reused = await job('second run');
  t.equal(reused, created, 'the second run reuses the token');

  for (const mode of [0o640, 0o604]) {
    chmodSync(file, mode);
    const r = await runCli(['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0', '--tap-token-file', file], { timeoutMs: 15_000 });
    t.equal(r.code, 1, `mode ${mode.toString(8)}: serve refuses to start (and does not hang on its listener)`);
    t.match(r.stderr, `pmibridge serve: ${file} is readable by others (mode ${mode.toString(8)}); chmod 600 it`, 'with a clear message');
    t.equal(r.stdout, '', 'no PMI_PORT advertised');
    const relay = await runCli(['relay', '--upstream', 'unix:///nonexistent/pmi.sock', '--tap', 'ws://127.0.0.1:0', '--tap-token-file', file], { timeoutMs: 15_000 });
    t.equal(relay.code, 1, `mode ${mode.toString(8)}: relay refuses too`);
    t.match(relay.stderr, 'is readable by others');
  }
  t.equal(readFileSync(file, 'utf8').trim(), created, 'the file is left as it was');
});

t.test('a stalled observer never slows the job: it is cut off; a fast one sees every event', async (t) => {
  // 8 ranks × 8 × 200 = 12 800 get round trips, ~30 000 events (~7.5 MB of JSON). Small
  // thresholds, so that the stalled observer is cut off for sure within that: on loopback the
  // kernel alone buffers up to ~4 MB (tcp_wmem) for it before the tap sees it fall behind.
  const count = 200;
  const env = envWithPmibridge({ PMIBRIDGE_TAP_HIGH_WATER: '65536', PMIBRIDGE_TAP_MAX_DROPS: '1000' });
  const s = await startTapped(t, ['serve', '-n', '8', '--tap', 'ws://127.0.0.1:0'], env);
  const fast = observe(t, s.url, s.token);
  await fast.ready;
  let stalledSocket: Socket | undefined;
  const stalled = observe(t, s.url, s.token, (ws) => {
    stalledSocket = (ws as unknown as { _socket: Socket })._socket;
    stalledSocket.pause(); // reads nothing more from the kernel
  });
  await until('the stalled observer to connect', () => stalledSocket !== undefined);

  const t0 = performance.now();
  const ranks = await Promise.all(Array.from({ length: 8 }, (_, r) => rank(s.port, r, ['exchange', '--count', String(count), '--json'])));
  ranks.forEach((r, i) => {
    t.equal(r.code, 0, `rank ${i} finished (${r.stderr})`);
    t.match(JSON.parse(r.stdout) as object, { rank: i, size: 8, keys: 8 * count, ok: true });
  });
  t.equal((await exitOf(s.child, 30_000)).code, 0, 'the job finished');
  t.ok(performance.now() - t0 < 45_000, 'in bounded time');
  t.equal(await fast.closed, 1001, 'the fast observer is closed normally at the end');

  const gets = fast.events.filter((e) => e.kind === 'line' && e.cmd === 'get' && e.leg === 'client->server').length;
  t.ok(gets >= 10_000, `the fast observer saw every get request (${gets})`);
  t.equal(gets, 8 * 8 * count);
  t.equal(fast.events.filter((e) => e.kind === 'gap').length, 0, 'and no gap');
  contiguous(t, fast.events, 'fast observer');
  t.match(fast.events.at(-1), { kind: 'state', event: 'job-finished', 'status.ok': true }, 'up to the end of the job');

  stalledSocket?.resume();
  const code = await orAfter(stalled.closed, 20_000, -1);
  const gaps = stalled.events.filter((e) => e.kind === 'gap');
  t.ok(code === 1006 || gaps.length > 0, `the stalled observer was cut off (close ${code}) or told of a gap`);
  t.equal(code, 1006, 'cut off without a closing handshake (it had fallen too far behind)');
  t.ok(stalled.events.length < fast.events.length, `it got only part of the stream (${stalled.events.length} of ${fast.events.length})`);
  contiguous(t, stalled.events, 'stalled observer, up to where it was cut off');
});

t.test('an observer that falls behind and catches up is told of the gap, exactly', async (t) => {
  const env = envWithPmibridge({ PMIBRIDGE_TAP_MAX_DROPS: '100000000' });
  const s = await startTapped(t, ['serve', '-n', '2', '--tap', 'ws://127.0.0.1:0'], env);
  const fast = observe(t, s.url, s.token);
  await fast.ready;
  let stalledSocket: Socket | undefined;
  const stalled = observe(t, s.url, s.token, (ws) => {
    stalledSocket = (ws as unknown as { _socket: Socket })._socket;
    stalledSocket.pause();
  });
  await until('the stalled observer to connect', () => stalledSocket !== undefined);
  await until('it has hello and snapshot in its socket', () => fast.events.length >= 2);

  // rank 0 puts many keys (about 15 MB of events), then waits in the barrier for rank 1
  const rank0 = rank(s.port, 0, ['exchange', '--count', '20000']);
  await until('rank 0 in the barrier', () => fast.events.some((e) => e.event === 'barrier' && e.rank === 0), 45_000);
  const lastSeq = fast.events.at(-1)?.seq ?? 0;
  const metrics = await httpGet(`${httpUrl(s.url)}/metrics`, { authorization: `Bearer ${s.token}` });
  const dropped = Number(/^pmibridge_tap_observer_drops_total (\d+)$/m.exec(metrics.body)?.[1] ?? 'NaN');
  t.ok(dropped > 0, `events were dropped for the stalled observer (${dropped} of ${lastSeq})`);
  t.match(metrics.body, /^pmibridge_tap_observers 2$/m, 'still connected: it is not past the limit');

  stalledSocket?.resume();
  await until('the stalled observer to read what was buffered for it', () => stalled.events.at(-1)?.seq === lastSeq - dropped);
  t.equal(stalled.events.filter((e) => e.kind === 'gap').length, 0, 'no gap announced before there is something after it');
  // one more event: a refused upgrade
  t.equal(await upgradeStatus(`${s.url}/tap`), 401);
  await until('the stalled observer to get the next event', () => stalled.events.at(-1)?.event === 'refused-peer');
  const [gap, next] = stalled.events.slice(-2);
  t.match(gap, { kind: 'gap', dropped, seq: lastSeq }, 'a gap for exactly the events it missed, numbered as the last of them');
  t.match(next, { kind: 'state', event: 'refused-peer', seq: lastSeq + 1 }, 'then the stream goes on');
  contiguous(t, fast.events, 'the fast observer, unaffected by the other one\'s gap');

  s.child.kill('SIGTERM');
  t.equal((await exitOf(s.child, 15_000)).code, 143, 'serve ends on SIGTERM');
  t.equal((await rank0).code, 1, 'rank 0 is told the job is over');
  t.equal(await stalled.closed, 1001);
});

/** A TCP or Unix proxy that records the bytes in both directions of each connection. */
interface Wire {
  up: string;
  down: string;
}
async function recordingProxy(t: Test, listen: { port: 0 } | { path: string }, target: () => Socket): Promise<{ address: string; wires: Wire[] }> {
  const wires: Wire[] = [];
  const server: Server = createServer((client) => {
    const wire: Wire = { up: '', down: '' };
    wires.push(wire);
    const upstream = target();
    client.on('data', (d: Buffer) => {
      wire.up += d.toString('latin1');
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      wire.down += d.toString('latin1');
      client.write(d);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => ('path' in listen ? server.listen(listen.path, resolve) : server.listen(0, '127.0.0.1', resolve)));
  t.teardown(() => void server.close());
  const a = server.address();
  return { address: typeof a === 'string' ? a : `127.0.0.1:${a?.port ?? 0}`, wires };
}

const linesOf = (bytes: string) => bytes.split('\n').slice(0, -1);

t.test('a full MPICH job through the relay: per session, events in order and equal to the wire bytes', { skip: mpichMissing() ?? false }, async (t) => {
  const n = 4;
  const hello = mpiProgram('hello');
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-relay-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const server = startCli(['serve', '-n', String(n), '--listen', 'unix']);
  t.teardown(() => void server.kill('SIGKILL'));
  const [, upstream] = await waitForLine(server, /^PMI_PORT=unix:\/\/(\S+)$/);
  // the relay → server hop, recorded
  const upProxy = await recordingProxy(t, { path: join(dir, 'up.sock') }, () => connect({ path: upstream as string }));
  // --no-kvs-cache: every request crosses both hops, so each leg can be checked against the other.
  const relay = await startTapped(t, ['relay', '--upstream', `unix://${upProxy.address}`, '--listen', 'tcp://127.0.0.1:0', '--sessions', String(n), '--no-kvs-cache', '--tap', 'ws://127.0.0.1:0']);
  const [relayHost, relayPort] = relay.port.split(':');
  // the MPICH → relay hop, recorded
  const clientProxy = await recordingProxy(t, { port: 0 }, () => connect({ host: relayHost as string, port: Number(relayPort) }));

  const viewer = startCli(['tap', relay.url, '--token', relay.token, '--json']);
  t.teardown(() => void viewer.kill('SIGKILL'));
  const shown = collect(viewer);
  await waitForLine(viewer, /"kind":"snapshot"/);

  const ranks = await Promise.all(
    Array.from({ length: n }, (_, r) => runCommand(hello, [], { env: { ...process.env, PMI_PORT: clientProxy.address, PMI_ID: String(r) }, timeoutMs: 60_000 })),
  );
  ranks.forEach((r, i) => {
    t.equal(r.code, 0, `MPICH rank ${i} exit 0 (${r.stderr})`);
    t.match(r.stdout, new RegExp(`hello rank=${i} size=${n} .* OK`));
  });
  t.equal((await exitOf(relay.child)).code, 0, 'relay: every session finalized');
  t.equal((await exitOf(server)).code, 0, 'server: the job succeeded');
  t.equal((await exitOf(viewer, 15_000)).code, 0, 'pmibridge tap exits 0 when the relay ends');

  const events = shown.stdout.trim().split('\n').map((l) => JSON.parse(l) as Ev);
  t.ok(events.every((e) => e.v === 2), 'schema 2 throughout');
  t.match(events[0], { kind: 'hello', role: 'relay' });
  t.equal(events[1]?.kind, 'snapshot');
  contiguous(t, events, 'the viewer');
  const lines = events.filter((e) => e.kind === 'line');
  t.ok(lines.every((e) => typeof e.cmd === 'string' && e.cmd !== '' && typeof e.line === 'string'), 'every line parses (cmd non-empty)');
  t.ok(lines.every((e) => e.session !== undefined), 'every line names its session, the first initack too');
  t.equal(events.filter((e) => e.event === 'answered-locally' || e.event === 'replayed').length, 0, 'a normal run: nothing answered by the relay itself');
  t.equal(clientProxy.wires.length, n, 'one client connection per rank');
  t.equal(upProxy.wires.length, n, 'one upstream connection per session');

  for (let session = 0; session < n; session++) {
    t.test(`session ${session}`, async (t) => {
      const mine = lines.filter((e) => e.session === session);
      const leg = (name: string) => mine.filter((e) => e.leg === name);
      const text = (evs: readonly Ev[]) => evs.map((e) => e.line ?? '');
      let last = 0;
      t.ok(mine.every((e) => (e.seq > last ? ((last = e.seq), true) : false)), 'seq increasing');
      const conns = new Set(leg('client->relay').map((e) => e.conn));
      t.equal(conns.size, 1, 'one client connection');
      const cr = text(leg('client->relay'));
      const ru = text(leg('relay->upstream'));
      const ur = text(leg('upstream->relay'));
      const rc = text(leg('relay->client'));

      // what MPICH sent, as the relay saw it
      t.equal(cr[0], `cmd=initack pmiid=${session}`, 'MPICH opens with initack');
      t.equal(cr[1], 'cmd=init pmi_version=1 pmi_subversion=1');
      t.equal(cr[2], 'cmd=get_maxes');
      t.equal(cr.at(-1), 'cmd=finalize', 'and ends with finalize');
      t.ok(cr.includes('cmd=barrier_in'), 'with barriers in between');
      const clientWire = clientProxy.wires.find((w) => w.up.startsWith(`cmd=initack pmiid=${session}\n`));
      t.same(cr, linesOf(clientWire?.up ?? ''), 'client->relay events = the bytes MPICH sent');
      t.same(rc, linesOf(clientWire?.down ?? ''), 'relay->client events = the bytes MPICH received');
      const upWire = upProxy.wires.find((w) => w.up.startsWith(`cmd=initack pmiid=${session}\n`));
      t.same(ru, linesOf(upWire?.up ?? ''), 'relay->upstream events = the bytes the server received');
      t.same(ur, linesOf(upWire?.down ?? ''), 'upstream->relay events = the bytes the server sent');

      // the relay forwards requests and replies as they are
      t.same(ru, cr, 'every request went upstream byte for byte');
      t.same(rc.slice(4), ur.slice(4), 'every reply came back byte for byte');
      t.match(rc[0], new RegExp(`^cmd=initack rc=0 rank=${session} size=${n} appnum=0 debug=0$`), 'the handshake answered from the upstream identity');
      t.same(rc.slice(1, 4), [`cmd=set size=${n}`, `cmd=set rank=${session}`, 'cmd=set debug=0']);
      t.same(ur.slice(0, 4), rc.slice(0, 4), 'here (pmibridge upstream) the rewritten handshake is identical, too');

      // latency: every reply (not the set lines after initack) on both hops
      for (const hop of ['relay->client', 'upstream->relay']) {
        const replies = leg(hop);
        const answered = replies.filter((e) => e.cmd !== 'set');
        t.ok(answered.every((e) => typeof e.latencyNs === 'number' && e.latencyNs >= 0), `${hop}: every reply has latencyNs`);
        t.ok(replies.filter((e) => e.cmd === 'set').every((e) => e.latencyNs === undefined), `${hop}: set lines have none`);
        t.equal(answered.length, cr.length, `${hop}: one reply per request`);
      }
      t.ok(mine.filter((e) => e.leg === 'client->relay' || e.leg === 'relay->upstream').every((e) => e.latencyNs === undefined), 'requests have none');
      t.same(
        mine.filter((e) => e.rank === undefined).map((e) => `${e.leg ?? ''} ${e.line ?? ''}`),
        [`client->relay cmd=initack pmiid=${session}`, `relay->upstream cmd=initack pmiid=${session}`, ...ur.slice(0, 4).map((l) => `upstream->relay ${l}`)],
        'every line has its rank, except those before the upstream handshake completed',
      );
      t.ok(mine.every((e) => e.rank === undefined || e.rank === session), 'rank = PMI_ID here');

      // order across hops: each request goes upstream before its reply comes back, and so on
      const order = mine.map((e) => e.leg ?? '');
      const pos = (l: string, i: number) => order.indexOf(l, i);
      let i = 0;
      let ok = true;
      for (let k = 0; k < cr.length && ok; k++) {
        const a = pos('client->relay', i);
        const b = pos('relay->upstream', a);
        const c = pos('upstream->relay', b);
        const d = pos('relay->client', c);
        ok = a >= 0 && a < b && b < c && c < d;
        i = d + 1;
      }
      t.ok(ok, 'client->relay, relay->upstream, upstream->relay, relay->client: in that order for each request');
    });
  }

  const snapshotAtEnd = events.filter((e) => e.kind === 'state' && e.event === 'finalized').map((e) => e.session);
  t.same([...snapshotAtEnd].sort(), [0, 1, 2, 3], 'every session finalized');
});

t.test('pmibridge tap --json: hello, snapshot, then events; --rank and --cmd filter them', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '2', '--tap', 'ws://127.0.0.1:0']);
  const view = (args: readonly string[]) => {
    const child = startCli(['tap', s.url, '--token', s.token, '--json', ...args]);
    t.teardown(() => void child.kill('SIGKILL'));
    const out = collect(child);
    return { child, out, ready: waitForLine(child, /"kind":"snapshot"/) };
  };
  const all = view([]);
  const rank1 = view(['--rank', '1']);
  const barriers = view(['--cmd', 'barrier_in']);
  await Promise.all([all.ready, rank1.ready, barriers.ready]);

  const ranks = await Promise.all([0, 1].map((r) => rank(s.port, r, ['exchange', '--count', '2'])));
  ranks.forEach((r, i) => t.equal(r.code, 0, `rank ${i} finished`));
  t.equal((await exitOf(s.child)).code, 0);
  const parse = async (v: ReturnType<typeof view>, what: string): Promise<Ev[]> => {
    t.equal((await exitOf(v.child, 15_000)).code, 0, `${what}: exits 0 when the job ends`);
    const text = v.out.stdout.trim().split('\n');
    const evs: Ev[] = [];
    for (const l of text) {
      try {
        evs.push(JSON.parse(l) as Ev);
      } catch {
        t.fail(`${what}: not JSON: ${l}`);
      }
    }
    t.ok(evs.every((e) => e.v === 2), `${what}: every line parses as JSON with v: 2`);
    t.equal(evs[0]?.kind, 'hello', `${what}: hello first`);
    t.equal(evs[1]?.kind, 'snapshot', `${what}: snapshot second`);
    t.ok(evs.slice(2).every(live), `${what}: then lines and state events`);
    return evs;
  };
  const full = await parse(all, 'unfiltered');
  const one = await parse(rank1, '--rank 1');
  const bars = await parse(barriers, '--cmd barrier_in');

  contiguous(t, full, 'unfiltered');
  t.ok(one.length > 2);
  t.ok(one.slice(2).every((e) => e.rank === 1), '--rank 1: only rank 1');
  t.same(
    one.slice(2).map((e) => e.seq),
    full.filter((e) => live(e) && e.rank === 1).map((e) => e.seq),
    '--rank 1: all of rank 1',
  );
  t.ok(one.some((e) => e.line === 'cmd=initack pmiid=1'), '--rank 1: its handshake request too (the line names the rank it binds)');
  t.ok(one.some((e) => e.line === 'cmd=finalize'));

  const barLines = bars.filter((e) => e.kind === 'line');
  t.ok(barLines.every((e) => e.cmd === 'barrier_in'), '--cmd barrier_in: only barrier_in lines');
  t.equal(barLines.length, 4, 'two barriers per rank');
  t.same(
    bars.filter((e) => e.kind === 'state').map((e) => e.seq),
    full.filter((e) => e.kind === 'state').map((e) => e.seq),
    'plus every state event',
  );
});

t.test('pmibridge tap (text): a readable line per event', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0']);
  const viewer = startCli(['tap', s.url, '--token', s.token]);
  t.teardown(() => void viewer.kill('SIGKILL'));
  const out = collect(viewer);
  await waitForLine(viewer, /^watching job/);
  t.equal((await rank(s.port, 0, ['barrier'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0);
  t.equal((await exitOf(viewer, 15_000)).code, 0);
  t.match(out.stdout, /^watching job kvs_\d+_0 \(server\)$/m);
  t.match(out.stdout, /^\d\d:\d\d:\d\d\.\d{3} rank 0 +client->server +cmd=barrier_in$/m, 'requests');
  t.match(out.stdout, /^\d\d:\d\d:\d\d\.\d{3} rank 0 +server->client +cmd=barrier_out rc=0 \(\d+ µs\)$/m, 'replies with their latency');
  t.match(out.stdout, /\* job-finished status\.ok=true/, 'state events');
  t.notOk(out.stdout.includes('\x1b['), 'no colour when not on a terminal');
});

t.test('--tap-redact values: no KVS value reaches an observer', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '2', '--tap', 'ws://127.0.0.1:0', '--tap-redact', 'values']);
  const watcher = observe(t, s.url, s.token);
  const raw: string[] = [];
  watcher.ws.on('message', (d: Buffer) => raw.push(d.toString()));
  await watcher.ready;
  t.match(watcher.events[0], { kind: 'hello', redact: true }, 'observers are told');
  const secret = `TopSecret-${process.pid}-${Date.now()}`;
  const [put, get] = await Promise.all([rank(s.port, 0, ['put', `card=${secret}`]), rank(s.port, 1, ['get', 'card'])]);
  t.equal(put.code, 0);
  t.equal(get.code, 0);
  t.equal(get.stdout.trim(), `card=${secret}`, 'the job itself sees the value');
  t.equal((await exitOf(s.child)).code, 0);
  await watcher.closed;

  t.notMatch(raw.join('\n'), /TopSecret/, 'the value appears in no event');
  const putLine = watcher.events.find((e) => e.kind === 'line' && e.cmd === 'put');
  const result = watcher.events.find((e) => e.kind === 'line' && e.cmd === 'get_result');
  const hidden = `<redacted:${secret.length}>`;
  t.match(putLine, { line: `cmd=put kvsname=${putLine?.attrs?.['kvsname'] ?? ''} key=card value=${hidden}`, attrs: { key: 'card', value: hidden } }, 'put: the key stays, the value is its length');
  t.match(result, { line: `cmd=get_result rc=0 value=${hidden}`, attrs: { rc: '0', value: hidden } }, 'get_result too');
  t.ok(watcher.events.filter((e) => e.kind === 'line').every((e) => !/(^| )value=(?!<redacted:\d+>$)/.test(e.line ?? '')), 'every value= is redacted');
});
