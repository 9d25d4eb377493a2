// A rank frozen the way CRIU's network lock freezes it: while it is checkpointed, iptables drops
// its connection's packets both ways, the relay's end stays ESTABLISHED, and the restored process
// (here: a new process with the same PMI_ID) connects again and re-sends its pending request.
//
// The rule under test (README "Reconnection rules"): a reply the old client provably received (it
// sent a later request, or the kernel reports the bytes acknowledged/read) is never replayed; a
// reply NOT known to be received is delivered exactly once when the new client re-sends the
// identical request, without a second request upstream.
//
// Each test runs a 2-rank job (`serve -n 2 --listen unix`, `relay --listen tcp|unix`) inside its
// own network namespace (test/fixtures/netns.ts), with raw line clients A (PMI_ID 0) and B
// (PMI_ID 1).
import t from 'tap';
import { netnsMissing, type RawClient } from './fixtures/netns.js';
import { frozenJob, serverBarrierIn, barriersCompleted, barrierBoth, finalizeBoth, secondBarrierIsNew, logTail, QUIET_MS, KVSNAME, type FrozenJob } from './fixtures/frozen-job.js';

const skip = netnsMissing() ?? false;


/** Freeze A's connection both ways (relay -> A first, as given), then SIGKILL A. */
async function freezeAndKill(job: FrozenJob, a: RawClient, toClientAlready = false): Promise<void> {
  if (!toClientAlready) await job.dropToClient(a);
  await job.dropFromClient(a);
  await a.killed();
}

t.test('TCP, barrier: the barrier_out written into the frozen connection is delivered once to the restored rank', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'tcp' });
  const a = await job.rank(0, 'A');
  const entered = serverBarrierIn(job, 1, 'A\'s barrier_in to reach the server');
  a.send('cmd=barrier_in');
  await entered;
  await freezeAndKill(job, a);
  const b = await job.rank(1, 'B');
  await b.request('cmd=barrier_in', /^cmd=barrier_out rc=0/, 'B: barrier_out (A is in the barrier, frozen)');
  await job.replyStuck(a, 'A\'s barrier_out');
  t.equal(await job.ns.sendQ(job.relayPort as number, (await a.localPort) as number).then((q) => (q ?? 0) > 0), true, 'the relay\'s end of the frozen connection holds unacknowledged bytes');

  const a2 = await job.client('A\'');
  await a2.handshake(0);
  a2.send('cmd=barrier_in');
  await a2.next(/^cmd=barrier_out rc=0/, 'A\': the kept barrier_out, at once', 5_000);
  await a2.none(QUIET_MS, 'exactly one barrier_out');
  t.equal(barriersCompleted(job), 1, 'the server saw one barrier');
  t.equal(job.serverSaw(0, /^cmd=barrier_in/), 1, 'rank 0 entered the barrier once upstream');
  await finalizeBoth(t, job, a2, b);
  t.equal(barriersCompleted(job), 1, 'still one barrier at the end');
  t.match(job.relayLogs.stderr, /taken over/, 'the relay logged the takeover');
});

t.test('TCP, barrier, reply read and proven by a later request: the restored rank\'s barrier_in is a new barrier', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'tcp' });
  const a = await job.rank(0, 'A');
  const b = await job.rank(1, 'B');
  await barrierBoth(a, b, 'the first barrier');
  await a.request('cmd=get_maxes', /^cmd=maxes rc=0/, 'A: maxes');
  await freezeAndKill(job, a);

  const a2 = await job.rank(0, 'A\'');
  await secondBarrierIsNew(t, job, a2, b);
});

t.test('TCP, barrier, reply read (kernel ACK only, no later request): the restored rank\'s barrier_in is a new barrier', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'tcp' });
  const a = await job.rank(0, 'A');
  const b = await job.rank(1, 'B');
  await barrierBoth(a, b, 'the first barrier');
  // A printed its barrier_out; its kernel acknowledges it (maybe a delayed ACK): Send-Q 0.
  await job.replyAcked(a, 'its barrier_out');
  t.equal(await job.relaySendQ(a), 0, 'the relay\'s Send-Q to A is empty (barrier_out acknowledged)');
  await freezeAndKill(job, a);

  const a2 = await job.rank(0, 'A\'');
  await secondBarrierIsNew(t, job, a2, b);
});

const GET = `cmd=get kvsname=${KVSNAME} key=k`;
const getResult = (value: string) => new RegExp(`^cmd=get_result rc=0\\b.*\\bvalue=${value}$`);

