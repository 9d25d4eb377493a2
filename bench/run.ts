/**
 * pmibridge benchmarks (issue 5): `npm run bench [-- --quick] [-- --only B1,B5]`.
 *
 * Written in TypeScript like the rest of the project and compiled by bench/tsconfig.json into
 * dist/bench/ (Node 20 cannot run .ts itself). The package build and the test suite never see
 * it; `npx eslint .` lints it type-checked through that tsconfig.
 *
 * Every `bench/bN-name.ts` exporting `benchmark` is found by its compiled file name and run in
 * order (B3, B4, B6, B7 are one new file each). Each returns figures (see lib/types.ts); this
 * prints them as one table and writes bench/results.json. The C baseline and the load client
 * (bench/baseline/*.c) are compiled with `cc -O2`, and hello.c with `mpicc.mpich`, into a
 * private temporary directory removed at the end.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { killAll, run } from './lib/proc.js';
import { formatTable, writeResults } from './lib/report.js';
import { SkipBenchmark, type BenchContext, type Benchmark, type Figure, type Skip, type Tools } from './lib/types.js';

const HELP = `Usage: npm run bench [-- --quick] [-- --only B1,B2,…]

  --quick       every benchmark at reduced size (about a minute in total)
  --only LIST   run only these benchmarks (comma-separated ids, e.g. B1,B5)
  --out FILE    write the results there instead of bench/results.json
`;

interface Args {
  quick: boolean;
  only: Set<string> | null;
  out: string | null;
}

function parseArgs(argv: readonly string[]): Args | null {
  const args: Args = { quick: false, only: null, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') args.quick = true;
    else if (a === '--only' && argv[i + 1]) args.only = new Set((argv[++i] ?? '').split(',').map((s) => s.trim().toUpperCase()));
    else if (a === '--out' && argv[i + 1]) args.out = argv[++i] ?? null;
    else if (a === '--help' || a === '-h') return null;
    else throw new Error(`unknown argument ${a}\n\n${HELP}`);
  }
  return args;
}

function onPath(cmd: string): boolean {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

function makeTools(root: string, tmp: string): Tools {
  const built = new Map<string, Promise<string>>();
  const once = (key: string, make: () => Promise<string>) => {
    let p = built.get(key);
    if (!p) built.set(key, (p = make()));
    return p;
  };
  return {
    cc: (name) =>
      once(`cc:${name}`, async () => {
        if (!onPath('cc')) throw new SkipBenchmark('cc is not installed (Debian: apt-get install gcc)');
        const out = join(tmp, name);
        await run('cc', ['-O2', '-Wall', '-o', out, join(root, 'bench', 'baseline', `${name}.c`)]);
        return out;
      }),
    mpicc: (source, name) =>
      once(`mpicc:${name}`, async () => {
        if (!onPath('mpicc.mpich')) throw new SkipBenchmark('mpicc.mpich is not installed (Debian: apt-get install mpich libmpich-dev)');
        const out = join(tmp, name);
        await run('mpicc.mpich', ['-O2', '-o', out, source]);
        return out;
      }),
    has: (cmd) => Promise.resolve(onPath(cmd)),
  };
}

async function discover(dir: string): Promise<Benchmark[]> {
  const files = readdirSync(dir)
    .filter((f) => /^b\d+-[\w-]+\.js$/.test(f))
    .sort((a, b) => Number(/^b(\d+)/.exec(a)?.[1]) - Number(/^b(\d+)/.exec(b)?.[1]));
  const out: Benchmark[] = [];
  for (const f of files) {
    const mod = (await import(pathToFileURL(join(dir, f)).href)) as { benchmark?: Benchmark };
    if (!mod.benchmark) throw new Error(`${f} exports no benchmark`);
    out.push(mod.benchmark);
  }
  return out;
}

function meta(root: string, quick: boolean): Record<string, unknown> {
  const tryRun = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim();
    } catch {
      return null;
    }
  };
  return {
    date: new Date().toISOString(),
    quick,
    node: process.version,
    kernel: release(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    commit: tryRun('git', ['rev-parse', 'HEAD']),
    mpich: tryRun('mpichversion', [])?.split('\n')[0]?.replace(/^MPICH Version:\s*/, '') ?? null,
  };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (!args) {
    process.stdout.write(HELP);
    return 0;
  }
  const here = dirname(fileURLToPath(import.meta.url));
  const root = resolve(here, '..', '..');
  const cli = join(root, 'dist', 'src', 'cli', 'main.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build first (npm run bench does)`);
  const tmp = mkdtempSync(join(tmpdir(), 'pmibridge-bench-'));
  const cleanup = () => {
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = () => {
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const t0 = Date.now();
  const log = (m: string) => process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);
  const ctx: BenchContext = {
    quick: args.quick,
    root,
    cli,
    tmp,
    tools: makeTools(root, tmp),
    log,
    skip(reason: string): never {
      throw new SkipBenchmark(reason);
    },
  };

  const figures: Figure[] = [];
  const skipped: Skip[] = [];
  const failed: Skip[] = [];
  try {
    const all = await discover(here);
    const chosen = args.only ? all.filter((b) => args.only?.has(b.id)) : all;
    if (args.only && chosen.length !== args.only.size) throw new Error(`unknown benchmark in --only; known: ${all.map((b) => b.id).join(', ')}`);
    for (const b of chosen) {
      log(`${b.id}: ${b.title}${args.quick ? ' (quick)' : ''}`);
      try {
        figures.push(...(await b.run(ctx)));
      } catch (err) {
        killAll();
        if (err instanceof SkipBenchmark) {
          log(`${b.id} skipped: ${err.message}`);
          skipped.push({ id: b.id, reason: err.message });
        } else {
          log(`${b.id} FAILED: ${(err as Error).stack ?? String(err)}`);
          failed.push({ id: b.id, reason: (err as Error).message });
        }
      }
    }
  } finally {
    cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  const out = args.out ?? join(root, 'bench', 'results.json');
  const info = { ...meta(root, args.quick), seconds: Math.round((Date.now() - t0) / 100) / 10 };
  writeResults(out, { meta: info, figures, skipped: [...skipped, ...failed.map((f) => ({ ...f, reason: `FAILED: ${f.reason}` }))] });
  process.stdout.write(`\n${formatTable(figures)}\n\n`);
  for (const s of skipped) process.stdout.write(`skipped ${s.id}: ${s.reason}\n`);
  for (const f of failed) process.stdout.write(`FAILED ${f.id}: ${f.reason}\n`);
  process.stdout.write(`${figures.length} figures in ${info.seconds} s (${args.quick ? 'quick' : 'full'}); written to ${out}\n`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    killAll();
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
