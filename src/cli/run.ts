/** `pmibridge run`: the embedded server plus a launcher, like `mpiexec -n N prog`. */
import { createLogger, logBus } from './log.js';
import { intOption, parseOrHelp, splitCommand, stringOption, UsageError, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { JOB_OPTIONS, jobOptions, processMappingChoice } from './server-options.js';
import { parseDuration } from './relay-options.js';
import { startTap, TAP_OPTIONS } from './tap-options.js';
import { ObserverBus } from '../host/bus.js';
import { isLoopbackHost } from '../protocol/address.js';
// Static: launch.ts itself is light (it loads the server while the ranks start), and one module
// graph loads faster than two in a row.
import { launch } from '../launcher/launch.js';

export const spec: CommandSpec = {
  name: 'run',
  usage: 'pmibridge run -n N [options] [--] program [args…]',
  summary: 'Start the embedded PMI-1/PMI-2 server and launch N ranks of a program; exit with the job status.',
  description: [
    'Ranks get the environment hydra gives: PMI_FD, PMI_RANK, PMI_SIZE (--pmi fd) or',
    'PMI_PORT, PMI_ID, PMI_RANK, PMI_SIZE (--pmi tcp|unix). A rank that exits non-zero or drops its',
    'PMI connection before finalize fails the job at once, and the other ranks are killed.',
    'Each rank leads a process group of its own: signals reach all it started. SIGINT, SIGTERM,',
    'SIGHUP (a closed terminal) and SIGQUIT are passed on and end the job; Ctrl-Z stops the ranks.',
    'Exit status: 0 success; the abort code after PMI_Abort; a failing rank\'s code; 128+N for a',
    'signal; 127 when a rank cannot be started (program not found or not executable, out of fds',
    'or processes: the launch stops at the first); 2 for a bad command line.',
  ].join('\n'),
  allowPositionals: true,
  options: {
    np: { short: 'n', type: 'string', arg: 'N', help: 'number of ranks (required)' },
    pmi: { type: 'string', arg: 'fd|tcp|unix', default: 'fd', help: 'how ranks reach the server: inherited socket, loopback TCP, or a private Unix socket' },
    label: { short: 'l', type: 'boolean', help: 'prefix each output line with [rank]' },
    attach: { type: 'string', arg: 'RANK', help: 'do not start RANK; print the environment and command to start it by hand (e.g. under lldb) and wait for it' },
    'tcp-host': { type: 'string', arg: 'HOST', default: '127.0.0.1', help: 'address the TCP listener binds (loopback unless told otherwise; elsewhere, PMI_process_mapping is not preset unless --process-mapping)' },
    relay: { type: 'boolean', help: 'put a relay between the ranks and the server (which then listens only on a private Unix socket); with --attach, the hand-started rank can reconnect' },
    hold: { type: 'string', arg: 'DURATION', help: 'with --relay: how long a disconnected rank\'s session waits for it to reconnect (default 5m; 0, inf)' },
    ...JOB_OPTIONS,
    ...TAP_OPTIONS,
  },
  examples: [
    'pmibridge run -n 4 ./mpi_hello',
    'pmibridge run -n 8 --pmi tcp --label -- ./mpi_prog --its-own-flag',
    'pmibridge run -n 4 --pmi unix -- pmibridge pmi exchange',
    'pmibridge run -n 2 --attach 1 -- ./mpi_prog    # then start rank 1 under lldb as printed',
  ],
};

export async function main(argv: string[]): Promise<number> {
  const { ours, command } = splitCommand(spec, argv);
  const parsed = parseOrHelp(spec, ours);
  if (!parsed) return EXIT.OK;
  const { values } = parsed;
  const size = intOption(spec, values, 'np', 1, 1_000_000);
  if (size === undefined) throw new UsageError('run', 'the number of ranks is required: -n N');
  if (command.length === 0) throw new UsageError('run', 'no program given: pmibridge run -n N [--] program [args…]');
  const pmi = stringOption(values, 'pmi') ?? 'fd';
  if (pmi !== 'fd' && pmi !== 'tcp' && pmi !== 'unix') throw new UsageError('run', `--pmi must be fd, tcp or unix, got ${JSON.stringify(pmi)}`);
  const attach = intOption(spec, values, 'attach', 0, size - 1);
  const tcpHost = stringOption(values, 'tcp-host') ?? '127.0.0.1';
  // The TCP listener exists with --pmi tcp, and with --attach under --pmi fd (the hand-started
  // rank's PMI_PORT); bound elsewhere than loopback, it lets ranks on other hosts in.
  const tcpListener = pmi === 'tcp' || (pmi === 'fd' && attach !== undefined);
  const exposed = tcpListener && !isLoopbackHost(tcpHost) ? [tcpHost] : [];
  const mapping = processMappingChoice(spec, values, exposed);
  const server = jobOptions(spec, values, exposed);
  const log = createLogger(stringOption(values, 'log-level') ?? 'warn', 'pmibridge-run');
  const bus = new ObserverBus();
  logBus(bus, log);
  if (!isLoopbackHost(tcpHost)) log.warn(`TCP listener on ${tcpHost}: any host that reaches it can join the job (PMI has no authentication)`);
  if (exposed.length > 0) {
    if (mapping.preset) log.warn(`PMI_process_mapping preset to (vector,(0,1,${size})) (${mapping.reason}): every rank must be on this host`);
    else log.warn(`PMI_process_mapping is not preset (${mapping.reason}): MPICH ranks exchange hostnames instead`);
  }

  const tap = await startTap('run', values, bus, server.kvsname ?? 'job', 'run');
  const holdText = stringOption(values, 'hold');
  if (holdText !== undefined && !values['relay']) throw new UsageError('run', '--hold needs --relay');
  const relay = values['relay'] ? { holdMs: parseDuration('run', holdText ?? '5m') } : undefined;
  const result = await launch({ size, command, pmi, label: Boolean(values['label']), ...(attach !== undefined ? { attach } : {}), ...(relay ? { relay } : {}), tcpHost, server, bus });
  await tap?.close();
  if (!result.ok) process.stderr.write(`pmibridge run: job failed: ${result.reason}\n`);
  return result.exitCode;
}
