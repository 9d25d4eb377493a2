/**
 * The multi-line `mcmd=spawn … endcmd` request: MPICH >= 4.1 one-attribute-per-line blocks, legacy
 * multi-pair lines, multi-segment requests, malformed blocks (swallowed up to their endcmd) and the line limit.
 */
import t from 'tap';
import { SpawnAssembler, formatSpawn, type SpawnRequest, type SpawnStep } from '../src/protocol/index.js';

/** Feed lines; return every step (the last one is the interesting one). */
function feed(a: SpawnAssembler, lines: readonly string[]): SpawnStep[] {
  return lines.map((l) => a.push(l));
}

const linesOf = (block: string) => block.replace(/\n$/, '').split('\n');

t.test('MPICH >= 4.1 block, one attribute per line', async (t) => {
  // pmi-wire-protocol.md §2.13; values may hold anything but \n (spaces, '=').
  const block = [
    'mcmd=spawn',
    'nprocs=2',
    'execname=/usr/bin/worker',
    'totspawns=1',
    'spawnssofar=1',
    'argcnt=2',
    'arg1=--name=a b',
    'arg2=plain',
    'preput_num=1',
    'preput_key_0=PARENT_ROOT_PORT_NAME',
    'preput_val_0=tag#0$description#vm$port#33$ifname#127.0.0.1$',
    'info_num=1',
    'info_key_0=wdir',
    'info_val_0=/tmp/with space',
    'endcmd',
  ];
  const a = new SpawnAssembler(1024);
  t.equal(a.active, false);
  const steps = feed(a, block);
  t.same(steps.slice(0, -1).map((s) => s.kind), Array(block.length - 1).fill('more'), 'more until endcmd');
  t.same(steps.at(-1), {
    kind: 'done',
    request: {
      segments: [
        {
          nprocs: 2,
          execname: '/usr/bin/worker',
          args: ['--name=a b', 'plain'],
          preput: new Map([['PARENT_ROOT_PORT_NAME', 'tag#0$description#vm$port#33$ifname#127.0.0.1$']]),
          info: new Map([['wdir', '/tmp/with space']]),
        },
      ],
    },
  });
  t.equal(a.active, false, 'idle after done');
});

t.test('formatSpawn writes the MPICH >= 4.1 block and the assembler reads it back', async (t) => {
  const req: SpawnRequest = {
    segments: [
      { nprocs: 1, execname: 'child', args: [], preput: new Map(), info: new Map() },
    ],
  };
  const block = formatSpawn(req);
  t.equal(block, 'mcmd=spawn\nnprocs=1\nexecname=child\ntotspawns=1\nspawnssofar=1\nargcnt=0\npreput_num=0\ninfo_num=0\nendcmd\n');
  const steps = feed(new SpawnAssembler(100), linesOf(block));
  t.same(steps.at(-1), { kind: 'done', request: req });
});

t.test('legacy client: several key=value pairs per line', async (t) => {
  const a = new SpawnAssembler(1024);
  const steps = feed(a, [
    'mcmd=spawn',
    'nprocs=3 execname=/bin/hostname totspawns=1 spawnssofar=1',
    'arg1=-s arg2=-f argcnt=2',
    'preput_num=1 preput_key_0=k0 preput_val_0=v0',
    'info_num=0',
    'endcmd',
  ]);
  t.same(steps.at(-1), {
    kind: 'done',
    request: { segments: [{ nprocs: 3, execname: '/bin/hostname', args: ['-s', '-f'], preput: new Map([['k0', 'v0']]), info: new Map() }] },
  });
});

