/**
 * `pmibridge wrap -- prog`: run one rank behind a private relay. The child gets a socketpair as
 * PMI_FD (legacy mode, what every MPICH understands) plus PMI_RANK/PMI_SIZE from the upstream; the
 * relay forwards to the upstream — by default whatever launched us (PMI_FD or PMI_PORT+PMI_ID), so
 * `mpiexec.hydra -n 4 pmibridge wrap -- ./prog` works, and a Unix socket bind-mounted into a
 * container can be the upstream of ranks inside it.
 *
 * The child also gets PMI_PORT (a private Unix socket of this relay) and PMI_ID: MPICH ignores them
 * while PMI_FD works, and pmibridge's client falls back to them when a debugger closed PMI_FD.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import { createLogger, logBus } from './log.js';
import { parseOrHelp, splitCommand, stringOption, UsageError, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { parseDuration, RELAY_OPTIONS, resolveUpstream } from './relay-options.js';
import { ObserverBus } from '../host/bus.js';
import { RelayHost } from '../host/relay-host.js';
import { rankEnv } from '../launcher/rank-env.js';
import { signalChild } from '../util/signal-child.js';

export const spec: CommandSpec = {
  name: 'wrap',
  usage: 'pmibridge wrap [--upstream URL|env] [--hold DURATION] [--] program [args…]',
  summary: 'Run one rank behind a private relay: the child speaks PMI_FD, the relay speaks to the upstream.',
  description: [
    'Default upstream: env (the PMI_FD or PMI_PORT+PMI_ID that launched wrap), e.g.',
    '  mpiexec.hydra -n 4 pmibridge wrap -- ./prog',
    'or an address such as unix:///run/pmi.sock (a socket bind-mounted into a container; then',
    'the session is PMI_ID from the environment, else PMI_RANK, else 0). Exit status: the child\'s.',
  ].join('\n'),
  allowPositionals: true,
  options: {
    upstream: { type: 'string', arg: 'URL|env', default: 'env', help: 'the PMI server to forward to' },
    ...RELAY_OPTIONS,
  },
};

export async function main(argv: string[]): Promise<number> {
  const { ours, command } = splitCommand(spec, argv);
  const parsed = parseOrHelp(spec, ours);
  if (!parsed) return EXIT.OK;
  const { values } = parsed;
  const [prog, ...args] = command;
  if (!prog) throw new UsageError('wrap', 'no program given: pmibridge wrap [--] program [args…]');
  const upstream = resolveUpstream('wrap', stringOption(values, 'upstream') ?? 'env');
  const holdMs = parseDuration('wrap', stringOption(values, 'hold') ?? '0');
  const envId = Number(process.env['PMI_ID'] ?? process.env['PMI_RANK'] ?? '0');
  const session = upstream.envPmiid ?? (Number.isInteger(envId) && envId >= 0 ? envId : 0);
  const log = createLogger(stringOption(values, 'log-level') ?? 'warn', 'pmibridge-wrap');
  const bus = new ObserverBus();
  logBus(bus, log);
  const host = new RelayHost({ upstream: upstream.spec, holdMs, bus, kvsCache: values['no-kvs-cache'] !== true, mapId: (id) => (id === session ? session : undefined) });
  try {
    const identity = await host.prepare(session);
    const reconnect = await host.listen('private-unix');
    const env = rankEnv(process.env, identity.rank, identity.size, { mode: 'fd', fd: 3 });
    const child = spawn(prog, args, {
      stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
      env: { ...env, PMI_PORT: reconnect.pmiPort, PMI_ID: String(session) },
    });
    host.attachClient(child.stdio[3] as Socket, { transport: 'fd', pmiid: session, peer: `pid ${child.pid ?? '?'}` });
    const forward = (sig: NodeJS.Signals) => signalChild(child, sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    const code = await new Promise<number>((resolve) => {
      child.once('error', (err: NodeJS.ErrnoException) => {
        process.stderr.write(`pmibridge wrap: cannot start ${prog}: ${err.code === 'ENOENT' ? 'not found' : err.message}\n`);
        resolve(EXIT.CANNOT_START);
      });
      child.once('exit', (c, sig) => resolve(sig ? 128 + (osConstants.signals[sig] ?? 1) : (c ?? EXIT.FAILURE)));
    });
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    return code;
  } catch (err) {
    throw new Error(`cannot reach the upstream PMI server (${upstream.description}): ${(err as Error).message}`, { cause: err });
  } finally {
    await host.close();
  }
}
