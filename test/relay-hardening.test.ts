/**
 * The relay engine against hostile or broken peers (issue 10): a flooding client is cut off, not
 * buffered without bound; a refused barrier does not move the KVS cache's epoch; a get with a
 * repeated attribute is never cached (one reader's `key` is not another's); spawn blocks, valid or
 * not, get exactly one answer each, so a malformed one never stalls the session.
 */
import t from 'tap';
import type { ClientId } from '../src/relay/types.js';
import { connect } from 'node:net';
import { once } from 'node:events';
import { RelayHarness, defaultReply } from './fixtures/relay-harness.js';
import { exitOf, startCli, waitForLine } from './fixtures/cli.js';

const KVS = 'kvs_upstream';

function join(h: RelayHarness, pmiid: number): ClientId {
  const c = h.connect({ transport: 'tcp', uid: 1000 });
  h.line(c, `cmd=initack pmiid=${pmiid}`);
  h.take(c);
  return c;
}

t.test('a client that keeps writing while its request is in flight is refused and closed; its session and the others go on', (t) => {
  const h = new RelayHarness({ engine: { upstream: { mode: 'socket' }, holdMs: 60_000 } });
  const a = join(h, 0);
  const b = join(h, 1);
  h.line(a, 'cmd=barrier_in'); // held by the server: a's next lines queue
  for (let i = 0; i < 1000 && !h.closedByEngine.has(a); i++) h.line(a, `cmd=get kvsname=${KVS} key=k${i}`);
  t.equal(h.closedByEngine.has(a), true, 'the flooding connection is closed');
  t.match(h.take(a).at(-1), /^cmd=error rc=-1 msg=too_many_requests_waiting_send_one_request_at_a_time$/, 'with a reason a user can act on');
  t.match(h.eventsOf('refused'), [{ client: a, code: 'E_FLOOD', message: /without waiting for the replies/ }]);
  t.ok((h.serverGot.get(0) ?? []).length < 5, 'nothing of the flood went upstream');
  h.close(a);
  t.equal(h.state(0), 'held', 'its session is held for a reconnect, as for any lost client');
  t.same(h.take(b), []);
  h.line(b, 'cmd=get_maxes');
  t.same(h.take(b), ['cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024'], 'another session is served');
  t.end();
});

t.test('a refused barrier_in (rc≠0) does not start a new KVS epoch in the relay', (t) => {
  let refused = false;
  const h = new RelayHarness({
    engine: { upstream: { mode: 'socket' }, holdMs: 60_000 },
    server: {
      deferred: new Set(),
      reply: (line, session) => {
        if (line === 'cmd=barrier_in' && session === 0 && !refused) {
          refused = true;
          return 'cmd=barrier_out rc=1 msg=init_required';
        }
        return defaultReply(line);
      },
    },
  });
  const a = join(h, 0);
  h.line(a, 'cmd=barrier_in');
  t.same(h.take(a), ['cmd=barrier_out rc=1 msg=init_required'], 'the refusal is passed on');
  t.equal(h.engine.cacheStats()?.epoch, 0, 'still epoch 0');
  h.line(a, `cmd=get kvsname=${KVS} key=x`);
  t.equal(h.engine.cacheStats()?.epoch, 0);
  t.end();
});

t.test('a get with a repeated attribute is forwarded, never answered from or stored in the cache', (t) => {
  const twice = `cmd=get kvsname=${KVS} key=da key=db`;
  // The upstream reads the first `key` (hydra does): for the ambiguous line it answers da's value.
  const kvs = new Map([['da', '1'], ['db', '2']]);
  const firstKey = (line: string) => /\bkey=(\S*)/.exec(line)?.[1] ?? '';
  const h = new RelayHarness({
    engine: { upstream: { mode: 'socket' }, holdMs: 60_000 },
    server: { reply: (line) => (line.startsWith('cmd=get ') ? `cmd=get_result rc=0 value=${kvs.get(firstKey(line)) ?? ''}` : defaultReply(line)) },
  });
  const a = join(h, 0);
  const b = join(h, 1);
  h.line(a, `cmd=put kvsname=${KVS} key=da value=1`);
  h.line(a, `cmd=put kvsname=${KVS} key=db value=2`);
  h.take(a);
  for (const c of [a, b, a]) h.line(c, twice);
  t.equal((h.serverGot.get(0) ?? []).filter((l) => l === twice).length + (h.serverGot.get(1) ?? []).filter((l) => l === twice).length, 3, 'every one went upstream');
  h.take(a);
  h.take(b);
  h.line(b, `cmd=get kvsname=${KVS} key=db`);
  t.same(h.take(b), ['cmd=get_result rc=0 value=2'], 'db is what the server says, not what it answered for the ambiguous line');
  t.end();
});

// ---- spawn blocks against the real server, over real sockets -----------------------------------

