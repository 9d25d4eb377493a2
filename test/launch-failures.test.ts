// A rank that cannot be started (program missing or not executable, out of fds or processes)
// stops the launch at once: the ranks already started are killed, one clear line says why and
// what to do, and the job exits 127, however many ranks were asked for. A job whose connections
// cannot fit under the fd limit is refused before any rank starts.
import t, { type Test } from 'tap';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliPath, runCli, runCommand } from './fixtures/cli.js';

/** Processes (not zombies) whose command line is exactly `argv`. */
function running(argv: readonly string[]): number[] {
  const want = `${argv.join('\0')}\0`;
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8') === want && !/^State:\s+Z/m.test(readFileSync(`/proc/${name}/status`, 'utf8'))) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** The one `pmibridge run:` line of stderr (fails the test when there are more, or a stack trace). */
function oneLine(t: Test, stderr: string): string {
  const lines = stderr.split('\n').filter(Boolean);
  t.equal(lines.length, 1, `one line on stderr: ${stderr}`);
  t.notMatch(stderr, /Cannot read properties|internal error|\n\s+at /, 'no internal error');
  return lines[0] ?? '';
}

for (const label of [false, true]) {
  t.test(`out of fds while starting ranks${label ? ' (--label)' : ''}: the ranks started are killed, exit 127 with the fd limit and what to do`, async (t) => {
    // A sleep no other test runs, to find leftovers by command line.
    const sleep = ['sleep', `${300 + Math.floor(Math.random() * 1000)}.${process.pid}`];
    t.teardown(() => {
      for (const pid of running(sleep)) process.kill(pid, 'SIGKILL');
    });
    const run = `ulimit -n 200 && exec ${JSON.stringify(process.execPath)} ${JSON.stringify(cliPath)} run -n 300 ${label ? '--label' : ''} -- ${sleep.join(' ')}`;
    const r = await runCommand('sh', ['-c', run], { timeoutMs: 60_000 });
    t.equal(r.code, 127, r.stderr);
    t.match(oneLine(t, r.stderr), /^pmibridge run: job failed: cannot start rank \d+: too many open files \(the fd limit is 200: raise it with ulimit -n, or start fewer ranks\)$/);
    t.same(running(sleep), [], 'no rank is left running');
    t.ok(r.ms < 30_000, `does not hang (${Math.round(r.ms)} ms)`);
  });
}

for (const [pmi, extra] of [['tcp', []], ['unix', []], ['fd', ['--relay']]] as const) {
  t.test(`--pmi ${[pmi, ...extra].join(' ')}: connections that cannot fit under the fd limit are refused before any rank starts`, async (t) => {
    // Out of fds, accept(2) fails silently (libuv closes the pending connection): the rank would
    // die of a reset connection with no word of why. So the job is refused up front.
    const sleep = ['sleep', `${300 + Math.floor(Math.random() * 1000)}.${process.pid}`];
    t.teardown(() => {
      for (const pid of running(sleep)) process.kill(pid, 'SIGKILL');
    });
    const run = `ulimit -n 64 && exec ${JSON.stringify(process.execPath)} ${JSON.stringify(cliPath)} run -n 60 --pmi ${pmi} ${extra.join(' ')} -- ${sleep.join(' ')}`;
    const r = await runCommand('sh', ['-c', run], { timeoutMs: 60_000 });
    t.equal(r.code, 127, r.stderr);
    t.match(oneLine(t, r.stderr), /^pmibridge run: job failed: cannot start 60 ranks: their connections need about \d+ open files here, and the fd limit is 64 \(raise it with ulimit -n, or start at most \d+ ranks\)$/);
    t.same(running(sleep), [], 'no rank was started');
  });
}

for (const pmi of ['fd', 'tcp'] as const) {
  t.test(`-n 100000 -- /nonexistent (--pmi ${pmi}) fails at once with exit 127`, async (t) => {
    const r = await runCli(['run', '-n', '100000', '--pmi', pmi, '--', '/nonexistent'], { timeoutMs: 60_000 });
    t.equal(r.code, 127);
    t.match(oneLine(t, r.stderr), /^pmibridge run: job failed: cannot start \/nonexistent: not found/);
    // Before: one failed spawn per rank, 61 s. A generous bound: it must not try them all.
    t.ok(r.ms < 15_000, `stops at the first failure (${Math.round(r.ms)} ms)`);
  });
}

t.test('a program that is not executable: exit 127, "not executable"', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-noexec-'));
  const prog = join(dir, 'prog');
  writeFileSync(prog, '#!/bin/sh\nexit 0\n');
  chmodSync(prog, 0o644);
  const r = await runCli(['run', '-n', '1000', '--', prog], { timeoutMs: 60_000 });
  t.equal(r.code, 127);
  t.match(oneLine(t, r.stderr), /cannot start .*prog: not executable/);
  t.ok(r.ms < 15_000, `stops at the first failure (${Math.round(r.ms)} ms)`);
});

t.test('a script whose #! interpreter is missing: exec fails at the first rank, the launch stops there', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-interp-'));
  const prog = join(dir, 'prog');
  writeFileSync(prog, '#!/nonexistent/interpreter\n');
  chmodSync(prog, 0o755);
  const r = await runCli(['run', '-n', '100000', '--', prog], { timeoutMs: 60_000 });
  t.equal(r.code, 127);
  t.match(oneLine(t, r.stderr), /^pmibridge run: job failed: cannot start .*prog: its interpreter \(the #! line\) or dynamic loader was not found$/);
  t.ok(r.ms < 15_000, `stops at the first failure (${Math.round(r.ms)} ms)`);
});

t.test('wrap: a program that cannot be started: its reason, exit 127', async (t) => {
  const r = await runCli(['run', '-n', '1', '--', 'pmibridge', 'wrap', '--', '/nonexistent'], { timeoutMs: 60_000 });
  t.equal(r.code, 127, r.stderr);
  t.match(r.stderr, /pmibridge wrap: cannot start \/nonexistent: not found/);
  t.notMatch(r.stderr, /Cannot read properties|internal error/);
});
