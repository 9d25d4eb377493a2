/**
 * `pmibridge pmi …`: PMI client commands to run *as a rank* (like `flux pmi`). Each is a whole PMI
 * life: init, the operation, finalize. `put` and `get` each include one barrier by default so that
 * `put` in some ranks and `get` in others pair up in one job. `--pmi-version 2` runs the same
 * commands over PMI-2 (the barrier is a kvs-fence).
 */
import { helpText, intOption, parseCommand, pmiVersionOption, pmiVersionSpec, UsageError, type CommandSpec, type OptionSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { PmiClient } from '../client/client.js';
import { Pmi2Client, PMI2_REFUSED } from '../client/pmi2-client.js';
import { RemotePmiError } from '../protocol/errors.js';

const COMMON: Readonly<Record<string, OptionSpec>> = {
  timeout: { type: 'string', arg: 'MS', help: 'fail when a reply takes longer than MS milliseconds (default: wait forever, like MPICH)' },
  json: { type: 'boolean', help: 'print the result as one JSON object' },
  'pmi-version': pmiVersionSpec('speak PMI-1 (1) or PMI-2 (2: cmd=init pmi_version=2, then length-prefixed frames; barrier = kvs-fence)'),
};

const SPECS: Record<string, CommandSpec> = {
  info: {
    name: 'pmi info',
    usage: 'pmibridge pmi info [--json] [--pmi-version 1|2]',
    summary: 'Print rank, size, appnum, kvsname, universe size and maxes (PMI-2: the job id as kvsname; no maxes).',
    options: COMMON,
  },
  put: {
    name: 'pmi put',
    usage: 'pmibridge pmi put KEY=VALUE… [--no-barrier] [--pmi-version 1|2]',
    summary: 'Put keys, then barrier (so ranks running `pmi get` can read them), then finalize.',
    allowPositionals: true,
    options: { ...COMMON, 'no-barrier': { type: 'boolean', help: 'skip the barrier' } },
  },
  get: {
    name: 'pmi get',
    usage: 'pmibridge pmi get KEY… [--no-barrier] [--pmi-version 1|2]',
    summary: 'Barrier (pairs with `pmi put` in other ranks), then get and print keys, then finalize.',
    allowPositionals: true,
    options: { ...COMMON, 'no-barrier': { type: 'boolean', help: 'skip the barrier (for preset keys such as PMI_process_mapping)' } },
  },
  barrier: {
    name: 'pmi barrier',
    usage: 'pmibridge pmi barrier [--count N] [--pmi-version 1|2]',
    summary: 'Enter N barriers, then finalize.',
    options: { ...COMMON, count: { type: 'string', arg: 'N', default: '1', help: 'number of barriers' } },
  },
  exchange: {
    name: 'pmi exchange',
    usage: 'pmibridge pmi exchange [--count K] [--pmi-version 1|2]',
    summary: 'Each rank puts K keys, barriers, gets every rank\'s keys and checks the values, barriers, finalizes. Exit 1 on a mismatch.',
    options: { ...COMMON, count: { type: 'string', arg: 'K', default: '1', help: 'keys per rank' } },
  },
};

function usage(): string {
  return ['Usage: pmibridge pmi <info|put|get|barrier|exchange> [options]', '', 'PMI client commands to run as a rank (PMI_FD or PMI_PORT[+PMI_ID] from the environment).', 'PMI-1 by default; --pmi-version 2 speaks PMI-2 (barrier = kvs-fence).', '', ...Object.values(SPECS).map((s) => `  ${s.usage}\n      ${s.summary}`), ''].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(usage());
    return sub === undefined ? EXIT.USAGE : EXIT.OK;
  }
  const spec = Object.hasOwn(SPECS, sub) ? SPECS[sub] : undefined;
  if (!spec) throw new UsageError('pmi', `unknown pmi command ${JSON.stringify(sub)} (info, put, get, barrier, exchange)`);
  const { values, positionals } = parseCommand(spec, rest);
  if (values['help']) {
    process.stdout.write(helpText(spec));
    return EXIT.OK;
  }
  const timeoutMs = intOption(spec, values, 'timeout', 1) ?? 0;
  const json = Boolean(values['json']);
  const barrier = !values['no-barrier'];
  const count = intOption(spec, values, 'count', 0, 1_000_000) ?? 1;
  if ((sub === 'put' || sub === 'get') && positionals.length === 0) throw new UsageError(spec.name, `no keys given: ${spec.usage}`);
  const pairs = sub === 'put' ? positionals.map((p) => splitPair(spec, p)) : [];

  const version = pmiVersionOption(spec, values);
  const client = version === 2 ? await pmi2Session(timeoutMs) : await pmi1Session(timeoutMs);
  try {
    await client.init();
    const out = (text: string, obj: object) => process.stdout.write(json ? `${JSON.stringify(obj)}\n` : `${text}\n`);
    switch (sub) {
      case 'info': {
        const info = await client.info();
        out(info.text, { ...info.json, pmiVersion: version });
        break;
      }
      case 'put':
        for (const [k, v] of pairs) await client.put(k, v);
        if (barrier) await client.barrier();
        out(`rank ${client.rank}: put ${pairs.length} key(s)`, { rank: client.rank, put: pairs.map(([k]) => k) });
        break;
      case 'get': {
        if (barrier) await client.barrier();
        const got: Record<string, string> = {};
        for (const k of positionals) got[k] = await client.get(k);
        out(Object.entries(got).map(([k, v]) => `${k}=${v}`).join('\n'), { rank: client.rank, values: got });
        break;
      }
      case 'barrier': {
        const t0 = performance.now();
        for (let i = 0; i < count; i++) await client.barrier();
        const ms = performance.now() - t0;
        out(`rank ${client.rank}: ${count} barrier(s) in ${ms.toFixed(1)} ms`, { rank: client.rank, barriers: count, ms });
        break;
      }
      case 'exchange': {
        const r = await exchange(client, count);
        out(
          r.bad.length === 0 ? `exchange: rank ${client.rank}/${client.size} read ${r.read} keys from ${client.size} ranks: OK (${r.ms.toFixed(1)} ms)` : `exchange: rank ${client.rank}: ${r.bad.length} wrong value(s), first: ${r.bad[0]}`,
          { rank: client.rank, size: client.size, keys: r.read, ok: r.bad.length === 0, bad: r.bad, ms: r.ms },
        );
        if (r.bad.length) {
          await client.finalize();
          return EXIT.FAILURE;
        }
        break;
      }
    }
    await client.finalize();
    return EXIT.OK;
  } catch (err) {
    if (err instanceof RemotePmiError && err.code === PMI2_REFUSED) throw new Error(`${err.message} (here: --pmi-version 1, the default)`, { cause: err });
    throw err;
  } finally {
    client.close();
  }
}

