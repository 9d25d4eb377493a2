// Deployment: the systemd units verify, and the relay serves a job when started by socket
// activation (systemd-socket-activate passes the listening fd; we answer READY=1 on NOTIFY_SOCKET).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { cliPath, exitOf, repoRoot, runCli, runCommand, startCli, waitForLine, envWithPmibridge } from './fixtures/cli.js';
import { has } from './fixtures/attach.js';
import { inCI } from './fixtures/mpich.js';

const missing = ['systemd-analyze', 'systemd-socket-activate', 'python3'].filter((c) => !has(c));
if (missing.length && inCI) throw new Error(`CI needs ${missing.join(', ')} (apt-get install -y systemd python3)`);
const skip = missing.length ? `${missing.join(', ')} not installed` : false;

t.test('systemd-analyze verify accepts the units, without warnings', { skip }, async (t) => {
  const units = ['pmibridge-relay.socket', 'pmibridge-relay.service'].map((u) => join(repoRoot, 'deploy/systemd', u));
  const r = await runCommand('systemd-analyze', ['verify', ...units], { timeoutMs: 30_000 });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr.trim(), '', 'no warnings (systemd-analyze exits 0 even on a bad value)');
});

// Receives one datagram on the given path and prints it: a stand-in for systemd's notify socket.
const NOTIFY_LISTENER = `import socket,sys
s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM);s.bind(sys.argv[1]);s.settimeout(30)
print(s.recv(4096).decode().replace(chr(10),' | '),flush=True)`;

t.test('socket activation: the relay serves a job on the fd systemd passed, and notifies READY=1', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-sd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const server = startCli(['serve', '-n', '2', '--listen', 'unix']);
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const notifyPath = join(dir, 'notify.sock');
  const listener = spawn('python3', ['-c', NOTIFY_LISTENER, notifyPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  let notified = '';
  listener.stdout.on('data', (d: Buffer) => (notified += d.toString()));
  await new Promise((r) => setTimeout(r, 300));
  const sock = join(dir, 'relay.sock');
  const activate = spawn('systemd-socket-activate', ['-l', sock, '-E', `NOTIFY_SOCKET=${notifyPath}`, process.execPath, cliPath, 'relay', '--upstream', upstream as string, '--sessions', '2'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: envWithPmibridge(),
  });
  let activateErr = '';
  activate.stderr.on('data', (d: Buffer) => (activateErr += d.toString()));
  await new Promise((r) => setTimeout(r, 500));
  const ranks = await Promise.all([0, 1].map((rank) => runCli(['pmi', 'exchange'], { env: envWithPmibridge({ PMI_PORT: `unix://${sock}`, PMI_ID: String(rank) }), timeoutMs: 30_000 })));
  ranks.forEach((r, rank) => t.equal(r.code, 0, `rank ${rank} served through the activated relay (${r.stderr})`));
  t.equal((await exitOf(activate)).code, 0, `relay exits 0 after its 2 sessions (${activateErr})`);
  t.match(activateErr, /Listening on .*relay\.sock as 3/, 'the socket was passed as fd 3');
  await exitOf(listener, 10_000);
  t.match(notified, /^READY=1 \| STATUS=relaying unix:\/\/.*relay\.sock to unix:\/\//, 'READY=1 with a status line');
  t.equal((await exitOf(server)).code, 0);
});
