// Signals: `run` forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to its ranks' process groups (grandchildren
// included) and exits 128+signal, with its private socket directory removed; `serve`, `relay` and
// `wrap` end as cleanly; a closed terminal (SIGHUP) takes no rank and leaves no directory behind.
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { cliPath, collect, envWithPmibridge, exitOf, startCli, until, waitForLine } from './fixtures/cli.js';
import { has } from './fixtures/attach.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** A failing test must not leave its processes behind: kill whatever is left of them. */
function reap(t: Test, pids: () => Array<number | string | undefined>): void {
  t.teardown(() => {
    for (const p of pids()) {
      const pid = Number(p);
      if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });
}

const codeOf = (sig: NodeJS.Signals) => 128 + (osConstants.signals[sig] ?? 0);

/** `key=value` fields of the lines the ranks printed, once `n` such lines are there. */
function rankLines(out: { stdout: string }, n: number, what = 'ranks did not start'): Promise<Array<Record<string, string>>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`${what}: ${out.stdout}`));
    }, 15_000);
    const poll = setInterval(() => {
      const lines = out.stdout.split('\n').filter((l) => /^pid=\d+/.test(l));
      if (lines.length >= n) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve(lines.map((l) => Object.fromEntries(l.split(' ').map((kv) => kv.split('=', 2) as [string, string]))));
      }
    }, 20);
  });
}

/** The private directory of a `unix://…/pmi.sock` PMI_PORT. */
function socketDir(port: string | undefined): string {
  const m = /^unix:\/\/(\/.+)\/[^/]+$/.exec(port ?? '');
  if (!m?.[1]) throw new Error(`not a unix PMI_PORT: ${port}`);
  return m[1];
}

const RANK = 'echo "pid=$$ port=$PMI_PORT"; exec sleep 300';

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const) {
  for (const pmi of sig === 'SIGTERM' || sig === 'SIGINT' ? (['fd'] as const) : (['fd', 'tcp', 'unix'] as const)) {
    t.test(`run --pmi ${pmi} forwards ${sig} to the ranks and exits ${codeOf(sig)}`, async (t) => {
      const job = startCli(['run', '-n', '2', '--pmi', pmi, '--', 'sh', '-c', RANK]);
      const out = collect(job);
      const ranks = await rankLines(out, 2);
      reap(t, () => ranks.map((r) => r['pid']));
      job.kill(sig);
      const status = await exitOf(job, 15_000);
      t.same(status, { code: codeOf(sig), signal: null }, `exit status ${codeOf(sig)}; stderr: ${out.stderr}`);
      t.match(out.stderr, new RegExp(`job failed: interrupted by ${sig}`));
      t.notOk(ranks.some((r) => alive(Number(r['pid']))), 'no rank is left running');
      if (pmi === 'unix') t.notOk(existsSync(socketDir(ranks[0]?.['port'])), 'the private socket directory is removed');
    });
  }
}

t.test('Ctrl-Z (SIGTSTP) stops the ranks with run, SIGCONT resumes them', async (t) => {
  const job = startCli(['run', '-n', '2', '--', 'sh', '-c', RANK]);
  const out = collect(job);
  const ranks = await rankLines(out, 2);
  reap(t, () => ranks.map((r) => r['pid']));
  const states = () => [job.pid, ...ranks.map((r) => r['pid'])].map((p) => /^State:\s+(\S)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]);
  job.kill('SIGTSTP');
  await until('run and its ranks to stop', () => states().every((s) => s === 'T'), 10_000).catch(() => {});
  t.same(states(), ['T', 'T', 'T'], 'run and both ranks are stopped');
  job.kill('SIGCONT');
  await until('run and its ranks to resume', () => states().every((s) => s !== 'T'), 10_000).catch(() => {});
  t.notOk(states().includes('T'), 'run and both ranks run again');
  job.kill('SIGTERM');
  t.equal((await exitOf(job, 15_000)).code, 143);
});

