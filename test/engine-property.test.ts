/**
 * Property tests of the engine: random lines and mutated real lines (every `C>` line of the
 * reference transcripts), fed over several connections in random states, never make it throw, and
 * every query line gets exactly one answer in its own reply command (or none: abort, a line inside
 * a spawn block or swallowed after a failed one, a connection already closed, a job already over).
 * A barrier's answer may come later; a small model tracks those and checks them against the
 * engine's own rank states. The model also knows that a failed spawn block is swallowed up to its
 * endcmd, that a rank's malformed or overlong abort still ends the job (exit code 1), and which
 * lines count toward the close after maxStrikes bad lines in a row (only undecodable ones; any
 * well-formed query resets the count). The harness checks every sent line: `\n`-terminated,
 * strictly parseable (no space inside a value), accepted by decodeReply, rc first, nothing after a
 * close.
 *
 * Reproduce a failure with FC_SEED=<seed> (printed by fast-check) and FC_RUNS=<n>.
 */
import t from 'tap';
import fc from 'fast-check';
import { QUERIES, SpawnAssembler, decodeQuery, formatSpawn, replyNameOf } from '../src/protocol/index.js';
import { DEFAULT_MAX_STRIKES } from '../src/server/index.js';
import { EngineHarness } from './fixtures/engine-harness.js';
import { isPmi1, linesOf, listTranscripts, loadTranscript } from './fixtures/transcripts.js';

const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : undefined;
const numRuns = process.env.FC_RUNS ? Number(process.env.FC_RUNS) : 400;
const params = { numRuns, ...(seed !== undefined ? { seed } : {}) };

// ---- material -----------------------------------------------------------------------------------

/** Every request line the real clients sent (PMI-1 and PMI-2 probes alike). */
const realLines: string[] = [
  ...new Set(
    listTranscripts().flatMap((f) =>
      loadTranscript(f)
        .filter((e) => e.dir === 'C')
        .flatMap((e) => (isPmi1(e.data) ? linesOf(e.data) : [e.data])),
    ),
  ),
];

const spawnLines = linesOf(
  formatSpawn({
    segments: [
      { nprocs: 2, execname: './a.out', args: ['x y'], preput: new Map([['k', 'v']]), info: new Map([['wdir', '/tmp']]) },
      { nprocs: 1, execname: './b.out', args: [], preput: new Map(), info: new Map() },
    ],
  }),
);

const queryNames = Object.keys(QUERIES);
const attrNames = [...new Set(Object.values(QUERIES).flatMap((q) => Object.entries(q.attrs).flatMap(([n, d]) => [n, ...((d as { aliases?: string[] }).aliases ?? [])])))];

const latin1Char = fc.integer({ min: 0, max: 255 }).filter((c) => c !== 10).map((c) => String.fromCharCode(c));
const nastyChar = fc.constantFrom(' ', '\t', '=', '\r', '\0', '\xff', '\x85', '\xa0', 'a', '0', '-', '_');
const valueArb = fc.oneof(
  fc.constantFrom('', '0', '1', '-1', '+1', '2', '99999999999999999', '1.5', 'x', 'a b', 'a=b', '__proto__', 'constructor', 'TRUE', 'PMI_process_mapping', 'kvs_pmibridge_0', 'x'.repeat(70), 'v'.repeat(1100), '\r', 'v\r'),
  fc.string({ unit: latin1Char, maxLength: 12 }),
  fc.nat({ max: 5 }).map(String),
);

/** A line built from the catalogue's vocabulary, with random attributes and values. */
const vocabLine = fc
  .tuple(
    fc.oneof(fc.constantFrom(...queryNames), fc.constantFrom('bogus', 'initackx', 'get_', 'fullinit', '__proto__', '')),
    fc.array(fc.tuple(fc.oneof(fc.constantFrom(...attrNames), fc.constantFrom('rc', 'msg', 'extra', '__proto__', 'group', '')), valueArb), { maxLength: 5 }),
    fc.constantFrom(' ', ' ', ' ', '  ', '\t'),
  )
  .map(([cmd, attrs, sep]) => [`cmd=${cmd}`, ...attrs.map(([k, v]) => `${k}=${v}`)].join(sep));

