// Reconnection through the relay, with pmibridge's own client as the ranks (`pmibridge pmi
// exchange`: put own key, barrier, read everyone's, barrier, finalize):
// - a rank killed with SIGKILL while waiting in a barrier is replaced by a new process with the
//   same PMI_ID, which re-sends its in-flight barrier_in and finishes; the other ranks and the
//   server never notice, and the KVS is complete;
// - the same with the old connection left half-open (the process is stopped, not dead), as a CRIU
//   restore leaves it: the newer connection wins;
// - a rank that never comes back: its hold expires and the job fails with a clear message.
import t from 'tap';
import { exitOf, runCli, startCli, waitForLine, envWithPmibridge, collect, until } from './fixtures/cli.js';



async function job(size: number, hold: string) {
  const server = startCli(['serve', '-n', String(size), '--listen', 'unix', '--log-level', 'debug']);
  const serverLogs = collect(server);
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const relay = startCli(['relay', '--upstream', upstream as string, '--listen', 'tcp://127.0.0.1:0', '--hold', hold, '--sessions', String(size), '--log-level', 'debug']);
  const relayLogs = collect(relay);
  const [, port] = await waitForLine(relay, /^PMI_PORT=(\S+)$/);
  const env = (rank: number) => envWithPmibridge({ PMI_PORT: port as string, PMI_ID: String(rank) });
  const exchange = (rank: number) => runCli(['pmi', 'exchange', '--json'], { env: env(rank), timeoutMs: 60_000 });
  const startExchange = (rank: number) => startCli(['pmi', 'exchange', '--json'], { env: env(rank) });
  return { server, serverLogs, relay, relayLogs, exchange, startExchange };
}

const cases = [
  // The replacement arrives while the barrier is still open: it joins the barrier_in in flight.
  { how: 'killed with SIGKILL', replacementFirst: true, replay: /session 0: barrier_in \(waiting for the reply already asked for\)/, takeover: /session 0 taken over by client \d+ \(it was held\)/ },
  // The old connection stays up (the process is stopped), as a CRIU restore leaves it.
  { how: 'left half-open (stopped, connection still up)', replacementFirst: true, replay: /session 0: barrier_in \(waiting for the reply already asked for\)/, takeover: /session 0 taken over by client \d+ \(closed the older connection \d+\)/ },
  // The barrier completes while rank 0 is away: its barrier_out is kept and handed over once.
  { how: 'killed with SIGKILL, barrier completing while it is away', replacementFirst: false, replay: /session 0: barrier_in \(reply kept while disconnected\)/, takeover: /session 0 taken over by client \d+ \(it was held\)/ },
] as const;

for (const c of cases) {
  t.test(`a rank ${c.how} in a barrier is replaced by a new process with its PMI_ID`, async (t) => {
    const j = await job(3, '30s');
    const first = j.startExchange(0);
    await until('rank 0 in the barrier', () => /barrier 0: 1\/3 ranks in/.test(j.serverLogs.stderr));
    if (c.how.startsWith('left half-open')) {
      first.kill('SIGSTOP');
      t.teardown(() => first.kill('SIGKILL'));
    } else {
      first.kill('SIGKILL');
      await until('the relay to hold session 0', () => /session 0 held/.test(j.relayLogs.stderr));
    }
    let rank0: Promise<Awaited<ReturnType<typeof j.exchange>>>;
    let others: Array<Promise<Awaited<ReturnType<typeof j.exchange>>>>;
    if (c.replacementFirst) {
      rank0 = j.exchange(0);
      await until('the replacement to re-send its barrier_in', () => c.replay.test(j.relayLogs.stderr));
      others = [j.exchange(1), j.exchange(2)];
    } else {
      others = [j.exchange(1), j.exchange(2)];
      await until('the first barrier to complete without rank 0 connected', () => /barrier 1 complete/.test(j.serverLogs.stderr));
      rank0 = j.exchange(0);
    }
    const results = await Promise.all([rank0, ...others]);
    results.forEach((r, rank) => {
      t.equal(r.code, 0, `rank ${rank} finished (${r.stderr})`);
      t.match(JSON.parse(r.stdout) as object, { rank, size: 3, keys: 3, ok: true }, `rank ${rank} read every rank's key`);
    });
    t.equal((await exitOf(j.server)).code, 0, 'the server saw a normal job');
    t.equal((await exitOf(j.relay)).code, 0, 'the relay ended with all sessions finalized');
    t.notMatch(j.serverLogs.stderr, /before finalize|rank-failed|refused/, 'the server never noticed');
    t.match(j.serverLogs.stderr, /barrier 0: 3\/3 ranks in/, 'exactly one barrier_in per rank reached the server');
    t.notMatch(j.serverLogs.stderr, /already_in_barrier|sent barrier_in twice/);
    t.match(j.relayLogs.stderr, c.takeover);
    t.match(j.relayLogs.stderr, c.replay, 'the re-sent barrier_in was answered once, without a second one upstream');
    t.match(j.relayLogs.stderr, /session 0: answered init from the session/, 'init answered from the session');
    t.match(j.relayLogs.stderr, /session 0: answered put \(re-sent after a takeover, acknowledged before it\)/, "the restarted rank's repeated put was not sent again");
  });
}

t.test('a rank that never comes back: the hold expires and the job fails clearly', async (t) => {
  const j = await job(3, '1s');
  const first = j.startExchange(0);
  await until('rank 0 in the barrier', () => /barrier 0: 1\/3 ranks in/.test(j.serverLogs.stderr));
  first.kill('SIGKILL');
  const others = await Promise.all([j.exchange(1), j.exchange(2)]);
  others.forEach((r, i) => t.not(r.code, 0, `rank ${i + 1} fails: the job is over`));
  const serve = await exitOf(j.server);
  t.equal(serve.code, 1);
  t.match(j.serverLogs.stderr, /job failed: rank 0 closed its PMI connection before finalize/);
  t.match(j.relayLogs.stderr, /PMI_ID 0 did not reconnect within the hold time \(1000 ms\); closing its upstream connection so the job sees a failed rank/);
  t.equal((await exitOf(j.relay)).code, 1);
});

t.test('a PMI_ID the upstream does not know is refused with its reason; the job goes on', async (t) => {
  const j = await job(1, '30s');
  const r = await runCli(['pmi', 'info'], { env: envWithPmibridge({ PMI_PORT: (/PMI_PORT=(\S+)/.exec(j.relayLogs.stdout) ?? [])[1] ?? '', PMI_ID: '7' }), timeoutMs: 20_000 });
  t.equal(r.code, 1);
  t.match(r.stderr, /refused PMI_ID 7: no_rank_7_in_job_of_size_1/);
  const ok = await j.exchange(0);
  t.equal(ok.code, 0);
  t.equal((await exitOf(j.server)).code, 0);
});