t.test('a closed terminal (SIGHUP from the kernel) ends run: no rank, no socket directory left', { skip: has('script') ? false : 'script(1) not found (util-linux)' }, async (t) => {
  // script(1) gives the job a pseudo-terminal; killing script closes its master side: the
  // kernel hangs the terminal up, as when a terminal window or an ssh session is closed.
  // --label: run itself writes the ranks' output to the dead terminal (EIO) while it cleans up.
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-hup-'));
  const rank = `echo "$PPID $$ $PMI_PORT" > ${dir}/rank.$PMI_RANK; while :; do echo tick; sleep 0.05; done`;
  const cmd = `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(cliPath)} run -n 2 --pmi unix --label -- sh -c '${rank}' 2>${dir}/stderr`;
  const term = spawn('script', ['-qfec', cmd, '/dev/null'], { env: envWithPmibridge({ SHELL: '/bin/sh' }), stdio: ['pipe', 'ignore', 'ignore'] });
  await until('both ranks to start', () => readdirSync(dir).filter((f) => /^rank\.\d$/.test(f) && readFileSync(join(dir, f), 'utf8').endsWith('\n')).length === 2, 15_000);
  const seen = ['rank.0', 'rank.1'].map((f) => readFileSync(join(dir, f), 'utf8').trim().split(' '));
  const runPid = Number(seen[0]?.[0]);
  const rankPids = seen.map((s) => Number(s[1]));
  const sockDir = socketDir(seen[0]?.[2]);
  reap(t, () => [runPid, ...rankPids]);
  term.kill('SIGKILL');
  await exitOf(term, 15_000);
  await until('run to exit', () => !alive(runPid), 15_000);
  t.notOk(rankPids.some(alive), 'no rank is left running');
  t.notOk(existsSync(sockDir), 'the private socket directory is removed');
  const stderr = readFileSync(join(dir, 'stderr'), 'utf8');
  t.match(stderr, /^pmibridge run: job failed: interrupted by SIGHUP; sent it to the ranks$/m);
  // Node 20 aborts at exit when it cannot restore a hung-up terminal (nodejs/node#51519).
  t.notMatch(stderr, /Assertion failed|Unhandled 'error' event|EIO/, 'no crash: writes to the dead terminal are dropped');
});

