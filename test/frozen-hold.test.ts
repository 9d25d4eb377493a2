// A rank frozen for more than two minutes (its own file, so it runs beside the others): A waits in
// a barrier, its connection's packets are dropped both ways (CRIU's network lock), B completes the
// barrier so the relay writes A's barrier_out into the frozen connection, and the drop stays for
// 125 s. Then the rules go (a `restore --tcp-established`): A must receive its barrier_out by TCP
// retransmission, and go on. Nothing in the relay (timeouts, keepalive, hold) may cut the
// connection meanwhile.
import t from 'tap';
import { netnsMissing } from './fixtures/netns.js';
import { frozenJob, serverBarrierIn, barriersCompleted, logTail } from './fixtures/frozen-job.js';

const skip = netnsMissing() ?? false;
const FROZEN_MS = 125_000;
/** The relay's retransmission backoff doubles (0.2 s … 51.2 s, 102.4 s): the next try after 125 s
 * of silence comes at about 205 s, i.e. up to ~80 s after the rules go; 150 s leaves a margin. */
const RETRANSMIT_MS = 150_000;

t.setTimeout(FROZEN_MS + RETRANSMIT_MS + 120_000);

t.test('TCP, frozen 125 s in a barrier, then thawed: the barrier_out arrives by retransmission and the rank goes on', { skip, timeout: FROZEN_MS + RETRANSMIT_MS + 100_000 }, async (t) => {
  const job = await frozenJob(t, { listen: 'tcp' });
  const a = await job.rank(0, 'A');
  const entered = serverBarrierIn(job, 1, 'A\'s barrier_in to reach the server');
  a.send('cmd=barrier_in');
  await entered;
  const frozen = await job.ns.dropBoth(job.relayPort as number, (await a.localPort) as number);
  const b = await job.rank(1, 'B');
  await b.request('cmd=barrier_in', /^cmd=barrier_out rc=0/, 'B: barrier_out (A is in the barrier, frozen)');
  await job.replyStuck(a, 'A\'s barrier_out');
  const t0 = Date.now();
  await a.none(FROZEN_MS, 'nothing while the connection is frozen');
  t.equal(a.closedReason, undefined, 'A\'s connection is still open after 125 s frozen');
  const q = await job.relaySendQ(a);
  t.ok(q !== undefined && q > 0, `the relay's end is still open with the barrier_out unacknowledged (Send-Q ${q})`);
  await frozen.remove();
  const thawed = Date.now();
  await a.next(/^cmd=barrier_out rc=0/, 'A: its barrier_out by TCP retransmission after the thaw', RETRANSMIT_MS);
  t.comment(`barrier_out arrived ${Math.round((Date.now() - thawed) / 1000)} s after the thaw (${Math.round((Date.now() - t0) / 1000)} s after the freeze)`);
  await a.request('cmd=get_maxes', /^cmd=maxes rc=0/, 'A: maxes (the connection works again)');
  await a.request('cmd=finalize', /^cmd=finalize_ack rc=0/, 'A: finalize_ack');
  await b.request('cmd=finalize', /^cmd=finalize_ack rc=0/, 'B: finalize_ack');
  t.equal((await job.serverExit()).code, 0, `serve saw a normal job (${logTail(job.serverLogs.stderr)})`);
  t.equal((await job.relayExit()).code, 0, 'the relay ended with both sessions finalized');
  t.equal(barriersCompleted(job), 1, 'one barrier');
  t.notMatch(job.relayLogs.stderr, /taken over|held|closing its upstream/, 'the relay never dropped, held or replaced the session');
});
