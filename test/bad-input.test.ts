// Bad input over real sockets: every raw client gets its defined answer (or a logged close), and
// the real ranks of the job finish regardless.
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { JobServer } from '../src/host/job-server.js';
import { PmiClient } from '../src/client/index.js';
import type { BusEvent } from '../src/host/bus.js';
import { readFileSync } from 'node:fs';
import { exitOf, runCli, startCli, until, waitForLine } from './fixtures/cli.js';

async function startServer(size: number) {
  const server = new JobServer({ size, kvsname: 'kvs_bad_0' });
  const events: BusEvent[] = [];
  server.bus.subscribe((e) => events.push(e));
  const listener = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  const port = listener.address.kind === 'tcp' ? listener.address.port : 0;
  return { server, events, port };
}

/** Connect, send raw bytes, collect what comes back until `lines` lines arrived or the server closed. */
async function raw(port: number, payload: Buffer | string, lines: number, keepOpen = false, waitClose = false): Promise<{ text: string; closed: boolean; socket: Socket }> {
  const s = connect(port, '127.0.0.1');
  await once(s, 'connect');
  let text = '';
  let closed = false;
  s.on('error', () => undefined);
  const done = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (!waitClose && text.split('\n').length - 1 >= lines) resolve();
    });
    s.on('close', () => {
      closed = true;
      resolve();
    });
  });
  s.write(payload);
  await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
  if (!keepOpen) s.destroy();
  return { text, closed, socket: s };
}

async function runRank(port: number, rank: number, size: number): Promise<string[]> {
  const c = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: rank }, { timeoutMs: 20_000 });
  await c.init();
  await c.put(`k${rank}`, `v${rank}`);
  await c.barrier();
  const got: string[] = [];
  for (let r = 0; r < size; r++) got.push(await c.get(`k${r}`));
  await c.barrier();
  await c.finalize();
  return got;
}

t.test('garbage, overlong, NUL, blank, missing value, bad handshakes and 1000 idle connections', async (t) => {
  const size = 2;
  const { server, events, port } = await startServer(size);
  t.teardown(() => server.close());

  // 1000 connections that never speak: held, harmless.
  const idle: Socket[] = [];
  for (let i = 0; i < 1000; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    idle.push(s);
  }
  await Promise.all(idle.map((s) => once(s, 'connect')));
  t.teardown(() => idle.forEach((s) => s.destroy()));

  // Rank 0 binds first so that impersonating it can be tried while it is live.
  const rank0 = PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port }, pmiid: 0 }, { timeoutMs: 20_000 });
  const c0 = await rank0;
  await c0.init();

  const garbage = await raw(port, 'hello world\n', 1);
  t.match(garbage.text, /^cmd=error rc=-1 msg=not_a_PMI-1_line_expected_cmd=\n/, 'garbage: cmd=error with a reason');

  const blank = await raw(port, '\n', 1);
  t.match(blank.text, /^cmd=error rc=-1 msg=blank_line\n/, 'blank line answered');

  const nul = await raw(port, Buffer.from('cmd=get_maxes\0junk\n', 'latin1'), 1);
  t.match(nul.text, /^cmd=error rc=-1 msg=line_contains_a_NUL_byte\n/, 'NUL byte answered');

  const long = await raw(port, `cmd=initack pmiid=1\ncmd=init pmi_version=1 pmi_subversion=1\ncmd=put kvsname=k key=big value=${'x'.repeat(100_000)}\ncmd=get_maxes\n`, 7, true);
  t.match(long.text, /cmd=put_result rc=8 msg=line_of_\d+_bytes_exceeds_limit_1408\n/, 'overlong put answered in its own reply, rc=8');
  t.match(long.text, /cmd=maxes rc=0 /, 'and the connection goes on');
  long.socket.destroy(); // it bound rank 1 and initialized: dropping it would fail the job, so
  // this test's rank 1 is a fresh connection below — a new server keeps the rest meaningful.

  t.ok(events.some((e) => e.type === 'engine' && e.event.type === 'protocol-error' && /exceeds the 1408-byte limit/.test(e.event.message)), 'logged in words');
  await server.close();

  // A second job, for the handshake and KVS cases, with both ranks real.
  const job = await startServer(size);
  t.teardown(() => job.server.close());
  const r0 = await PmiClient.connect({ mode: 'port', address: { kind: 'tcp', host: '127.0.0.1', port: job.port }, pmiid: 0 }, { timeoutMs: 20_000 });
  await r0.init();

  const unknown = await raw(job.port, 'cmd=initack pmiid=99\n', 1, false, true);
  t.match(unknown.text, /^cmd=initack rc=3 msg=no_rank_99_in_job_of_size_2\n/, 'unknown pmiid refused');
  t.ok(unknown.closed, '…and closed');

  const dup = await raw(job.port, 'cmd=initack pmiid=0\n', 1, false, true);
  t.match(dup.text, /^cmd=initack rc=-1 msg=rank_0_is_already_connected\n/, 'impersonating a live rank refused');
  t.ok(dup.closed, '…and closed');

  const before = await raw(job.port, 'cmd=put kvsname=x key=a value=b\n', 1);
  t.match(before.text, /^cmd=put_result rc=1 msg=send_initack_or_init_first\n/, 'commands before identifying: rc=1');

  const unknownCmd = await raw(job.port, 'cmd=frobnicate x=1\n', 1);
  t.match(unknownCmd.text, /^cmd=error rc=-1 msg=unknown_command_frobnicate\n/);

  const flood = await raw(job.port, 'junk\n'.repeat(50), 50, false, true);
  t.equal(flood.text.split('\n').filter(Boolean).length, 8, 'a flood of bad lines: 8 answers, then…');
  t.ok(flood.closed, '…the connection is closed');

  // rank 0 itself sends a put without value: a defined rc, and it carries on
  const noValue = await r0.request({ cmd: 'put', kvsname: r0.kvsname, key: 'novalue' } as never).then(() => null, (e: { rc?: number }) => e);
  t.equal(noValue?.rc, 6, 'put without value → rc 6, and the rank carries on');

  const rank1 = runRank(job.port, 1, size);
  await r0.put('k0', 'v0');
  await r0.barrier();
  t.same([await r0.get('k0'), await r0.get('k1')], ['v0', 'v1'], 'rank 0 sees the whole KVS');
  await r0.barrier();
  await r0.finalize();
  t.same(await rank1, ['v0', 'v1'], 'rank 1 sees the whole KVS');
  const status = await job.server.done;
  t.same(status, { ok: true, exitCode: 0, reason: 'all 2 ranks finalized' }, 'the job completed despite everything');
  await c0.finalize().catch(() => undefined);
});

