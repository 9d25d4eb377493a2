// Issue 9: MPICH ranks under debuggers and tracers inside hydra's rank slots, through
// `pmibridge wrap --pmi tcp|auto` (lldb closes PMI_FD; MPICH reads PMI_PORT only as host:port),
// and `wrap --attach RANK`, where the test starts that rank itself. Real peers only: MPICH 4.0.2's
// hydra and libmpich, Debian's lldb, gdb and valgrind, a second uid.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { collect, envWithPmibridge, exitOf, runCli, runCommand, until } from './fixtures/cli.js';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';
import { attachEnv } from './fixtures/attach.js';
import { LLDB_ENV, toolMissing } from './fixtures/tools.js';
import { asOther, otherUid, otherUserMissing, probe } from './fixtures/other-user.js';
import { splitCommand } from '../src/cli/args.js';
import { spec as wrapSpec } from '../src/cli/wrap.js';
import { startsRankItself } from '../src/launcher/debuggers.js';

const mpich = mpichMissing();
const skipFor = (...tools: string[]) => mpich ?? toolMissing(...tools) ?? false;

// valgrind on 2 CPUs takes seconds per rank; lldb and gdb about one.
const JOB_MS = 120_000;

const LLDB = ['lldb', '--batch', '-o', 'run', '--'];
const GDB = ['gdb', '-batch', '-ex', 'run', '--args'];
const VALGRIND = ['valgrind', '-q'];

const okLines = (out: string) => out.split('\n').filter((l) => / OK$/.test(l));

/** Run a hydra job. A rank under lldb writes through lldb's pty: its lines end in \r\n. */
async function hydra(args: readonly string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const r = await runCommand('mpiexec.hydra', args, { env: envWithPmibridge({ ...LLDB_ENV, ...extraEnv }), timeoutMs: JOB_MS });
  return { ...r, stdout: r.stdout.replace(/\r\n/g, '\n') };
}

/** `mpiexec.hydra [pmi-port] -n N pmibridge wrap <wrapArgs> -- <tool…> ./hello` exits 0, every rank OK. */
async function jobUnder(t: Test, n: number, opts: { pmiPort?: boolean; wrap: readonly string[]; tool: readonly string[] }) {
  const upstream = opts.pmiPort ? ['-pmi-port', '-launcher', 'fork'] : [];
  const r = await hydra([...upstream, '-n', String(n), 'pmibridge', 'wrap', ...opts.wrap, '--', ...opts.tool, mpiProgram('hello')]);
  t.equal(r.code, 0, `the job exits 0 (stderr: ${r.stderr})`);
  const ok = okLines(r.stdout);
  t.equal(ok.length, n, `every rank printed its OK line (stdout: ${r.stdout})`);
  for (let rank = 0; rank < n; rank++) t.ok(ok.some((l) => l.includes(`hello rank=${rank} size=${n} `)), `rank ${rank} of ${n} OK`);
  return r;
}

t.test('--pmi auto: tcp for debuggers and tracers, fd for anything else', async (t) => {
  for (const p of ['lldb', 'lldb-14', '/usr/bin/lldb-14.0', 'gdb', '/usr/bin/gdb', 'gdb-multiarch', 'gdbserver', 'cuda-gdb', 'valgrind', 'rr', 'strace', 'ltrace']) t.ok(startsRankItself(p), p);
  for (const p of ['./hello', 'hello', 'lldb.sh', 'mygdb', 'python3', 'env', 'valgrind-di-server']) t.notOk(startsRankItself(p), p);
});

