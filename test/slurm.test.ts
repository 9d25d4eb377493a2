// Issue 11: pmibridge inside Slurm 22.05 (Debian 12), single node, `srun --mpi=pmi2`: the stepd
// serves the PMI-1 wire on PMI_FD. MPICH 4.0.2 ranks through `wrap` (1, 2, 8 ranks), one `relay
// --upstream env` per task, pmibridge's own client directly and through wrap, a non-PMI program
// under wrap, a rank under gdb (`wrap --pmi tcp`), and the tap on a wrap. A private Slurm per test
// file (test/fixtures/slurm.ts): root only; in CI a must. MPI_Abort: slurm-abort.test.ts.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collect, exitOf, runCli, startCli, until } from './fixtures/cli.js';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';
import { countFlood, slurmForFile, slurmMissing } from './fixtures/slurm.js';
import { toolMissing } from './fixtures/tools.js';
import type { TapEv } from './fixtures/tap.js';

const skip = slurmMissing() ?? mpichMissing() ?? false;
const need = slurmForFile(t, skip);

const okLines = (out: string) => out.split('\n').filter((l) => /^hello rank=\d+ size=\d+ .* OK$/.test(l));

/** No stepd trouble in what a job printed or logged: flood, fatal, bad init. */
function quietStepd(t: Test, what: string, text: string) {
  t.equal(countFlood(text), 0, `${what}: no "mpi/pmi2: read length 0"`);
  t.notMatch(text, /fatal: this is impossible|invalid PMI1 init command/, `${what}: no stepd PMI error`);
}

/** srun the job; wait for its step's end in slurmd's log; the result and what slurmd logged meanwhile. */
async function job(args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}) {
  const s = need();
  const mark = s.slurmdLogSize();
  const r = await s.srun(args, opts);
  await s.stepsDone(mark);
  return { ...r, log: s.slurmdLog(mark) };
}

async function helloJob(t: Test, n: number, prefix: readonly string[]) {
  const r = await job(['-n', String(n), ...prefix, mpiProgram('hello')]);
  t.equal(r.code, 0, `srun exits 0 (stderr: ${r.stderr})`);
  const ok = okLines(r.stdout);
  t.equal(ok.length, n, `every rank printed its OK line (stdout: ${r.stdout})`);
  for (let rank = 0; rank < n; rank++) t.ok(ok.some((l) => l.startsWith(`hello rank=${rank} size=${n} `)), `rank ${rank} of ${n}`);
  quietStepd(t, 'srun stderr', r.stderr);
  quietStepd(t, 'slurmd log', r.log);
}