t.test('a client that stops reading is not allowed to grow our buffers', async (t) => {
  const { server, port } = await startServer(1);
  t.teardown(() => server.close());
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  await once(s, 'connect');
  s.pause(); // never read a reply
  const line = 'cmd=initack pmiid=0\ncmd=init pmi_version=1 pmi_subversion=1\n' + 'cmd=get_maxes\n'.repeat(200_000);
  s.write(line);
  await new Promise((r) => setTimeout(r, 1500));
  const conns = (server as unknown as { connections: Map<number, { socket: Socket }> }).connections;
  const queued = [...conns.values()].reduce((n, c) => n + c.socket.writableLength, 0);
  t.ok(queued < 4 * 1024 * 1024, `server-side write queue stays bounded (${queued} bytes)`);
  s.destroy();
});

t.test('a 7-line spawn block with a huge count, from a connection that never identified itself, is answered at once', async (t) => {
  // Out of process: before the fix this froze the server (hours of CPU, or ~1 GB for argcnt).
  const server = startCli(['serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0']);
  t.teardown(() => server.kill('SIGKILL'));
  const [, port] = await waitForLine(server, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  const block = (count: string) => `mcmd=spawn\nnprocs=1\nexecname=x\ntotspawns=1\nspawnssofar=1\n${count}\nendcmd\n`;
  for (const [count, msg] of [
    ['preput_num=100000000000', /^cmd=spawn_result rc=-1 msg=spawn_preput_num_100000000000_exceeds_limit_2\n$/],
    ['argcnt=1000000000', /^cmd=spawn_result rc=-1 msg=spawn_argcnt_1000000000_exceeds_limit_5\n$/],
    ['info_num=100000000000', /^cmd=spawn_result rc=-1 msg=spawn_info_num_100000000000_exceeds_limit_2\n$/],
  ] as const) {
    const r = await raw(Number(port), block(count), 1);
    t.match(r.text, msg, `${count}: refused in spawn_result, with the count and the limit`);
  }
  const rank = await runCli(['pmi', 'info'], { env: { ...process.env, PMI_PORT: `127.0.0.1:${port}`, PMI_ID: '0' }, timeoutMs: 20_000 });
  t.equal(rank.code, 0, `the real rank is served (stderr: ${rank.stderr})`);
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
});

t.test('many clients that never read cannot make the server queue more than one high-water mark each', async (t) => {
  // 1023-byte values: each 32-byte get is answered with ~1 KiB, so one 64 KiB read of gets asks
  // for ~2 MiB of replies. Those must not all be queued before backpressure is looked at.
  const clients = 20;
  const gets = 16_000; // 512 KiB of requests each, ~16 MiB of replies: far beyond the kernel's buffers
  const value = 'v'.repeat(1023);
  const server = new JobServer({ size: clients, kvsname: 'kvs_bad_0', processMapping: value });
  t.teardown(() => server.close());
  const listener = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  const port = listener.address.kind === 'tcp' ? listener.address.port : 0;
  const sockets = await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      await once(s, 'connect');
      s.pause(); // never read
      s.write(`cmd=initack pmiid=${i}\ncmd=init pmi_version=1 pmi_subversion=1\n${'cmd=get key=PMI_process_mapping\n'.repeat(gets)}`);
      return s;
    }),
  );
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  const conns = (server as unknown as { connections: Map<number, { socket: Socket }> }).connections;
  const queued = () => [...conns.values()].map((c) => c.socket.writableLength);
  // Wait until the server has stopped making progress (every queue stuck on unread replies).
  let last = '';
  let stableSince = Date.now();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && Date.now() - stableSince < 1000) {
    await new Promise((r) => setTimeout(r, 100));
    const now = JSON.stringify(queued());
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    }
  }
  const lengths = queued();
  const hwm = [...conns.values()][0]?.socket.writableHighWaterMark ?? 16384;
  const max = Math.max(...lengths);
  t.equal(lengths.length, clients, 'every client is connected');
  t.ok(lengths.every((n) => n > 0), 'every server queue holds unread replies (the clients really do not read)');
  // one read's worth of handling may finish the line that crossed the mark: hwm + one reply
  t.ok(max <= hwm + 2048, `the largest write queue is ${max} bytes (high-water mark ${hwm}), total ${lengths.reduce((a, b) => a + b, 0)}`);

  // Nothing is lost: once a client reads, it gets every reply, in order.
  const counts = await Promise.all(
    sockets.map(
      (s) =>
        new Promise<number>((resolve) => {
          let n = 0;
          let rest = '';
          const timer = setTimeout(() => resolve(n), 60_000);
          s.setEncoding('latin1');
          s.on('data', (d: string) => {
            const text = rest + d;
            const parts = text.split('\n');
            rest = parts.pop() ?? '';
            for (const p of parts) if (p.startsWith('cmd=get_result rc=0 value=v')) n++;
            if (n === gets) {
              clearTimeout(timer);
              resolve(n);
            }
          });
          s.resume();
        }),
    ),
  );
  t.same(counts, Array(clients).fill(gets), `each client received all ${gets} replies once it read`);
});