t.test('process groups: a rank that is a script starting a grandchild', async (t) => {
  const GC = 'sleep 300 & echo "pid=$$ gc=$!"; wait';

  t.test('killed job: the grandchildren are gone too', async (t) => {
    const job = startCli(['run', '-n', '2', '--', 'sh', '-c', GC]);
    const out = collect(job);
    const ranks = await rankLines(out, 2);
    reap(t, () => ranks.flatMap((r) => [r['pid'], r['gc']]));
    job.kill('SIGTERM');
    t.equal((await exitOf(job, 15_000)).code, 143);
    await until('the grandchildren to be gone', () => !ranks.some((r) => alive(Number(r['gc']))), 10_000).catch(() => {});
    t.notOk(ranks.some((r) => alive(Number(r['pid']))), 'no rank is left running');
    t.notOk(ranks.some((r) => alive(Number(r['gc']))), 'no grandchild is left running');
  });

  t.test('failed job: the grandchildren of every rank are gone, also those of the rank that failed', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'pmibridge-pg-'));
    // Rank 1 fails once both ranks have started their grandchild.
    const script = `sleep 300 & echo "pid=$$ gc=$!"; touch ${dir}/$PMI_RANK; if [ "$PMI_RANK" = 1 ]; then while [ ! -e ${dir}/0 ]; do sleep 0.02; done; exit 3; fi; wait`;
    const job = startCli(['run', '-n', '2', '--', 'sh', '-c', script]);
    const out = collect(job);
    const status = await exitOf(job, 15_000);
    t.equal(status.code, 3, out.stderr);
    const ranks = await rankLines(out, 2);
    reap(t, () => ranks.flatMap((r) => [r['pid'], r['gc']]));
    await until('the grandchildren to be gone', () => !ranks.some((r) => alive(Number(r['gc']))), 10_000).catch(() => {});
    t.notOk(ranks.some((r) => alive(Number(r['gc']))), 'no grandchild is left running');
  });

  t.test('ranks started through pmibridge wrap: the whole tree goes', async (t) => {
    const job = startCli(['run', '-n', '2', '--', 'pmibridge', 'wrap', '--', 'sh', '-c', GC]);
    const out = collect(job);
    const ranks = await rankLines(out, 2);
    reap(t, () => ranks.flatMap((r) => [r['pid'], r['gc']]));
    job.kill('SIGTERM');
    t.equal((await exitOf(job, 15_000)).code, 143);
    await until('the grandchildren to be gone', () => !ranks.some((r) => alive(Number(r['gc']))), 10_000).catch(() => {});
    t.notOk(ranks.some((r) => alive(Number(r['pid'])) || alive(Number(r['gc']))), 'no rank program or grandchild is left running');
  });

  t.test('stdin still reaches rank 0', async (t) => {
    const job = spawn(process.execPath, [cliPath, 'run', '-n', '2', '--label', '--', 'sh', '-c', 'if [ "$PMI_RANK" = 0 ]; then read line; echo "got $line"; fi'], {
      env: envWithPmibridge(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out = collect(job);
    job.stdin?.end('hello\n');
    t.equal((await exitOf(job, 15_000)).code, 0, out.stderr);
    t.match(out.stdout, /^\[0\] got hello$/m);
  });
});

t.test('serve ends on SIGTERM with status 143 and a reason', async (t) => {
  const server = startCli(['serve', '-n', '2', '--listen', '127.0.0.1:0']);
  let stderr = '';
  server.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitForLine(server, /^PMI_PORT=/);
  server.kill('SIGTERM');
  t.equal((await exitOf(server, 15_000)).code, 143);
  t.match(stderr, /job failed: interrupted by SIGTERM/);
});

for (const sig of ['SIGHUP', 'SIGQUIT'] as const) {
  t.test(`serve ends on ${sig} with status ${codeOf(sig)}; its private socket directory is removed`, async (t) => {
    const server = startCli(['serve', '-n', '2', '--listen', 'unix']);
    const out = collect(server);
    const [, port] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
    server.kill(sig);
    t.same(await exitOf(server, 15_000), { code: codeOf(sig), signal: null }, out.stderr);
    t.match(out.stderr, new RegExp(`job failed: interrupted by ${sig}`));
    t.notOk(existsSync(socketDir(port)), 'the private socket directory is removed');
  });

  t.test(`relay ends on ${sig} with status ${codeOf(sig)}; its private socket directory is removed`, async (t) => {
    const relay = startCli(['relay', '--upstream', 'unix:///nonexistent/pmi.sock', '--listen', 'unix']);
    const out = collect(relay);
    const [, port] = await waitForLine(relay, /^PMI_PORT=(\S+)$/);
    relay.kill(sig);
    t.same(await exitOf(relay, 15_000), { code: codeOf(sig), signal: null }, out.stderr);
    t.match(out.stderr, new RegExp(`interrupted by ${sig}`));
    t.notOk(existsSync(socketDir(port)), 'the private socket directory is removed');
  });

  t.test(`wrap forwards ${sig} to its child, exits ${codeOf(sig)} and removes its private socket directory`, async (t) => {
    const server = startCli(['serve', '-n', '1', '--listen', '127.0.0.1:0']);
    const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
    const wrap: ChildProcess = startCli(['wrap', '--pmi', 'fd', '--upstream', upstream as string, '--', 'sh', '-c', RANK]);
    const out = collect(wrap);
    const [child] = await rankLines(out, 1, 'the child did not start');
    reap(t, () => [child?.['pid']]);
    wrap.kill(sig);
    t.same(await exitOf(wrap, 15_000), { code: codeOf(sig), signal: null }, out.stderr);
    t.notOk(alive(Number(child?.['pid'])), 'the child is gone');
    t.notOk(existsSync(socketDir(child?.['port'])), 'the private socket directory is removed');
    server.kill('SIGTERM');
    await exitOf(server, 15_000);
  });
}
