// Issue 12: Slurm 22.05's stepd as a PMI-2 server (`srun --mpi=pmi2`). Its own libpmi2 client as
// the reference, then pmibridge's PMI-2 client against it. A private Slurm for this file
// (test/fixtures/slurm.ts): root only; in CI a must.
import t from 'tap';
import { pmi2Exchange, pmi2Missing } from './fixtures/pmi2.js';
import { slurmForFile, slurmMissing } from './fixtures/slurm.js';

const skip = slurmMissing() ?? pmi2Missing() ?? false;
const need = slurmForFile(t, skip);

/** srun the job; wait for its step's end in slurmd's log. */
async function job(args: readonly string[]) {
  const s = need();
  const mark = s.slurmdLogSize();
  const r = await s.srun(args);
  await s.stepsDone(mark);
  return r;
}

t.test('the reference: srun --mpi=pmi2 -n 2 with Slurm libpmi2 ranks (no pmibridge)', { skip }, async (t) => {
  const r = await job(['-n', '2', pmi2Exchange()]);
  t.equal(r.code, 0, `srun exits 0 (stderr: ${r.stderr})`);
  t.equal(r.stdout.split('\n').filter((l) => l.startsWith('OK pmi2 ')).length, 2);
});

t.test("pmibridge's PMI-2 client against the stepd: pmi exchange and pmi info --json --pmi-version 2", { skip }, async (t) => {
  const r = await job(['-n', '4', 'pmibridge', 'pmi', 'exchange', '--pmi-version', '2', '--count', '2']);
  t.equal(r.code, 0, `srun exits 0 (stderr: ${r.stderr})`);
  t.equal(r.stdout.match(/read 8 keys from 4 ranks: OK/g)?.length, 4, 'every rank read every key');
  const info = await job(['-n', '2', 'pmibridge', 'pmi', 'info', '--json', '--pmi-version', '2']);
  t.equal(info.code, 0, `srun exits 0 (stderr: ${info.stderr})`);
  const rows = info.stdout.trim().split('\n').map((l) => JSON.parse(l) as { rank: number; size: number; kvsname: string; pmiVersion: number });
  t.same(rows.map((r) => r.rank).sort(), [0, 1]);
  t.ok(rows.every((r) => r.size === 2 && r.pmiVersion === 2 && /^\d+\.\d+$/.test(r.kvsname)), `the job id is the step (jobid.stepid): ${info.stdout}`);
});
