// The relay with real peers: MPICH ranks through `wrap` (PMI_FD) and `relay` (TCP) to a
// Unix-socket server; hydra as the upstream; ranks started under debuggers through the relay.
import t from 'tap';
import { exitOf, runCommand, startCli, waitForLine, envWithPmibridge, runCli, collect } from './fixtures/cli.js';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';
import { attachJob } from './fixtures/attach.js';
import { toolMissing } from './fixtures/tools.js';

const skip = mpichMissing() ?? false;


async function unixServer(n: number, extra: string[] = []) {
  const server = startCli(['serve', '-n', String(n), '--listen', 'unix', ...extra]);
  const logs = collect(server);
  const [, port] = await waitForLine(server, /^PMI_PORT=(unix:\/\/\S+)$/);
  return { server, logs, port: port as string };
}

const okCount = (out: string) => out.split('\n').filter((l) => / OK$/.test(l)).length;

for (const n of [1, 2, 8]) {
  t.test(`${n} MPICH rank(s) in PMI_FD mode through pmibridge wrap to a Unix-socket server`, { skip }, async (t) => {
    const { server, port } = await unixServer(n);
    const ranks = Array.from({ length: n }, (_, i) =>
      runCli(['wrap', '--upstream', port, '--', mpiProgram('hello')], { env: envWithPmibridge({ PMI_ID: String(i) }), timeoutMs: 90_000 }),
    );
    const results = await Promise.all(ranks);
    results.forEach((r, i) => {
      t.equal(r.code, 0, `rank ${i} exit 0 (${r.stderr})`);
      t.match(r.stdout, new RegExp(`hello rank=${i} size=${n} .* OK`));
    });
    t.equal((await exitOf(server)).code, 0, 'the server saw every rank finalize');
  });

  t.test(`${n} MPICH rank(s) in TCP mode through pmibridge relay to a Unix-socket server`, { skip }, async (t) => {
    const { server, port } = await unixServer(n);
    const relay = startCli(['relay', '--upstream', port, '--listen', 'tcp://127.0.0.1:0', '--sessions', String(n)]);
    const [, relayPort] = await waitForLine(relay, /^PMI_PORT=(\S+)$/);
    t.match(relayPort, /^127\.0\.0\.1:\d+$/);
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) => runCommand(mpiProgram('hello'), [], { env: envWithPmibridge({ PMI_PORT: relayPort, PMI_ID: String(i) }), timeoutMs: 90_000 })),
    );
    results.forEach((r, i) => t.match(r.stdout, new RegExp(`hello rank=${i} size=${n} .* OK`), `rank ${i} OK`));
    t.equal((await exitOf(server)).code, 0, 'server: all finalized');
    t.equal((await exitOf(relay)).code, 0, `relay: all ${n} sessions finalized`);
  });
}

t.test('hydra as upstream: mpiexec.hydra -n 4 pmibridge wrap -- ./hello', { skip }, async (t) => {
  const r = await runCommand('mpiexec.hydra', ['-n', '4', 'pmibridge', 'wrap', '--', mpiProgram('hello')], { timeoutMs: 90_000 });
  t.equal(r.code, 0, `hydra exits 0 (stderr: ${r.stderr})`);
  t.equal(okCount(r.stdout), 4);
  t.equal(r.stderr, '', 'hydra has nothing to complain about');
});

t.test('hydra as upstream over PMI_PORT: mpiexec.hydra -pmi-port -n 4 pmibridge wrap -- ./hello', { skip }, async (t) => {
  const r = await runCommand('mpiexec.hydra', ['-pmi-port', '-launcher', 'fork', '-n', '4', 'pmibridge', 'wrap', '--', mpiProgram('hello')], { timeoutMs: 90_000 });
  t.equal(r.code, 0, `hydra exits 0 (stderr: ${r.stderr})`);
  t.equal(okCount(r.stdout), 4);
  t.equal(r.stderr, '', 'hydra has nothing to complain about');
});

for (const pmi of ['fd', 'tcp']) {
  t.test(`run --relay --pmi ${pmi}: MPICH ranks through the relay`, { skip }, async (t) => {
    const r = await runCli(['run', '--relay', '--pmi', pmi, '-n', '4', mpiProgram('hello')], { timeoutMs: 90_000 });
    t.equal(r.code, 0, r.stderr);
    t.equal(okCount(r.stdout), 4);
  });
}

t.test('run --relay --attach 1 with rank 1 under lldb (which closes inherited fds)', { skip: skip || (toolMissing('lldb') ?? false) }, async (t) => {
  await attachJob(t, ['--relay'], (prog) => ['lldb', '--batch', '-o', 'run', '--', prog]);
});

t.test('run --relay --attach 1 with rank 1 under gdb', { skip: skip || (toolMissing('gdb') ?? false) }, async (t) => {
  await attachJob(t, ['--relay'], (prog) => ['gdb', '-batch', '-ex', 'run', '--args', prog]);
});
