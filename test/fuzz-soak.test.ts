/**
 * Fuzz/soak (issue 10): at least 1,000,000 random and mutated PMI-1 lines, raw HTTP requests and
 * WebSocket frames over real sockets, against `serve`, a `relay` in front of it and both taps,
 * while a real MPICH job goes through the same serve and relay and completes.
 *
 * Set-up: `serve -n 6` (TCP and Unix listeners, a TCP tap, --identify-timeout 2s) and
 * `relay --upstream <serve's Unix socket> --sessions 3` (TCP and Unix listeners, a Unix-socket
 * tap). Ranks 0-3 run test/fixtures/c/pmi-soak.c — MPICH 4.0.2's own simple PMI client, linked
 * from the static libmpich.a — 0 and 1 straight to serve, 2 and 3 through the relay (TCP): they put
 * keys with known values, barrier, and read every one of them back byte for byte, round after
 * round, until the test creates the stop file. Ranks 4 (serve, Unix) and 5 (relay, Unix) are fuzz
 * ranks (fuzz-sockets.ts `fuzzRank`): they take part in every barrier and finalize with the job,
 * and between barriers send fuzz batches as identified, initialized ranks.
 *
 * What the fuzzers may do, and why (src/server/engine.ts, src/relay/engine.ts):
 * - Unidentified fuzz connections start only once every rank is past its first barrier, so every
 *   rank is bound to its connection. From then on the server refuses every identification attempt
 *   without touching the ranks: `initack` of a live rank (E_PMIID_IN_USE, "the original goes on"),
 *   of a finalized rank (E_RANK_DONE) or of no rank (E_UNKNOWN_PMIID), and `init` without a
 *   handshake (E_JOB_FULL). So serve's fuzzers send those too, impersonation of every rank
 *   included; before that point an `init` would take a free rank (PMI_PORT without PMI_ID).
 *   Nothing else an unidentified connection sends reaches the job: even `abort` is answered
 *   "send initack first".
 * - The relay hands a session to a new connection with the same PMI_ID (same uid) by design (a
 *   restarted or restored rank takes over) and closes the old connection: a fuzzer naming PMI_ID
 *   2, 3 or 5 would cut that rank off, and could then abort the job in its name. Lines to the
 *   relay therefore never name those (`sparing`); they name other PMI_IDs, which the relay asks
 *   serve for, which refuses them (0, 1 and 4 are live there, the rest no ranks); the relay then
 *   forgets those sessions. Lines after the first queue behind the handshake (up to the relay's
 *   flood limit) and go with the refused session.
 * - The fuzz ranks are spare PMI_IDs of `serve -n 6`, usable because they keep the job's rules: a
 *   rank must enter every barrier (else the others wait forever), must not finalize or abort
 *   early, and must not be closed (a rank that started PMI and disconnects fails the job), so
 *   their batches leave out `abort`, `finalize` and `barrier_in` (they send their own), never put
 *   the real ranks' key names, and break runs of undecodable lines (8 in a row close a connection).
 *   Rank 5 now and then hands its session to a new connection of its own (a takeover).
 * - The relay's `--sessions 3` counts a session whose upstream connection closed before its
 *   handshake was answered as a failed one (a real rank's would be). When the job ends serve
 *   closes all its connections, including those of fuzz sessions still in their handshake, so the
 *   relay's unidentified fuzzers stop (and their sessions settle) before the stop file is created;
 *   the fuzz ranks, serve's fuzzers and both taps' go on while the job completes.
 *
 * Asserted: serve and relay exit 0; every MPICH rank exits 0 having read back exactly what every
 * MPICH rank put, in the same number of rounds as the fuzz ranks, which finish without a failure;
 * peak VmRSS of serve and relay ≤ 300 MiB; no tap answer 500 and no internal error logged; the
 * authenticated paths (/metrics, an observer) answer under fuzz; the whole run under 120 s.
 *
 * One seed per run, printed (`seed=N`); PMIBRIDGE_FUZZ_SEED=N replays the same input streams
 * (the interleaving, and so how much of each stream is sent, depends on timing).
 * PMIBRIDGE_FUZZ_SECONDS sets the minimum fuzzing time (default 32); fuzzing goes on past it
 * until 1,000,000 lines, 70 s at most.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collect, exitOf, startCli, until, waitForLine } from './fixtures/cli.js';
import { mpichMissing, mpiProgram, staticPmiLibrary } from './fixtures/mpich.js';
import { derive, fuzzSeed, Rng } from './fixtures/fuzz-rng.js';
import { Counters, cpuSecondsOf, endpointOf, fuzzRank, httpDriver, idleDriver, pmiDriver, RssSampler, wsDriver, type DriverContext, type Endpoint } from './fixtures/fuzz-sockets.js';
import { getRequest, rawHttp, watch, within } from './fixtures/tap.js';

const LINES_WANTED = 1_000_000;
const MIN_SECONDS = Number(process.env['PMIBRIDGE_FUZZ_SECONDS'] ?? 32);
/** Past this, fuzzing stops even short of LINES_WANTED (and the count assertion fails). */
const MAX_SECONDS = Math.max(MIN_SECONDS, 70);
const RSS_LIMIT = 300 * 1024 * 1024;
/** Ranks running pmi-soak.c; the job's other ranks are fuzz ranks. */
const MPICH_RANKS = 4;
const FUZZ_RANKS = [4, 5];
const SIZE = MPICH_RANKS + FUZZ_RANKS.length;
/** PMI_IDs of the ranks that go through the relay (an MPICH rank's, a fuzz rank's). */
const RELAY_IDS = [2, 3, 5];
const KEYS = 16;

