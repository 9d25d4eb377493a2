// The tap's HTTP and WebSocket front door under hostile requests, end to end with the built CLI:
// malformed requests get a 400 and nothing else happens (serve, relay and run go on); a failure
// while answering is caught where requests enter; Host and Origin guard against DNS rebinding and
// cross-origin pages; connections are bounded and slow requests closed.
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { hostname, networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithPmibridge, exitOf, runCli, startCli, until, waitForLine } from './fixtures/cli.js';
import { getRequest, rawHttp, startTapped, upgradeRequest, watch, within, type Tapped } from './fixtures/tap.js';
import { ObserverBus } from '../src/host/bus.js';
import { TapServer } from '../src/tap/tap-server.js';

/** A rank as pmibridge's own client. */
const rank = (port: string, id: number, args: readonly string[]) => runCli(['pmi', ...args], { env: envWithPmibridge({ PMI_PORT: port, PMI_ID: String(id) }), timeoutMs: 60_000 });

/** Request targets and upgrades that `new URL()` (or anything else) might choke on. */
const MALFORMED: ReadonlyArray<readonly [string, string]> = [
  ['GET //[', getRequest('//[', ['Host: 127.0.0.1'])],
  ['GET http://a:99999/', getRequest('http://a:99999/', ['Host: 127.0.0.1'])],
  ['GET http://[', getRequest('http://[', ['Host: 127.0.0.1'])],
  ['upgrade to http://a:99999/', upgradeRequest('http://a:99999/', ['Host: 127.0.0.1'])],
  ['upgrade to //[', upgradeRequest('//[', ['Host: 127.0.0.1'])],
  ['upgrade to /tap?token=%', upgradeRequest('/tap?token=%', ['Host: 127.0.0.1'])],
];

/** Every malformed request is answered 400 and closed; the tap still serves the next one. */
async function malformedRequests(t: Tapped, test: Test): Promise<void> {
  for (const [what, req] of MALFORMED) {
    const reply = await rawHttp(t.tapPort, req);
    test.equal(reply.status, 400, `${what}: 400 (${reply.head})`);
    test.equal(t.child.exitCode, null, `${what}: the process is still running`);
  }
  const ok = await rawHttp(t.tapPort, getRequest('/metrics', ['Host: 127.0.0.1', `Authorization: Bearer ${t.token}`]));
  test.equal(ok.status, 200, 'then /metrics is served as usual');
}

t.test('a malformed request to the tap gets a 400; serve, relay and run go on', async (t) => {
  t.test('serve', async (t) => {
    const s = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0']);
    await malformedRequests(s, t);
    t.equal((await rank(s.port, 0, ['info'])).code, 0, 'a rank completes');
    t.equal((await exitOf(s.child)).code, 0, 'the job ends normally');
  });

  t.test('relay', async (t) => {
    const server = startCli(['serve', '-n', '1', '--listen', 'unix']);
    t.teardown(() => void (server.exitCode === null && server.kill('SIGKILL')));
    const [, upstream] = await waitForLine(server, /^PMI_PORT=(unix:\/\/\S+)$/);
    const r = await startTapped(t, ['relay', '--upstream', upstream ?? '', '--listen', 'tcp://127.0.0.1:0', '--sessions', '1', '--tap', 'ws://127.0.0.1:0']);
    await malformedRequests(r, t);
    t.equal((await rank(r.port, 0, ['info'])).code, 0, 'a rank completes through the relay');
    t.equal((await exitOf(r.child)).code, 0, 'the relay ends normally');
    t.equal((await exitOf(server)).code, 0, 'and the server');
  });

  t.test('run', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-run-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const go = join(dir, 'go');
    // the rank waits for the test to finish its requests, then does its PMI
    const script = `while [ ! -e ${go} ]; do sleep 0.05; done; exec pmibridge pmi info`;
    const r = await startTapped(t, ['run', '-n', '1', '--tap', 'ws://127.0.0.1:0', '--', 'sh', '-c', script], { waitPmiPort: false });
    await malformedRequests(r, t);
    writeFileSync(go, '');
    t.equal((await exitOf(r.child)).code, 0, 'the job ends normally (its rank was not left behind)');
  });
});