/** What the commands need of a client, PMI-1 or PMI-2. */
interface Session {
  readonly rank: number;
  readonly size: number;
  readonly kvsname: string;
  init(): Promise<void>;
  info(): Promise<{ text: string; json: object }>;
  put(key: string, value: string): Promise<void>;
  get(key: string): Promise<string>;
  barrier(): Promise<void>;
  finalize(): Promise<void>;
  close(): void;
}

/** The commands' view of a client: the same calls whichever PMI version it speaks. */
function session(c: PmiClient | Pmi2Client, barrier: () => Promise<void>, info: Session['info']): Session {
  return {
    get rank() {
      return c.rank;
    },
    get size() {
      return c.size;
    },
    get kvsname() {
      return c.kvsname;
    },
    init: () => c.init(),
    info,
    put: (k, v) => c.put(k, v),
    get: (k) => c.get(k),
    barrier,
    finalize: () => c.finalize(),
    close: () => c.close(),
  };
}

async function pmi1Session(timeoutMs: number): Promise<Session> {
  const c = await PmiClient.connect(undefined, { timeoutMs });
  return session(
    c,
    () => c.barrier(),
    async () => {
      const universeSize = await c.universeSize();
      const { kvsnameMax, keylenMax, vallenMax } = c.maxes;
      return {
        text: `rank=${c.rank} size=${c.size} appnum=${c.appnum} kvsname=${c.kvsname} universe_size=${universeSize} kvsname_max=${kvsnameMax} keylen_max=${keylenMax} vallen_max=${vallenMax}`,
        json: { rank: c.rank, size: c.size, appnum: c.appnum, kvsname: c.kvsname, universeSize, maxes: c.maxes },
      };
    },
  );
}

/** PMI-2: the kvsname is the job id, the barrier a kvs-fence; PMI-2 has no maxes (null in JSON). */
async function pmi2Session(timeoutMs: number): Promise<Session> {
  const c = await Pmi2Client.connect(undefined, { timeoutMs });
  return session(
    c,
    () => c.fence(),
    async () => {
      const universeSize = await c.universeSize();
      return {
        text: `rank=${c.rank} size=${c.size} appnum=${c.appnum} kvsname=${c.kvsname} universe_size=${universeSize}`,
        json: { rank: c.rank, size: c.size, appnum: c.appnum, kvsname: c.kvsname, universeSize, maxes: null },
      };
    },
  );
}

function splitPair(spec: CommandSpec, p: string): [string, string] {
  const eq = p.indexOf('=');
  if (eq <= 0) throw new UsageError(spec.name, `expected KEY=VALUE, got ${JSON.stringify(p)}`);
  return [p.slice(0, eq), p.slice(eq + 1)];
}

/** Put `count` keys, barrier, read everyone's, check, barrier: a small MPI_Init-like wire-up. */
async function exchange(client: Session, count: number): Promise<{ read: number; bad: string[]; ms: number }> {
  const t0 = performance.now();
  const key = (rank: number, i: number) => `pmibridge-x-${rank}-${i}`;
  const value = (rank: number, i: number) => `v${rank}.${i}.${client.kvsname}`;
  for (let i = 0; i < count; i++) await client.put(key(client.rank, i), value(client.rank, i));
  await client.barrier();
  const bad: string[] = [];
  let read = 0;
  for (let r = 0; r < client.size; r++) {
    for (let i = 0; i < count; i++) {
      const got = await client.get(key(r, i));
      read++;
      if (got !== value(r, i)) bad.push(`${key(r, i)}=${got} (expected ${value(r, i)})`);
    }
  }
  await client.barrier();
  return { read, bad, ms: performance.now() - t0 };
}
