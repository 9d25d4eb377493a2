/**
 * PMI_process_mapping is preset — "all N ranks share one node" — only when it can be true: every
 * listener loopback TCP or a Unix socket. A non-loopback listener lets ranks on other hosts in, and
 * MPICH believes the preset (a rank on another host then fails in MPI_Init); there it is not preset
 * unless --process-mapping. serve says which on stdout (a PMI_process_mapping= line after the
 * PMI_PORT= lines; `processMapping` with --json) and why on stderr.
 *
 * Non-loopback listeners (0.0.0.0) are bound inside a private network namespace (netns fixture).
 */
import t, { type Test } from 'tap';
import { cliPath, collect, envWithPmibridge, exitOf, runCli, startCli, waitForLine } from './fixtures/cli.js';
import { netns, netnsMissing, type Netns } from './fixtures/netns.js';

const skipNs = netnsMissing() ?? false;

/** `pmibridge pmi get --no-barrier PMI_process_mapping` as rank 0 at `port`: the value, or null when unset. */
async function askMapping(t: Test, port: string, ns?: Netns): Promise<string | null> {
  const args = [cliPath, 'pmi', 'get', '--no-barrier', 'PMI_process_mapping'];
  const env = envWithPmibridge({ PMI_PORT: port, PMI_ID: '0' });
  let r: { code: number | null; stdout: string; stderr: string };
  if (ns) {
    const c = ns.spawn(process.execPath, args, { env });
    const out = collect(c);
    r = { code: (await exitOf(c, 20_000)).code, ...out };
  } else {
    r = await runCli(args.slice(1), { env, timeoutMs: 20_000 });
  }
  if (r.code === 0) return /^PMI_process_mapping=(\S+)$/m.exec(r.stdout)?.[1] ?? 'unparsed';
  t.match(r.stderr, /key_PMI_process_mapping_not_found/, 'the key is not there', { stderr: r.stderr });
  return null;
}

/** serve's stdout up to its PMI_process_mapping line: [PMI_PORT values, mapping]. */
async function banner(serve: ReturnType<typeof startCli>): Promise<{ out: { stdout: string; stderr: string }; ports: string[]; mapping: string }> {
  const out = collect(serve);
  const [, mapping] = await waitForLine(serve, /^PMI_process_mapping=(\S+)$/);
  const lines = out.stdout.split('\n').filter(Boolean);
  return { out, ports: lines.filter((l) => l.startsWith('PMI_PORT=')).map((l) => l.slice('PMI_PORT='.length)), mapping: mapping ?? '' };
}

t.test('serve on loopback: the one-node mapping is preset, and said after the PMI_PORT line', async (t) => {
  const serve = startCli(['serve', '-n', '1', '--listen', 'tcp://127.0.0.1:0']);
  t.teardown(() => serve.kill('SIGKILL'));
  const b = await banner(serve);
  t.match(b.out.stdout, /^PMI_PORT=127\.0\.0\.1:\d+\nPMI_process_mapping=\(vector,\(0,1,1\)\)\n$/, 'PMI_PORT first (scripts reading the first line keep working), then the mapping');
  t.equal(await askMapping(t, b.ports[0] ?? ''), '(vector,(0,1,1))', 'the rank reads it');
  t.equal((await exitOf(serve, 20_000)).code, 0);
  t.notMatch(b.out.stderr, /PMI_process_mapping/, 'nothing to warn about');
});

t.test('serve on a Unix socket and loopback: preset; --no-process-mapping still removes it', async (t) => {
  const serve = startCli(['serve', '-n', '1', '--listen', 'unix', '--listen', '127.0.0.1:0']);
  t.teardown(() => serve.kill('SIGKILL'));
  const b = await banner(serve);
  t.equal(b.ports.length, 2);
  t.equal(b.mapping, '(vector,(0,1,1))');
  serve.kill('SIGKILL');

  const none = startCli(['serve', '-n', '1', '--listen', '127.0.0.1:0', '--no-process-mapping']);
  t.teardown(() => none.kill('SIGKILL'));
  const n = await banner(none);
  t.equal(n.mapping, 'none', '--no-process-mapping: PMI_process_mapping=none');
  t.equal(await askMapping(t, n.ports[0] ?? ''), null, 'and the rank finds no key');
});

