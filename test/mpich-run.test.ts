// Real MPICH 4.0.2 ranks under `pmibridge run`: fd and tcp modes, 1/2/8 ranks, abort, early exit.
import t from 'tap';
import { runCli } from './fixtures/cli.js';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';

const skip = mpichMissing() ?? false;

const okLines = (out: string) => out.split('\n').filter((l) => /^hello rank=\d+ size=\d+ .* OK$/.test(l)).length;

for (const pmi of ['fd', 'tcp'] as const) {
  for (const n of [1, 2, 8]) {
    t.test(`MPI hello, ${n} rank(s), --pmi ${pmi}`, { skip }, async (t) => {
      const r = await runCli(['run', '-n', String(n), '--pmi', pmi, mpiProgram('hello')], { timeoutMs: 90_000 });
      t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr})`);
      t.equal(okLines(r.stdout), n, `${n} ranks report a correct ring and allreduce`);
      const sizes = new Set(r.stdout.match(/size=(\d+)/g));
      t.same([...sizes], [`size=${n}`], 'every rank sees the full job size');
    });
  }
}

t.test('--label prefixes each line with its rank', { skip }, async (t) => {
  const r = await runCli(['run', '-n', '2', '--label', mpiProgram('hello')], { timeoutMs: 60_000 });
  t.equal(r.code, 0);
  t.match(r.stdout, /^\[0\] hello rank=0 /m);
  t.match(r.stdout, /^\[1\] hello rank=1 /m);
});

for (const pmi of ['fd', 'tcp'] as const) {
  t.test(`MPI_Abort(…, 7) ends the job with exit status 7 (--pmi ${pmi})`, { skip }, async (t) => {
    const r = await runCli(['run', '-n', '3', '--pmi', pmi, mpiProgram('abort')], { timeoutMs: 60_000 });
    t.equal(r.code, 7, 'the abort code passes through');
    t.match(r.stderr, /job failed: rank 1 called abort with exit code 7/);
  });

  t.test(`a rank that exits before MPI_Finalize fails the job fast (--pmi ${pmi})`, { skip }, async (t) => {
    const r = await runCli(['run', '-n', '3', '--pmi', pmi, mpiProgram('earlyexit')], { timeoutMs: 60_000 });
    t.equal(r.code, 5, "the failing rank's exit code");
    t.match(r.stderr, /job failed: rank 1 exited with code 5/, 'one line saying which rank and why');
    t.equal(r.stderr.trim().split('\n').filter((l) => /job failed/.test(l)).length, 1, 'said once');
  });
}
