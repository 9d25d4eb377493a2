// The tap under hostile input, end to end with the built CLI: malformed HTTP and WebSocket
// requests get a 400 and nothing else happens (serve, relay and run go on); clients cannot grow
// /metrics with label values of their choosing; --tap-redact values hides every value in every
// event; the token file must be ours; Host and Origin guard against DNS rebinding.
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { hostname, networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithPmibridge, exitOf, runCli, runCommand, startCli, until, waitForLine } from './fixtures/cli.js';
import { OTHER_USER, otherUid, otherUserMissing } from './fixtures/other-user.js';
import { getRequest, rawHttp, startTapped, upgradeRequest, watch, within, type Tapped } from './fixtures/tap.js';
import { ObserverBus, type BusEvent } from '../src/host/bus.js';
import { TapServer } from '../src/tap/tap-server.js';
import { MAX_PENDING_REQUESTS, redactText, redactValues, TapRecorder, type TapEvent } from '../src/tap/event.js';
import { MAX_COUNTED_KEYS, TapState } from '../src/tap/state.js';

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

/** Send `lines` on one new PMI connection; resolves with the replies once as many came back. */
function pmiLines(pmiPort: string, lines: readonly string[]): Promise<string[]> {
  const [host, port] = pmiPort.split(':');
  return new Promise((resolve, reject) => {
    const s = connect(Number(port), host ?? '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${buf.split('\n').length - 1} of ${lines.length} replies within 30 s`));
    }, 30_000);
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      const replies = buf.split('\n').slice(0, -1);
      if (replies.length >= lines.length) {
        clearTimeout(timer);
        s.destroy();
        resolve(replies);
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.write(lines.map((l) => `${l}\n`).join(''), 'latin1');
  });
}

