/**
 * The MPICH 4.0.2 (ch4:ucx) finalize-hang study of issue 11 (problem 3), kept runnable. Not part of
 * the suite: it runs only with PMIB_FINALIZE_STUDY=<runs per configuration> (root, MPICH), e.g.
 *
 *   PMIB_FINALIZE_STUDY=20 npx tap --disable-coverage -t 0 test/multihost-finalize-study.test.ts
 *   PMIB_FINALIZE_STUDY=20 PMIB_FINALIZE_STUDY_ONLY=hydra-plain-2x1,hydra-wrap-2x1 npx tap …
 *   PMIB_FINALIZE_STUDY=10 PMIB_FINALIZE_STUDY_ONLY=hydra-plain-3x1 PMIB_FINALIZE_STUDY_ENV='UCX_TLS=tcp,self' npx tap …
 *
 * Each run is one `hello` job (test/fixtures/c/hello.c: MPI_Init, ring, Allreduce, Barrier,
 * Finalize) across the fixture's hosts. A run is "ok" (ended with every status 0 within 8 s of the
 * last OK line), "hang-ucx" (every rank printed OK, the job did not end, and some rank is busy in
 * UCX progress: the MPICH/UCX finalize deadlock), "hang-pmi" (every rank waits in PMI read()), or
 * "fail". For ok runs, `finalize ms` is the time from the last OK line to the job's end.
 * Counts go to the log as comments, one line per configuration.
 */
import t from 'tap';
import { until } from './fixtures/cli.js';
import { multiHost, hostsMissing, type Hosts } from './fixtures/hosts.js';
import { mpichMissing, mpiProgram } from './fixtures/mpich.js';
import { helloLines, hydraAcross, serveWithRelays, settle, startRanks, whereStuck, type Running } from './fixtures/multihost-jobs.js';

const runs = Number(process.env['PMIB_FINALIZE_STUDY'] ?? '0');
const only = (process.env['PMIB_FINALIZE_STUDY_ONLY'] ?? '').split(',').filter(Boolean);
/** Extra environment for every configuration's ranks: PMIB_FINALIZE_STUDY_ENV='UCX_TLS=tcp,self UCX_X=y'. */
const extraEnv = Object.fromEntries((process.env['PMIB_FINALIZE_STUDY_ENV'] ?? '').split(/\s+/).filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const skip = !(runs > 0) ? 'the finalize-hang study runs only with PMIB_FINALIZE_STUDY=<runs>' : (hostsMissing() ?? mpichMissing() ?? false);

interface Config {
  readonly name: string;
  readonly via: 'hydra' | 'serve';
  readonly perHost: readonly number[];
  readonly wrap?: boolean;
  readonly env?: Record<string, string>;
}

const configs: Config[] = [
  { name: 'hydra-plain-2x1', via: 'hydra', perHost: [1, 1] },
  { name: 'hydra-wrap-2x1', via: 'hydra', perHost: [1, 1], wrap: true },
  { name: 'hydra-plain-3x1', via: 'hydra', perHost: [1, 1, 1] },
  { name: 'hydra-wrap-3x1', via: 'hydra', perHost: [1, 1, 1], wrap: true },
  { name: 'serve-relays-2x1', via: 'serve', perHost: [1, 1] },
  { name: 'serve-relays-3x1', via: 'serve', perHost: [1, 1, 1] },
  { name: 'hydra-plain-2x2', via: 'hydra', perHost: [2, 2] },
  { name: 'hydra-wrap-2x2', via: 'hydra', perHost: [2, 2], wrap: true },
  { name: 'hydra-plain-3x1-tls-tcp', via: 'hydra', perHost: [1, 1, 1], env: { UCX_TLS: 'tcp,self' } },
  { name: 'hydra-plain-3x1-tcp-eth0', via: 'hydra', perHost: [1, 1, 1], env: { UCX_TLS: 'tcp,self', UCX_NET_DEVICES: 'eth0' } },
];

type Outcome = 'ok' | 'hang-ucx' | 'hang-pmi' | 'fail';

async function once(hs: Hosts, cfg: Config, hello: string): Promise<{ outcome: Outcome; finalizeMs?: number; where?: string }> {
  const n = cfg.perHost.reduce((a, b) => a + b, 0);
  let job: Running;
  if (cfg.via === 'hydra') {
    const spec = cfg.perHost.map((c, i) => `h${i + 1}:${c}`).join(',');
    job = await hydraAcross(hs, spec, n, cfg.wrap ? ['pmibridge', 'wrap', '--', hello] : [hello], cfg.env);
  } else {
    const s = await serveWithRelays(hs, cfg.perHost);
    job = startRanks(s, cfg.perHost, hello, [], cfg.env);
  }
  let endedAt: number | undefined;
  void job.ended.then(() => (endedAt = performance.now()));
  const allOk = () => {
    const l = helloLines(job.output());
    return l.size === n && [...l.values()].every((x) => x.ok);
  };
  await until('every rank OK', () => endedAt !== undefined || allOk(), 60_000).catch(() => undefined);
  const okAt = performance.now();
  const statuses = await settle(job, 8_000);
  if (statuses) {
    const outcome: Outcome = allOk() && statuses.every((s) => s.code === 0) ? 'ok' : 'fail';
    return { outcome, ...(outcome === 'ok' && endedAt !== undefined ? { finalizeMs: Math.max(0, endedAt - okAt) } : {}) };
  }
  if (!allOk()) return { outcome: 'fail' };
  const where = await whereStuck([...helloLines(job.output()).values()].map((l) => l.pid));
  return { outcome: where.some((w) => !w.inPmiRead) ? 'hang-ucx' : 'hang-pmi', where: where.map((w) => (w.inPmiRead ? 'pmi' : 'ucx')).join(',') };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.floor(s.length / 2)] ?? 0) : NaN;
}

t.test('MPICH 4.0.2 finalize across hosts: outcomes per configuration', { skip }, async (t) => {
  const hs = await multiHost(t, 3);
  const hello = mpiProgram('hello');
  for (const base of configs) {
    if (only.length && !only.includes(base.name)) continue;
    const cfg = Object.keys(extraEnv).length ? { ...base, env: { ...base.env, ...extraEnv } } : base;
    const counts: Record<Outcome, number> = { ok: 0, 'hang-ucx': 0, 'hang-pmi': 0, fail: 0 };
    const finalize: number[] = [];
    const wheres: string[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await once(hs, cfg, hello);
      counts[r.outcome]++;
      if (r.finalizeMs !== undefined) finalize.push(r.finalizeMs);
      if (r.where) wheres.push(r.where);
      await hs.killJobs();
    }
    const env = cfg.env ? ` ${Object.entries(cfg.env).map(([k, v]) => `${k}=${v}`).join(' ')}` : '';
    t.comment(
      `${cfg.name}${env}: ${runs} runs: ok ${counts.ok}, hang-ucx ${counts['hang-ucx']}, hang-pmi ${counts['hang-pmi']}, fail ${counts.fail}; ` +
        `finalize ms median ${median(finalize).toFixed(0)} max ${Math.max(0, ...finalize).toFixed(0)}${wheres.length ? `; stuck ranks: ${wheres.join(' ')}` : ''}`,
    );
    t.equal(counts['hang-pmi'], 0, `${cfg.name}: no run with every rank waiting in PMI`);
  }
});
