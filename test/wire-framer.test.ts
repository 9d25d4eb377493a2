/**
 * WireFramer: PMI-1 lines and PMI-2 frames on one stream, told apart by their first bytes, the
 * same items under any chunking, bad lengths stop the stream, overlong messages are reported
 * once and never buffered, truncated ones are reported at end(), foreign openings at once.
 *
 * Reproduce a property failure with FC_SEED=<seed> (printed by fast-check).
 */
import t from 'tap';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { LineFramer, WireFramer, type WireFramerOptions, type WireItem } from '../src/protocol/index.js';

const seed = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};
const latin1 = (s: string) => Buffer.from(s, 'latin1');
const frame = (body: string) => `${String(body.length).padStart(6, ' ')}${body}`;
const frameLeft = (body: string) => String(body.length).padEnd(6, ' ') + body;

/** Feed `chunks` to a fresh framer, then end(); also returns the largest pending seen. */
function run(chunks: readonly Buffer[], options: Partial<WireFramerOptions> = {}, end = true): { out: WireItem[]; maxPending: number; framer: WireFramer } {
  const framer = new WireFramer({ maxLine: 1024, ...options });
  const out: WireItem[] = [];
  let maxPending = 0;
  for (const c of chunks) {
    out.push(...framer.push(c));
    maxPending = Math.max(maxPending, framer.pending);
  }
  if (end) out.push(...framer.end());
  return { out, maxPending, framer };
}

