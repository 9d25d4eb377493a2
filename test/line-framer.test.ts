/**
 * LineFramer: bytes → lines under any chunking, overlong lines reported once and bounded memory.
 */
import t from 'tap';
import fc from 'fast-check';
import { LineFramer, type Framed } from '../src/protocol/index.js';

const latin1 = (s: string) => Buffer.from(s, 'latin1');

/** Feed `buf` to a fresh framer in the given chunks; also returns the largest pending seen. */
function frame(maxLine: number, chunks: readonly Buffer[]): { out: Framed[]; maxPending: number; framer: LineFramer } {
  const framer = new LineFramer(maxLine);
  const out: Framed[] = [];
  let maxPending = 0;
  for (const c of chunks) {
    out.push(...framer.push(c));
    maxPending = Math.max(maxPending, framer.pending);
  }
  return { out, maxPending, framer };
}

function splitAt(buf: Buffer, ...cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of cuts) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

function byteByByte(buf: Buffer): Buffer[] {
  return Array.from(buf, (b) => Buffer.from([b]));
}

const stream = latin1(
  'cmd=init pmi_version=1 pmi_subversion=1\n' +
    'cmd=get_maxes\n' +
    '\n' + // a blank line is a line (the engine answers it)
    'cmd=put kvsname=kvs key=k value=v\r\n' + // CR is kept
    'cmd=get key=\xff\xe9\n' + // latin1: one char per byte
    'cmd=barrier_in\n',
);
const expected: Framed[] = [
  { kind: 'line', line: 'cmd=init pmi_version=1 pmi_subversion=1' },
  { kind: 'line', line: 'cmd=get_maxes' },
  { kind: 'line', line: '' },
  { kind: 'line', line: 'cmd=put kvsname=kvs key=k value=v\r' },
  { kind: 'line', line: 'cmd=get key=\xff\xe9' },
  { kind: 'line', line: 'cmd=barrier_in' },
];

t.test('one chunk with several lines', async (t) => {
  t.same(frame(1024, [stream]).out, expected);
});

t.test('split into two chunks at every byte position', async (t) => {
  for (let i = 0; i <= stream.length; i++) {
    const { out, framer } = frame(1024, splitAt(stream, i));
    t.same(out, expected, `cut at ${i}`);
    t.equal(framer.pending, 0);
  }
});

t.test('split into three chunks at every pair of positions', async (t) => {
  let bad = 0;
  for (let i = 0; i <= stream.length; i++) {
    for (let j = i; j <= stream.length; j++) {
      const { out } = frame(1024, splitAt(stream, i, j));
      if (JSON.stringify(out) !== JSON.stringify(expected)) bad++;
    }
  }
  t.equal(bad, 0, 'every 3-way split gives the same lines');
});

t.test('byte by byte', async (t) => {
  t.same(frame(1024, byteByByte(stream)).out, expected);
});

t.test('any random chunking (fast-check)', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: stream.length }), { maxLength: 12 }), (cuts) => {
      const sorted = [...cuts].sort((a, b) => a - b);
      t.same(frame(1024, splitAt(stream, ...sorted)).out, expected);
    }),
    { numRuns: 200, ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) },
  );
});

t.test('an incomplete line waits; empty chunks are harmless', async (t) => {
  const f = new LineFramer(64);
  t.same(f.push(latin1('cmd=get')), []);
  t.equal(f.pending, 7);
  t.same(f.push(Buffer.alloc(0)), []);
  t.same(f.push(latin1('_maxes\ncmd=fin')), [{ kind: 'line', line: 'cmd=get_maxes' }]);
  t.equal(f.pending, 7);
  t.same(f.push(latin1('alize\n')), [{ kind: 'line', line: 'cmd=finalize' }]);
  t.equal(f.pending, 0);
});

t.test('a line of exactly maxLine bytes is a line; one more byte is overlong', async (t) => {
  const max = 64;
  const exact = 'cmd=put key=k value=' + 'x'.repeat(max - 20);
  t.equal(exact.length, max);
  for (const chunks of [[latin1(exact + '\n')], byteByByte(latin1(exact + '\n'))]) {
    t.same(frame(max, chunks).out, [{ kind: 'line', line: exact }]);
  }
  const over = exact + 'y';
  for (const chunks of [[latin1(over + '\n')], byteByByte(latin1(over + '\n'))]) {
    const { out } = frame(max, chunks);
    t.equal(out.length, 1);
    t.match(out[0], { kind: 'overlong', length: max + 1 });
  }
});