t.test('wrap --help names --tap (the tap on a wrap)', async (t) => {
  const help = await runCli(['wrap', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /\[--tap URL\]/);
  t.match(help.stdout, /--tap URL {2,}stream all PMI traffic/);
  const r = await runCli(['wrap', '--upstream', 'unix:///nonexistent/pmi.sock', '--tap-redact', 'values', '--', 'true']);
  t.equal(r.code, 2, '--tap-redact without --tap is a usage error');
  t.match(r.stderr, /--tap-redact needs --tap/);
});

for (const n of [1, 2, 8]) {
  t.test(`srun -n ${n} --mpi=pmi2 pmibridge wrap -- ./hello`, { skip }, async (t) => {
    await helloJob(t, n, ['pmibridge', 'wrap', '--']);
  });
}

t.test('the same job without wrap (what wrap must match)', { skip }, async (t) => {
  await helloJob(t, 2, []);
});

t.test('a program that never speaks PMI under wrap: its status, at once, and the stepd unharmed', { skip }, async (t) => {
  // Before the fix, wrap shut its end down and the stepd read EOF as the init line, then died
  // ("fatal: this is impossible"); srun hung until its time limit.
  for (const [prog, code] of [
    [['true'], 0],
    [['sh', '-c', 'exit 3'], 3],
  ] as const) {
    const r = await job(['-n', '2', 'pmibridge', 'wrap', '--', ...prog]);
    t.equal(r.code, code, `wrap -- ${prog.join(' ')}: srun exits ${code} (stderr: ${r.stderr})`);
    t.ok(r.ms < 30_000, `and soon (${Math.round(r.ms)} ms)`);
    quietStepd(t, 'srun stderr', r.stderr);
    quietStepd(t, 'slurmd log', r.log);
  }
});

t.test('one pmibridge relay --upstream env per task, the rank on its PMI_PORT', { skip }, async (t) => {
  // The task is a shell: relay on the stepd's PMI_FD, then the rank with PMI_PORT+PMI_ID and no
  // PMI_FD (MPICH would take PMI_FD first). The relay exits 0 once its one session finalized.
  const task = [
    'out=$(mktemp)',
    'pmibridge relay --upstream env --sessions 1 >"$out" & relay=$!',
    'i=0; until grep -q "^PMI_PORT=" "$out"; do i=$((i+1)); [ $i -lt 600 ] || exit 98; sleep 0.05; done',
    'port=$(sed -n "s/^PMI_PORT=//p" "$out"); rm -f "$out"',
    'echo "task $PMI_RANK: relay on $port" >&2',
    'env -u PMI_FD PMI_PORT="$port" PMI_ID="$PMI_RANK" "$@" || exit $?',
    'wait $relay',
  ].join('\n');
  const n = 3;
  const r = await job(['-n', String(n), 'sh', '-c', task, 'sh', mpiProgram('hello')]);
  t.equal(r.code, 0, `srun exits 0: every rank and every relay (stderr: ${r.stderr})`);
  t.equal(okLines(r.stdout).length, n, `every rank OK (stdout: ${r.stdout})`);
  t.equal(r.stderr.match(/relay on 127\.0\.0\.1:\d+/g)?.length, n, 'one relay per task, on loopback TCP');
  quietStepd(t, 'srun stderr', r.stderr);
  quietStepd(t, 'slurmd log', r.log);
});

t.test("pmibridge's own client under srun, directly and through wrap: pmi exchange, pmi info --json", { skip }, async (t) => {
  const n = 3;
  const infos: Record<string, Array<Record<string, unknown>>> = {};
  for (const [how, prefix] of [
    ['direct', []],
    ['wrap', ['pmibridge', 'wrap', '--']],
  ] as const) {
    const ex = await job(['-n', String(n), ...prefix, 'pmibridge', 'pmi', 'exchange']);
    t.equal(ex.code, 0, `${how}: pmi exchange exits 0 (stderr: ${ex.stderr})`);
    for (let rank = 0; rank < n; rank++) t.match(ex.stdout, new RegExp(`^exchange: rank ${rank}/${n} read ${n} keys from ${n} ranks: OK`, 'm'), `${how}: rank ${rank} read every key`);
    const info = await job(['-n', String(n), ...prefix, 'pmibridge', 'pmi', 'info', '--json']);
    t.equal(info.code, 0, `${how}: pmi info exits 0 (stderr: ${info.stderr})`);
    const rows = info.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .sort((a, b) => Number(a['rank']) - Number(b['rank']));
    t.equal(rows.length, n, `${how}: one line per rank`);
    // Slurm's answers (peers-2026-12.md): kvsname = jobid.stepid, appnum -1, its maxes.
    for (const [i, row] of rows.entries()) {
      t.match(row, { rank: i, size: n, appnum: -1, universeSize: n, kvsname: /^\d+\.0$/, maxes: { kvsnameMax: 256, keylenMax: 64, vallenMax: 1024 } }, `${how}: rank ${i}: ${JSON.stringify(row)}`);
    }
    infos[how] = rows.map(({ kvsname: _k, ...rest }) => rest);
    for (const r of [ex, info]) quietStepd(t, `${how}: slurmd log`, r.log);
  }
  t.same(infos['wrap'], infos['direct'], 'through wrap, every rank learns what it learns directly (but the job id)');
});

t.test('a rank under gdb: srun -n 2 pmibridge wrap --pmi tcp -- gdb -batch -ex run --args ./hello', { skip: skip || (toolMissing('gdb') ?? false) }, async (t) => {
  const r = await job(['-n', '2', 'pmibridge', 'wrap', '--pmi', 'tcp', '--', 'gdb', '-batch', '-ex', 'run', '--args', mpiProgram('hello')]);
  t.equal(r.code, 0, `srun exits 0 (stderr: ${r.stderr})`);
  t.equal(okLines(r.stdout).length, 2, `both ranks OK (stdout: ${r.stdout})`);
  t.equal(r.stdout.match(/\[Inferior 1 \(process \d+\) exited normally\]/g)?.length, 2, 'gdb ran each rank');
  quietStepd(t, 'slurmd log', r.log);
});

t.test('the tap on a wrap: srun --label pmibridge wrap --tap ws://127.0.0.1:0, watched with pmibridge tap --json', { skip }, async (t) => {
  const s = need();
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-slurm-tap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const go = join(dir, 'go');
  // Each rank waits for the test's go, so the observers see every line from the first.
  const n = 2;
  const mark = s.slurmdLogSize();
  const srun = s.spawnSrun(['-n', String(n), '--label', 'pmibridge', 'wrap', '--tap', 'ws://127.0.0.1:0', '--', 'sh', '-c', `while [ ! -e ${go} ]; do sleep 0.05; done; exec "$0"`, mpiProgram('hello')]);
  const out = collect(srun);
  const tapLine = /^(\d+): pmibridge wrap: tap on (ws:\/\/127\.0\.0\.1:\d+) token=(\S+)$/gm;
  await until(`both wraps' tap lines (stderr: ${out.stderr})`, () => (out.stderr.match(tapLine)?.length ?? 0) === n, 60_000);
  const viewers = [...out.stderr.matchAll(tapLine)].map((m) => {
    const viewer = startCli(['tap', m[2] as string, '--token', m[3] as string, '--json']);
    return { task: Number(m[1]), viewer, out: collect(viewer) };
  });
  for (const v of viewers) await until(`the viewer of task ${v.task} connected`, () => v.out.stdout.includes('"kind":"snapshot"'), 30_000);
  writeFileSync(go, '');
  const status = await exitOf(srun, 90_000);
  t.equal(status.code, 0, `srun exits 0 (stderr: ${out.stderr})`);
  t.equal(okLines(out.stdout.replace(/^\d+: /gm, '')).length, n, 'every rank OK');
  for (const v of viewers) {
    const code = (await exitOf(v.viewer, 15_000)).code;
    t.equal(code, 0, `task ${v.task}: pmibridge tap exits 0 when its wrap ends (stderr: ${v.out.stderr})`);
    const events = v.out.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as TapEv);
    t.match(events[0], { kind: 'hello', role: 'relay', job: /^PMI_FD=\d+$/ }, `task ${v.task}: hello from a relay on the stepd's PMI_FD`);
    const lines = (leg: string) => events.filter((e) => e.kind === 'line' && e.leg === leg).map((e) => e.line as string);
    // The stepd's own answers, seen on the upstream leg (peers-2026-12.md).
    t.ok(lines('upstream->relay').some((l) => /^cmd=my_kvsname rc=0 kvsname=\d+\.0$/.test(l)), `task ${v.task}: Slurm's my_kvsname (jobid.stepid)`);
    t.ok(lines('upstream->relay').includes('cmd=barrier_out rc=0'), `task ${v.task}: Slurm's barrier_out`);
    t.ok(lines('client->relay').includes('cmd=finalize'), `task ${v.task}: the rank's finalize`);
    t.ok(lines('relay->upstream').includes('cmd=finalize'), `task ${v.task}: forwarded`);
    t.ok(events.every((e) => e.kind !== 'line' || e.rank === v.task), `task ${v.task}: every line is rank ${v.task}'s`);
  }
  await s.stepsDone(mark);
  quietStepd(t, 'slurmd log', s.slurmdLog(mark));
});