t.test('two segments: done only after spawnssofar == totspawns', async (t) => {
  const req: SpawnRequest = {
    segments: [
      { nprocs: 2, execname: 'a.out', args: ['x'], preput: new Map([['pk', 'pv']]), info: new Map([['host', 'n1']]) },
      { nprocs: 1, execname: 'b.out', args: [], preput: new Map(), info: new Map() },
    ],
  };
  const block = formatSpawn(req);
  t.equal((block.match(/^endcmd$/gm) ?? []).length, 2, 'one endcmd per segment');
  t.equal((block.match(/^preput_num=/gm) ?? []).length, 1, 'preput only in the first segment (>= 4.1)');
  const lines = linesOf(block);
  const firstEnd = lines.indexOf('endcmd');
  const a = new SpawnAssembler(1024);
  const steps = feed(a, lines);
  t.equal(steps[firstEnd]?.kind, 'more', 'the first endcmd (spawnssofar=1 of 2) is not the end');
  t.equal(a.active, false, 'between segments no segment is open');
  t.same(steps.at(-1), { kind: 'done', request: req });
  t.equal(steps.filter((s) => s.kind === 'done').length, 1, 'one result for the whole request');
});

t.test('segments out of order still end at the segment whose spawnssofar reaches totspawns', async (t) => {
  const seg = (sofar: number) => ['mcmd=spawn', 'nprocs=1', 'execname=e', 'totspawns=3', `spawnssofar=${sofar}`, 'argcnt=0', 'info_num=0', 'endcmd'];
  const a = new SpawnAssembler(1024);
  const steps = feed(a, [...seg(1), ...seg(2)]);
  t.ok(steps.every((s) => s.kind === 'more'), 'two of three segments: still more');
  const last = feed(a, seg(3)).at(-1);
  t.equal(last?.kind, 'done');
  t.equal(last?.kind === 'done' && last.request.segments.length, 3);
});

t.test('malformed blocks are errors; a block that fails inside a segment is swallowed up to its endcmd', async (t) => {
  const good = ['mcmd=spawn', 'nprocs=1', 'execname=e', 'totspawns=1', 'spawnssofar=1', 'endcmd'];
  // skip: the failure came inside an open segment, so the rest of it (up to endcmd) is swallowed (as flux does).
  // A failure at a first line that is not mcmd=, or at the segment's own endcmd, leaves nothing to swallow.
  const cases: ReadonlyArray<readonly [string, readonly string[], RegExp, boolean]> = [
    ['does not start with mcmd=spawn', ['nprocs=1'], /must start with mcmd=spawn/, false],
    ['another mcmd (a block all the same, framed to its endcmd as hydra does)', ['mcmd=spawnx'], /must start with mcmd=spawn/, true],
    ['a line without =', ['mcmd=spawn', 'garbage'], /without key=value/, true],
    ['a line starting with =', ['mcmd=spawn', '=x'], /without key=value/, true],
    ['mcmd= inside a segment', ['mcmd=spawn', 'nprocs=1', 'mcmd=spawn'], /inside an unfinished spawn segment/, true],
    ['no nprocs', ['mcmd=spawn', 'execname=e', 'totspawns=1', 'spawnssofar=1', 'endcmd'], /lacks nprocs/, false],
    ['no execname', ['mcmd=spawn', 'nprocs=1', 'totspawns=1', 'spawnssofar=1', 'endcmd'], /lacks/, false],
    ['nprocs not a number', ['mcmd=spawn', 'nprocs=two', 'execname=e', 'totspawns=1', 'spawnssofar=1', 'endcmd'], /lacks/, false],
    ['no totspawns', ['mcmd=spawn', 'nprocs=1', 'execname=e', 'spawnssofar=1', 'endcmd'], /lacks/, false],
  ];
  for (const [what, lines, why, skip] of cases) {
    const a = new SpawnAssembler(1024);
    const steps = feed(a, lines);
    const last = steps.at(-1);
    t.equal(last?.kind, 'error', what);
    if (last?.kind === 'error') t.match(last.detail, why, `${what}: ${last.detail}`);
    t.ok(steps.slice(0, -1).every((s) => s.kind === 'more'), `${what}: no earlier result`);
    t.equal(a.active, skip, skip ? `${what}: swallowing the rest of the block` : `${what}: reset`);
    if (skip) {
      const rest = feed(a, ['totspawns=1', 'garbage again', 'mcmd=spawn', '  endcmd  ']);
      t.same(rest.map((s) => s.kind), ['more', 'more', 'more', 'more'], `${what}: the rest of the block, up to and including endcmd, gets no result`);
      t.equal(a.active, false, `${what}: reset after the endcmd`);
    }
    t.equal(feed(a, good).at(-1)?.kind, 'done', `${what}: a good block afterwards works`);
    t.equal(a.active, false, `${what}: idle after the good block`);
  }
});