t.test('Host and Origin: a DNS-rebinding page or another site cannot use the tap', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0', '--metrics-public']);
  const p = s.tapPort;
  const metrics = (headers: readonly string[]) => rawHttp(p, getRequest('/metrics', headers)).then((r) => r.status);
  const page = (headers: readonly string[]) => rawHttp(p, getRequest(`/?token=${s.token}`, headers)).then((r) => r.status);
  const upgrade = (headers: readonly string[]) => rawHttp(p, upgradeRequest('/tap', [`Authorization: Bearer ${s.token}`, ...headers])).then((r) => r.status);

  for (const host of [`127.0.0.1:${p}`, `localhost:${p}`, `LocalHost:${p}`, `[::1]:${p}`, '127.0.0.1', 'localhost:9000']) {
    t.equal(await metrics([`Host: ${host}`]), 200, `public /metrics with Host ${host}: 200`);
  }
  for (const host of [`evil.example:${p}`, 'evil.example', `127.0.0.1.nip.io:${p}`, `localhost.evil.example:${p}`, `10.1.2.3:${p}`]) {
    t.equal(await metrics([`Host: ${host}`]), 421, `public /metrics with Host ${host}: 421 (DNS rebinding)`);
    t.equal(await page([`Host: ${host}`]), 421, `the monitor page with the token and Host ${host}: 421`);
    t.equal(await upgrade([`Host: ${host}`]), 421, `a WebSocket with the token and Host ${host}: 421`);
  }
  t.equal(await metrics(['Host: evil.example:80@127.0.0.1']), 400, 'a Host with userinfo: 400');
  t.equal(await metrics([]), 400, 'no Host at all (HTTP/1.1): 400');
  t.equal((await rawHttp(p, getRequest(`http://evil.example:${p}/metrics`, [`Host: 127.0.0.1:${p}`]))).status, 421, 'an absolute-form target naming another host: 421');
  t.equal((await rawHttp(p, getRequest(`http://127.0.0.1:${p}/metrics`, [`Host: 127.0.0.1:${p}`]))).status, 200, 'an absolute-form target naming this tap: served');

  const here = `Host: 127.0.0.1:${p}`;
  t.equal(await upgrade([here]), 101, 'a WebSocket without Origin (a program): 101');
  t.equal(await upgrade([here, `Origin: http://127.0.0.1:${p}`]), 101, 'a WebSocket from the monitor page itself (same origin): 101');
  t.equal(await upgrade([`Host: localhost:9000`, 'Origin: http://localhost:9000']), 101, 'same origin through a tunnel on another port: 101');
  for (const origin of ['http://evil.example', `http://evil.example:${p}`, `http://127.0.0.1:${p + 1}`, `http://localhost:${p}`, 'null', `http://127.0.0.1:${p}/x`, 'file://']) {
    t.equal(await upgrade([here, `Origin: ${origin}`]), 403, `a WebSocket with the token from Origin ${origin}: 403`);
    t.equal(await metrics([here, `Origin: ${origin}`]), 403, `public /metrics from Origin ${origin}: 403`);
  }
  t.equal(await metrics([here, `Origin: http://127.0.0.1:${p}`]), 200, 'public /metrics from its own origin: 200');

  const body = (await rawHttp(p, getRequest('/metrics', [here]))).text;
  t.match(body, /^pmibridge_refused_peers_total\{where="listener"\} \d+$/m, 'refusals are counted');
  t.equal((await rank(s.port, 0, ['info'])).code, 0, 'the job goes on');
  t.equal((await exitOf(s.child)).code, 0);
});

