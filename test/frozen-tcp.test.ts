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
import { frozenJob, serverBarrierIn, barriersCompleted, barrierBoth, finalizeBoth, secondBarrierIsNew, QUIET_MS, type FrozenJob } from './fixtures/frozen-job.js';
import { getMissKept, getHitKept, getReadNotReplayed, putKept, finalizeAckKept } from './fixtures/frozen-phases.js';

const skip = netnsMissing() ?? false;

/** Freeze A's connection both ways (relay -> A first), then SIGKILL A. */
async function freezeAndKill(job: FrozenJob, a: RawClient): Promise<void> {
  await job.dropToClient(a);
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

for (const kvsCache of [true, false]) {
  t.test(`TCP, get (cache miss${kvsCache ? '' : ', --no-kvs-cache'}) answered into the frozen connection: delivered once to the restored rank, not asked upstream again`, { skip }, (t) => getMissKept(t, 'tcp', kvsCache));
}

t.test('TCP, get (cache hit) answered by the relay into the frozen connection: delivered once to the restored rank', { skip }, (t) => getHitKept(t, 'tcp'));

t.test('TCP, get_result acknowledged, then frozen: never replayed, the restored rank\'s get is answered normally', { skip }, (t) => getReadNotReplayed(t, 'tcp'));

t.test('TCP, put acknowledged into the frozen connection: the re-sent put gets its put_result once, the server saw one put', { skip }, (t) => putKept(t, 'tcp'));

t.test('TCP, finalize_ack stuck in the frozen connection: the restored rank may join again and collect it', { skip }, (t) => finalizeAckKept(t, 'tcp'));
