/**
 * PMI_PORT address grammar: accepted forms, rejected forms (with a message listing the accepted
 * ones), and formatAddress round trips.
 */
import t from 'tap';
import { ADDRESS_FORMS, AddressError, UNIX_PATH_MAX, formatAddress, parseAddress, type PmiAddress } from '../src/protocol/index.js';

const valid: ReadonlyArray<readonly [string, PmiAddress, string]> = [
  ['host:5000', { kind: 'tcp', host: 'host', port: 5000 }, 'host:5000'],
  ['127.0.0.1:5000', { kind: 'tcp', host: '127.0.0.1', port: 5000 }, '127.0.0.1:5000'],
  ['localhost:1', { kind: 'tcp', host: 'localhost', port: 1 }, 'localhost:1'],
  ['node-1.cluster.example:65535', { kind: 'tcp', host: 'node-1.cluster.example', port: 65535 }, 'node-1.cluster.example:65535'],
  ['tcp://host:5000', { kind: 'tcp', host: 'host', port: 5000 }, 'host:5000'],
  ['tcp://127.0.0.1:5000/', { kind: 'tcp', host: '127.0.0.1', port: 5000 }, '127.0.0.1:5000'],
  ['tcp://[::1]:5000', { kind: 'tcp', host: '::1', port: 5000 }, 'tcp://[::1]:5000'],
  ['tcp://[fe80::1:2]:7', { kind: 'tcp', host: 'fe80::1:2', port: 7 }, 'tcp://[fe80::1:2]:7'],
  ['unix:///run/pmi.sock', { kind: 'unix', path: '/run/pmi.sock' }, 'unix:///run/pmi.sock'],
  ['/tmp/pmi-1234.sock', { kind: 'unix', path: '/tmp/pmi-1234.sock' }, 'unix:///tmp/pmi-1234.sock'],
  ['  localhost:80  ', { kind: 'tcp', host: 'localhost', port: 80 }, 'localhost:80'],
];

t.test('valid forms', async (t) => {
  for (const [input, addr, formatted] of valid) {
    t.same(parseAddress(input), addr, JSON.stringify(input));
    t.equal(formatAddress(addr), formatted, `format ${JSON.stringify(input)}`);
  }
});

t.test('port 0 only with allowPortZero', async (t) => {
  t.same(parseAddress('127.0.0.1:0', { allowPortZero: true }), { kind: 'tcp', host: '127.0.0.1', port: 0 });
  t.same(parseAddress('tcp://[::1]:0', { allowPortZero: true }), { kind: 'tcp', host: '::1', port: 0 });
  t.throws(() => parseAddress('127.0.0.1:0'), AddressError);
  t.throws(() => parseAddress('127.0.0.1:0', { allowPortZero: false }), AddressError);
  t.throws(() => parseAddress('tcp://[::1]:0'), AddressError);
});

const invalid: ReadonlyArray<readonly [string, RegExp]> = [
  ['localhost', /missing :port/],
  ['127.0.0.1', /missing :port/],
  ['host:', /not a number/],
  ['host:http', /not a number/],
  ['host:-1', /not a number/],
  ['host:123456', /not a number/],
  ['host:65536', /above 65535/],
  ['host:99999', /above 65535/],
  [':5000', /not a host name/],
  ['bad_host:5000', /not a host name/],
  ['[::1]:5', /needs the tcp:\/\/ scheme/],
  ['::1:5', /must be written tcp:\/\/\[addr\]:port/],
  ['tcp://[::1]', /expected \[ipv6\]:port/],
  ['tcp://[zz]:5', /not an IPv6 address/],
  ['tcp://host', /missing :port/],
  ['unix://relative/path', /must be absolute/],
  ['unix://', /must be absolute/],
  ['http://host:80', /unknown scheme http/],
  ['udp://host:80', /unknown scheme udp/],
  ['', /empty/],
  ['   ', /empty/],
  [`/${'p'.repeat(UNIX_PATH_MAX)}`, /limit is 107/],
  [`unix:///${'p'.repeat(UNIX_PATH_MAX)}`, /limit is 107/],
  ['/tmp/a\0b', /NUL/],
];

t.test('invalid forms: AddressError naming the problem and listing the accepted forms', async (t) => {
  for (const [input, why] of invalid) {
    let err: unknown;
    try {
      parseAddress(input);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof AddressError, `${JSON.stringify(input)} is rejected`);
    if (!(err instanceof AddressError)) continue;
    t.equal(err.name, 'AddressError');
    t.match(err.message, why, `${JSON.stringify(input)}: ${err.message}`);
    t.ok(err.message.includes(JSON.stringify(input)), 'quotes the input');
    t.ok(err.message.includes(`accepted forms: ${ADDRESS_FORMS}`), 'lists the accepted forms');
  }
  for (const form of ['host:port', 'tcp://host:port', 'tcp://[ipv6]:port', 'unix:///absolute/path', '/absolute/path']) {
    t.ok(ADDRESS_FORMS.includes(form), `the list names ${form}`);
  }
});

t.test('a unix path of exactly the limit is accepted', async (t) => {
  const p = `/${'p'.repeat(UNIX_PATH_MAX - 1)}`;
  t.equal(Buffer.byteLength(p), UNIX_PATH_MAX);
  t.same(parseAddress(p), { kind: 'unix', path: p });
  const multibyte = `/${'é'.repeat(54)}`; // 109 bytes, 55 chars: the limit counts bytes
  t.throws(() => parseAddress(multibyte), /limit is 107/);
});

t.test('formatAddress round trips through parseAddress', async (t) => {
  for (const [, addr] of valid) {
    t.same(parseAddress(formatAddress(addr)), addr, formatAddress(addr));
  }
  const zero: PmiAddress = { kind: 'tcp', host: '127.0.0.1', port: 0 };
  t.same(parseAddress(formatAddress(zero), { allowPortZero: true }), zero);
  t.equal(formatAddress({ kind: 'tcp', host: '127.0.0.1', port: 5000 }), '127.0.0.1:5000', 'TCP is written host:port, the only form MPICH reads');
});