t.test('an overlong line is reported once, with its prefix and length; following lines still come', async (t) => {
  const max = 64;
  const long = 'cmd=put kvsname=kvs key=big value=' + 'A'.repeat(500);
  const buf = latin1(`cmd=get_maxes\n${long}\ncmd=get key=after\n`);
  const check = (out: Framed[], how: string) => {
    t.equal(out.length, 3, `${how}: three frames`);
    t.same(out[0], { kind: 'line', line: 'cmd=get_maxes' }, how);
    const o = out[1];
    t.equal(o?.kind, 'overlong', how);
    if (o?.kind === 'overlong') {
      t.equal(o.length, long.length, `${how}: length counts every byte of the line`);
      t.ok(long.startsWith(o.prefix), `${how}: prefix is the start of the line`);
      t.ok(o.prefix.length >= Math.min(128, max + 1), `${how}: prefix long enough to see the command (${o.prefix.length})`);
      t.ok(o.prefix.length <= 128, `${how}: prefix bounded`);
    }
    t.same(out[2], { kind: 'line', line: 'cmd=get key=after' }, how);
  };
  check(frame(max, [buf]).out, 'one chunk');
  check(frame(max, byteByByte(buf)).out, 'byte by byte');
  let mismatches = 0;
  for (let i = 0; i <= buf.length; i++) {
    const out = frame(max, splitAt(buf, i)).out;
    const o = out[1];
    if (out.length !== 3 || o?.kind !== 'overlong' || o.length !== long.length || !long.startsWith(o.prefix) || (out[2] as Framed).kind !== 'line') mismatches++;
  }
  t.equal(mismatches, 0, 'every two-chunk split reports it once');
});

t.test('two overlong lines in a row, and an overlong line that ends a chunk exactly', async (t) => {
  const max = 64;
  const a = 'cmd=put key=a value=' + 'a'.repeat(100);
  const b = 'cmd=get key=' + 'b'.repeat(100);
  const out = frame(max, [latin1(`${a}\n${b}\n`), latin1('cmd=barrier_in\n')]).out;
  t.same(
    out.map((f) => (f.kind === 'line' ? f.line : `overlong:${f.length}:${f.prefix.slice(0, 8)}`)),
    [`overlong:${a.length}:cmd=put `, `overlong:${b.length}:cmd=get `, 'cmd=barrier_in'],
  );
  const f = new LineFramer(max);
  t.same(f.push(latin1(a)), [], 'nothing until the newline');
  t.same(f.push(latin1('\n')), [{ kind: 'overlong', prefix: a.slice(0, 128), length: a.length }]);
});

t.test('pending bytes stay bounded by maxLine', async (t) => {
  const max = 100;
  const huge = latin1('cmd=put key=k value=' + 'z'.repeat(100_000));
  const chunked = frame(max, [huge]);
  t.equal(chunked.out.length, 0, 'no frame before the newline');
  t.ok(chunked.maxPending <= max, `one chunk: pending ${chunked.maxPending}`);
  const bytes = frame(max, byteByByte(huge.subarray(0, 5000)));
  t.ok(bytes.maxPending <= max, `byte by byte: pending ${bytes.maxPending}`);
  const slices = frame(max, Array.from({ length: 1000 }, () => latin1('q'.repeat(37))));
  t.ok(slices.maxPending <= max, `many small chunks: pending ${slices.maxPending}`);
  const tail = slices.framer.push(latin1('\ncmd=get_maxes\n'));
  t.match(tail, [{ kind: 'overlong', length: 37_000 }, { kind: 'line', line: 'cmd=get_maxes' }]);
  const o = tail[0];
  // The prefix keeps at least min(128, maxLine + 1) bytes; how many more depends on the chunking.
  t.ok(o?.kind === 'overlong' && /^q+$/.test(o.prefix) && o.prefix.length >= 101 && o.prefix.length <= 128, 'prefix of the overlong line');
  t.equal(slices.framer.pending, 0);
});

t.test('a reused read buffer: only the first `end` bytes count, and nothing kept aliases it', async (t) => {
  // What LineConnection does: one buffer for every read, refilled in place, stale bytes behind.
  const buf = Buffer.alloc(256, 'x\n');
  const fill = (s: string) => buf.write(s, 0, 'latin1');
  const seen: Framed[] = [];
  const put = 'cmd=put key=k value=0123456789abcdef';
  for (const f of [new LineFramer(1024), new LineFramer(16)]) {
    seen.length = 0;
    for (const part of ['cmd=get_', 'maxes\ncmd=barr', 'ier_in\ncmd=put key=k value=0123456789abcdef', '\n']) {
      const n = fill(part);
      seen.push(...f.push(buf, n));
      buf.fill('!', 0, n); // the next read overwrites it
    }
    t.same(
      seen.map((x) => (x.kind === 'line' ? x.line : `overlong:${x.length}:${x.prefix}`)),
      ['cmd=get_maxes', 'cmd=barrier_in', f.maxLine > 16 ? put : `overlong:${put.length}:${put}`],
      `maxLine ${f.maxLine}: stale bytes after end ignored, carried bytes copied`,
    );
  }
});

t.test('bad maxLine', async (t) => {
  t.throws(() => new LineFramer(0), TypeError);
  t.throws(() => new LineFramer(1.5), TypeError);
  t.throws(() => new LineFramer(-1), TypeError);
});