t.test('Host and Origin on a Unix-socket tap: any Host, but still same-origin only', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-host-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'tap.sock');
  const s = await startTapped(t, ['serve', '-n', '1', '--tap', sock]);
  const auth = `Authorization: Bearer ${s.token}`;
  t.equal((await rawHttp(sock, getRequest('/metrics', ['Host: whatever.example', auth]))).status, 200, 'any Host on a Unix socket');
  t.equal((await rawHttp(sock, upgradeRequest('/tap', ['Host: whatever.example', auth, 'Origin: http://whatever.example']))).status, 101, 'same origin: 101');
  t.equal((await rawHttp(sock, upgradeRequest('/tap', ['Host: whatever.example', auth, 'Origin: http://evil.example']))).status, 403, 'another origin: 403');
  t.equal((await rank(s.port, 0, ['info'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0);
});

t.test('a failure while answering a request is caught where requests enter: 500, logged, the tap goes on', async (t) => {
  const bus = new ObserverBus();
  const errors: string[] = [];
  bus.subscribe((ev) => void (ev.type === 'transport-error' && errors.push(ev.message)));
  const tap = new TapServer({ listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, token: 'a-token-of-sixteen-chars', job: 'job', role: 'server', bus });
  await tap.start();
  t.teardown(() => tap.close());
  const port = Number(/:(\d+)$/.exec(tap.url)?.[1]);
  const auth = ['Host: 127.0.0.1', 'Authorization: Bearer a-token-of-sixteen-chars'];
  const internals = tap as unknown as { wss: { handleUpgrade: (...a: unknown[]) => void }; recorder: { hello: () => unknown } };

  // a throw before the answer began (as `new URL()` threw on odd targets)
  const metrics = tap.metrics.registry.metrics.bind(tap.metrics.registry);
  tap.metrics.registry.metrics = () => Promise.reject(new Error('boom in /metrics'));
  t.equal((await rawHttp(port, getRequest('/metrics', auth))).status, 500, 'GET /metrics failing inside: 500');
  t.match(errors.at(-1), /^tap: internal error while answering GET "\/metrics"; answered 500 and went on: Error: boom in \/metrics/, 'logged with what failed');
  tap.metrics.registry.metrics = metrics;

  // a throw in the upgrade, before the socket is a WebSocket
  const handleUpgrade = internals.wss.handleUpgrade;
  internals.wss.handleUpgrade = () => {
    throw new Error('boom in the upgrade');
  };
  t.equal((await rawHttp(port, upgradeRequest('/tap', auth))).status, 500, 'an upgrade failing inside: 500');
  t.match(errors.at(-1), /boom in the upgrade/);
  internals.wss.handleUpgrade = handleUpgrade;

  // a throw once it is a WebSocket: that observer is closed, nobody else notices
  const hello = internals.recorder.hello.bind(internals.recorder);
  internals.recorder.hello = () => {
    throw new Error('boom after the upgrade');
  };
  const cut = await rawHttp(port, upgradeRequest('/tap', auth));
  t.equal(cut.status, 101, 'the upgrade itself succeeded');
  t.match(errors.at(-1), /boom after the upgrade/, 'the failure after it is logged');
  internals.recorder.hello = hello;

  // a throw while sending a loop turn's events to a (batch) observer, outside any request
  const w = watch(t, tap.url, 'a-token-of-sixteen-chars');
  await within(w.ready, 'hello and snapshot');
  const observers = (tap as unknown as { observers: Set<{ ws: { send: (m: string) => void } }> }).observers;
  for (const o of observers) {
    o.ws.send = () => {
      throw new Error('boom while sending');
    };
  }
  const batch = new WebSocket(`${tap.url}/tap?batch=1`, { headers: { authorization: 'Bearer a-token-of-sixteen-chars' } });
  t.teardown(() => batch.terminate());
  const batchClosed = new Promise<number>((resolve) => batch.on('close', resolve));
  batch.on('error', () => undefined);
  await within(new Promise((resolve) => batch.once('message', resolve)), 'the batch observer\'s hello');
  for (const o of observers) {
    if (!(Object.hasOwn(o.ws, 'send'))) {
      o.ws.send = () => {
        throw new Error('boom while sending a batch');
      };
    }
  }
  bus.emit({ type: 'listening', pmiPort: 'x' });
  t.equal(await within(w.closed, 'the observer to be cut off'), 1006, 'an observer that cannot be written to is cut off');
  t.equal(await within(batchClosed, 'the batch observer to be cut off'), 1006, 'a batch observer too');
  t.ok(errors.some((e) => /boom while sending a batch/.test(e)), 'logged');

  t.equal((await rawHttp(port, getRequest('/metrics', auth))).status, 200, 'then /metrics is served as usual');
  t.equal((await rawHttp(port, upgradeRequest('/tap', auth))).status, 101, 'and observers are admitted');
});

/** A raw TCP connection to the tap; resolves when the server closes it (with what it sent). */
function holdOpen(port: number, send: string): { socket: Socket; closed: Promise<string> } {
  const socket = connect(port, '127.0.0.1');
  let got = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (got += d));
  socket.on('error', () => undefined);
  socket.on('connect', () => void socket.write(send, 'latin1'));
  return { socket, closed: new Promise((resolve) => socket.on('close', () => resolve(got))) };
}