type Mutation =
  | { op: 'delete'; at: number }
  | { op: 'insert'; at: number; ch: string }
  | { op: 'replace'; at: number; ch: string }
  | { op: 'truncate'; at: number }
  | { op: 'swap'; a: number; b: number }
  | { op: 'dupToken'; a: number }
  | { op: 'setValue'; a: number; value: string }
  | { op: 'rename'; name: string }
  | { op: 'append'; attr: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), ch: fc.oneof(nastyChar, latin1Char) }),
  fc.record({ op: fc.constant('replace' as const), at: fc.nat(), ch: fc.oneof(nastyChar, latin1Char) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('swap' as const), a: fc.nat(), b: fc.nat() }),
  fc.record({ op: fc.constant('dupToken' as const), a: fc.nat() }),
  fc.record({ op: fc.constant('setValue' as const), a: fc.nat(), value: valueArb }),
  fc.record({ op: fc.constant('rename' as const), name: fc.constantFrom(...queryNames, 'bogus', 'spawn') }),
  fc.record({ op: fc.constant('append' as const), attr: fc.tuple(fc.constantFrom(...attrNames, 'x', '__proto__'), valueArb).map(([k, v]) => `${k}=${v}`) }),
);

function mutate(line: string, m: Mutation): string {
  const at = (n: number) => (line.length === 0 ? 0 : n % (line.length + 1));
  const tokens = line.split(' ');
  const ti = (n: number) => n % tokens.length;
  switch (m.op) {
    case 'delete':
      return line.slice(0, at(m.at)) + line.slice(at(m.at) + 1);
    case 'insert':
      return line.slice(0, at(m.at)) + m.ch + line.slice(at(m.at));
    case 'replace':
      return line.slice(0, at(m.at)) + m.ch + line.slice(at(m.at) + 1);
    case 'truncate':
      return line.slice(0, at(m.at));
    case 'swap': {
      const [a, b] = [ti(m.a), ti(m.b)];
      [tokens[a], tokens[b]] = [tokens[b] as string, tokens[a] as string];
      return tokens.join(' ');
    }
    case 'dupToken':
      tokens.splice(ti(m.a), 0, tokens[ti(m.a)] as string);
      return tokens.join(' ');
    case 'setValue': {
      const i = ti(m.a);
      const tok = tokens[i] as string;
      const eq = tok.indexOf('=');
      tokens[i] = `${eq >= 0 ? tok.slice(0, eq) : tok}=${m.value}`;
      return tokens.join(' ');
    }
    case 'rename':
      return line.replace(/^cmd=[^ ]*/, `cmd=${m.name}`);
    case 'append':
      return `${line} ${m.attr}`;
  }
}

const mutatedLine = fc.tuple(fc.constantFrom(...realLines, ...spawnLines), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([l, ms]) => ms.reduce(mutate, l));

/** Lines around a small pool of keys and services, so puts, barriers and gets meet. */
const keyArb = fc.constantFrom('k', 'a', '__proto__', '-bcast-1-0', 'PMI_process_mapping', '');
const serviceArb = fc.constantFrom('svc0', '__proto__', 's');
const kvsLine = fc.oneof(
  fc.tuple(keyArb, valueArb).map(([k, v]) => `cmd=put kvsname=kvs_pmibridge_0 key=${k} value=${v}`),
  keyArb.map((k) => `cmd=get kvsname=kvs_pmibridge_0 key=${k}`),
  fc.constant('cmd=barrier_in'),
  fc.tuple(serviceArb, valueArb).map(([s, p]) => `cmd=publish_name service=${s} port=${p}`),
  serviceArb.map((s) => `cmd=lookup_name service=${s}`),
  serviceArb.map((s) => `cmd=unpublish_name service=${s}`),
);