for (const kvsCache of [true, false]) {
  t.test(`TCP, get (cache miss${kvsCache ? '' : ', --no-kvs-cache'}) answered into the frozen connection: delivered once to the restored rank, not asked upstream again`, { skip }, async (t) => {
    const job = await frozenJob(t, { listen: 'tcp', kvsCache });
    const a = await job.rank(0, 'A');
    const b = await job.rank(1, 'B');
    await a.request(`cmd=put kvsname=${KVSNAME} key=k value=v0`, /^cmd=put_result rc=0/, 'A: put_result');
    await barrierBoth(a, b, 'the barrier committing k');
    await job.dropToClient(a);
    a.send(GET);
    await job.replyStuck(a, 'A\'s get_result');
    t.equal(job.serverSaw(0, /^cmd=get .*key=k$/), 1, 'A\'s get reached the server (a cache miss)');
    await freezeAndKill(job, a, true);

    const a2 = await job.rank(0, 'A\'');
    await a2.request(GET, getResult('v0'), 'A\': the kept get_result, at once', 5_000);
    await a2.none(QUIET_MS, 'exactly one get_result');
    t.equal(job.serverSaw(0, /^cmd=get .*key=k$/), 1, 'the re-sent get was not sent upstream again');
    await finalizeBoth(t, job, a2, b);
  });
}

t.test('TCP, get (cache hit) answered by the relay into the frozen connection: delivered once to the restored rank', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'tcp' });
  const a = await job.rank(0, 'A');
  const b = await job.rank(1, 'B');
  await a.request(`cmd=put kvsname=${KVSNAME} key=k value=v0`, /^cmd=put_result rc=0/, 'A: put_result');
  await barrierBoth(a, b, 'the barrier committing k');
  await b.request(GET, getResult('v0'), 'B: get_result (fills the relay\'s cache)');
  t.equal(job.serverSaw(1, /^cmd=get .*key=k$/), 1, 'B\'s get reached the server');
  await job.dropToClient(a);
  a.send(GET);
  await job.replyStuck(a, 'A\'s get_result (from the cache)');
  t.equal(job.serverSaw(0, /^cmd=get .*key=k$/), 0, 'A\'s get was answered from the relay\'s cache');
  await freezeAndKill(job, a, true);

  const a2 = await job.rank(0, 'A\'');
  await a2.request(GET, getResult('v0'), 'A\': the kept get_result, at once', 5_000);
  await a2.none(QUIET_MS, 'exactly one get_result');
  t.equal(job.serverSaw(0, /^cmd=get .*key=k$/), 0, 'no get of k from rank 0 reached the server');
  await finalizeBoth(t, job, a2, b);
});

t.test('TCP, put acknowledged into the frozen connection: the re-sent put gets its put_result once, the server saw one put', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'tcp' });
  const a = await job.rank(0, 'A');
  const b = await job.rank(1, 'B');
  const put = `cmd=put kvsname=${KVSNAME} key=k value=v1`;
  await job.dropToClient(a);
  a.send(put);
  await job.replyStuck(a, 'A\'s put_result');
  t.equal(job.serverSaw(0, /^cmd=put .*key=k value=v1$/), 1, 'A\'s put reached the server');
  await freezeAndKill(job, a, true);

  const a2 = await job.rank(0, 'A\'');
  await a2.request(put, /^cmd=put_result rc=0/, 'A\': put_result of the re-sent put', 5_000);
  await a2.none(QUIET_MS, 'exactly one put_result');
  t.equal(job.serverSaw(0, /^cmd=put .*key=k value=v1$/), 1, 'the server saw the put once');
  // The kept put_result is delivered, not a local acknowledgement of "an identical put": that rule
  // answered live clients' puts without forwarding them (relay-multiwriter.test.ts).
  t.notMatch(job.relayLogs.stderr, /identical to one already acknowledged/, 'the put was not answered as "identical to one already acknowledged"');
  await barrierBoth(a2, b, 'the barrier committing k');
  await b.request(GET, getResult('v1'), 'B: k=v1 after the barrier');
  await finalizeBoth(t, job, a2, b);
});

t.test('TCP, finalize_ack stuck in the frozen connection: the restored rank may join again and collect it', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'tcp' });
  const a = await job.rank(0, 'A');
  const b = await job.rank(1, 'B');
  await job.dropToClient(a);
  a.send('cmd=finalize');
  await job.replyStuck(a, 'A\'s finalize_ack');
  t.equal(job.serverSaw(0, /^cmd=finalize$/), 1, 'A\'s finalize reached the server');
  await freezeAndKill(job, a, true);

  const a2 = await job.client('A\'');
  a2.send('cmd=initack pmiid=0');
  await a2.next(/^cmd=initack rc=0\b/, 'A\': initack rc=0 (the session\'s finalize_ack was never received)');
  for (const s of ['size', 'rank', 'debug']) await a2.next(new RegExp(`^cmd=set ${s}=`), `A': cmd=set ${s}=`);
  await a2.request('cmd=init pmi_version=1 pmi_subversion=1', /^cmd=response_to_init rc=0\b/, 'A\': response_to_init');
  await a2.request('cmd=finalize', /^cmd=finalize_ack rc=0/, 'A\': the kept finalize_ack', 5_000);
  t.equal(job.serverSaw(0, /^cmd=finalize$/), 1, 'the server saw one finalize from rank 0');
  await b.request('cmd=finalize', /^cmd=finalize_ack rc=0/, 'B: finalize_ack');
  t.equal((await job.serverExit()).code, 0, `serve saw a normal job (${logTail(job.serverLogs.stderr)})`);
  t.equal((await job.relayExit()).code, 0, 'the relay ended with both sessions finalized');
});