t.test('/metrics stays small whatever commands clients send: unknown ones are counted as cmd="other"', async (t) => {
  const s = await startTapped(t, ['serve', '-n', '2', '--tap', 'ws://127.0.0.1:0', '--metrics-public']);
  const scrape = async () => (await rawHttp(s.tapPort, getRequest('/metrics', ['Host: 127.0.0.1']))).text;
  const before = (await scrape()).length;
  const conns = 10;
  const per = 1000;
  let answered = 0;
  for (let c = 0; c < conns; c++) {
    // distinct garbage command names and not-PMI lines, from unidentified connections; every 5th
    // line a well-formed command (refused: not identified), which keeps the connection open
    const lines = Array.from({ length: per }, (_, i) => (i % 5 === 4 ? 'cmd=get_maxes' : i % 5 === 3 ? `garbage ${c}.${i}` : `cmd=junk_${c}_${i} a=${i}`));
    answered += (await pmiLines(s.port, lines)).length;
  }
  t.equal(answered, conns * per, 'every line was answered');
  const body = await scrape();
  t.ok(body.length < before + 16 * 1024, `/metrics grew by ${body.length - before} bytes for ${conns * per} distinct commands (less than 16 KiB)`);
  t.notMatch(body, /junk|garbage/, 'no command a client made up is a label value');
  const cmds = new Set([...body.matchAll(/^pmibridge_requests_total\{cmd="([^"]*)"/gm)].map((m) => m[1]));
  t.same([...cmds].sort(), ['get_maxes', 'other'], 'the unknown commands share one label value');
  const count = (cmd: string) => [...body.matchAll(new RegExp(`^pmibridge_requests_total\\{cmd="${cmd}",leg="server->client",result="error"\\} (\\d+)$`, 'gm'))].map((m) => Number(m[1]));
  t.same(count('other'), [(conns * per * 4) / 5], 'and are all counted there');
  t.same(count('get_maxes'), [(conns * per) / 5], 'a catalogue command keeps its own');
  t.equal((await rank(s.port, 0, ['info'])).code, 0, 'the job goes on');
  const after = await scrape();
  t.match(after, /^pmibridge_requests_total\{cmd="init",leg="server->client",result="ok"\} 1$/m, 'catalogue commands keep their own label');
  t.equal((await rank(s.port, 1, ['info'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0);
});

t.test('requests never answered (their connection gone) do not pile up in the tap', async (t) => {
  const rec = new TapRecorder('job', 'server', false);
  const pending = () => (rec as unknown as { pending: Map<string, unknown> }).pending.size;
  rec.record({ type: 'line', leg: 'client->server', line: 'cmd=barrier_in', conn: 1, rank: 0 });
  rec.record({ type: 'closed', conn: 1, reason: 'eof', rank: 0 });
  t.equal(pending(), 0, 'a closed connection leaves no pending request');
  // relay clients are not announced when they close: the table is bounded instead
  for (let conn = 0; conn < 3 * MAX_PENDING_REQUESTS; conn++) rec.record({ type: 'line', leg: 'client->relay', line: 'cmd=put kvsname=k key=a value=1', conn, session: 0 });
  t.equal(pending(), MAX_PENDING_REQUESTS, `at most ${MAX_PENDING_REQUESTS} requests waiting for their reply are remembered`);
  const last = 3 * MAX_PENDING_REQUESTS - 1;
  const reply = rec.record({ type: 'line', leg: 'relay->client', line: 'cmd=put_result rc=0', conn: last, session: 0 });
  t.type(reply?.kind === 'line' ? reply.latencyNs : undefined, 'number', 'the newest ones still get their latency');
});

/** A PMI client over TCP (host:port) or a Unix socket (unix://path), one request at a time. */
async function pmiClient(t: Test, pmiPort: string): Promise<{ ask(line: string, replies?: number): Promise<string[]>; send(line: string): void; socket: Socket }> {
  const [host, port] = pmiPort.split(':');
  const socket = pmiPort.startsWith('unix://') ? connect(pmiPort.slice('unix://'.length)) : connect(Number(port), host ?? '127.0.0.1');
  t.teardown(() => void socket.destroy());
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.setEncoding('latin1');
  let buf = '';
  let waiter: (() => void) | undefined;
  socket.on('data', (d: string) => {
    buf += d;
    waiter?.();
  });
  const take = (n: number) =>
    new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${n} reply lines within 15 s; got ${JSON.stringify(buf)}`)), 15_000);
      const check = () => {
        const lines = buf.split('\n');
        if (lines.length - 1 < n) return;
        clearTimeout(timer);
        waiter = undefined;
        buf = lines.slice(n).join('\n');
        resolve(lines.slice(0, n));
      };
      waiter = check;
      check();
    });
  const send = (line: string) => void socket.write(`${line}\n`, 'latin1');
  return {
    socket,
    send,
    ask: (line: string, replies = 1) => {
      send(line);
      return take(replies);
    },
  };
}

/** A Unix-socket proxy to `target` whose replies (target → client) can be held back. */
async function gatedProxy(t: Test, path: string, target: string): Promise<{ hold(): void; release(): void }> {
  let open = true;
  const held: Array<() => void> = [];
  const server = createServer((client) => {
    const up = connect(target);
    client.pipe(up);
    up.on('data', (d: Buffer) => (open ? client.write(d) : held.push(() => client.write(d))));
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
    client.on('close', () => up.destroy());
    up.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.teardown(() => void server.close());
  return {
    hold: () => void (open = false),
    release: () => {
      open = true;
      for (const f of held.splice(0)) f();
    },
  };
}

t.test('--tap-redact values: no value in any event, free-text messages and CR-terminated values included', async (t) => {
  const server = startCli(['serve', '-n', '1', '--listen', 'unix']);
  t.teardown(() => void (server.exitCode === null && server.kill('SIGKILL')));
  const [, upstream] = await waitForLine(server, /^PMI_PORT=unix:\/\/(\S+)$/);
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-redact-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const proxy = await gatedProxy(t, join(dir, 'up.sock'), upstream ?? '');
  const r = await startTapped(t, ['relay', '--upstream', `unix://${join(dir, 'up.sock')}`, '--listen', 'tcp://127.0.0.1:0', '--sessions', '1', '--hold', '1m', '--tap', 'ws://127.0.0.1:0', '--tap-redact', 'values']);
  const w = watch(t, r.url, r.token);
  await within(w.ready, 'hello and snapshot');
  const secret = `TopSecret${process.pid}`;

  // the first client puts (a value ending in CR, which the server refuses) and leaves before the
  // reply came: the relay keeps it for the client's re-send
  const a = await pmiClient(t, r.port);
  t.equal((await a.ask('cmd=initack pmiid=0', 4))[0], 'cmd=initack rc=0 rank=0 size=1 appnum=0 debug=0');
  t.match(await a.ask('cmd=init pmi_version=1 pmi_subversion=1'), ['cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1']);
  proxy.hold();
  a.send(`cmd=put key=a value=${secret}-A\r`);
  await until('the put to go upstream', () => w.events.some((e) => e.leg === 'relay->upstream' && e.cmd === 'put'));
  a.socket.destroy();
  await until('the session to be held', () => w.events.some((e) => e.event === 'held'));
  proxy.release();
  await until('the reply to come (and be kept)', () => w.events.some((e) => e.leg === 'upstream->relay' && e.cmd === 'put_result'));
  // a new client takes the session over and writes something else: the kept reply is dropped,
  // which the relay says quoting both requests
  const b = await pmiClient(t, r.port);
  t.equal((await b.ask('cmd=initack pmiid=0', 4))[0], 'cmd=initack rc=0 rank=0 size=1 appnum=0 debug=0');
  t.same(await b.ask(`cmd=put key=b value=${secret}-B`), ['cmd=put_result rc=0']);
  t.same(await b.ask('cmd=barrier_in'), ['cmd=barrier_out rc=0']);
  t.same(await b.ask('cmd=get key=b'), [`cmd=get_result rc=0 value=${secret}-B`], 'the job itself sees the value');
  t.same(await b.ask('cmd=finalize'), ['cmd=finalize_ack rc=0']);
  t.equal((await exitOf(r.child)).code, 0, 'the relay ends normally');
  t.equal((await exitOf(server)).code, 0);
  await within(w.closed, 'the observer to be closed at the end');

  const dropped = w.events.find((e) => e.event === 'protocol-error' && /dropped the reply kept for/.test(String(e['message'])));
  t.ok(dropped, 'the relay reported the dropped reply');
  t.match(String(dropped?.['message']), /^dropped the reply kept for "cmd=put key=a value=<redacted:\d+>": the reconnected client asked "cmd=put key=b value=<redacted:\d+>" instead$/, 'both quoted requests redacted, the rest of the message kept');
  t.match(w.events.find((e) => e.kind === 'line' && e.leg === 'client->relay' && e.cmd === 'put'), { line: `cmd=put key=a value=<redacted:${secret.length + 3}>` }, 'a value ending in CR is redacted in a line (CR counted)');
  t.notMatch(w.raw.join('\n'), new RegExp(secret), 'the secret appears in no event');
});

t.test('redaction of free text and of every state event field', async (t) => {
  t.equal(redactValues('cmd=put key=k value=abc\r'), 'cmd=put key=k value=<redacted:4>', 'CR is part of the value');
  t.equal(redactValues('cmd=put key=k value=a\rb found=TRUE'), 'cmd=put key=k value=<redacted:3> found=TRUE');
  t.equal(redactValues('preput_val_0=secret'), 'preput_val_0=<redacted:6>', "a spawn block's preput value");
  t.equal(redactText('dropped the reply kept for "cmd=put key=a value=s1\\r": the reconnected client asked "cmd=put key=b value=s2" instead'), 'dropped the reply kept for "cmd=put key=a value=<redacted:3>": the reconnected client asked "cmd=put key=b value=<redacted:2>" instead', 'quoted lines, the message around them kept');
  t.equal(redactText('"cmd=put kvsname=kvs_1_0 key=a_rather_long_key_name value=secr…"'), '"cmd=put kvsname=kvs_1_0 key=a_rather_long_key_name value=<redacted:5>"', 'a truncated preview');
  t.equal(redactText('sent "cmd=put key=\\"q\\" value=a\\"b" first'), 'sent "cmd=put key=\\"q\\" value=<redacted:3>" first', 'escaped quotes inside a quoted line');
  t.equal(redactText('a raw cmd=put key=a value=secret "and more"'), 'a raw cmd=put key=a value=<redacted:17>', 'an unquoted value hides everything after it');
  t.equal(redactText('unterminated "cmd=put value=secret'), 'unterminated "cmd=put value=<redacted:6>');
  t.equal(redactText('"bad \\x escape value=secret"'), '"bad \\x escape value=<redacted:6>"', 'a quoted text that is not JSON');
  t.equal(redactText('nothing to hide: "cmd=get key=a"'), 'nothing to hide: "cmd=get key=a"');

  const rec = new TapRecorder('job', 'relay', true);
  const events: BusEvent[] = [
    { type: 'relay', event: { type: 'reply-kept', session: 0, request: '"cmd=put key=a value=secret"', unread: 21 } },
    { type: 'relay', event: { type: 'protocol-error', session: 0, message: 'unsolicited upstream line "cmd=get_result rc=0 value=secret"' } },
    { type: 'engine', event: { type: 'protocol-error', conn: 1, code: 'E_NOT_PMI1', message: 'not a PMI-1 line (must start with cmd=): "junk value=secret"' } },
    { type: 'closed', conn: 1, reason: '8 bad lines in a row (last: not a PMI-1 line: "x value=secret")' },
    { type: 'peer-refused', peer: 'p', reason: 'sent "cmd=put key=a value=secret" before initack' },
  ];
  for (const ev of events) {
    const out = JSON.stringify(rec.record(ev));
    t.notMatch(out, /secret/, `${ev.type} ${'event' in ev ? ev.event.type : ''}: hidden (${out})`);
    t.match(out, /value=<redacted:6>/);
  }
  const plain = new TapRecorder('job', 'relay', false);
  t.match(JSON.stringify(plain.record(events[0] as BusEvent)), /value=secret/, 'without --tap-redact: as it was');
});

t.test('--tap-token-file: a file of another user, or not a regular file, is refused with what to do', { skip: otherUserMissing() ?? false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-owner-'));
  chmodSync(dir, 0o777); // the other user may create files here (like /tmp)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'tap-token');
  const made = await runCommand('runuser', ['-u', OTHER_USER, '--', 'sh', '-c', `umask 077 && echo planted-token-known-to-them > ${file}`], { timeoutMs: 15_000 });
  t.equal(made.code, 0, `the other user made ${file} (${made.stderr})`);
  t.equal(statSync(file).uid, otherUid());
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode 0600: only the mode would pass');
  for (const command of [['serve', '-n', '1'], ['relay', '--upstream', 'unix:///nonexistent/pmi.sock']]) {
    const r = await runCli([...command, '--tap', 'ws://127.0.0.1:0', '--tap-token-file', file], { timeoutMs: 15_000 });
    t.equal(r.code, 1, `${command[0]} refuses to start`);
    t.match(r.stderr, `pmibridge ${command[0]}: ${file} belongs to uid ${otherUid()}, not to uid ${process.getuid?.()} (this process): its owner knows the token and can change it; use a token file of your own (remove this one and a fresh one is created)`, 'saying why and what to do');
    t.equal(r.stdout, '', 'no PMI_PORT advertised');
  }
  rmSync(file);
  const fifo = await runCommand('mkfifo', ['-m', '600', file], { timeoutMs: 15_000 });
  t.equal(fifo.code, 0);
  const r = await runCli(['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0', '--tap-token-file', file], { timeoutMs: 15_000 });
  t.equal(r.code, 1, 'a FIFO: refused, without waiting for a writer');
  t.match(r.stderr, `${file} is not a regular file`);
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
  await until('the refusal to be logged', () => /tap: closed a new connection: 8 connections are open, the most the tap takes/.test(s.out.stderr));
  const t0 = performance.now();
  const answers = await Promise.all(idle.map((c) => c.closed));
  t.ok(performance.now() - t0 < 40_000, 'connections that never finish their request headers are closed (does not hang)');
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
  const viewer = await runCli(['tap', `ws://127.0.0.2:${s.tapPort}`, '--token', s.token], { timeoutMs: 15_000 });
  t.equal(viewer.code, 1, 'pmibridge tap by an address the tap does not answer to: exit 1');
  t.match(viewer.stderr, 'refused: HTTP 421 (the tap answers only to its own addresses: use the one it printed, 127.0.0.1 or localhost)', 'saying what to do');
  t.equal((await rank(s.port, 0, ['info'])).code, 0);
  t.equal((await exitOf(s.child)).code, 0);
});

t.test('the snapshot counts KVS keys of ranks only, and holds a bounded number of them', async (t) => {
  const rec = new TapRecorder('job', 'server', false);
  const state = new TapState();
  const put = (key: string, o: { conn: number; rank?: number }) => {
    const ev = rec.record({ type: 'line', leg: 'client->server', line: `cmd=put kvsname=job key=${key} value=1`, ...o });
    if (ev) state.apply(ev);
  };
  for (let i = 0; i < 1000; i++) put(`junk${i}`, { conn: 1 });
  t.equal(state.snapshot().kvsKeys, 0, 'puts of a connection that is no rank (refused) are not keys');
  for (let i = 0; i < MAX_COUNTED_KEYS + 1000; i++) put(`k${i}`, { conn: 2, rank: 0 });
  t.equal(state.snapshot().kvsKeys, MAX_COUNTED_KEYS, `at most ${MAX_COUNTED_KEYS} distinct keys are remembered (barrier-complete gives the exact count)`);
  state.apply({ ...(rec.record({ type: 'engine', event: { type: 'barrier-complete', epoch: 1, committed: 1, keys: 100_000 } }) as TapEvent) });
  t.equal(state.snapshot().kvsKeys, 100_000, 'the server\'s count wins once a barrier completed');
});