t.test('a failed block whose endcmd never comes is answered once more after maxLines lines', async (t) => {
  const a = new SpawnAssembler(4);
  t.equal(feed(a, ['mcmd=spawn', 'garbage']).at(-1)?.kind, 'error');
  const swallowed = feed(a, ['a=1', 'b=2', 'c=3', 'd=4']);
  t.same(swallowed.map((s) => s.kind), ['more', 'more', 'more', 'more'], 'maxLines lines are swallowed');
  t.equal(a.active, true);
  const next = a.push('e=5');
  t.equal(next.kind, 'error', 'the next one is answered');
  if (next.kind === 'error') t.match(next.detail, /no endcmd within 4 lines of a failed spawn request/);
  t.equal(a.active, false, 'and swallowing stops');
  t.equal(feed(a, ['mcmd=spawn', 'nprocs=1', 'execname=e', 'totspawns=1']).at(-1)?.kind, 'more', 'a new block starts afresh');
});

t.test('swallowed lines do not count against the next block', async (t) => {
  const block = ['mcmd=spawn', 'nprocs=1', 'execname=e', 'totspawns=1', 'spawnssofar=1', 'endcmd']; // 6 lines
  const a = new SpawnAssembler(6);
  t.equal(feed(a, ['mcmd=spawn', 'garbage']).at(-1)?.kind, 'error');
  t.same(feed(a, ['x=1', 'x=2', 'x=3', 'x=4', 'endcmd']).map((s) => s.kind), Array(5).fill('more'), 'swallowed to endcmd');
  t.same(feed(a, block).map((s) => s.kind), ['more', 'more', 'more', 'more', 'more', 'done'], 'a block of exactly maxLines lines still fits');
});

t.test('missing optional parts default sensibly', async (t) => {
  const last = feed(new SpawnAssembler(64), ['mcmd=spawn', 'nprocs=1', 'execname=e', 'totspawns=1', 'spawnssofar=1', 'argcnt=2', 'arg2=only-second', 'endcmd']).at(-1);
  t.same(last, { kind: 'done', request: { segments: [{ nprocs: 1, execname: 'e', args: ['', 'only-second'], preput: new Map(), info: new Map() }] } });
});

t.test('line limit', async (t) => {
  const block = ['mcmd=spawn', 'nprocs=1', 'execname=e', 'totspawns=1', 'spawnssofar=1', 'endcmd']; // 6 lines
  const exact = new SpawnAssembler(6);
  t.equal(feed(exact, block).at(-1)?.kind, 'done', 'a block of exactly maxLines lines');
  t.equal(feed(exact, block).at(-1)?.kind, 'done', 'the count starts again for the next block');

  const small = new SpawnAssembler(5);
  const steps = feed(small, block);
  const errAt = steps.findIndex((s) => s.kind === 'error');
  t.equal(errAt, 5, 'the 6th line of a 5-line limit is refused');
  const err = steps[errAt];
  if (err?.kind === 'error') t.match(err.detail, /longer than 5 lines/);
  t.equal(small.active, false, 'the refused line was the endcmd: nothing left to swallow');
  t.equal(feed(small, block.slice(0, 5)).at(-1)?.kind, 'more', 'the next block is read afresh');

  const smaller = new SpawnAssembler(4);
  const cut = feed(smaller, block);
  t.same(cut.map((s) => s.kind), ['more', 'more', 'more', 'more', 'error', 'more'], 'cut inside the segment: its endcmd is swallowed');
  t.equal(smaller.active, false);

  const flood = new SpawnAssembler(1024);
  const many = ['mcmd=spawn', ...Array.from({ length: 5000 }, (_, i) => `arg${i + 1}=x`)];
  const floodSteps = feed(flood, many);
  const errors = floodSteps.flatMap((s, i) => (s.kind === 'error' ? [i] : []));
  t.equal(errors[0], 1024, 'a runaway block is cut at the limit');
  t.equal(errors[1], 1024 + 1 + 1024, '… swallowed for another 1024 lines, then answered once more');
  t.ok(floodSteps.slice(1025, 2049).every((s) => s.kind === 'more'), 'nothing answered while swallowing');
  t.ok(floodSteps.slice(2050).every((s) => s.kind === 'error'), 'afterwards each stray line is no spawn block (the engine reads them as lines)');
});

