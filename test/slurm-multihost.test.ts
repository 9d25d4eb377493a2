// Issue 11 item 3(b): `srun -N 2` across 2 hosts, one slurmd per host (test/fixtures/slurm-hosts.ts:
// network-namespace hosts h1, h2 on a bridge; slurmctld in h1; srun run inside h1). pmibridge's own
// client directly and through `pmibridge wrap --`: `pmi exchange` with 4 ranks on 2 nodes, and
// `pmi info --json` through wrap, ranks on both hostnames with one kvsname. MPICH across hosts is
// left out (MPICH 4.0.2's finalize deadlock across hosts: deploy/launchers.md). Root only; in CI a
// must.
import t, { type Test } from 'tap';
import { countFlood } from './fixtures/slurm.js';
import { slurmHostsMissing, slurmHostsUp, type SlurmHosts } from './fixtures/slurm-hosts.js';

const skip = slurmHostsMissing() ?? false;
let cluster: SlurmHosts | undefined;
t.before(async () => {
  if (!skip) cluster = await slurmHostsUp(t, 2);
});
const need = (): SlurmHosts => {
  if (!cluster) throw new Error('Slurm is not up');
  return cluster;
};

const N = 4;
/** 4 tasks on 2 nodes: `-N 2 -n 4` (at least one on each; Slurm may place 2+2 or 3+1). */
const spread = ['-N', '2', '-n', String(N)];

function quiet(t: Test, what: string, text: string) {
  t.equal(countFlood(text), 0, `${what}: no "mpi/pmi2: read length 0"`);
  t.notMatch(text, /fatal: this is impossible|invalid PMI1 init command/, `${what}: no stepd PMI error`);
}

t.test('the cluster: 2 nodes idle, h1 and h2, 4 CPUs each', { skip }, async (t) => {
  const r = await need().client('sinfo', ['-h', '-N', '-o', '%N %T %c']);
  t.equal(r.code, 0, `sinfo exits 0 (stderr: ${r.stderr})`);
  t.same(r.stdout.trim().split('\n').sort(), ['h1 idle 4', 'h2 idle 4']);
});

for (const [how, prefix] of [
  ['directly', []],
  ['through wrap', ['pmibridge', 'wrap', '--']],
] as const) {
  t.test(`srun -N 2 -n 4 --mpi=pmi2 ${prefix.join(' ')}${prefix.length ? ' ' : ''}pmibridge pmi exchange`, { skip }, async (t) => {
    // -N 2: Slurm puts at least one task on each node, so the exchange crosses hosts.
    const r = await need().srun([...spread, ...prefix, 'pmibridge', 'pmi', 'exchange']);
    t.equal(r.code, 0, `${how}: srun exits 0 (stderr: ${r.stderr})`);
    for (let rank = 0; rank < N; rank++) t.match(r.stdout, new RegExp(`^exchange: rank ${rank}/${N} read ${N} keys from ${N} ranks: OK`, 'm'), `${how}: rank ${rank} read every key`);
    quiet(t, `${how}: srun stderr`, r.stderr);
  });
}

t.test('srun -N 2 -n 4 --mpi=pmi2 pmibridge wrap -- pmibridge pmi info --json: both hostnames, one kvsname', { skip }, async (t) => {
  // Each task prints its host before the rank's JSON: `host=h1 {"rank":0,…}`.
  const r = await need().srun([...spread, 'pmibridge', 'wrap', '--', 'sh', '-c', 'echo "host=$(hostname) $(pmibridge pmi info --json)"']);
  t.equal(r.code, 0, `srun exits 0 (stderr: ${r.stderr})`);
  const rows = r.stdout
    .split('\n')
    .map((l) => /^host=(\S+) (\{.*\})$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m): Record<string, unknown> => ({ ...(JSON.parse(m[2] ?? '{}') as Record<string, unknown>), hostname: m[1] }))
    .sort((a, b) => Number(a['rank']) - Number(b['rank']));
  t.equal(rows.length, N, `one line per rank (stdout: ${r.stdout})`);
  for (const [i, row] of rows.entries()) {
    t.match(row, { rank: i, size: N, appnum: -1, universeSize: N, kvsname: /^\d+\.0$/ }, `rank ${i}: ${JSON.stringify(row)}`);
  }
  t.equal(new Set(rows.map((row) => row['kvsname'])).size, 1, 'one kvsname for all ranks');
  t.same([...new Set(rows.map((row) => row['hostname']))].sort(), ['h1', 'h2'], 'ranks on both hostnames');
  // Slurm's block distribution: h1's ranks first (how many on each is Slurm's choice: 2+2 or 3+1).
  const order = rows.map((row) => String(row['hostname']));
  t.same(order, [...order].sort(), `block distribution, h1's ranks before h2's: ${order.join(' ')}`);
  quiet(t, 'srun stderr', r.stderr);
});
