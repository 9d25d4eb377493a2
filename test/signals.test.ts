// Signals: `run` forwards SIGINT/SIGTERM to its ranks and exits 128+signal; `serve` ends cleanly.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { exitOf, startCli, waitForLine } from './fixtures/cli.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

for (const [sig, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
  t.test(`run forwards ${sig} to the ranks and exits ${code}`, async (t) => {
    const job = startCli(['run', '-n', '2', '--', 'sh', '-c', 'echo "pid=$$"; exec sleep 60']);
    let stdout = '';
    job.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    const pids = await new Promise<number[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`ranks did not start: ${stdout}`)), 15_000);
      const poll = setInterval(() => {
        const found = [...stdout.matchAll(/^pid=(\d+)$/gm)].map((m) => Number(m[1]));
        if (found.length === 2) {
          clearInterval(poll);
          clearTimeout(timer);
          resolve(found);
        }
      }, 20);
    });
    let stderr = '';
    job.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    job.kill(sig);
    const status = await exitOf(job, 15_000);
    t.equal(status.code, code);
    t.match(stderr, new RegExp(`job failed: interrupted by ${sig}`));
    t.notOk(pids.some(alive), 'no rank is left running');
  });
}

t.test('serve ends on SIGTERM with status 143 and a reason', async (t) => {
  const server = startCli(['serve', '-n', '2', '--listen', '127.0.0.1:0']);
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitForLine(server, /^PMI_PORT=/);
  server.kill('SIGTERM');
  t.equal((await exitOf(server, 15_000)).code, 143);
  t.match(stderr, /job failed: interrupted by SIGTERM/);
});