const lineArb = fc.oneof(
  { weight: 8, arbitrary: kvsLine },
  { weight: 4, arbitrary: fc.constantFrom(...realLines) },
  { weight: 4, arbitrary: mutatedLine },
  { weight: 3, arbitrary: vocabLine },
  { weight: 1, arbitrary: fc.constantFrom(...spawnLines) },
  { weight: 1, arbitrary: fc.string({ unit: latin1Char, maxLength: 60 }) },
);

// ---- steps and setups -----------------------------------------------------------------------------

type Step =
  | { readonly kind: 'line'; readonly conn: number; readonly line: string }
  | { readonly kind: 'overlong'; readonly conn: number; readonly prefix: string; readonly length: number }
  | { readonly kind: 'disconnect'; readonly conn: number };

type Setup = 'tcp' | 'tcp+initack' | 'fd' | 'fd+init' | 'fd+init+kvs' | 'fd+init+spawn' | 'fd+init+spawn-failed' | 'fd+init+strikes' | 'fd+init+strikes+spawn' | 'fd+init+barrier';

const SETUP_LINES: Readonly<Record<Setup, readonly string[]>> = {
  tcp: [],
  'tcp+initack': ['cmd=initack pmiid=0'],
  fd: [],
  'fd+init': ['cmd=init pmi_version=1 pmi_subversion=1'],
  'fd+init+kvs': ['cmd=init pmi_version=1 pmi_subversion=1', 'cmd=put kvsname=kvs_pmibridge_0 key=k value=v', 'cmd=put key=__proto__ value=p'],
  'fd+init+spawn': ['cmd=init pmi_version=1 pmi_subversion=1', 'mcmd=spawn', 'nprocs=1'],
  'fd+init+spawn-failed': ['cmd=init pmi_version=1 pmi_subversion=1', 'mcmd=spawn', 'nprocs=1', 'garbage'], // now swallowing to endcmd
  'fd+init+strikes': ['cmd=init pmi_version=1 pmi_subversion=1', ...Array.from({ length: 7 }, () => 'garbage')],
  // a whole spawn request after 7 bad lines: well-formed (refused), so the count starts again
  'fd+init+strikes+spawn': ['cmd=init pmi_version=1 pmi_subversion=1', ...Array.from({ length: 7 }, () => 'garbage'), ...spawnLines],
  'fd+init+barrier': ['cmd=init pmi_version=1 pmi_subversion=1', 'cmd=barrier_in'],
};

const scenario = fc
  .record({
    size: fc.oneof({ weight: 3, arbitrary: fc.constant(1) }, { weight: 2, arbitrary: fc.integer({ min: 2, max: 3 }) }),
    setups: fc.array(fc.constantFrom(...(Object.keys(SETUP_LINES) as Setup[])), { minLength: 1, maxLength: 3 }),
    steps: fc.array(
      fc.oneof(
        { weight: 20, arbitrary: fc.record({ kind: fc.constant('line' as const), conn: fc.nat(), line: lineArb }) },
        {
          weight: 2,
          arbitrary: fc.record({
            kind: fc.constant('overlong' as const),
            conn: fc.nat(),
            prefix: fc.oneof(lineArb, fc.constantFrom('cmd=put kvsname=k key=k value=AAAA', 'cmd=initack pmiid=1', 'cmd=abort exitcode=1')).map((l) => l.slice(0, 128)),
            length: fc.integer({ min: 1409, max: 1_000_000 }),
          }),
        },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant('disconnect' as const), conn: fc.nat() }) },
      ),
      { maxLength: 40, size: 'max' },
    ),
  })
  .map(({ size, setups, steps }) => {
    // setup lines come first, as ordinary steps on their connection
    const pre: Step[] = setups.flatMap((s, conn) => SETUP_LINES[s].map((line) => ({ kind: 'line' as const, conn, line })));
    return { size, setups, steps: [...pre, ...steps.map((s) => ({ ...s, conn: s.conn % setups.length }))] };
  });

// ---- the model ------------------------------------------------------------------------------------

/**
 * A connection's spawn state: block parsing is SpawnAssembler's, but the swallowing after a failure
 * is modelled here on its own and checked against the assembler. A failure inside an open segment
 * (not at its first line, not at its endcmd) swallows every line up to and including the next
 * endcmd; if none comes within maxLines lines, the next line is answered once more.
 */
