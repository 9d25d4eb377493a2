// PMI_PORT over Unix sockets: pmibridge's own client end to end, and SO_PEERCRED refusal of another uid.
import t from 'tap';
import { mkdtempSync, chmodSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exitOf, runCli, startCli, waitForLine } from './fixtures/cli.js';
import { asOther, otherUid, otherUserMissing } from './fixtures/other-user.js';

t.test('run --pmi unix -n 4 -- pmibridge pmi exchange', async (t) => {
  const r = await runCli(['run', '--pmi', 'unix', '-n', '4', '--', 'pmibridge', 'pmi', 'exchange', '--count', '3'], { timeoutMs: 60_000 });
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr})`);
  t.equal(r.stdout.match(/read 12 keys from 4 ranks: OK/g)?.length, 4, 'every rank read every key');
});

t.test('the private socket directory is mode 0700 and removed afterwards', async (t) => {
  const r = await runCli(['run', '--pmi', 'unix', '-n', '1', '--', 'sh', '-c', 'echo "$PMI_PORT"; stat -c %a "$(dirname "${PMI_PORT#unix://}")"'], { timeoutMs: 30_000 });
  t.equal(r.code, 0);
  const [port, mode] = r.stdout.trim().split('\n');
  t.match(port, /^unix:\/\/\/.*\/pmi\.sock$/);
  t.equal(mode, '700');
  t.throws(() => statSync(String(port).slice('unix://'.length)), 'socket gone after the job');
});

t.test('a client of another uid is refused and logged; the job goes on', { skip: otherUserMissing() ?? false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-uid-'));
  chmodSync(dir, 0o755); // reachable by the other user, so SO_PEERCRED (not file modes) must stop it
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'job.sock');
  const server = startCli(['serve', '-n', '2', '--listen', `unix://${sock}`]);
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, port] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  chmodSync(sock, 0o777);

  const intruder = await asOther('cmd=initack pmiid=0\n', sock);
  t.equal(intruder.code, 0, 'probe ran');
  t.equal(intruder.stderr, '', 'cleanly');
  t.match(intruder.stdout, new RegExp(`cmd=error rc=-1 msg=uid_${otherUid()}_not_allowed`), 'told why, then disconnected');

  const env = (rank: number) => ({ ...process.env, PMI_PORT: port, PMI_ID: String(rank) });
  const ranks = await Promise.all([0, 1].map((r) => runCli(['pmi', 'exchange'], { env: env(r), timeoutMs: 30_000 })));
  ranks.forEach((r, i) => t.equal(r.code, 0, `rank ${i} finished (stderr: ${r.stderr})`));
  t.equal((await exitOf(server)).code, 0, 'the job completed');
  t.match(stderr, new RegExp(`refused a connection from pid \\d+ uid ${otherUid()}: uid ${otherUid()} is not allowed`), 'refusal logged with the reason');
});

t.test('--allow-uid admits the named uid', { skip: otherUserMissing() ?? false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-uid-'));
  chmodSync(dir, 0o755);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'job.sock');
  const server = startCli(['serve', '-n', '1', '--listen', sock, '--allow-uid', String(otherUid())]);
  await waitForLine(server, /^PMI_PORT=/);
  chmodSync(sock, 0o777);
  const r = await asOther('cmd=initack pmiid=0\ncmd=init pmi_version=1 pmi_subversion=1\ncmd=finalize\n', sock);
  t.match(r.stdout, /cmd=initack rc=0 rank=0 size=1/, 'handshake accepted');
  t.match(r.stdout, /cmd=finalize_ack rc=0/);
  t.equal((await exitOf(server)).code, 0);
});

t.test('a loopback TCP client of another uid is refused (uid from /proc/net/tcp)', { skip: otherUserMissing() ?? false }, async (t) => {
  const server = startCli(['serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0']);
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, port] = await waitForLine(server, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  const intruder = await asOther('cmd=initack pmiid=0\n', String(port));
  t.match(intruder.stdout, new RegExp(`cmd=error rc=-1 msg=uid_${otherUid()}_not_allowed`));
  const rank = await runCli(['pmi', 'info'], { env: { ...process.env, PMI_PORT: `127.0.0.1:${port}`, PMI_ID: '0' }, timeoutMs: 20_000 });
  t.equal(rank.code, 0, 'the real rank (our uid) is served');
  t.equal((await exitOf(server)).code, 0);
  t.match(stderr, new RegExp(`refused a connection from 127\\.0\\.0\\.1:\\d+ uid ${otherUid()}: uid ${otherUid()} is not allowed`));
});

t.test("the relay refuses another uid on its TCP and Unix listeners; the job goes on", { skip: otherUserMissing() ?? false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-uid-'));
  chmodSync(dir, 0o755);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const server = startCli(['serve', '-n', '1', '--listen', 'unix']);
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const sock = join(dir, 'relay.sock');
  const relay = startCli(['relay', '--upstream', upstream as string, '--listen', 'tcp://127.0.0.1:0', '--listen', `unix://${sock}`, '--sessions', '1']);
  let stderr = '';
  relay.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const [, tcp] = await waitForLine(relay, /^PMI_PORT=127\.0\.0\.1:(\d+)$/);
  chmodSync(sock, 0o777);
  for (const target of [String(tcp), sock]) {
    const r = await asOther('cmd=initack pmiid=0\n', target);
    t.match(r.stdout, new RegExp(`cmd=error rc=-1 msg=uid_${otherUid()}_not_allowed`), `refused on ${target.startsWith('/') ? 'Unix' : 'TCP'}`);
  }
  const rank = await runCli(['pmi', 'info'], { env: { ...process.env, PMI_PORT: `unix://${sock}`, PMI_ID: '0' }, timeoutMs: 20_000 });
  t.equal(rank.code, 0, 'our own rank is served');
  t.equal((await exitOf(relay)).code, 0);
  t.equal((await exitOf(server)).code, 0);
  t.equal(stderr.match(/refused a connection from .* uid \d+: uid \d+ is not allowed/g)?.length, 2, 'both refusals logged');
});
