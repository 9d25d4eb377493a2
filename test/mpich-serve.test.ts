// Real MPICH 4.0.2 ranks as clients of `pmibridge serve`, started by the test with PMI_PORT/PMI_ID.
import t from 'tap';
import { exitOf, runCommand, startCli, waitForLine } from './fixtures/cli.js';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';

const skip = mpichMissing() ?? false;

for (const n of [2, 4]) {
  t.test(`serve --listen tcp://127.0.0.1:0 with ${n} hand-started MPICH ranks`, { skip }, async (t) => {
    const server = startCli(['serve', '--size', String(n), '--listen', 'tcp://127.0.0.1:0']);
    const [, port] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
    t.match(port, /^127\.0\.0\.1:\d+$/, 'advertised in the host:port form MPICH parses');
    const ranks = Array.from({ length: n }, (_, rank) =>
      runCommand(mpiProgram('hello'), [], { env: { ...process.env, PMI_PORT: port, PMI_ID: String(rank) }, timeoutMs: 60_000 }),
    );
    const results = await Promise.all(ranks);
    results.forEach((r, rank) => {
      t.equal(r.code, 0, `rank ${rank} exit 0`);
      t.match(r.stdout, new RegExp(`hello rank=${rank} size=${n} .* OK`));
    });
    const status = await exitOf(server);
    t.equal(status.code, 0, 'serve exits 0 once every rank finalized');
  });
}

t.test('serve --json prints one parseable object', { skip }, async (t) => {
  const server = startCli(['serve', '-n', '1', '--json', '--listen', '127.0.0.1:0', '--listen', 'unix']);
  const [line] = await waitForLine(server, /^\{.*\}$/);
  const info = JSON.parse(line) as { size: number; listeners: Array<{ PMI_PORT: string }> };
  t.equal(info.size, 1);
  t.equal(info.listeners.length, 2);
  t.match(info.listeners[1]?.PMI_PORT, /^unix:\/\/\/.*pmi\.sock$/);
  const r = await runCommand(mpiProgram('hello'), [], { env: { ...process.env, PMI_PORT: info.listeners[0]?.PMI_PORT, PMI_ID: '0' } });
  t.equal(r.code, 0);
  t.equal((await exitOf(server)).code, 0);
});
