// The tap under hostile input, what it keeps and shows: clients cannot grow /metrics (label
// values) or its tables; --tap-redact values hides every value in every event; the token file
// must be ours alone.
import t, { type Test } from 'tap';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithPmibridge, exitOf, runCli, runCommand, startCli, until, waitForLine } from './fixtures/cli.js';
import { OTHER_USER, otherUid, otherUserMissing } from './fixtures/other-user.js';
import { getRequest, rawHttp, startTapped, watch, within } from './fixtures/tap.js';
import { type BusEvent } from '../src/host/bus.js';
import { MAX_PENDING_REQUESTS, redactText, redactValues, TapRecorder, type TapEvent } from '../src/tap/event.js';
import { MAX_COUNTED_KEYS, TapState } from '../src/tap/state.js';

/** A rank as pmibridge's own client. */
const rank = (port: string, id: number, args: readonly string[]) => runCli(['pmi', ...args], { env: envWithPmibridge({ PMI_PORT: port, PMI_ID: String(id) }), timeoutMs: 60_000 });

/** Send `lines` on one new PMI connection; resolves with the replies once as many came back. */
function pmiLines(pmiPort: string, lines: readonly string[]): Promise<string[]> {
  const [host, port] = pmiPort.split(':');
  return new Promise((resolve, reject) => {
    const s = connect(Number(port), host ?? '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${buf.split('\n').length - 1} of ${lines.length} replies within 60 s`));
    }, 60_000);
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
  const per = 500;
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
      const timer = setTimeout(() => reject(new Error(`no ${n} reply lines within 30 s; got ${JSON.stringify(buf)}`)), 30_000);
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
  await until('the put to go upstream', () => w.events.some((e) => e.leg === 'relay->upstream' && e.cmd === 'put'), 60_000);
  a.socket.destroy();
  await until('the session to be held', () => w.events.some((e) => e.event === 'held'), 60_000);
  proxy.release();
  await until('the reply to come (and be kept)', () => w.events.some((e) => e.leg === 'upstream->relay' && e.cmd === 'put_result'), 60_000);
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

t.test('--tap-token-file (and the viewer\'s --token-file): a file of another user, or not a regular file, is refused with what to do', { skip: otherUserMissing() ?? false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-tap-owner-'));
  chmodSync(dir, 0o777); // the other user may create files here (like /tmp)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'tap-token');
  const made = await runCommand('runuser', ['-u', OTHER_USER, '--', 'sh', '-c', `umask 077 && echo planted-token-known-to-them > ${file}`], { timeoutMs: 60_000 });
  t.equal(made.code, 0, `the other user made ${file} (${made.stderr})`);
  t.equal(statSync(file).uid, otherUid());
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode 0600: only the mode would pass');
  for (const command of [['serve', '-n', '1'], ['relay', '--upstream', 'unix:///nonexistent/pmi.sock']]) {
    const r = await runCli([...command, '--tap', 'ws://127.0.0.1:0', '--tap-token-file', file], { timeoutMs: 60_000 });
    t.equal(r.code, 1, `${command[0]} refuses to start`);
    t.match(r.stderr, `pmibridge ${command[0]}: ${file} belongs to uid ${otherUid()}, not to uid ${process.getuid?.()} (this process): its owner knows the token and can change it; use a token file of your own (a tap started with --tap-token-file creates a fresh one where none exists)`, 'saying why and what to do');
    t.equal(r.stdout, '', 'no PMI_PORT advertised');
  }
  // The viewer trusts a token file on the same terms, and never creates one.
  const viewer = await runCli(['tap', 'ws://127.0.0.1:9', '--token-file', file], { timeoutMs: 60_000 });
  t.equal(viewer.code, 2, 'pmibridge tap refuses the planted file (usage error)');
  t.match(viewer.stderr, `pmibridge tap: --token-file: ${file} belongs to uid ${otherUid()}`);
  const missing = await runCli(['tap', 'ws://127.0.0.1:9', '--token-file', join(dir, 'none')], { timeoutMs: 60_000 });
  t.equal(missing.code, 2);
  t.match(missing.stderr, 'does not exist: give the file the tap was started with (--tap-token-file), or the token it printed (--token)');
  t.throws(() => statSync(join(dir, 'none')), 'the viewer created nothing');
  rmSync(file);
  const fifo = await runCommand('mkfifo', ['-m', '600', file], { timeoutMs: 60_000 });
  t.equal(fifo.code, 0);
  const r = await runCli(['serve', '-n', '1', '--tap', 'ws://127.0.0.1:0', '--tap-token-file', file], { timeoutMs: 60_000 });
  t.equal(r.code, 1, 'a FIFO: refused, without waiting for a writer');
  t.match(r.stderr, `${file} is not a regular file`);
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