t.test('the tap holds a bounded number of connections, and none that never finishes its request', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0', '--metrics-public'], { env: envWithPmibridge({ PMIBRIDGE_TAP_MAX_CONNECTIONS: '8' }) });
  const idle = Array.from({ length: 8 }, () => holdOpen(s.tapPort, 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n')); // headers never finished
  t.teardown(() => idle.forEach((c) => c.socket.destroy()));
  await until('the 8 connections to be open', () => idle.every((c) => c.socket.readyState === 'open'));
  await new Promise((resolve) => setTimeout(resolve, 200)); // let the tap accept them
  const ninth = await rawHttp(s.tapPort, getRequest('/metrics', ['Host: 127.0.0.1']));
  t.equal(ninth.status, 0, 'past the limit a connection is closed at once, unanswered');
  await until('the refusal to be logged', () => /tap: closed a new connection: 8 connections are open, the most the tap takes/.test(s.out.stderr), 60_000);
  const t0 = performance.now();
  const answers = await Promise.all(idle.map((c) => c.closed));
  t.ok(performance.now() - t0 < 90_000, 'connections that never finish their request headers are closed (does not hang)');
  t.ok(answers.every((a) => a === '' || /^HTTP\/1\.1 408 /.test(a)), 'unanswered, or told 408');
  t.equal((await rawHttp(s.tapPort, getRequest('/metrics', ['Host: 127.0.0.1']))).status, 200, 'then the tap serves again');
  t.equal((await rank(s.port, 0, ['info'])).code, 0, 'and the job ran');
  t.equal((await exitOf(s.child)).code, 0);
});

t.test('Host on a tap bound to every address: the machine\'s own names and addresses', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '1', '--tap', 'ws://0.0.0.0:0', '--metrics-public']);
  const status = async (host: string) => (await rawHttp(s.tapPort, getRequest('/metrics', [`Host: ${host}`]))).status;
  const addresses = Object.values(networkInterfaces())
    .flat()
    .filter((a) => a !== undefined && !a.address.includes('%'))
    .map((a) => (a?.family === 'IPv6' ? `[${a.address}]` : (a?.address ?? '')));
  for (const host of ['0.0.0.0', hostname(), ...addresses]) t.equal(await status(`${host}:${s.tapPort}`), 200, `Host ${host}: 200`);
  t.equal(await status(`evil.example:${s.tapPort}`), 421, 'another name: 421');
  t.equal(await status(`192.0.2.254:${s.tapPort}`), 421, 'an address not of this machine: 421');
  const viewer = await runCli(['tap', `ws://127.0.0.2:${s.tapPort}`, '--token', s.token], { timeoutMs: 60_000 });
  t.equal(viewer.code, 1, 'pmibridge tap by an address the tap does not answer to: exit 1');
  t.match(viewer.stderr, 'refused: HTTP 421 (the tap answers only to its own addresses: use the one it printed, 127.0.0.1 or localhost)', 'saying what to do');
  t.equal((await rank(s.port, 0, ['info'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0);
});
