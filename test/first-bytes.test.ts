/**
 * The first bytes of a connection: PMI-1, PMI-2, or something foreign (HTTP, TLS, SSH, PMIx,
 * binary) that a listener should answer or close at once. One table, then the property that a
 * verdict never depends on how many bytes had arrived (only need-more before it is sure).
 */
import t from 'tap';
import fc from 'fast-check';
import { OPENING_BYTES, classifyOpening, type Opening } from '../src/protocol/index.js';

const b = (s: string) => Buffer.from(s, 'latin1');
const kind = (o: Opening) => (o.kind === 'foreign' ? `foreign:${o.protocol}` : o.kind);

// [bytes, verdict, verdict when the stream ends there]
const table: ReadonlyArray<readonly [Buffer, string, string?]> = [
  [b('cmd=init pmi_version=1 pmi_subversion=1\n'), 'pmi1'],
  [b('cmd=initack pmiid=0\n'), 'pmi1'],
  [b('mcmd=spawn\n'), 'pmi1'],
  [b('cmd='), 'pmi1'],
  [b('c'), 'need-more', 'text'],
  [b('mcmd'), 'need-more', 'text'],
  [b('    23cmd=fullinit;pmirank=0;'), 'pmi2'],
  [b('38    cmd=fullinit;pmirank=0;threaded=FALSE;'), 'pmi2'],
  [b('2'), 'pmi2'],
  [b('   '), 'need-more', 'text'],
  [b('     1'), 'pmi2'],
  [b('      '), 'text'],
  [b('  \n'), 'text'],
  [b('\n'), 'text'],
  [b('hello\n'), 'text'],
  [b('\xe9t\xe9\n'), 'foreign:binary'],
  [b('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'foreign:http'],
  [b('GET'), 'need-more', 'text'],
  [b('GETX'), 'text'],
  [b('POST /api HTTP/1.1\r\n'), 'foreign:http'],
  [b('PUT /x HTTP/1.1\r\n'), 'foreign:http'],
  [b('HEAD / HTTP/1.0\r\n'), 'foreign:http'],
  [b('DELETE /x HTTP/1.1\r\n'), 'foreign:http'],
  [b('OPTIONS * HTTP/1.1\r\n'), 'foreign:http'],
  [b('PATCH /x HTTP/1.1\r\n'), 'foreign:http'],
  [b('CONNECT h:443 HTTP/1.1\r\n'), 'foreign:http'],
  [b('TRACE / HTTP/1.1\r\n'), 'foreign:http'],
  [b('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), 'foreign:http'],
  [b('SSH-2.0-OpenSSH_9.2\r\n'), 'foreign:ssh'],
  [Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), 'foreign:tls'],
  [Buffer.from([0x16]), 'need-more', 'foreign:binary'],
  [Buffer.from([0x16, 0x01]), 'foreign:binary'],
  [Buffer.concat([Buffer.alloc(8, 0xff), Buffer.from([0x60, 0, 0, 0, 0, 0, 0, 0]), b('native\0')]), 'foreign:pmix'],
  [Buffer.alloc(7, 0xff), 'need-more', 'foreign:binary'],
  [Buffer.from([0xff, 0xff, 0x00]), 'foreign:binary'],
  [Buffer.from([0x00, 0x00, 0x00, 0x10]), 'foreign:binary'],
  [Buffer.from([0x7f, 0x45, 0x4c, 0x46]), 'foreign:binary'],
  [Buffer.from([0x05, 0x01, 0x00]), 'foreign:binary'], // a SOCKS5 greeting
  [Buffer.alloc(0), 'need-more', 'empty'],
];

t.test('the first-bytes table', async (t) => {
  for (const [bytes, verdict, ended] of table) {
    const name = JSON.stringify(bytes.toString('latin1'));
    t.equal(kind(classifyOpening(bytes)), verdict, name);
    t.equal(kind(classifyOpening(bytes, true)), ended ?? verdict, `${name}, then the stream ends`);
  }
});

t.test('a foreign verdict says what it saw', async (t) => {
  const v = classifyOpening(b('GET / HTTP/1.1\r\n'));
  t.match(v, { kind: 'foreign', protocol: 'http', reason: /HTTP GET request/ });
  t.match(classifyOpening(Buffer.from([0x16, 0x03, 0x03])), { reason: /TLS/ });
  t.match(classifyOpening(Buffer.alloc(8, 0xff)), { reason: /PMIx/ });
  t.match(classifyOpening(Buffer.from([1, 2])), { reason: /0x01/ });
});

t.test('property: more bytes never change a verdict, and OPENING_BYTES always suffice', async (t) => {
  const interesting = fc.constantFrom(...table.map(([bytes]) => bytes));
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 24 }).map((a) => Buffer.from(a)),
    fc.tuple(interesting, fc.uint8Array({ maxLength: 8 })).map(([a, c]) => Buffer.concat([a, c])),
  );
  fc.assert(
    fc.property(bytes, (all) => {
      const full = classifyOpening(all.subarray(0, OPENING_BYTES), all.length <= OPENING_BYTES);
      if (all.length >= OPENING_BYTES && full.kind === 'need-more') return false;
      for (let k = 0; k <= Math.min(all.length, OPENING_BYTES); k++) {
        const v = classifyOpening(all.subarray(0, k));
        if (v.kind !== 'need-more' && kind(v) !== kind(full)) return false;
      }
      return true;
    }),
    { numRuns: 2000, ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) },
  );
  t.pass('2000 runs');
});
