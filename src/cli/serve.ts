/** `pmibridge serve`: a standalone PMI-1/PMI-2 server for ranks started by something else. */
import { createLogger, logBus } from './log.js';
import { intOption, listOption, parseOrHelp, stringOption, UsageError, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { JOB_OPTIONS, jobOptions, processMappingChoice } from './server-options.js';
import { ObserverBus } from '../host/bus.js';
import { JobServer } from '../host/job-server.js';
import { isLoopbackHost } from '../protocol/address.js';
import { listenAddresses } from './listen-options.js';
import { startTap, TAP_OPTIONS } from './tap-options.js';
import { onTermination, signalExitCode } from '../util/termination-signals.js';

export const spec: CommandSpec = {
  name: 'serve',
  usage: 'pmibridge serve --size N [--listen URL …] [options]',
  summary: 'Serve one PMI-1/PMI-2 job of N ranks on TCP and/or Unix sockets until it finalizes or aborts.',
  description: [
    'Prints one PMI_PORT=<address> line per listener on stdout and a PMI_process_mapping=<value>',
    'line (none: not preset) (--json: one JSON object), then serves; give each rank PMI_PORT and',
    'PMI_ID=<rank>. The one-node mapping (vector,(0,1,N)) is preset only when every listener is',
    'loopback or a Unix socket: MPICH believes it, and a rank on another host then fails in',
    'MPI_Init (--process-mapping forces it, --no-process-mapping removes it). URL forms: host:port,',
    'tcp://host:port, tcp://[::1]:port, unix:///abs/path, /abs/path, or "unix" for a socket in a',
    'new private directory. Port 0 picks a free port. Exit status: 0 when every rank finalized, the',
    'abort code after PMI_Abort, 1 when a rank dropped its connection before finalize.',
  ].join('\n'),
  options: {
    size: { short: 'n', type: 'string', arg: 'N', help: 'number of ranks in the job (required)' },
    listen: { type: 'string', arg: 'URL', multiple: true, help: 'address to listen on (default: tcp://127.0.0.1:0)' },
    json: { type: 'boolean', help: 'print the listeners as one JSON object instead of PMI_PORT lines' },
    ...JOB_OPTIONS,
    ...TAP_OPTIONS,
  },
  examples: [
    'pmibridge serve -n 2 --listen tcp://127.0.0.1:0',
    'pmibridge serve -n 4 --listen unix:///run/user/1000/pmi/job.sock --listen 127.0.0.1:7000',
  ],
};

export async function main(argv: string[]): Promise<number> {
  const parsed = parseOrHelp(spec, argv);
  if (!parsed) return EXIT.OK;
  const { values } = parsed;
  const size = intOption(spec, values, 'size', 1, 1_000_000);
  if (size === undefined) throw new UsageError('serve', 'the job size is required: --size N');
  const urls = listOption(values, 'listen');
  const addresses = listenAddresses('serve', urls.length ? urls : ['tcp://127.0.0.1:0']);
  const log = createLogger(stringOption(values, 'log-level') ?? 'warn', 'pmibridge-serve');
  const bus = new ObserverBus();
  logBus(bus, log);
  // Listeners other hosts can reach: then ranks may be on several nodes.
  const exposed = addresses.flatMap((a) => (a !== 'private-unix' && a.kind === 'tcp' && !isLoopbackHost(a.host) ? [a.host] : []));
  const mapping = processMappingChoice(spec, values, exposed);
  const server = new JobServer({ ...jobOptions(spec, values, exposed), size, bus });
  const ports: string[] = [];
  try {
    for (const a of addresses) {
      if (a !== 'private-unix' && a.kind === 'tcp' && !isLoopbackHost(a.host)) {
        log.warn(`listening on ${a.host}: any host that reaches it can join the job (PMI has no authentication)`);
      }
      ports.push((await server.listen(a)).pmiPort);
    }
    if (exposed.length > 0) {
      if (mapping.preset) log.warn(`PMI_process_mapping preset to ${server.engine.processMapping ?? ''} (${mapping.reason}): every rank must be on this host`);
      else log.warn(`PMI_process_mapping is not preset (${mapping.reason}): MPICH ranks exchange hostnames instead`);
    }
  } catch (err) {
    await server.close();
    throw new Error(`cannot listen: ${(err as Error).message}`, { cause: err });
  }
  let tap;
  try {
    tap = await startTap('serve', values, bus, server.engine.kvsname, 'server');
  } catch (err) {
    await server.close(); // the listeners would keep us running
    throw err;
  }
  if (values['json']) {
    const tapInfo = tap ? { tap: { url: tap.url, ...(tap.token ? { token: tap.token } : {}) } } : {};
    const info = { size, kvsname: server.engine.kvsname, listeners: ports.map((p) => ({ PMI_PORT: p })), processMapping: server.engine.processMapping, ...tapInfo };
    process.stdout.write(`${JSON.stringify(info)}\n`);
  } else {
    process.stdout.write(`${ports.map((p) => `PMI_PORT=${p}\n`).join('')}PMI_process_mapping=${server.engine.processMapping ?? 'none'}\n`);
  }
  // Every termination signal fails the job cleanly: listeners closed, a private socket directory removed.
  const offTermination = onTermination((sig) => server.fail({ ok: false, exitCode: signalExitCode(sig), reason: `interrupted by ${sig}` }));
  const status = await server.done;
  offTermination();
  await tap?.close();
  await server.close();
  if (!status.ok) process.stderr.write(`pmibridge serve: job failed: ${status.reason}\n`);
  return status.exitCode;
}
