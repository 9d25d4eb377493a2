// How `wrap` lets go of an inherited PMI_FD (issue 11, "What did not" #2). Slurm's stepd keeps a
// copy of each task's end of the PMI socketpair: a task's exit closes its fd but shows the stepd
// nothing, while a shutdown() makes the stepd read EOF — after MPI_Abort it then logged
// `mpi/pmi2: read length 0` thousands of times, and a task that never spoke PMI (`wrap -- true`)
// made it die with `fatal: this is impossible`. Here a shell plays the stepd's part: it holds a
// copy of wrap's PMI_FD while wrap runs and after; the test is the PMI server on the other end.
// No Slurm needed (test/slurm*.test.ts run the same against the real stepd).
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { cliPath, collect, envWithPmibridge, exitOf, until } from './fixtures/cli.js';

/** How long the holder lives on after wrap exited: no EOF may arrive before it exits. */
const HOLD_MS = 1500;

/**
 * `sh -c 'node main.js wrap -- CHILD…; echo wrap-exit=$?; sleep'` with PMI_FD=3 (a socketpair
 * whose other end is ours). Resolves with wrap's status, and when our end saw EOF relative to wrap's
 * exit. `answer` plays the server for the lines wrap forwards.
 */
async function underHolder(t: Test, child: readonly string[], answer: (line: string) => string | undefined = () => undefined) {
  const quoted = [process.execPath, cliPath, 'wrap', '--', ...child].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const holder = spawn('sh', ['-c', `${quoted}; echo wrap-exit=$?; sleep ${HOLD_MS / 1000}`], {
    env: envWithPmibridge({ PMI_FD: '3', PMI_RANK: '0', PMI_SIZE: '1' }),
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  t.teardown(() => void (holder.exitCode === null && holder.signalCode === null && holder.kill('SIGKILL')));
  const out = collect(holder);
  const ours = holder.stdio[3] as Socket;
  let eofAt: number | null = null;
  let wrapExitAt: number | null = null;
  const lines: string[] = [];
  let buf = '';
  ours.setEncoding('latin1');
  ours.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      const reply = answer(line);
      if (reply !== undefined) ours.write(`${reply}\n`);
    }
  });
  ours.on('end', () => (eofAt ??= performance.now()));
  ours.on('error', () => (eofAt ??= performance.now()));
  await until(`wrap's exit (stdout: ${out.stdout}, stderr: ${out.stderr})`, () => {
    if (wrapExitAt === null && /wrap-exit=\d+/.test(out.stdout)) wrapExitAt = performance.now();
    return wrapExitAt !== null;
  }, 30_000);
  const status = Number(/wrap-exit=(\d+)/.exec(out.stdout)?.[1]);
  const eofBeforeWrapExit = eofAt !== null;
  await exitOf(holder, 15_000);
  await until('EOF once the last holder exited', () => eofAt !== null, 5_000);
  return { status, lines, eofBeforeWrapExit, eofAfterWrapExitMs: (eofAt as unknown as number) - (wrapExitAt as unknown as number), stderr: out.stderr };
}

t.test('a program that never speaks PMI: wrap exits 0 and the server sees nothing (no EOF) until the holder of the fd exits', async (t) => {
  const r = await underHolder(t, ['true']);
  t.equal(r.status, 0, `wrap -- true exits 0 (stderr: ${r.stderr})`);
  t.same(r.lines, [], 'nothing was sent upstream');
  t.notOk(r.eofBeforeWrapExit, 'no EOF while wrap ran');
  t.ok(r.eofAfterWrapExitMs >= HOLD_MS * 0.8, `EOF only when the holder exited, ${Math.round(r.eofAfterWrapExitMs)} ms after wrap (a shutdown would show it at once)`);
});

t.test('a program that closes PMI_FD without a word and runs on: still nothing upstream', async (t) => {
  const r = await underHolder(t, ['sh', '-c', 'exec 3>&-; sleep 0.5']);
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr})`);
  t.same(r.lines, [], 'nothing was sent upstream');
  t.notOk(r.eofBeforeWrapExit, 'no EOF while wrap ran (its relay saw the client go 0.5 s before wrap exited)');
  t.ok(r.eofAfterWrapExitMs >= HOLD_MS * 0.8, `EOF only when the holder exited (${Math.round(r.eofAfterWrapExitMs)} ms after wrap)`);
});

t.test('a rank gone after abort (its connection first, then the process, as Slurm kills a step): the upstream fd is closed, never shut down', async (t) => {
  const script = 'printf "cmd=init pmi_version=1 pmi_subversion=1\\n" >&3; read -r l <&3; printf "cmd=abort exitcode=7\\n" >&3; exec 3>&-; sleep 0.3; kill -9 $$';
  const r = await underHolder(t, ['sh', '-c', script], (line) => (line.startsWith('cmd=init') ? 'cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1' : undefined));
  t.equal(r.status, 137, 'wrap exits with the child\'s status (SIGKILL)');
  t.match(r.lines, ['cmd=init pmi_version=1 pmi_subversion=1', 'cmd=abort exitcode=7'], 'the abort reached the server');
  t.notOk(r.eofBeforeWrapExit, 'no EOF while wrap ran');
  t.ok(r.eofAfterWrapExitMs >= HOLD_MS * 0.8, `EOF only when the holder exited (${Math.round(r.eofAfterWrapExitMs)} ms after wrap)`);
});

t.test('after finalize the upstream is shut down, as MPICH 4.0.2 does after finalize_ack', async (t) => {
  const script = 'printf "cmd=init pmi_version=1 pmi_subversion=1\\n" >&3; read -r l <&3; printf "cmd=finalize\\n" >&3; read -r l <&3; echo "child got: $l"';
  const r = await underHolder(t, ['sh', '-c', script], (line) =>
    line.startsWith('cmd=init') ? 'cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1' : line === 'cmd=finalize' ? 'cmd=finalize_ack rc=0' : undefined,
  );
  t.equal(r.status, 0, `wrap exits 0 (stderr: ${r.stderr})`);
  t.ok(r.eofBeforeWrapExit, 'EOF by the time wrap exited, although the holder still has the fd');
});
