// The Unix-socket counterpart of frozen-tcp.test.ts: a rank connected to the relay over a Unix
// socket is stopped (SIGSTOP: its connection stays open, as a CRIU restore leaves it) and a new
// process with the same PMI_ID connects and re-sends its pending request. A reply the stopped
// rank never read (the relay's SIOCOUTQ is not 0) is delivered once to the new one; a reply it
// read is never replayed. Phases other than the barrier share their bodies with the TCP tests
// (fixtures/frozen-phases.ts); there the rank is stopped between its request and the reply by
// holding the relay (SIGSTOP) until the request is in the relay's socket.
import t from 'tap';
import type { Test } from 'tap';
import { netnsMissing, type RawClient } from './fixtures/netns.js';
import { until } from './fixtures/cli.js';
import { frozenJob, serverBarrierIn, barriersCompleted, finalizeBoth, secondBarrierIsNew, QUIET_MS, type FrozenJob } from './fixtures/frozen-job.js';
import { getMissKept, getHitKept, getReadNotReplayed, putKept, finalizeAckKept } from './fixtures/frozen-phases.js';

const skip = netnsMissing() ?? false;

/** A enters a barrier and is stopped; B completes it: A's barrier_out sits unread in A's socket. */
async function stoppedInBarrier(job: FrozenJob): Promise<[RawClient, RawClient]> {
  const a = await job.rank(0, 'A');
  const entered = serverBarrierIn(job, 1, 'A\'s barrier_in to reach the server');
  a.send('cmd=barrier_in');
  await entered;
  a.kill('SIGSTOP');
  const b = await job.rank(1, 'B');
  await b.request('cmd=barrier_in', /^cmd=barrier_out rc=0/, 'B: barrier_out (A is in the barrier, stopped)');
  await job.unreadByClient(a, 'A\'s barrier_out'); // written by the relay into the stopped rank's socket
  return [a, b];
}

/** The new process A' re-sends its barrier_in and gets the barrier_out A never read, once; both finalize. */
async function barrierOutOnce(t: Test, job: FrozenJob, b: RawClient): Promise<void> {
  const a2 = await job.rank(0, 'A\'');
  a2.send('cmd=barrier_in');
  await a2.next(/^cmd=barrier_out rc=0/, 'A\': the barrier_out A never read, at once', 5_000);
  await a2.none(QUIET_MS, 'exactly one barrier_out');
  t.equal(barriersCompleted(job), 1, 'the server saw one barrier');
  t.equal(job.serverSaw(0, /^cmd=barrier_in/), 1, 'rank 0 entered the barrier once upstream');
  await finalizeBoth(t, job, a2, b);
  t.match(job.relayLogs.stderr, /session 0: barrier_in \(reply kept while disconnected\)/, 'the relay delivered the barrier_out it kept');
}

t.test('Unix, SIGSTOP in a barrier: the unread barrier_out is delivered once to the new process', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'unix' });
  t.match(job.port, /^(unix:\/\/)?\//, 'the relay listens on a Unix socket');
  const [a, b] = await stoppedInBarrier(job);
  await barrierOutOnce(t, job, b);
  t.match(job.relayLogs.stderr, /taken over/, 'the relay logged the takeover');
  t.same(a.received.slice(5), [], 'the stopped A read nothing after init (it is killed on teardown)');
});

t.test('Unix, barrier_out read, then SIGSTOP: the new process\'s barrier_in is a new barrier', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'unix' });
  const a = await job.rank(0, 'A');
  const b = await job.rank(1, 'B');
  a.send('cmd=barrier_in');
  b.send('cmd=barrier_in');
  await a.next(/^cmd=barrier_out rc=0/, 'A: barrier_out of the first barrier');
  await b.next(/^cmd=barrier_out rc=0/, 'B: barrier_out of the first barrier');
  a.kill('SIGSTOP'); // A's process read the bytes: the relay's SIOCOUTQ is 0

  const a2 = await job.rank(0, 'A\'');
  await secondBarrierIsNew(t, job, a2, b);
});

for (const kvsCache of [true, false]) {
  t.test(`Unix, get (cache miss${kvsCache ? '' : ', --no-kvs-cache'}) answered into the stopped rank's socket: delivered once to the new process, not asked upstream again`, { skip }, (t) => getMissKept(t, 'unix', kvsCache));
}

t.test('Unix, get (cache hit) answered by the relay into the stopped rank\'s socket: delivered once to the new process', { skip }, (t) => getHitKept(t, 'unix'));

t.test('Unix, get_result read, then SIGSTOP: never replayed, the new process\'s get is answered normally', { skip }, (t) => getReadNotReplayed(t, 'unix'));

t.test('Unix, put acknowledged into the stopped rank\'s socket: the re-sent put gets its put_result once, the server saw one put', { skip }, (t) => putKept(t, 'unix'));

t.test('Unix, finalize_ack unread in the stopped rank\'s socket: the new process may join again and collect it', { skip }, (t) => finalizeAckKept(t, 'unix'));

t.test('Unix, SIGSTOP in a barrier, then SIGKILL: the barrier_out left unread by the dead process is delivered once to the new one', { skip }, async (t) => {
  const job = await frozenJob(t, { listen: 'unix' });
  const [a, b] = await stoppedInBarrier(job);
  // A checkpoint's dump kills the process: its socket goes with the unread reply, and the relay's
  // end reads a reset, not an EOF (on an EOF, SIOCOUTQ 0 would pass for "read").
  await a.killed();
  await until('the relay to hold session 0', () => /session 0 held/.test(job.relayLogs.stderr), 15_000);
  await barrierOutOnce(t, job, b);
});
