// Log lines about bad input are bounded: per connection (first few in full, then summaries and a
// count at close) and across all peers (a budget per interval, the rest counted).
import t from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { LogThrottle } from '../src/cli/log-throttle.js';
import { collect, exitOf, startCli, until, waitForLine } from './fixtures/cli.js';

t.test('LogThrottle: per connection', async (t) => {
  const th = new LogThrottle({ perConnection: 3, perInterval: 100, intervalMs: 10_000 });
  const writes = [0, 1, 2, 3, 4, 5].map((i) => th.offer('connection 1', `bad ${i}`, i));
  t.same(writes.map((d) => d.write), [true, true, true, false, false, false], 'the first 3 in full');
  t.match(writes[2]?.extra, [/connection 1: that is 3 of its bad lines; more are counted/], 'and it says so once');
  t.same(th.offer('connection 2', 'other', 6).write, true, 'another connection has its own 3');
  t.same(th.offer('connection 1', 'bad 6', 9_999).extra, [], 'no summary within the interval');
  t.match(th.offer('connection 1', 'bad 7', 10_001).extra, [/^connection 1: 5 more bad lines in the last 10 s \(last: bad 7\)$/], 'one summary per interval');
  th.offer('connection 1', 'bad 8', 10_002);
  t.match(th.closed('connection 1', 10_003), [/^connection 1 closed after 9 bad lines; 1 of them were not logged one by one \(last: bad 8\)$/], 'the rest counted at close');
  t.same(th.closed('connection 1', 10_004), [], 'once');
  t.same(th.closed('connection 2', 10_005), [], 'nothing held back: nothing to say');
});

t.test('LogThrottle: the global budget', async (t) => {
  const th = new LogThrottle({ perConnection: 5, perInterval: 10, intervalMs: 10_000 });
  let written = 0;
  for (let c = 0; c < 50; c++) if (th.offer(`connection ${c}`, 'bad', 100 + c).write) written++;
  t.equal(written, 10, '10 lines per interval, whoever sends');
  t.equal(th.pendingUntil, 10_100, 'the count is due when the window ends');
  t.match(th.flush(10_100), [/^log throttled: 40 lines about bad input from 40 connections or peers were not written in the last 10 s/]);
  t.equal(th.pendingUntil, null);
  t.equal(th.offer('peer x', 'refused', 10_200, false).write, true, 'a new window has a new budget');
});

t.test('serve: 5000 bad lines on one connection and 3 from each of 200 more cost a bounded number of log lines (5000 of them alternating with well-formed requests, so the connection stays open)', async (t) => {
  const server = startCli(['serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0']);
  t.teardown(() => server.kill('SIGKILL'));
  const out = collect(server);
  const [, port] = await waitForLine(server, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  // Bad lines alternating with well-formed ones: the connection is never closed for them.
  const s = connect(Number(port), '127.0.0.1');
  s.on('error', () => undefined);
  await once(s, 'connect');
  let replies = 0;
  s.on('data', (d: Buffer) => (replies += d.toString().split('\n').length - 1));
  s.write('junk\ncmd=get_maxes\n'.repeat(5000));
  await until('10000 replies', () => replies >= 10_000, 30_000);
  const many = await Promise.all(
    Array.from({ length: 200 }, async () => {
      const c = connect(Number(port), '127.0.0.1');
      c.on('error', () => undefined);
      await once(c, 'connect');
      c.write('junk\njunk\njunk\n');
      return c;
    }),
  );
  await until('the throttle count of the window', () => /log throttled: \d+ lines/.test(out.stderr), 30_000);
  s.destroy();
  await until('the count at close', () => /closed after 10000 bad lines/.test(out.stderr), 15_000);
  many.forEach((c) => c.destroy());
  server.kill('SIGTERM');
  await exitOf(server, 20_000);
  const lines = out.stderr.split('\n').filter(Boolean);
  t.ok(lines.length < 80, `${lines.length} log lines for 5600 bad lines (${out.stderr.length} bytes)`);
  t.match(out.stderr, /that is 5 of its bad lines; more are counted, not logged one by one/);
  // each junk line and each get_maxes before identifying (answered rc=1) is a bad line
  t.match(out.stderr, /connection 1 closed after 10000 bad lines; 9995 of them were not logged one by one \(last: cmd=get_maxes before the connection identified itself/);
  t.match(out.stderr, /log throttled: \d+ lines about bad input from \d+ connections or peers were not written/);
});