function splitAt(buf: Buffer, ...cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

const byteByByte = (buf: Buffer) => Array.from(buf, (x) => Buffer.from([x]));

// What an MPICH PMI-2 client and hydra exchange, and PMI-1 lines of another client, on one stream.
const mixed = latin1(
  'cmd=init pmi_version=2 pmi_subversion=0\n' +
    frame('cmd=fullinit;pmirank=0;') +
    frameLeft('cmd=fullinit;pmirank=0;threaded=FALSE;') +
    frame('cmd=kvs-put;key=k;value=a;;b\nc;') + // a newline inside a frame is just a byte
    'cmd=get_maxes\n' +
    frame('') +
    '\n' +
    frame('cmd=kvs-get;key=\xff\xe9;') +
    'mcmd=spawn\nnprocs=1\nendcmd\n' +
    frame('cmd=finalize;'),
);
const expected: WireItem[] = [
  { kind: 'line', line: 'cmd=init pmi_version=2 pmi_subversion=0' },
  { kind: 'frame', body: 'cmd=fullinit;pmirank=0;' },
  { kind: 'frame', body: 'cmd=fullinit;pmirank=0;threaded=FALSE;' },
  { kind: 'frame', body: 'cmd=kvs-put;key=k;value=a;;b\nc;' },
  { kind: 'line', line: 'cmd=get_maxes' },
  { kind: 'frame', body: '' },
  { kind: 'line', line: '' },
  { kind: 'frame', body: 'cmd=kvs-get;key=\xff\xe9;' },
  { kind: 'line', line: 'mcmd=spawn' },
  { kind: 'line', line: 'nprocs=1' },
  { kind: 'line', line: 'endcmd' },
  { kind: 'frame', body: 'cmd=finalize;' },
];

t.test('PMI-1 lines and PMI-2 frames on one stream', async (t) => {
  t.same(run([mixed]).out, expected);
});

t.test('a frame is complete without any newline (the hang of the issue)', async (t) => {
  const f = new WireFramer({ maxLine: 1024 });
  t.same(f.push(latin1('cmd=init pmi_version=2 pmi_subversion=0\n')), [{ kind: 'line', line: 'cmd=init pmi_version=2 pmi_subversion=0' }]);
  t.same(f.push(latin1('    23cmd=fullinit;pmirank=0;')), [{ kind: 'frame', body: 'cmd=fullinit;pmirank=0;' }]);
  t.equal(f.pending, 0);
});

t.test('split into two chunks at every byte position, and into three at every pair', async (t) => {
  for (let i = 0; i <= mixed.length; i++) t.same(run(splitAt(mixed, i)).out, expected, `cut at ${i}`);
  let bad = 0;
  for (let i = 0; i <= mixed.length; i += 3) {
    for (let j = i; j <= mixed.length; j++) if (!isDeepStrictEqual(run(splitAt(mixed, i, j)).out, expected)) bad++;
  }
  t.equal(bad, 0, 'every 3-way split gives the same items');
  t.same(run(byteByByte(mixed)).out, expected, 'byte by byte');
});

t.test('header alignments, a zero length, and lines that begin with spaces or a sign', async (t) => {
  const s = latin1('000014cmd=kvs-fence;' + '14    cmd=kvs-fence;' + '  14  cmd=kvs-fence;' + '     0' + '  \n' + '   cmd=x\n' + '      \n' + ' \t\n' + '  -1  x\n' + '+12\n');
  t.same(run([s]).out, [
    { kind: 'frame', body: 'cmd=kvs-fence;' },
    { kind: 'frame', body: 'cmd=kvs-fence;' },
    { kind: 'frame', body: 'cmd=kvs-fence;' },
    { kind: 'frame', body: '' },
    { kind: 'line', line: '  ' },
    { kind: 'line', line: '   cmd=x' },
    { kind: 'line', line: '      ' },
    { kind: 'line', line: ' \t' },
    { kind: 'line', line: '  -1  x' },
    { kind: 'line', line: '+12' },
  ]);
  t.same(run(byteByByte(s)).out, run([s]).out, 'byte by byte');
});

t.test('a bad length header stops the stream: nothing after it is read', async (t) => {
  for (const bad of ['12x456', '1 2   ', '  1-  ', '0x17  ', '12\ncmd', '9\tcmd=x', '1e3   ', '    1;']) {
    const s = latin1(`cmd=get_maxes\n${bad}cmd=finalize;\ncmd=barrier_in\n${frame('cmd=finalize;')}`);
    for (const chunks of [[s], byteByByte(s)]) {
      const { out, framer } = run(chunks, {}, false);
      t.equal(out.length, 2, `${JSON.stringify(bad)}: a line, then bad-frame`);
      t.same(out[0], { kind: 'line', line: 'cmd=get_maxes' });
      t.match(out[1], { kind: 'bad-frame', detail: /not a decimal number/ });
      t.ok(framer.stopped);
      t.same(framer.push(latin1('cmd=get_maxes\n')), [], 'stopped');
      t.same(framer.end(), []);
    }
  }
  const { out } = run([latin1('12x456')]);
  t.same(out, [{ kind: 'bad-frame', header: '12x', detail: 'PMI-2 length header "12x" is not a decimal number padded with spaces' }], 'the header up to the offending byte');
});

t.test('a frame over maxFrame is reported once, with its prefix, without being buffered', async (t) => {
  const maxFrame = 100;
  const big = `cmd=kvs-put;key=k;value=${'v'.repeat(300)};`;
  const exact = `cmd=kvs-put;key=k;value=${'w'.repeat(maxFrame - 25)};`;
  t.equal(exact.length, maxFrame);
  const s = latin1(frame(exact) + frame(big) + 'cmd=get_maxes\n' + frame('cmd=finalize;'));
  const want: WireItem[] = [
    { kind: 'frame', body: exact },
    { kind: 'overlong', wire: 'pmi2', prefix: big.slice(0, 128), length: big.length },
    { kind: 'line', line: 'cmd=get_maxes' },
    { kind: 'frame', body: 'cmd=finalize;' },
  ];
  for (const [how, chunks] of [['one chunk', [s]], ['byte by byte', byteByByte(s)]] as const) {
    const { out, maxPending } = run(chunks, { maxFrame });
    t.same(out, want, how);
    t.ok(maxPending <= Math.max(maxFrame, 128) + 16, `${how}: pending ${maxPending}`);
  }
  for (let i = 0; i <= s.length; i += 7) t.same(run(splitAt(s, i), { maxFrame }).out, want, `cut at ${i}`);
  // The largest length six digits declare, never buffered.
  const huge = new WireFramer({ maxLine: 64 });
  huge.push(latin1('999999cmd=kvs-put;'));
  for (let i = 0; i < 100; i++) huge.push(Buffer.alloc(9_999, 'x'));
  t.ok(huge.pending <= 128, `pending ${huge.pending} while 999999 bytes go by`);
  t.same(huge.push(Buffer.alloc(999_999 - 12 - 999_900 - 1, 'y')), []);
  t.match(huge.push(latin1('ycmd=get_maxes\n')), [{ kind: 'overlong', wire: 'pmi2', length: 999_999, prefix: /^cmd=kvs-put;x+$/ }, { kind: 'line', line: 'cmd=get_maxes' }]);
});

t.test('lines follow LineFramer: the same lines, the same overlong reports', async (t) => {
  const max = 64;
  const long = 'cmd=put kvsname=kvs key=big value=' + 'A'.repeat(500);
  const exact = 'cmd=put key=k value=' + 'x'.repeat(max - 20);
  const s = latin1(`cmd=get_maxes\n${long}\n${exact}\n${exact}y\ncmd=barrier_in\n`);
  const lf = new LineFramer(max).push(s);
  const wf = run([s], { maxLine: max }).out;
  t.equal(wf.length, lf.length);
  wf.forEach((item, i) => {
    const l = lf[i];
    if (item.kind === 'line') t.same(item, l);
    else t.match(item, { kind: 'overlong', wire: 'pmi1', length: l?.kind === 'overlong' ? l.length : -1 });
  });
  const o = wf[1];
  t.ok(o?.kind === 'overlong' && o.prefix === long.slice(0, 128), 'the prefix is the first 128 bytes, whatever the split');
  for (let i = 0; i <= s.length; i += 5) t.same(run(splitAt(s, i), { maxLine: max }).out, wf, `cut at ${i}`);
});

t.test('end(): a stream that stops inside a message says so', async (t) => {
  const cases: ReadonlyArray<readonly [string, WireItem[]]> = [
    ['cmd=get_maxes', [{ kind: 'truncated', wire: 'pmi1', prefix: 'cmd=get_maxes', length: 13 }]],
    ['    2', [{ kind: 'truncated', wire: 'pmi2', prefix: '    2', length: 5 }]],
    ['    23cmd=fullinit;', [{ kind: 'truncated', wire: 'pmi2', prefix: 'cmd=fullinit;', length: 13, declared: 23 }]],
    ['   ', [{ kind: 'truncated', wire: 'pmi1', prefix: '   ', length: 3 }]],
    ['cmd=finalize\n', []],
    ['', []],
  ];
  for (const [s, want] of cases) {
    for (const chunks of [[latin1(s)], byteByByte(latin1(s))]) t.same(run(chunks).out.filter((i) => i.kind === 'truncated'), want, JSON.stringify(s));
  }
  const f = new WireFramer({ maxLine: 1024 });
  f.end();
  t.ok(f.stopped, 'nothing is read after end()');
  t.same(f.push(latin1('cmd=x\n')), []);
});

t.test('foreign first bytes are reported at once, and the framer stops', async (t) => {
  const cases: ReadonlyArray<readonly [Buffer, string]> = [
    [latin1('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'http'],
    [Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]), 'tls'],
    [latin1('SSH-2.0-x\r\n'), 'ssh'],
    [Buffer.concat([Buffer.alloc(8, 0xff), Buffer.alloc(8, 0)]), 'pmix'],
    [Buffer.from([0, 0, 0, 1]), 'binary'],
  ];
  for (const [bytes, protocol] of cases) {
    for (const chunks of [[bytes], byteByByte(bytes)]) {
      const { out, framer } = run(chunks, {}, false);
      t.equal(out.length, 1, `${protocol}: one item`);
      t.match(out[0], { kind: 'foreign', protocol }, protocol);
      t.ok(framer.stopped);
    }
  }
  t.match(run([latin1('GE')]).out, [{ kind: 'truncated', wire: 'pmi1', prefix: 'GE' }], 'too short to tell: a truncated line');
  t.match(run([Buffer.from([0x16])]).out, [{ kind: 'foreign', protocol: 'binary' }], 'one 0x16 byte, then the end');
  t.same(run([latin1('GET / HTTP/1.1\n')], { detectForeign: false }).out, [{ kind: 'line', line: 'GET / HTTP/1.1' }], 'detectForeign: false');
  t.same(run([latin1('cmd=get_maxes\nGET / HTTP/1.1\n')]).out, [
    { kind: 'line', line: 'cmd=get_maxes' },
    { kind: 'line', line: 'GET / HTTP/1.1' },
  ], 'only the opening is classified');
  t.same(run([latin1('hello\n')]).out, [{ kind: 'line', line: 'hello' }], 'a garbage text line is a line (the server answers it)');
});

t.test('a reused read buffer: only the first `end` bytes count, and nothing kept aliases it', async (t) => {
  const buf = Buffer.alloc(256, '9\n');
  const f = new WireFramer({ maxLine: 1024 });
  const seen: WireItem[] = [];
  for (const part of ['cm', 'd=init pmi_version=2 pmi_subversion=0\n   ', ' 23cmd=fullinit;', 'pmirank=0;cmd=get', '_maxes\n']) {
    const n = buf.write(part, 0, 'latin1');
    seen.push(...f.push(buf, n));
    buf.fill('!', 0, n);
  }
  t.same(seen, [
    { kind: 'line', line: 'cmd=init pmi_version=2 pmi_subversion=0' },
    { kind: 'frame', body: 'cmd=fullinit;pmirank=0;' },
    { kind: 'line', line: 'cmd=get_maxes' },
  ]);
});

t.test('bad options', async (t) => {
  t.throws(() => new WireFramer({ maxLine: 0 }), TypeError);
  t.throws(() => new WireFramer({ maxLine: 10, maxFrame: 1.5 }), TypeError);
});

// ---- properties ----------------------------------------------------------------------------------

type Msg =
  | { readonly t: 'line'; readonly text: string }
  | { readonly t: 'frame'; readonly body: string; readonly left: boolean }
  | { readonly t: 'bad'; readonly header: string };

const MAX_LINE = 48;
const MAX_FRAME = 60;
const PREFIX = 128;

const anyByte = fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c));
const pmiByte = fc.constantFrom(...'cmd=;; \t\r\n\xffkey0'.split(''));
const bodyArb = fc.oneof(
  fc.string({ unit: anyByte, maxLength: 80 }),
  fc.array(fc.tuple(fc.constantFrom('key', 'value', 'argv0', 'thrid'), fc.string({ unit: pmiByte, maxLength: 10 })), { maxLength: 5 }).map((pairs) => `cmd=kvs-put;${pairs.map(([k, v]) => `${k}=${v.replaceAll(';', ';;')};`).join('')}`),
);
/** A line that the framer reads as a line: it does not start with a digit or with spaces then a digit. */
const lineArb = fc
  .string({ unit: anyByte.filter((c) => c !== '\n'), maxLength: 70 })
  .filter((s) => !/^ *\d/.test(s))
  .map((s) => ({ t: 'line' as const, text: s }));