t.test('100 clients pipelining gets of a 1023-byte value without reading cost the server little memory (RSS)', async (t) => {
  // Out of process, so that the RSS is the server's alone. Before the fix: +250 MiB here (now ~15).
  const n = 100;
  const server = startCli(['serve', '-n', String(n), '--listen', 'tcp://127.0.0.1:0', '--no-process-mapping']);
  t.teardown(() => server.kill('SIGKILL'));
  const [, port] = await waitForLine(server, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  const value = 'v'.repeat(1023);
  const sockets = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const s = connect(Number(port), '127.0.0.1');
      s.on('error', () => undefined);
      await once(s, 'connect');
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString('latin1')));
      s.write(`cmd=initack pmiid=${i}\ncmd=init pmi_version=1 pmi_subversion=1\n${i === 0 ? `cmd=put key=k value=${value}\n` : ''}cmd=barrier_in\n`);
      await until(`rank ${i} through the barrier`, () => text.includes('cmd=barrier_out rc=0'), 20_000);
      return s;
    }),
  );
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  const base = rss();
  for (const s of sockets) {
    s.pause(); // from now on, never read
    s.write('cmd=get key=k\n'.repeat(80_000)); // 1.1 MiB of requests, 83 MiB of replies each
  }
  let peak = base;
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 200));
    peak = Math.max(peak, rss());
  }
  t.ok(peak - base < 96, `the server grew by ${(peak - base).toFixed(0)} MiB (from ${base.toFixed(0)} MiB) for ${n} non-reading clients`);
});