class SpawnModel {
  readonly assembler: SpawnAssembler;
  swallowing = false;
  private swallowed = 0;

  constructor(private readonly maxLines: number) {
    this.assembler = new SpawnAssembler(maxLines);
  }

  get active(): boolean {
    return this.assembler.active;
  }

  push(line: string): 'more' | 'error' | 'done' {
    const inSegment = !this.swallowing && this.assembler.active; // not swallowing: active means a segment is open
    const step = this.assembler.push(line);
    if (this.swallowing) {
      let want: 'more' | 'error' = 'more';
      if (line.trim() === 'endcmd') this.swallowing = false;
      else if (++this.swallowed > this.maxLines) {
        this.swallowing = false;
        want = 'error';
      }
      if (step.kind !== want) throw new Error(`swallowing ${JSON.stringify(line)}: model says ${want}, the assembler ${JSON.stringify(step)}`);
      if (this.assembler.active !== this.swallowing) throw new Error(`swallowing ${JSON.stringify(line)}: assembler active=${this.assembler.active}`);
      return want;
    }
    if (step.kind === 'error') {
      // failing at a segment's own endcmd leaves nothing of it to swallow; a first line that is
      // an unknown mcmd= opens a block all the same (swallowed to its endcmd)
      this.swallowing = (inSegment || line.startsWith('mcmd=')) && line.trim() !== 'endcmd';
      this.swallowed = 0;
      if (this.assembler.active !== this.swallowing) throw new Error(`failed at ${JSON.stringify(line)}: swallowing should be ${this.swallowing}, assembler active=${this.assembler.active}`);
    }
    return step.kind;
  }
}

interface Expectation {
  /** The reply command; 'none' (no answer) or 'barrier' (now or later). */
  readonly answer: string;
  /** How the line moves the count of bad lines in a row. */
  readonly strike: 'count' | 'reset' | 'keep';
  /** A rank's abort, malformed or not: the job ends with this exit code (and reason). */
  readonly abort?: { readonly exitCode: number; readonly reason: RegExp };
}