const msgArb: fc.Arbitrary<Msg> = fc.oneof(
  { weight: 4, arbitrary: lineArb },
  { weight: 4, arbitrary: fc.tuple(bodyArb, fc.boolean()).map(([body, left]) => ({ t: 'frame' as const, body, left })) },
);
const badArb = fc
  .tuple(fc.stringMatching(/^ {0,3}\d{1,3}$/), fc.constantFrom('x', '-', '\n', ';', '\t', ' 1', '+'))
  .map(([a, b]) => (a + b).slice(0, 6))
  .filter((h) => !/^ *\d+ *$/.test(h))
  .map((header) => ({ t: 'bad' as const, header }));

function encode(m: Msg): string {
  if (m.t === 'line') return `${m.text}\n`;
  if (m.t === 'bad') return m.header;
  return m.left ? frameLeft(m.body) : frame(m.body);
}

/** What the framer must say for a message (the model). */
function model(m: Msg): WireItem {
  if (m.t === 'line') return m.text.length > MAX_LINE ? { kind: 'overlong', wire: 'pmi1', prefix: m.text.slice(0, PREFIX), length: m.text.length } : { kind: 'line', line: m.text };
  if (m.t === 'frame') return m.body.length > MAX_FRAME ? { kind: 'overlong', wire: 'pmi2', prefix: m.body.slice(0, PREFIX), length: m.body.length } : { kind: 'frame', body: m.body };
  return { kind: 'bad-frame', header: m.header, detail: '' };
}