const libmpich = staticPmiLibrary();
const skip = mpichMissing() ?? (libmpich ? false : 'libmpich.a not found (apt-get install -y libmpich-dev)');

interface Rank {
  readonly child: ChildProcess;
  readonly out: { stdout: string; stderr: string };
}

const MiB = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

t.test('fuzz/soak: 1M mutated PMI lines, HTTP and WebSocket through serve, relay and both taps while an MPICH job completes', { skip, timeout: 170_000 }, async (t) => {
  const t0 = performance.now();
  const seed = fuzzSeed();
  t.comment(`seed=${seed} (replay with PMIBRIDGE_FUZZ_SEED=${seed})`);
  const program = mpiProgram('pmi-soak', { link: [libmpich as string] });
  const dir = mkdtempSync(join(tmpdir(), 'pmibridge-fuzz-'));
  const stopFile = join(dir, 'stop');

  // ---- serve and relay -----------------------------------------------------------------------
  const serve = startCli(['serve', '-n', String(SIZE), '--listen', 'tcp://127.0.0.1:0', '--listen', 'unix', '--tap', 'ws://127.0.0.1:0', '--identify-timeout', '2s', '--json']);
  t.teardown(() => void (serve.exitCode === null && serve.signalCode === null && serve.kill('SIGKILL')));
  const serveOut = collect(serve);
  const info = JSON.parse((await waitForLine(serve, /^\{.*\}$/))[0]) as { kvsname: string; listeners: Array<{ PMI_PORT: string }>; tap: { url: string; token: string } };
  const serveTcp = info.listeners[0]?.PMI_PORT as string;
  const serveUnix = info.listeners[1]?.PMI_PORT as string;
  const serveTapPort = Number(/:(\d+)$/.exec(info.tap.url)?.[1]);

  const relayTapPath = join(dir, 'relay-tap.sock');
  const relay = startCli(['relay', '--upstream', serveUnix, '--listen', 'tcp://127.0.0.1:0', '--listen', 'unix', '--sessions', String(RELAY_IDS.length), '--tap', relayTapPath, '--json']);
  t.teardown(() => void (relay.exitCode === null && relay.signalCode === null && relay.kill('SIGKILL')));
  const relayOut = collect(relay);
  const relayInfo = JSON.parse((await waitForLine(relay, /^\{.*\}$/))[0]) as { listeners: Array<{ PMI_PORT: string }> };
  await until('the relay tap line', () => /tap on \S+ token=\S+/.test(relayOut.stderr));
  const relayToken = /tap on \S+ token=(\S+)/.exec(relayOut.stderr)?.[1] as string;
  const relayTcp = relayInfo.listeners[0]?.PMI_PORT as string;
  const relayUnix = relayInfo.listeners[1]?.PMI_PORT as string;
  const sampler = new RssSampler(
    new Map([
      ['serve', serve.pid as number],
      ['relay', relay.pid as number],
    ]),
  );
  t.teardown(() => sampler.stop());

  // ---- the job -----------------------------------------------------------------------------------
  const counters = new Counters();
  let index = 0;
  let gate = false;
  let fuzzing = true;
  let relayFuzzing = true;
  t.teardown(() => void (fuzzing = false)); // also when an assertion below throws
  const ctx = (name: string, endpoint: Endpoint, running = () => fuzzing): DriverContext => ({ name, endpoint, rng: new Rng(derive(seed, index++)), counters, running });
  const ranks: Rank[] = Array.from({ length: MPICH_RANKS }, (_, rank) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PMI_PORT: RELAY_IDS.includes(rank) ? relayTcp : serveTcp, PMI_ID: String(rank) };
    for (const k of ['PMI_FD', 'PMI_RANK', 'PMI_SIZE']) delete env[k];
    // Ranks stop on their own some time after the test would have stopped them (a safety net).
    const child = spawn(program, [String(KEYS), stopFile, '50', String(MAX_SECONDS + 40), String(MPICH_RANKS)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')));
    return { child, out: collect(child) };
  });
  const fuzzRanks = FUZZ_RANKS.map((rank) => {
    const through = RELAY_IDS.includes(rank) ? 'relay' : 'serve';
    const endpoint = endpointOf(through === 'relay' ? relayUnix : serveUnix);
    return fuzzRank(ctx(`${through}-rank`, endpoint), { rank, kvsname: info.kvsname, relay: through === 'relay', fuzz: () => gate && fuzzing });
  });
  await until('every rank past its first barrier', () => ranks.every((r) => new RegExp(`^ready rank=\\d+ size=${SIZE}$`, 'm').test(r.out.stdout)), 30_000);
  gate = true;

  // ---- fuzzers ---------------------------------------------------------------------------------
  const pmi = { kvsname: info.kvsname, identify: true };
  const relayPmi = { ...pmi, relay: { spare: RELAY_IDS } };
  const relayRunning = () => fuzzing && relayFuzzing;
  const serveTap = { host: `127.0.0.1:${serveTapPort}`, token: info.tap.token };
  const relayTap = { host: 'localhost', token: relayToken };
  const relayDrivers = [
    pmiDriver(ctx('relay-tcp', endpointOf(relayTcp), relayRunning), relayPmi),
    pmiDriver(ctx('relay-tcp', endpointOf(relayTcp), relayRunning), relayPmi),
    pmiDriver(ctx('relay-unix', endpointOf(relayUnix), relayRunning), relayPmi),
    idleDriver(ctx('relay-idle', endpointOf(relayUnix), relayRunning), 20, 1500),
  ];
  const drivers = [
    ...relayDrivers,
    pmiDriver(ctx('serve-tcp', endpointOf(serveTcp)), pmi),
    pmiDriver(ctx('serve-tcp', endpointOf(serveTcp)), pmi),
    pmiDriver(ctx('serve-tcp', endpointOf(serveTcp)), pmi),
    pmiDriver(ctx('serve-unix', endpointOf(serveUnix)), pmi),
    pmiDriver(ctx('serve-unix', endpointOf(serveUnix)), pmi),
    idleDriver(ctx('serve-idle', endpointOf(serveTcp)), 40, 2500),
    httpDriver(ctx('serve-tap-http', { kind: 'tcp', port: serveTapPort }), serveTap),
    httpDriver(ctx('serve-tap-http', { kind: 'tcp', port: serveTapPort }), serveTap),
    wsDriver(ctx('serve-tap-ws', { kind: 'tcp', port: serveTapPort }), serveTap),
    httpDriver(ctx('relay-tap-http', { kind: 'unix', path: relayTapPath }), relayTap),
    httpDriver(ctx('relay-tap-http', { kind: 'unix', path: relayTapPath }), relayTap),
    wsDriver(ctx('relay-tap-ws', { kind: 'unix', path: relayTapPath }), relayTap),
  ];
  const lines = () => counters.total(counters.lines);

  const cpu0 = { serve: cpuSecondsOf(serve.pid as number) ?? 0, relay: cpuSecondsOf(relay.pid as number) ?? 0, test: (process.cpuUsage().user + process.cpuUsage().system) / 1e6 };
  const fuzzStart = performance.now();
  const elapsed = () => (performance.now() - fuzzStart) / 1000;
  let nextReport = 10;
  while (elapsed() < MAX_SECONDS && (elapsed() < MIN_SECONDS || lines() < LINES_WANTED)) {
    await new Promise((r) => setTimeout(r, 250));
    if (elapsed() >= nextReport) {
      t.comment(`${nextReport} s: ${lines()} lines, serve ${MiB(sampler.peak.get('serve') ?? 0)}, relay ${MiB(sampler.peak.get('relay') ?? 0)} peak RSS`);
      nextReport += 10;
    }
    if (ranks.some((r) => r.child.exitCode !== null)) break; // a rank ended early: the job failed; stop and report
  }
  const fuzzSeconds = elapsed();
  const linesDriven = lines();
  const linesByTarget = new Map(counters.lines);
  const cpu = { serve: cpuSecondsOf(serve.pid as number) ?? 0, relay: cpuSecondsOf(relay.pid as number) ?? 0, test: (process.cpuUsage().user + process.cpuUsage().system) / 1e6 };

  // The authenticated paths answer while the fuzz goes on.
  const metrics = await settle(rawHttp(serveTapPort, getRequest('/metrics', [`Host: 127.0.0.1:${serveTapPort}`, `Authorization: Bearer ${info.tap.token}`])), 15_000);
  t.equal(metrics?.status, 200, 'serve tap: /metrics with the token answers 200 under fuzz');
  const relayMetrics = await settle(rawHttp(relayTapPath, getRequest('/metrics', ['Host: localhost', `Authorization: Bearer ${relayToken}`])), 15_000);
  t.equal(relayMetrics?.status, 200, 'relay tap: /metrics with the token answers 200 under fuzz');
  for (const [name, url, token] of [
    ['serve', info.tap.url, info.tap.token],
    ['relay', relayTapPath, relayToken],
  ] as const) {
    const w = watch(t, url, token);
    await settle(w.ready, 15_000);
    t.match(w.events[0], { kind: 'hello' }, `${name} tap: an observer with the token is streamed to under fuzz`);
    w.ws.terminate();
  }
  const answered = [...(metrics?.text ?? '').matchAll(/^pmibridge_requests_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);

  // ---- the job completes while serve and the taps are still being fuzzed -----------------------
  // Every wait is bounded; what does not end in time is killed and fails the assertions below.
  relayFuzzing = false;
  t.ok(await settle(Promise.all(relayDrivers).then(() => true), 15_000), 'the relay fuzzers stop');
  writeFileSync(stopFile, '');
  const codes = await Promise.all(ranks.map((r) => exitWithin(r.child, 40_000)));
  const fuzzed = await settle(Promise.all(fuzzRanks), 15_000);
  fuzzing = false;
  t.ok(await settle(Promise.all(drivers).then(() => true), 15_000), 'the fuzzers stop');
  const serveExit = await exitWithin(serve, 20_000);
  const relayExit = await exitWithin(relay, 20_000);
  sampler.sample();
  sampler.stop();
  const totalSeconds = (performance.now() - t0) / 1000;

  // ---- verdict ---------------------------------------------------------------------------------
  writeFileSync(join(dir, 'serve.log'), serveOut.stderr);
  writeFileSync(join(dir, 'relay.log'), relayOut.stderr);
  t.comment(`logs of serve and relay: ${dir}/serve.log, relay.log`);
  t.comment(`fuzzed ${fuzzSeconds.toFixed(1)} s: ${linesDriven} PMI lines (${fmt(linesByTarget)}); ${answered} requests answered by serve by then (its /metrics); ${lines() - linesDriven} more lines while the job completed`);
  t.comment(`CPU while fuzzing: serve ${(cpu.serve - cpu0.serve).toFixed(1)} s, relay ${(cpu.relay - cpu0.relay).toFixed(1)} s, this test ${(cpu.test - cpu0.test).toFixed(1)} s`);
  t.comment(`answers read: ${fmt(counters.answers)}; connections: ${fmt(counters.connections)}; closed by the peer: ${fmt(counters.closedByPeer)}`);
  t.comment(`HTTP statuses: ${[...counters.statuses].map(([k, m]) => `${k} {${[...m].sort((a, b) => a[0] - b[0]).map(([c, n]) => `${c}:${n}`).join(' ')}}`).join('; ')}`);
  t.comment(`WebSocket: ${fmt(counters.upgrades)} upgrades, ${fmt(counters.frames)} frames`);
  for (const [name, list] of sampler.samples) t.comment(`${name} RSS every 2 s: ${list.filter((_, i) => i % 10 === 0).map((v) => (v / 1048576).toFixed(0)).join(' ')}`);
  t.comment(`peak RSS: serve ${MiB(sampler.peak.get('serve') ?? 0)}, relay ${MiB(sampler.peak.get('relay') ?? 0)}; total ${totalSeconds.toFixed(1)} s`);

  t.ok(linesDriven >= LINES_WANTED, `at least ${LINES_WANTED} lines driven (${linesDriven})`);
  t.ok(['serve-tcp', 'serve-unix', 'relay-tcp', 'relay-unix', 'serve-rank', 'relay-rank'].every((k) => (linesByTarget.get(k) ?? 0) > 0), 'lines went to serve and relay, over TCP and Unix, from unidentified connections and from ranks');
  const rounds = new Set<string>();
  codes.forEach((c, rank) => {
    const out = ranks[rank]?.out as Rank['out'];
    const last = out.stdout.trim().split('\n').pop() ?? '';
    t.same(c, { code: 0, signal: null, late: false }, `rank ${rank} exits 0 in time (${last}${out.stderr ? `; stderr: ${out.stderr.slice(0, 300)}` : ''})`);
    const m = new RegExp(`^OK rank=${rank} rounds=(\\d+) gets=(\\d+)$`, 'm').exec(out.stdout);
    t.ok(m, `rank ${rank} read back every value every MPICH rank put, byte for byte`);
    if (m) rounds.add(m[1] as string);
  });
  FUZZ_RANKS.forEach((rank, i) => {
    const r = fuzzed?.[i];
    t.same(r && { rounds: String(r.rounds), failure: r.failure }, { rounds: [...rounds][0], failure: null }, `fuzz rank ${rank} took part in every round and finalized (${r ? `${r.takeovers} takeovers` : 'did not finish'})`);
  });
  t.equal(rounds.size, 1, `every MPICH rank ran the same rounds (${[...rounds].join(', ')})`);
  t.ok(Number([...rounds][0]) >= 5, 'the job ran rounds throughout the fuzz');
  t.same(serveExit, { code: 0, signal: null, late: false }, `serve exits 0${serveExit.code ? `: ${serveOut.stderr.slice(-500)}` : ''}`);
  t.same(relayExit, { code: 0, signal: null, late: false }, `relay exits 0${relayExit.code ? `: ${relayOut.stderr.slice(-500)}` : ''}`);
  for (const name of ['serve', 'relay']) {
    const peak = sampler.peak.get(name) ?? Infinity;
    t.ok(peak <= RSS_LIMIT, `${name} peak RSS ${MiB(peak)} <= ${MiB(RSS_LIMIT)}`);
  }
  for (const [name, err] of [
    ['serve', serveOut.stderr],
    ['relay', relayOut.stderr],
  ] as const) {
    t.notMatch(err, /internal error|uncaught|TypeError|RangeError/i, `${name}: no internal error logged`);
  }
  for (const [name, m] of counters.statuses) t.notOk(m.has(500), `${name}: no request answered 500`);
  for (const tap of ['serve-tap', 'relay-tap']) {
    const http = counters.statuses.get(`${tap}-http`) ?? new Map<number, number>();
    t.ok(http.has(200) && http.has(401), `${tap}: fuzz requests were answered both 200 (with the token) and 401 (without)`);
    t.ok((counters.upgrades.get(`${tap}-ws`) ?? 0) > 0 && (counters.frames.get(`${tap}-ws`) ?? 0) > 0, `${tap}: observers upgraded and sent frames`);
  }
  t.ok(totalSeconds < 120, `the whole run took ${totalSeconds.toFixed(1)} s (< 120 s)`);
});

/** `p`'s value, or undefined if it rejects or takes longer than `ms`. */
function settle<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return within(p, 'it', ms).catch(() => undefined);
}

/** A child's exit status within `ms`; past it the child is killed and `late`. Never throws. */
async function exitWithin(child: ChildProcess, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; late: boolean }> {
  try {
    return { ...(await exitOf(child, ms)), late: false };
  } catch {
    return { code: child.exitCode, signal: child.signalCode ?? 'SIGKILL', late: true };
  }
}

function fmt(m: Map<string, number>): string {
  return [...m].map(([k, v]) => `${k} ${v}`).join(', ');
}