t.test('counts are bounded by what the block carries: a 7-line block cannot make us loop or allocate', async (t) => {
  const head = ['mcmd=spawn', 'nprocs=1', 'execname=x', 'totspawns=1', 'spawnssofar=1'];
  const cases: ReadonlyArray<readonly [string, string, RegExp]> = [
    ['argcnt beyond the attributes of its segment', 'argcnt=5000', /^spawn_argcnt_5000_exceeds_limit_\d+$/],
    ['argcnt of a billion (was ~1 GB of empty args)', 'argcnt=1000000000', /^spawn_argcnt_1000000000_exceeds_limit_\d+$/],
    ['preput_num of 10^11 (was hours of CPU)', 'preput_num=100000000000', /^spawn_preput_num_100000000000_exceeds_limit_\d+$/],
    ['info_num beyond its pairs', 'info_num=4', /^spawn_info_num_4_exceeds_limit_\d+$/],
    ['a count of more digits than a double holds', `argcnt=${'9'.repeat(400)}`, /^spawn_argcnt_9+_exceeds_limit_\d+$|^spawn_argcnt_is_out_of_range$/],
  ];
  for (const [what, line, msg] of cases) {
    const a = new SpawnAssembler(1024);
    const t0 = performance.now();
    const last = feed(a, [...head, line, 'endcmd']).at(-1);
    t.ok(performance.now() - t0 < 5000, `${what}: answered at once`);
    t.equal(last?.kind, 'error', what);
    if (last?.kind === 'error') {
      t.match(last.msg, msg, `${what}: msg ${last.msg}`);
      t.match(last.detail, /spawn/, `${what}: ${last.detail}`);
    }
    t.equal(a.active, false, `${what}: failed at its own endcmd, nothing to swallow`);
  }
  const sane: ReadonlyArray<readonly [string, string[], RegExp]> = [
    ['nprocs beyond an int', ['nprocs=100000000000'], /^spawn_nprocs_100000000000_exceeds_limit_2147483647$/],
    ['totspawns beyond what 1024 lines can carry', ['totspawns=1000000'], /^spawn_totspawns_1000000_exceeds_limit_341$/],
    ['spawnssofar beyond totspawns', ['spawnssofar=7'], /^spawn_spawnssofar_7_exceeds_limit_1$/],
  ];
  for (const [what, override, msg] of sane) {
    const key = (l: string) => l.slice(0, l.indexOf('='));
    const lines = head.map((l) => override.find((o) => key(o) === key(l)) ?? l);
    const last = feed(new SpawnAssembler(1024), [...lines, 'endcmd']).at(-1);
    t.equal(last?.kind, 'error', what);
    if (last?.kind === 'error') t.match(last.msg, msg, `${what}: msg ${last.msg}`);
  }
  // what a real block carries is still read whole
  const pairs = Array.from({ length: 100 }, (_, i) => [`preput_key_${i}=k${i}`, `preput_val_${i}=v${i}`]).flat();
  const ok = feed(new SpawnAssembler(1024), [...head, 'argcnt=2', 'arg1=a', 'arg2=b', 'preput_num=100', ...pairs, 'info_num=0', 'endcmd']).at(-1);
  t.equal(ok?.kind, 'done', '100 preput pairs, 2 args: accepted');
  if (ok?.kind === 'done') t.equal(ok.request.segments[0]?.preput.size, 100);
});