const cutsArb = fc.array(fc.integer({ min: 0, max: 4000 }), { maxLength: 15 });

t.test('property: any mix of lines and frames, any chunking → the model, in order', async (t) => {
  fc.assert(
    fc.property(fc.array(msgArb, { maxLength: 12 }), fc.option(badArb, { nil: undefined }), fc.integer({ min: 0, max: 20 }), cutsArb, (msgs, bad, tail, cuts) => {
      const all = bad ? [...msgs, bad] : msgs;
      const bytes = latin1(all.map(encode).join('') + 'x'.repeat(bad ? tail : 0));
      const want = all.map(model);
      const { out, maxPending } = run(splitAt(bytes, ...cuts.map((c) => c % (bytes.length + 1))), { maxLine: MAX_LINE, maxFrame: MAX_FRAME, detectForeign: false });
      if (maxPending > Math.max(MAX_LINE, MAX_FRAME, PREFIX) + 16) return false;
      if (out.length !== want.length) return false;
      return out.every((item, i) => {
        const w = want[i] as WireItem;
        if (w.kind === 'bad-frame') return item.kind === 'bad-frame' && w.header.startsWith(item.header) && item.header.length > 0;
        return isDeepStrictEqual(item, w);
      });
    }),
    { numRuns: 1500, ...seed },
  );
  t.pass('1500 runs');
});

