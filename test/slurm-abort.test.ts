// Issue 11, "What did not" #2: MPI_Abort under Slurm 22.05 (`srun --mpi=pmi2`), with and without
// `pmibridge wrap`. Slurm cancels the step (SIGKILL to every task: srun exits 137) either way.
// Before the fix, wrap shut its end of the stepd's PMI socket down once the rank was gone, and
// the stepd, which holds a copy of that end, read EOF in a loop until the step ended: 4,000–9,000
// lines of `slurmstepd: error: mpi/pmi2: read length 0` in srun's stderr and slurmd's log, in
// about one run of three. Several runs each way, counted in both places; the bound is zero, as
// without wrap. A private Slurm (test/fixtures/slurm.ts): root only; in CI a must.
import t from 'tap';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';
import { countFlood, slurmForFile, slurmMissing } from './fixtures/slurm.js';

const skip = slurmMissing() ?? mpichMissing() ?? false;
const need = slurmForFile(t, skip);

/** Runs per way (with wrap, without): the flood showed in about one run of three. */
const RUNS = 8;

interface AbortRun {
  readonly code: number | null;
  readonly stderr: string;
  readonly flood: { srun: number; slurmd: number };
}

async function abortJob(n: number, prefix: readonly string[]): Promise<AbortRun> {
  const s = need();
  const mark = s.slurmdLogSize();
  const r = await s.srun(['-n', String(n), ...prefix, mpiProgram('abort')]);
  await s.stepsDone(mark);
  return { code: r.code, stderr: r.stderr, flood: { srun: countFlood(r.stderr), slurmd: countFlood(s.slurmdLog(mark)) } };
}

t.test(`MPI_Abort in rank 1 of 2, ${RUNS} runs with wrap and ${RUNS} without: the same exit status, no stepd flood`, { skip }, async (t) => {
  const runs: Record<'plain' | 'wrap', AbortRun[]> = { plain: [], wrap: [] };
  for (let i = 0; i < RUNS; i++) {
    runs.plain.push(await abortJob(2, []));
    runs.wrap.push(await abortJob(2, ['pmibridge', 'wrap', '--']));
  }
  for (const [how, rs] of Object.entries(runs)) {
    t.comment(`${how}: exit statuses ${rs.map((r) => r.code).join(' ')}; flood lines (srun stderr/slurmd log) ${rs.map((r) => `${r.flood.srun}/${r.flood.slurmd}`).join(' ')}`);
    for (const [i, r] of rs.entries()) {
      t.match(r.stderr, /application called MPI_Abort\(MPI_COMM_WORLD, 7\)/, `${how} run ${i + 1}: MPICH's abort message`);
      t.match(r.stderr, /STEP \d+\.0 ON \S+ CANCELLED/, `${how} run ${i + 1}: Slurm cancelled the step`);
      t.equal(r.flood.srun, 0, `${how} run ${i + 1}: no "read length 0" in srun's stderr`);
      t.equal(r.flood.slurmd, 0, `${how} run ${i + 1}: none in slurmd's log`);
    }
  }
  const plain = runs.plain.map((r) => r.code);
  t.equal(new Set(plain).size, 1, `without wrap, always the same status (${plain.join(' ')})`);
  t.equal(plain[0], 137, 'the step was killed: 128+SIGKILL');
  t.same(
    runs.wrap.map((r) => r.code),
    plain,
    'with wrap, the same status as without',
  );
});

t.test('MPI_Abort in rank 1 of 8 through wrap (more ranks, more chances for the race)', { skip }, async (t) => {
  const plain = await abortJob(8, []);
  const wrapped = await abortJob(8, ['pmibridge', 'wrap', '--']);
  t.comment(`flood lines (srun stderr/slurmd log): plain ${plain.flood.srun}/${plain.flood.slurmd}, wrap ${wrapped.flood.srun}/${wrapped.flood.slurmd}`);
  t.equal(wrapped.code, plain.code, `the same exit status (${plain.code}) with and without wrap`);
  t.same(wrapped.flood, { srun: 0, slurmd: 0 }, 'no stepd flood through wrap');
  t.same(plain.flood, { srun: 0, slurmd: 0 }, 'none without');
});

t.test('MPI_Abort through wrap --pmi tcp (the rank on wrap\'s loopback TCP, as under a debugger)', { skip }, async (t) => {
  const r = await abortJob(2, ['pmibridge', 'wrap', '--pmi', 'tcp', '--']);
  t.equal(r.code, 137, 'the step was killed: 137');
  t.same(r.flood, { srun: 0, slurmd: 0 }, 'no stepd flood');
});