/** What the engine must answer to a line on a connection (bound: the connection is a rank). */
function expectedFor(line: string, spawn: SpawnModel, bound: boolean): Expectation {
  if (spawn.active || line.startsWith('mcmd=')) {
    const kind = spawn.push(line);
    if (kind === 'more') return { answer: 'none', strike: 'keep' };
    // a malformed block is one bad line; a whole, well-formed request (refused) is a query
    return { answer: 'spawn_result', strike: kind === 'error' ? 'count' : 'reset' };
  }
  const d = decodeQuery(line);
  if (!d.ok) {
    if (d.cmd === 'abort' && bound) return { answer: 'none', strike: 'keep', abort: { exitCode: 1, reason: /: malformed abort request \(/ } };
    return { answer: d.reply ?? 'error', strike: 'count' };
  }
  if (d.query.cmd === 'abort') {
    const code = d.query.exitcode ?? 1;
    return { answer: 'none', strike: 'reset', ...(bound ? { abort: { exitCode: code & 255, reason: new RegExp(`called abort with exit code ${code}`) } } : {}) };
  }
  if (d.query.cmd === 'barrier_in') return { answer: 'barrier', strike: 'reset' };
  return { answer: replyNameOf(d.query.cmd) ?? 'error', strike: 'reset' };
}

/** An overlong line: a bad line answered in its command's reply — unless it is a rank's abort. */
function expectedForOverlong(prefix: string, bound: boolean): Expectation {
  const cmd = /^cmd=([^ \t]+)/.exec(prefix)?.[1] ?? '';
  if (cmd === 'abort' && bound) return { answer: 'none', strike: 'keep', abort: { exitCode: 1, reason: /: malformed abort request \(a \d+-byte line\)$/ } };
  return { answer: replyNameOf(cmd) ?? 'error', strike: 'count' };
}

/** Reply units: initack's `cmd=set` trailer lines belong to the initack line before them. */
function units(lines: readonly string[]): string[] {
  const out: string[] = [];
  for (const l of lines) {
    if (l.startsWith('cmd=set ')) {
      if (!/^cmd=initack rc=0 /.test(out.at(-1) ?? '')) throw new Error(`cmd=set line without an initack before it: ${JSON.stringify(lines)}`);
      continue;
    }
    out.push(l);
  }
  return out;
}

function cmdName(line: string): string {
  return /^cmd=([^ ]*)/.exec(line)?.[1] ?? '';
}

/** How often each `cmd rc` was answered over all runs: evidence that the runs reach deep states. */
const stats = new Map<string, number>();

function run(size: number, setups: readonly Setup[], steps: readonly Step[]): void {
  const h = new EngineHarness({ size });
  const conns = setups.map((s, i) => (s.startsWith('fd') ? h.fd(i % size) : h.tcp()));
  const spawn = conns.map(() => new SpawnModel(h.engine.limits.maxSpawnLines));
  const pending = conns.map(() => 0);
  const strikes = conns.map(() => 0);
  const gone = conns.map(() => false);

  for (const [n, step] of steps.entries()) {
    const c = conns[step.conn];
    if (!c) throw new Error('bad step');
    const where = `step ${n} ${JSON.stringify(step)}`;
    const ignored = gone[step.conn] || c.closed || h.finished !== null;
    const eventsBefore = h.events.length;

    const bound = h.engine.rankOf(c.id) !== undefined;
    let exp: Expectation = { answer: 'none', strike: 'keep' };
    if (step.kind === 'disconnect') {
      if (!gone[step.conn]) h.apply(h.engine.disconnect(c.id));
      gone[step.conn] = true;
      pending[step.conn] = 0;
    } else if (step.kind === 'overlong') {
      if (!ignored) exp = expectedForOverlong(step.prefix, bound);
      h.apply(h.engine.receive(c.id, { kind: 'overlong', prefix: step.prefix, length: step.length }));
    } else {
      if (!ignored) exp = expectedFor(step.line, spawn[step.conn] as SpawnModel, bound);
      h.apply(h.engine.receive(c.id, { kind: 'line', line: step.line }));
    }
    const expected = exp.answer;

    const got = conns.map((d) => units(d.take()));
    for (const l of got.flat()) {
      const k = `${cmdName(l)} rc=${/ rc=(\S+)/.exec(l)?.[1] ?? '?'}`;
      stats.set(k, (stats.get(k) ?? 0) + 1);
    }
    const newEvents = h.events.slice(eventsBefore);
    const released = newEvents.some((e) => e.type === 'barrier-complete' || (e.type === 'protocol-error' && e.code === 'E_BARRIER_IMPOSSIBLE'));

    if (ignored || step.kind === 'disconnect') {
      if (got.some((g) => g.length > 0)) throw new Error(`${where}: answered although ignored: ${JSON.stringify(got)}`);
      continue;
    }
    // the job's end: only by a rank's abort (well-formed or not) or by a rank lost
    if (exp.abort) {
      const rank = h.engine.rankOf(c.id);
      if (!h.finished || h.finished.ok || h.finished.exitCode !== exp.abort.exitCode || h.finished.rank !== rank || !exp.abort.reason.test(h.finished.reason)) {
        throw new Error(`${where}: expected the job to end with exit code ${exp.abort.exitCode} (${exp.abort.reason}), got ${JSON.stringify(h.finished)}`);
      }
    } else if (h.finished !== null && !h.finished.ok) {
      throw new Error(`${where}: the job failed without an abort: ${JSON.stringify(h.finished)}`); // (all ranks finalizing may end it ok)
    }
    // bad lines in a row: only undecodable ones count, any well-formed query resets the count
    const before = strikes[step.conn] ?? 0;
    if (exp.strike === 'count') strikes[step.conn] = before + 1;
    else if (exp.strike === 'reset') strikes[step.conn] = 0;
    const struckOut = (strikes[step.conn] ?? 0) >= DEFAULT_MAX_STRIKES;
    const closedForBadLines = c.closed && /bad lines in a row/.test(c.closeReason ?? '');
    if (struckOut !== closedForBadLines) {
      throw new Error(`${where}: model counts ${strikes[step.conn]} bad line(s) in a row (${before} before), engine ${c.closed ? `closed: ${c.closeReason}` : 'kept the connection open'}`);
    }
    if (struckOut && !c.closeReason?.startsWith(`${DEFAULT_MAX_STRIKES} bad lines in a row (last: `)) throw new Error(`${where}: close reason ${c.closeReason}`);

    const mine = got[step.conn] ?? [];
    if (expected === 'none') {
      if (mine.length !== 0) throw new Error(`${where}: expected no answer, got ${JSON.stringify(mine)}`);
    } else if (expected === 'barrier') {
      if (mine.length > 1) throw new Error(`${where}: two answers ${JSON.stringify(mine)}`);
      if (mine.length === 0) pending[step.conn] = (pending[step.conn] ?? 0) + 1;
      else if (cmdName(mine[0] as string) !== 'barrier_out') throw new Error(`${where}: answered ${JSON.stringify(mine)}`);
    } else {
      if (mine.length !== 1) throw new Error(`${where}: expected exactly one ${expected}, got ${JSON.stringify(mine)}`);
      if (cmdName(mine[0] as string) !== expected) throw new Error(`${where}: expected ${expected}, got ${JSON.stringify(mine)}`);
    }
    // answers to other connections: only barrier_out, only when a barrier was released
    got.forEach((g, i) => {
      if (i === step.conn) return;
      if (!released && g.length > 0) throw new Error(`${where}: connection ${i} got ${JSON.stringify(g)} out of turn`);
      if (g.length > (pending[i] ?? 0) || g.some((l) => cmdName(l) !== 'barrier_out')) throw new Error(`${where}: connection ${i} got ${JSON.stringify(g)}`);
    });
    if (released) {
      conns.forEach((d, i) => {
        if (i === step.conn) return;
        const open = !gone[i] && !d.closed;
        if (open && (got[i]?.length ?? 0) !== pending[i]) throw new Error(`${where}: released barrier did not answer connection ${i}`);
        pending[i] = 0;
      });
    }
    if (h.finished === null && (pending[step.conn] ?? 0) > 1) throw new Error(`${where}: two outstanding barriers`);
  }

  // The model's outstanding barriers are exactly the engine's ranks in a barrier.
  if (h.finished === null) {
    const inBarrier = new Set(h.engine.rankStates().filter((s) => s.state === 'in-barrier').map((s) => s.conn));
    conns.forEach((d, i) => {
      if (gone[i]) return;
      if ((pending[i] === 1) !== inBarrier.has(d.id)) throw new Error(`connection ${i}: model says ${pending[i]} outstanding barrier(s), engine says ${inBarrier.has(d.id) ? 'in' : 'not in'} a barrier`);
    });
  }
}

t.test('transcript lines are loaded', async (t) => {
  t.ok(realLines.length > 50, `${realLines.length} distinct request lines`);
  t.ok(realLines.some((l) => l.startsWith('cmd=initack')), 'initack among them');
  t.ok(realLines.some((l) => /^ *\d+ *cmd=/.test(l)), 'PMI-2 probes among them');
});

t.test('random and mutated lines: no throw, one answer per query, readable bytes', async (t) => {
  fc.assert(
    fc.property(scenario, ({ size, setups, steps }) => {
      run(size, setups, steps);
    }),
    params,
  );
  t.pass(`${numRuns} runs${seed !== undefined ? ` (seed ${seed})` : ''}`);
  t.comment([...stats].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join(', '));
});

t.test('a long single-rank session of real lines and their mutations never wedges', async (t) => {
  fc.assert(
    fc.property(fc.array(lineArb, { minLength: 50, maxLength: 200 }), (lines) => {
      const steps: Step[] = ['cmd=init pmi_version=1 pmi_subversion=1', ...lines].map((line) => ({ kind: 'line', conn: 0, line }));
      run(1, ['fd'], steps);
    }),
    { ...params, numRuns: Math.max(1, Math.floor(numRuns / 4)) },
  );
  t.pass('ok');
});
