/** Child processes for the benchmarks: every wait is bounded, and nothing outlives the bench. */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface Exited {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Spawn to exit, in ms (process.hrtime, i.e. CLOCK_MONOTONIC). */
  readonly ms: number;
}

export interface Started {
  readonly child: ChildProcess;
  /** Resolves when the process exits (or is killed at its time limit); never rejects. */
  readonly exited: Promise<Exited>;
  /** Resolves with the first stdout line matching `re` (rejects on exit or after `timeoutMs`). */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  kill(): void;
}

const live = new Set<ChildProcess>();

/** Our environment without PMI_* variables (the bench may itself run under a PMI launcher). */
export function envWithoutPmi(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('PMI_')) delete env[k];
  return env;
}

/** Kill whatever is still running (on error paths and at exit). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

/**
 * Start a process with piped stdout/stderr (collected). It is SIGKILLed after `limitMs`, so a
 * hung server or client costs at most that much.
 */
export function start(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; limitMs?: number } = {}): Started {
  const t0 = process.hrtime.bigint();
  const spawnOpts: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env };
  if (opts.cwd !== undefined) spawnOpts.cwd = opts.cwd;
  const child = spawn(cmd, args, spawnOpts);
  live.add(child);
  let stdout = '';
  let stderr = '';
  const lineWaiters: Array<{ re: RegExp; resolve: (line: string) => void }> = [];
  let scanned = 0;
  const scan = () => {
    let nl: number;
    while ((nl = stdout.indexOf('\n', scanned)) >= 0) {
      const line = stdout.slice(scanned, nl);
      scanned = nl + 1;
      for (let i = lineWaiters.length - 1; i >= 0; i--) {
        const w = lineWaiters[i];
        if (w && w.re.test(line)) {
          lineWaiters.splice(i, 1);
          w.resolve(line);
        }
      }
    }
  };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    scan();
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 1 << 20) stderr += d;
  });
  const limit = setTimeout(() => {
    stderr += `\n[bench] killed after ${opts.limitMs ?? 120_000} ms\n`;
    child.kill('SIGKILL');
  }, opts.limitMs ?? 120_000);
  const exited = new Promise<Exited>((resolve) => {
    let done = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (done) return;
      done = true;
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(limit);
      live.delete(child);
      resolve({ code, signal, stdout, stderr, ms });
    };
    child.once('error', (err) => {
      stderr += String(err);
      finish(127, null);
    });
    // Output is complete on 'close'; the time is taken at 'exit' (below): pipes close a moment later.
    child.once('close', (code, signal) => finish(code, signal));
  });
  const exitTimes = new Promise<number>((resolve) => child.once('exit', () => resolve(Number(process.hrtime.bigint() - t0) / 1e6)));
  const timedExit = Promise.all([exited, exitTimes]).then(([e, ms]) => ({ ...e, ms }));
  return {
    child,
    exited: timedExit,
    waitForLine(re: RegExp, timeoutMs = 30_000) {
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${cmd}: no line matching ${re} within ${timeoutMs} ms; stdout: ${stdout.slice(0, 500)} stderr: ${stderr.slice(0, 500)}`)), timeoutMs);
        lineWaiters.push({
          re,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        scan();
        void exited.then((e) => {
          clearTimeout(timer);
          reject(new Error(`${cmd} exited (code ${e.code}, signal ${e.signal}) before printing a line matching ${re}: ${e.stderr.slice(0, 500)}`));
        });
      });
    },
    kill: () => child.kill('SIGKILL'),
  };
}

/** Run to completion; throws with the output when it fails. */
export async function run(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; limitMs?: number } = {}): Promise<Exited> {
  const e = await start(cmd, args, opts).exited;
  if (e.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (code ${e.code}, signal ${e.signal}):\n${e.stderr.slice(-2000)}${e.stdout.slice(-500)}`);
  return e;
}