/** A lock-step raw client: send lines, read the replies that come within a short wait. */
async function rawSession(address: string) {
  const m = /^(?:tcp:\/\/)?127\.0\.0\.1:(\d+)$/.exec(address);
  const socket = m ? connect(Number(m[1]), '127.0.0.1') : connect(address.replace(/^unix:\/\//, ''));
  await once(socket, 'connect');
  let buf = '';
  const lines: string[] = [];
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  return {
    socket,
    /** Send `sent` and wait until `want` more lines arrived (10 s at most). */
    async ask(sent: string, want = 1): Promise<string[]> {
      const start = lines.length;
      socket.write(sent);
      const deadline = Date.now() + 10_000;
      while (lines.length < start + want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      return lines.slice(start);
    },
  };
}

t.test('spawn blocks through a real relay and server: cmd=spawn, mcmd=x and an oversized block each get one answer; finalize still works', async (t) => {
  const server = startCli(['serve', '-n', '1', '--listen', 'unix']);
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const relay = startCli(['relay', '--upstream', upstream as string, '--listen', 'tcp://127.0.0.1:0', '--sessions', '1']);
  const [, port] = await waitForLine(relay, /^PMI_PORT=(127\.0\.0\.1:\d+)$/);
  const c = await rawSession(port as string);
  t.match(await c.ask('cmd=initack pmiid=0\n', 4), ['cmd=initack rc=0'], 'handshake');
  t.match(await c.ask('cmd=init pmi_version=1 pmi_subversion=1\n'), [/^cmd=response_to_init rc=0/]);
  t.match(await c.ask('cmd=spawn nprocs=1\n'), [/rc=-?[1-9]/], 'single-line cmd=spawn: one refusal');
  t.match(await c.ask('mcmd=x\nnprocs=1\nendcmd\n'), [/^cmd=spawn_result rc=-?[1-9]/], 'mcmd=x block: one refusal');
  t.match(await c.ask('mcmd=spawn\nnprocs=1\nexecname=x\ntotspawns=1\nspawnssofar=1\npreput_num=100000000000\nendcmd\n'), [/^cmd=spawn_result rc=-?[1-9].*preput_num/], 'oversized counts: one refusal naming the attribute');
  t.match(await c.ask('cmd=get_maxes\n'), [/^cmd=maxes rc=0/], 'the session answers in step afterwards');
  t.same(await c.ask('cmd=finalize\n'), ['cmd=finalize_ack rc=0'], 'finalize acknowledged');
  c.socket.destroy();
  t.equal((await exitOf(relay, 20_000)).code, 0, 'the relay completed its one session');
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
});

t.test('a PMI_ID the upstream refuses leaves no session behind; naming it again asks the upstream again', (t) => {
  // Any client may name any PMI_ID: each refused one used to stay in the session table for good
  // (the fuzz/soak test grew a relay by ~6 KiB per PMI_ID, 170 MiB in 40 s).
  const h = new RelayHarness({ engine: { upstream: { mode: 'socket' }, holdMs: 60_000 }, server: { identity: (n) => (n < 4 ? { rank: n, size: 4 } : undefined) } });
  const real = join(h, 0);
  const answers = new Set<string>();
  for (let id = 4; id < 2004; id++) {
    const c = h.connect({ transport: 'tcp', uid: 1000 });
    h.line(c, `cmd=initack pmiid=${id}`);
    answers.add(h.take(c).join('|').replace(String(id), 'N'));
    h.close(c);
  }
  t.same([...answers], ['cmd=initack rc=-1 msg=no_rank_for_N'], "each PMI_ID is refused with the upstream's reason");
  t.same(h.engine.sessionStates().map((s) => s.session), [0], 'only the session the upstream accepted is kept');
  t.equal(h.eventsOf('session-closed').filter((e) => e.refused).length, 2000, 'each refusal is still reported');
  const again = h.connect({ transport: 'tcp', uid: 1000 });
  h.line(again, 'cmd=initack pmiid=4');
  t.same(h.take(again), ['cmd=initack rc=-1 msg=no_rank_for_4'], 'the same PMI_ID again: the upstream is asked again (not "session_4_is_closed")');
  h.line(real, 'cmd=get_maxes');
  t.same(h.take(real), ['cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024'], 'the real session is served');
  t.end();
});

t.test('a refused session whose client left during the handshake: its hold timer is cleared with it', (t) => {
  const h = new RelayHarness({ engine: { upstream: { mode: 'socket' }, holdMs: 60_000 }, autoConnect: false, server: { identity: () => undefined } });
  const c = h.connect({ transport: 'tcp', uid: 1000 });
  h.line(c, 'cmd=initack pmiid=7');
  h.close(c);
  t.equal(h.state(7), 'held');
  t.equal(h.timers.get(7), 60_000, 'held, with a timer');
  h.upstreamConnect(7);
  t.equal(h.timers.has(7), false, 'the refusal cleared the timer');
  t.same(h.engine.sessionStates(), [], 'and nothing of the session is left');
  t.end();
});

t.test('over real sockets: a refused PMI_ID named again at once gets a fresh session, not the old connection closing', async (t) => {
  // The refused session's upstream connection closes after its refusal; a new session of the same
  // PMI_ID may be open by then. That late close must not be taken for the new session's (which
  // would count as a failed session and end `--sessions 1` with exit 1).
  const server = startCli(['serve', '-n', '1', '--listen', 'unix']);
  const [, upstream] = await waitForLine(server, /^PMI_PORT=(\S+)$/);
  const relay = startCli(['relay', '--upstream', upstream as string, '--listen', 'tcp://127.0.0.1:0', '--sessions', '1']);
  const [, port] = await waitForLine(relay, /^PMI_PORT=(127\.0\.0\.1:\d+)$/);
  for (let i = 0; i < 40; i++) {
    const c = await rawSession(port as string);
    t.match(await c.ask('cmd=initack pmiid=5\n'), [/^cmd=initack rc=-1 msg=no_rank_5_in_job_of_size_1$/], `attempt ${i + 1}: refused by the server`);
    c.socket.destroy();
  }
  const c = await rawSession(port as string);
  t.match(await c.ask('cmd=initack pmiid=0\n', 4), ['cmd=initack rc=0'], 'the real rank joins');
  t.match(await c.ask('cmd=init pmi_version=1 pmi_subversion=1\n'), [/^cmd=response_to_init rc=0/]);
  t.same(await c.ask('cmd=finalize\n'), ['cmd=finalize_ack rc=0']);
  c.socket.destroy();
  t.equal((await exitOf(relay, 20_000)).code, 0, 'the relay counted one session, finalized');
  t.equal((await exitOf(server, 20_000)).code, 0, 'the job completed');
});