t.test('--attach takes an optional value: --attach=R, --attach R, --attach all, bare --attach', async (t) => {
  const split = (argv: string[]) => splitCommand(wrapSpec, argv);
  t.same(split(['--attach', '2', '--', './p']), { ours: ['--attach=2'], command: ['./p'] });
  t.same(split(['--attach=3', './p', '-x']), { ours: ['--attach=3'], command: ['./p', '-x'] });
  t.same(split(['--attach', 'all', './p']), { ours: ['--attach=all'], command: ['./p'] });
  t.same(split(['--attach', './p', '2']), { ours: ['--attach=all'], command: ['./p', '2'] }, 'the program is never taken for the rank');
  t.same(split(['--attach', '--', './p']), { ours: ['--attach=all'], command: ['./p'] });
  t.same(split(['--pmi', 'tcp', '--attach', '--hold', '5s', 'lldb']), { ours: ['--pmi', 'tcp', '--attach=all', '--hold', '5s'], command: ['lldb'] });
});

t.test('wrap --help states the --pmi auto rule and --attach; bad values are usage errors (exit 2)', { skip: mpich ?? false }, async (t) => {
  const help = await runCli(['wrap', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /--pmi fd\|tcp\|unix\|auto/);
  t.match(help.stdout, /auto {2}tcp when the program's basename is a debugger or tracer/);
  t.match(help.stdout, /--attach\[=RANK\|all\]/);
  for (const [args, re] of [
    [['wrap', '--pmi', 'pipe', '--', 'true'], /--pmi must be fd, tcp, unix or auto, got "pipe"/],
    [['wrap', '--attach=two', '--', 'true'], /--attach takes a rank or all, got "two"/],
  ] as const) {
    const r = await runCli(args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, re);
  }
  const r = await hydra(['-n', '2', 'pmibridge', 'wrap', '--attach', '5', '--', 'true']);
  t.not(r.code, 0, 'a rank the job does not have');
  t.match(r.stderr, /--attach 5: the job has 2 rank\(s\), 0 to 1/);
});

t.test('what the child gets: --pmi tcp (no PMI_FD), unix, fd, and auto for a plain program', { skip: mpich ?? false }, async (t) => {
  // The child prints its PMI variables, then is a real PMI client (pmibridge's) on them.
  const show = ['sh', '-c', 'echo "rank=$PMI_RANK fd=${PMI_FD-unset} port=${PMI_PORT-unset} id=${PMI_ID-unset} size=$PMI_SIZE" && exec pmibridge pmi barrier'];
  const cases: Array<[string[], RegExp]> = [
    [['--pmi', 'tcp'], /^rank=(\d) fd=unset port=127\.0\.0\.1:\d+ id=\1 size=2$/],
    [['--pmi', 'unix'], /^rank=(\d) fd=unset port=unix:\/\/\/\S+ id=\1 size=2$/],
    [['--pmi', 'fd'], /^rank=(\d) fd=3 port=unix:\/\/\/\S+ id=\1 size=2$/],
    [[], /^rank=(\d) fd=3 port=unix:\/\/\/\S+ id=\1 size=2$/],
  ];
  for (const [wrap, re] of cases) {
    const r = await hydra(['-n', '2', 'pmibridge', 'wrap', ...wrap, '--', ...show]);
    t.equal(r.code, 0, `wrap ${wrap.join(' ')}: exit 0 (stderr: ${r.stderr})`);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('rank='));
    t.equal(lines.length, 2, `wrap ${wrap.join(' ')}: both ranks`);
    for (const l of lines) t.match(l, re, `wrap ${wrap.join(' ')}: ${l}`);
  }
});

t.test("the issue's command: mpiexec.hydra -n 4 pmibridge wrap --pmi tcp -- lldb --batch -o run -- ./hello", { skip: skipFor('lldb') }, async (t) => {
  const r = await jobUnder(t, 4, { wrap: ['--pmi', 'tcp'], tool: LLDB });
  t.notMatch(r.stdout + r.stderr, /ModuleNotFoundError/, 'lldb quiet with PYTHONPATH');
});

t.test('under lldb, upstream hydra -pmi-port', { skip: skipFor('lldb') }, async (t) => {
  await jobUnder(t, 2, { pmiPort: true, wrap: ['--pmi', 'tcp'], tool: LLDB });
});

t.test('--pmi auto picks tcp for lldb (what --pmi fd cannot do: lldb closes fd 3)', { skip: skipFor('lldb') }, async (t) => {
  await jobUnder(t, 2, { wrap: [], tool: LLDB });
});

t.test('only one rank under lldb (MPMD): hydra -n 1 wrap ./hello : -n 1 wrap lldb … ./hello', { skip: skipFor('lldb') }, async (t) => {
  const hello = mpiProgram('hello');
  const r = await hydra(['-n', '1', 'pmibridge', 'wrap', '--', hello, ':', '-n', '1', 'pmibridge', 'wrap', '--', ...LLDB, hello]);
  t.equal(r.code, 0, `the job exits 0 (stderr: ${r.stderr})`);
  t.match(r.stdout, /hello rank=0 size=2 .* OK$/m, 'rank 0, started plainly (PMI_FD)');
  t.match(r.stdout, /hello rank=1 size=2 .* OK$/m, 'rank 1, under lldb (PMI_PORT)');
  t.match(r.stdout, /Process \d+ exited with status = 0/, 'lldb ran rank 1');
});

for (const pmiPort of [false, true]) {
  t.test(`under gdb, upstream hydra ${pmiPort ? '-pmi-port' : 'PMI_FD'}`, { skip: skipFor('gdb') }, async (t) => {
    const r = await jobUnder(t, 2, { pmiPort, wrap: ['--pmi', 'tcp'], tool: GDB });
    t.match(r.stdout, /\[Inferior 1 \(process \d+\) exited normally\]/, 'gdb ran the rank');
  });
}

t.test('under valgrind -q, upstream hydra PMI_FD', { skip: skipFor('valgrind') }, async (t) => {
  await jobUnder(t, 2, { wrap: ['--pmi', 'tcp'], tool: VALGRIND });
});

t.test('under valgrind -q, upstream hydra -pmi-port, --pmi auto', { skip: skipFor('valgrind') }, async (t) => {
  await jobUnder(t, 2, { pmiPort: true, wrap: [], tool: VALGRIND });
});

/** A hydra job in the background whose wrap(s) wait for a hand-started rank. */
async function waitingJob(t: Test, n: number, wrap: readonly string[], rank: number) {
  const job: ChildProcess = spawn('mpiexec.hydra', ['-n', String(n), 'pmibridge', 'wrap', ...wrap, '--', mpiProgram('hello')], {
    env: envWithPmibridge(LLDB_ENV),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (job.exitCode === null && job.signalCode === null) job.kill('SIGKILL');
  });
  const out = collect(job);
  await until(`wrap's "waiting for rank ${rank}" line (stderr so far: ${out.stderr})`, () => new RegExp(`waiting for rank ${rank} to connect`).test(out.stderr), 30_000);
  const env = attachEnv(out.stderr);
  t.same(Object.keys(env).sort(), ['PMI_ID', 'PMI_PORT', 'PMI_RANK', 'PMI_SIZE'], 'PMI_PORT, PMI_ID, PMI_RANK, PMI_SIZE; never PMI_FD');
  t.equal(env['PMI_RANK'], String(rank));
  t.equal(env['PMI_SIZE'], String(n));
  t.match(env['PMI_PORT'], /^127\.0\.0\.1:\d+$/, 'loopback TCP: what MPICH parses');
  return { job, out, env, port: (env['PMI_PORT'] as string).split(':')[1] as string };
}

const startRank = (cmd: readonly string[], env: Record<string, string>) =>
  runCommand(cmd[0] as string, [...cmd.slice(1), mpiProgram('hello')], { env: { ...envWithPmibridge(LLDB_ENV), ...env }, timeoutMs: JOB_MS });

t.test('wrap --attach 2 under hydra -n 3: rank 2 started by the test under gdb; a wrong PMI_ID is refused and the right one still works', { skip: skipFor('gdb') }, async (t) => {
  const { job, out, env, port } = await waitingJob(t, 3, ['--attach', '2'], 2);
  t.match(out.stderr, /^ {2}env PMI_PORT=\S+ PMI_ID=2 PMI_RANK=2 PMI_SIZE=3 gdb -batch -ex run --args \S+hello$/m, 'the gdb command line is printed');
  t.equal(out.stderr.match(/is not started/g)?.length, 1, 'only rank 2\'s slot waits; ranks 0 and 1 run');

  const wrong = await runCommand(process.execPath, ['-e', probe('cmd=initack pmiid=7\n'), port], { timeoutMs: 15_000 });
  t.match(wrong.stdout, /cmd=initack rc=-1 msg=no_session_for_pmiid_7/, 'the wrong PMI_ID is told no');
  await until('the refusal on wrap\'s stderr', () => /refused client/.test(out.stderr));
  t.match(out.stderr, /^pmibridge wrap: refused client \d+: PMI_ID 7 is not served by this relay; this wrap serves rank 2 only: use PMI_ID=2 with PMI_PORT=127\.0\.0\.1:\d+; still waiting for rank 2$/m, 'one clear line');

  const rank2 = await startRank(GDB, env);
  t.match(rank2.stdout, /hello rank=2 size=3 .* OK/, 'rank 2 ran under gdb');
  const status = await exitOf(job, JOB_MS);
  t.equal(status.code, 0, `the job completed (stderr: ${out.stderr})`);
  t.equal(okLines(out.stdout).length, 2, 'ranks 0 and 1, started by wrap, completed');
});

t.test('wrap --attach 1: another uid is refused with a logged reason, then the rank under lldb', { skip: mpich ?? toolMissing('lldb') ?? otherUserMissing() ?? false }, async (t) => {
  const { job, out, env, port } = await waitingJob(t, 2, ['--attach=1'], 1);
  const intruder = await asOther('cmd=initack pmiid=1\n', port);
  const uid = otherUid();
  t.match(intruder.stdout, new RegExp(`cmd=error rc=-1 msg=uid_${uid}_not_allowed`), 'the other uid is told why');
  await until('the refusal on wrap\'s stderr', () => /refused a connection/.test(out.stderr));
  t.match(out.stderr, new RegExp(`^pmibridge wrap: refused a connection from \\S+.*: it runs as uid ${uid}, and only uid ${process.getuid?.() ?? 0} \\(which runs this wrap\\) may join rank 1; start the rank as uid \\d+; still waiting for rank 1$`, 'm'));
  const rank1 = await startRank(LLDB, env);
  t.match(rank1.stdout, /hello rank=1 size=2 .* OK\r?$/m, 'rank 1 ran under lldb');
  t.equal((await exitOf(job, JOB_MS)).code, 0, `the job completed (stderr: ${out.stderr})`);
  t.equal(okLines(out.stdout).length, 1, 'rank 0 completed');
});

t.test('bare --attach: every slot waits; a hand-started rank that quits before finalize fails the slot', { skip: mpich ?? false }, async (t) => {
  const { job, out, port } = await waitingJob(t, 1, ['--attach'], 0);
  // A client that joins and leaves without finalize: with --hold 0 (wrap's default) that is a failed rank.
  const quitter = "const s=require('net').connect(+process.argv[1],'127.0.0.1');s.on('data',d=>{console.log(String(d).trim());s.destroy()});s.write('cmd=initack pmiid=0\\n')";
  const q = await runCommand(process.execPath, ['-e', quitter, port], { timeoutMs: 15_000 });
  t.match(q.stdout, /cmd=initack rc=0 rank=0 size=1/, 'the hand-started client was admitted');
  const status = await exitOf(job, 30_000);
  t.not(status.code, 0, 'the job fails');
  t.match(out.stderr, /pmibridge wrap: rank 0 \(started by hand\) ended without PMI finalize: client disconnected before finalize/);
});
