// The command line as users meet it: help, usage errors, exit codes, --attach.
import t from 'tap';
import { runCli, runCommand, startCli, exitOf, waitForLine } from './fixtures/cli.js';
import { mpichMissing } from './fixtures/mpich.js';
import { attachJob } from './fixtures/attach.js';
import { toolMissing } from './fixtures/tools.js';

t.test('--help on every command and subcommand', async (t) => {
  for (const args of [['--help'], ['run', '--help'], ['serve', '--help'], ['pmi', '--help'], ...['info', 'put', 'get', 'barrier', 'exchange'].map((s) => ['pmi', s, '--help'])]) {
    const r = await runCli(args);
    t.equal(r.code, 0, `${args.join(' ')} exits 0`);
    t.match(r.stdout, /Usage: pmibridge/, `${args.join(' ')} prints usage`);
  }
  const v = await runCli(['--version']);
  t.match(v.stdout, /^pmibridge \d+\.\d+\.\d+/);
});

t.test('usage errors exit 2 and say what to do', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['bogus'], /unknown command "bogus"/],
    [['run', 'true'], /number of ranks is required: -n N/],
    [['run', '-n', '2'], /no program given/],
    [['run', '-n', 'two', 'true'], /--np needs an integer/],
    [['run', '-n', '2', '--pmi', 'carrier-pigeon', 'true'], /--pmi must be fd, tcp or unix/],
    [['run', '-n', '2', '--attach', '5', 'true'], /--attach must be between 0 and 1/],
    [['run', '-n', '1', '--bogus', 'true'], /Unknown option '--bogus'/],
    [['serve'], /job size is required/],
    [['serve', '-n', '1', '--listen', 'tcp://nowhere'], /accepted forms: host:port, tcp:\/\/host:port/],
    [['pmi', 'frob'], /unknown pmi command/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(args);
    t.equal(r.code, 2, `${args.join(' ')} exits 2`);
    t.match(r.stderr, re, `${args.join(' ')}: clear message`);
    t.match(r.stderr, /--help/, 'points at --help');
  }
});

t.test('a program that cannot be started: exit 127 with the reason', async (t) => {
  const r = await runCli(['run', '-n', '2', '/nonexistent/prog']);
  t.equal(r.code, 127);
  t.match(r.stderr, /cannot start \/nonexistent\/prog: not found/);
});

t.test('a non-MPI program runs like under mpiexec; its exit code is the job status', async (t) => {
  const ok = await runCli(['run', '-n', '3', '-l', '--', 'sh', '-c', 'echo rank=$PMI_RANK size=$PMI_SIZE fd=$PMI_FD']);
  t.equal(ok.code, 0);
  for (const r of [0, 1, 2]) t.match(ok.stdout, new RegExp(`^\\[${r}\\] rank=${r} size=3 fd=3$`, 'm'), `rank ${r} got the hydra environment`);
  const bad = await runCli(['run', '-n', '2', '--', 'sh', '-c', 'exit $((PMI_RANK + 3))']);
  t.ok(bad.code === 3 || bad.code === 4, `the first failing rank's code (${bad.code})`);
  t.match(bad.stderr, /job failed: rank \d exited with code [34]/);
});

t.test('pmi commands outside a job explain what is missing', async (t) => {
  const r = await runCli(['pmi', 'info']);
  t.equal(r.code, 1);
  t.match(r.stderr, /neither PMI_FD nor PMI_PORT is set/);
  const closed = await runCli(['pmi', 'info'], { env: { ...process.env, PMI_FD: '200', PMI_RANK: '0', PMI_SIZE: '1' } });
  t.equal(closed.code, 1);
  t.match(closed.stderr, /PMI_FD=200 is not open in this process .*PMI_PORT and PMI_ID/);
  // fd 9 open on /dev/null: what a rank sees when a debugger closed PMI_FD and open() reused it
  const reused = await runCommand('sh', ['-c', 'PMI_FD=9 PMI_RANK=0 PMI_SIZE=1 exec pmibridge pmi info 9</dev/null'], { timeoutMs: 20_000 });
  t.equal(reused.code, 1);
  t.match(reused.stderr, /PMI_FD=9 is not a socket in this process .*PMI_PORT and PMI_ID/);
});

t.test('a closed PMI_FD falls back to PMI_PORT + PMI_ID when both are set (the lldb case)', async (t) => {
  const server = startCli(['serve', '-n', '1']);
  const [, port] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const r = await runCli(['pmi', 'info', '--json'], { env: { ...process.env, PMI_FD: '200', PMI_PORT: port, PMI_ID: '0' }, timeoutMs: 20_000 });
  t.equal(r.code, 0, r.stderr);
  t.match(JSON.parse(r.stdout) as object, { rank: 0, size: 1 });
  t.equal((await exitOf(server)).code, 0);
});

t.test('pmi put / get / barrier pair up within one job', async (t) => {
  const r = await runCli(['run', '-n', '2', '-l', '--', 'sh', '-c', 'if [ "$PMI_RANK" = 0 ]; then pmibridge pmi put color=blue; else pmibridge pmi get color; fi']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^\[1\] color=blue$/m);
  const b = await runCli(['run', '-n', '3', '--', 'pmibridge', 'pmi', 'barrier', '--count', '5', '--json']);
  t.equal(b.code, 0);
  t.equal(b.stdout.trim().split('\n').map((l) => JSON.parse(l) as { barriers: number }).filter((j) => j.barriers === 5).length, 3);
});

const mpichSkip = mpichMissing() ?? false;

t.test('--attach 1: rank 1 started by hand with the printed environment', { skip: mpichSkip }, async (t) => {
  await attachJob(t, [], (prog) => [prog]);
});

t.test('--attach 1: rank 1 started under gdb', { skip: mpichSkip || (toolMissing('gdb') ?? false) }, async (t) => {
  await attachJob(t, [], (prog) => ['gdb', '-batch', '-ex', 'run', '--args', prog]);
});

t.test('--attach 1: rank 1 started under lldb (which closes inherited fds)', { skip: mpichSkip || (toolMissing('lldb') ?? false) }, async (t) => {
  await attachJob(t, [], (prog) => ['lldb', '--batch', '-o', 'run', '--', prog]);
});