t.test('property: a stream cut anywhere ends with the items before the cut and one truncated item', async (t) => {
  fc.assert(
    fc.property(fc.array(msgArb, { minLength: 1, maxLength: 6 }), fc.nat(), cutsArb, (msgs, at, cuts) => {
      const whole = latin1(msgs.map(encode).join(''));
      const cut = at % (whole.length + 1);
      const bytes = whole.subarray(0, cut);
      const a = run([bytes], { maxLine: MAX_LINE, maxFrame: MAX_FRAME, detectForeign: false }).out;
      const b = run(splitAt(bytes, ...cuts.map((c) => c % (bytes.length + 1))), { maxLine: MAX_LINE, maxFrame: MAX_FRAME, detectForeign: false }).out;
      if (!isDeepStrictEqual(a, b)) return false; // the chunking does not matter
      const complete = a.filter((i) => i.kind !== 'truncated');
      const truncated = a.filter((i) => i.kind === 'truncated');
      if (truncated.length > 1 || (truncated.length === 1 && a[a.length - 1]?.kind !== 'truncated')) return false;
      // The complete items are the model of the messages that fit before the cut.
      let offset = 0;
      const fit: WireItem[] = [];
      for (const m of msgs) {
        offset += encode(m).length;
        if (offset <= cut) fit.push(model(m));
      }
      const atBoundary = msgs.reduce<number[]>((acc, m) => [...acc, (acc[acc.length - 1] ?? 0) + encode(m).length], [0]).includes(cut);
      // A frame of length 0 is complete as soon as its header is.
      return isDeepStrictEqual(complete, fit) && (atBoundary ? truncated.length === 0 : truncated.length === 1);
    }),
    { numRuns: 1500, ...seed },
  );
  t.pass('1500 runs');
});

t.test('property: with foreign detection on, any bytes under any chunking give the same items', async (t) => {
  const bytesArb = fc.oneof(
    fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.from(a)),
    fc.tuple(fc.array(msgArb, { maxLength: 5 }), fc.uint8Array({ maxLength: 20 })).map(([m, tail]) => Buffer.concat([latin1(m.map(encode).join('')), Buffer.from(tail)])),
  );
  fc.assert(
    fc.property(bytesArb, cutsArb, (bytes, cuts) => {
      const one = run([bytes], { maxLine: MAX_LINE, maxFrame: MAX_FRAME }).out;
      const many = run(splitAt(bytes, ...cuts.map((c) => c % (bytes.length + 1))), { maxLine: MAX_LINE, maxFrame: MAX_FRAME }).out;
      return isDeepStrictEqual(one, many);
    }),
    { numRuns: 1500, ...seed },
  );
  t.pass('1500 runs');
});

t.test('pmi1Sticky: a stream that spoke PMI-1 stays PMI-1, so a line starting with a digit is a garbage line, not a bad length', async (t) => {
  const pmi1 = latin1('cmd=init pmi_version=1 pmi_subversion=1\n9\xa1garbage\n  12 also a line\n' + frame('cmd=kvs-fence;') + '\n');
  t.same(run([pmi1], { pmi1Sticky: true }).out, [
    { kind: 'line', line: 'cmd=init pmi_version=1 pmi_subversion=1' },
    { kind: 'line', line: '9\xa1garbage' },
    { kind: 'line', line: '  12 also a line' },
    { kind: 'line', line: frame('cmd=kvs-fence;') },
  ]);
  t.match(run([pmi1]).out[1], { kind: 'bad-frame' }, 'without it (a client reading a server): a bad length');
  const pmi2 = latin1('cmd=init pmi_version=2 pmi_subversion=0\n' + frame('cmd=fullinit;pmirank=0;') + frame('cmd=finalize;'));
  t.same(run([pmi2], { pmi1Sticky: true }).out, [
    { kind: 'line', line: 'cmd=init pmi_version=2 pmi_subversion=0' },
    { kind: 'frame', body: 'cmd=fullinit;pmirank=0;' },
    { kind: 'frame', body: 'cmd=finalize;' },
  ], "PMI-2's own init line does not make the stream PMI-1");
  t.same(run(byteByByte(pmi1), { pmi1Sticky: true }).out, run([pmi1], { pmi1Sticky: true }).out, 'byte by byte: the same');
});