t.test('serve --json: processMapping is the preset value, or null', async (t) => {
  const serve = startCli(['serve', '-n', '2', '--json', '--listen', '127.0.0.1:0']);
  t.teardown(() => serve.kill('SIGKILL'));
  const [line] = await waitForLine(serve, /^\{.*\}$/);
  t.match(JSON.parse(line), { size: 2, listeners: [{ PMI_PORT: /^127\.0\.0\.1:\d+$/ }], processMapping: '(vector,(0,1,2))' });
  const none = startCli(['serve', '-n', '2', '--json', '--listen', '127.0.0.1:0', '--no-process-mapping']);
  t.teardown(() => none.kill('SIGKILL'));
  const [line2] = await waitForLine(none, /^\{.*\}$/);
  t.match(JSON.parse(line2), { processMapping: null });
});

t.test('--process-mapping and --no-process-mapping together are a usage error', async (t) => {
  for (const cmd of [
    ['serve', '-n', '1', '--process-mapping', '--no-process-mapping'],
    ['run', '-n', '1', '--process-mapping', '--no-process-mapping', '--', 'true'],
  ]) {
    const r = await runCli(cmd);
    t.equal(r.code, 2, `${cmd[0]}: exit 2`);
    t.match(r.stderr, /--process-mapping and --no-process-mapping contradict each other/);
  }
});

t.test('serve on a non-loopback address: no mapping unless --process-mapping, and it says so', { skip: skipNs }, async (t) => {
  const ns = await netns(t);
  const serve = ns.cli(['serve', '-n', '1', '--listen', 'tcp://0.0.0.0:0', '--listen', '127.0.0.1:0']);
  const b = await banner(serve);
  t.equal(b.mapping, 'none', 'one listener is not loopback: PMI_process_mapping=none');
  t.equal(b.ports.length, 2, 'both PMI_PORT lines come first');
  t.match(b.out.stderr, /PMI_process_mapping is not preset \(listening on 0\.0\.0\.0, so ranks may be on other hosts; --process-mapping presets one node\): MPICH ranks exchange hostnames instead/, 'why, on stderr at the default level');
  t.equal(await askMapping(t, b.ports[1] ?? '', ns), null, 'the rank finds no key');

  const forced = ns.cli(['serve', '-n', '1', '--json', '--listen', 'tcp://0.0.0.0:0', '--process-mapping']);
  const out = collect(forced);
  const [line] = await waitForLine(forced, /^\{.*\}$/);
  const info = JSON.parse(line) as { listeners: Array<{ PMI_PORT: string }>; processMapping: string | null };
  t.equal(info.processMapping, '(vector,(0,1,1))', '--process-mapping: preset anyway');
  const port = (info.listeners[0]?.PMI_PORT ?? '').replace(/^0\.0\.0\.0:/, '127.0.0.1:');
  t.equal(await askMapping(t, port, ns), '(vector,(0,1,1))');
  t.equal((await exitOf(forced, 20_000)).code, 0);
  t.match(out.stderr, /PMI_process_mapping preset to \(vector,\(0,1,1\)\) \(--process-mapping\): every rank must be on this host/);
});

t.test('run --tcp-host: no mapping when the TCP listener is not loopback', { skip: skipNs }, async (t) => {
  const ns = await netns(t);
  const get = ['pmibridge', 'pmi', 'get', '--no-barrier', 'PMI_process_mapping'];
  const runIn = async (args: string[]) => {
    const c = ns.cli(['run', '-n', '1', ...args, '--', ...get]);
    const out = collect(c);
    return { code: (await exitOf(c, 30_000)).code, ...out };
  };
  const tcp = await runIn(['--pmi', 'tcp', '--tcp-host', '0.0.0.0']);
  t.equal(tcp.code, 1, '--pmi tcp --tcp-host 0.0.0.0: the rank finds no PMI_process_mapping');
  t.match(tcp.stderr, /key_PMI_process_mapping_not_found/);
  t.match(tcp.stderr, /PMI_process_mapping is not preset \(listening on 0\.0\.0\.0/);
  const forced = await runIn(['--pmi', 'tcp', '--tcp-host', '0.0.0.0', '--process-mapping']);
  t.equal(forced.code, 0, '--process-mapping: preset anyway');
  t.match(forced.stdout, /^PMI_process_mapping=\(vector,\(0,1,1\)\)$/m);
  const fd = await runIn(['--pmi', 'fd', '--tcp-host', '0.0.0.0']);
  t.equal(fd.code, 0, '--pmi fd: no TCP listener at all, so the mapping stays');
  t.match(fd.stdout, /^PMI_process_mapping=\(vector,\(0,1,1\)\)$/m);
  const loop = await runIn(['--pmi', 'tcp']);
  t.equal(loop.code, 0, '--pmi tcp on loopback: preset');
  t.match(loop.stdout, /^PMI_process_mapping=\(vector,\(0,1,1\)\)$/m);
});
