/** `pmibridge relay`: accept PMI_FD/TCP/Unix clients and forward each to an upstream server by session. */
import { createLogger, logBus } from './log.js';
import { intOption, listOption, parseOrHelp, stringOption, UsageError, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { parseDuration, RELAY_OPTIONS, resolveUpstream } from './relay-options.js';
import { ObserverBus } from '../host/bus.js';
import { RelayHost } from '../host/relay-host.js';
import { isLoopbackHost } from '../protocol/address.js';
import { ALLOW_UID_OPTION, allowUids, listenAddresses } from './listen-options.js';
import { startTap, TAP_OPTIONS } from './tap-options.js';
import { CONNECTION_OPTIONS, connectionOptions } from './connection-options.js';
import { sdNotify, startWatchdog, takeListenFds } from '../transport/systemd.js';
import { onTermination, signalExitCode } from '../util/termination-signals.js';

export const spec: CommandSpec = {
  name: 'relay',
  usage: 'pmibridge relay --upstream URL|env [--listen URL …] [--hold DURATION] [options]',
  summary: 'Forward PMI-1 clients (TCP, Unix) to an upstream server, one upstream connection per PMI_ID, with reconnection.',
  description: [
    'Prints one PMI_PORT=<address> line per listener (--json: one object). A client that disconnects',
    'before finalize keeps its session for --hold (default 5m); a new connection with the same PMI_ID',
    '(same uid) takes it over, e.g. a rank restarted under a debugger or restored from a checkpoint.',
    'Upstream: unix:///path, tcp://host:port, host:port, or env (PMI_FD or PMI_PORT+PMI_ID we were given).',
    'Under systemd: listening sockets passed by socket activation (LISTEN_FDS) are served, and READY=1 is notified.',
    'Exit: with --sessions N, 0 once N sessions finalized, 1 when one failed; otherwise runs until a signal.',
  ].join('\n'),
  options: {
    upstream: { type: 'string', arg: 'URL|env', help: 'the PMI server to forward to (required)' },
    listen: { type: 'string', arg: 'URL', multiple: true, help: 'address for clients (default: tcp://127.0.0.1:0); "unix" for a private socket' },
    ...RELAY_OPTIONS,
    'id-offset': { type: 'string', arg: 'K', help: 'upstream pmiid = client PMI_ID + K (a relay serving a slice of a job)' },
    'id-map': { type: 'string', arg: 'A=B,…', help: 'explicit client PMI_ID → upstream pmiid map; other ids are refused' },
    sessions: { type: 'string', arg: 'N', help: 'exit once N sessions have ended (0 when all finalized)' },
    json: { type: 'boolean', help: 'print the listeners as one JSON object' },
    'allow-uid': ALLOW_UID_OPTION,
    ...CONNECTION_OPTIONS,
    ...TAP_OPTIONS,
  },
  examples: ['pmibridge relay --upstream unix:///run/user/1000/pmi.sock --listen tcp://127.0.0.1:0 --hold 10m'],
};

export function mapIdFrom(values: Record<string, unknown>): ((id: number) => number | undefined) | undefined {
  const offset = intOption(spec, values as never, 'id-offset', -1_000_000, 1_000_000);
  const map = stringOption(values as never, 'id-map');
  if (offset !== undefined && map !== undefined) throw new UsageError('relay', '--id-offset and --id-map cannot be combined');
  if (offset !== undefined) return (id) => (id + offset >= 0 ? id + offset : undefined);
  if (map !== undefined) {
    const m = new Map<number, number>();
    for (const pair of map.split(',')) {
      const mm = /^(\d+)=(\d+)$/.exec(pair.trim());
      if (!mm) throw new UsageError('relay', `--id-map: ${JSON.stringify(pair)} is not A=B`);
      m.set(Number(mm[1]), Number(mm[2]));
    }
    return (id) => m.get(id);
  }
  return undefined;
}

export async function main(argv: string[]): Promise<number> {
  const parsed = parseOrHelp(spec, argv);
  if (!parsed) return EXIT.OK;
  const { values } = parsed;
  const upstreamText = stringOption(values, 'upstream');
  if (!upstreamText) throw new UsageError('relay', 'the upstream is required: --upstream unix:///path | tcp://host:port | env');
  const upstream = resolveUpstream('relay', upstreamText);
  const holdMs = parseDuration('relay', stringOption(values, 'hold') ?? '5m');
  const expected = intOption(spec, values, 'sessions', 1, 1_000_000);
  let mapId = mapIdFrom(values);
  if (upstream.envPmiid !== undefined && !mapId) {
    const only = upstream.envPmiid;
    mapId = (id) => (id === only ? only : undefined); // one rank slot: one session
  }
  const uids = allowUids('relay', values);
  // Socket activation: systemd's listening fds replace the default listener.
  const inherited = takeListenFds();
  const listenUrls = listOption(values, 'listen');
  const addresses = listenAddresses('relay', listenUrls.length || inherited.length ? listenUrls : ['tcp://127.0.0.1:0']);
  const log = createLogger(stringOption(values, 'log-level') ?? 'warn', 'pmibridge-relay');
  const bus = new ObserverBus();
  logBus(bus, log);
  const host = new RelayHost({ upstream: upstream.spec, holdMs, allowUids: uids, bus, kvsCache: values['no-kvs-cache'] !== true, ...connectionOptions(spec, values), ...(mapId ? { mapId } : {}) });
  const ports: string[] = [];
  for (const a of addresses) {
    if (a !== 'private-unix' && a.kind === 'tcp' && !isLoopbackHost(a.host)) log.warn(`listening on ${a.host}: remote peers cannot be identified by uid`);
    ports.push((await host.listen(a)).pmiPort);
  }
  for (const { fd } of inherited) ports.push((await host.listen({ fd })).pmiPort);
  await sdNotify(`READY=1\nSTATUS=relaying ${ports.join(' ')} to ${upstream.description}\nMAINPID=${process.pid}`);
  const stopWatchdog = startWatchdog();
  let tap;
  try {
    tap = await startTap('relay', values, bus, upstream.description, 'relay');
  } catch (err) {
    stopWatchdog();
    await host.close(); // the listeners would keep us running
    throw err;
  }
  process.stdout.write(values['json'] ? `${JSON.stringify({ upstream: upstream.description, listeners: ports.map((p) => ({ PMI_PORT: p })) })}\n` : ports.map((p) => `PMI_PORT=${p}\n`).join(''));

  const status = await new Promise<{ code: number; reason: string }>((resolve) => {
    // A PMI_ID the upstream refused is the client's mistake, not one of the job's sessions; a
    // session lost any other way (hold expired, upstream gone) counts as failed.
    let ended = 0;
    let failed = 0;
    host.onRelayEvent((e) => {
      if (e.type === 'finalized') ended++;
      else if (e.type === 'session-closed' && !e.refused) {
        ended++;
        failed++;
      } else return;
      if (expected !== undefined && ended >= expected) resolve(failed ? { code: EXIT.FAILURE, reason: `${failed} of ${ended} sessions failed` } : { code: EXIT.OK, reason: '' });
    });
    // The first termination signal closes the relay cleanly (a private socket directory removed);
    // a second one, of any kind, ends it on the spot (Node's default).
    const offTermination = onTermination((sig) => {
      offTermination();
      resolve({ code: signalExitCode(sig), reason: `interrupted by ${sig}` });
    });
  });
  stopWatchdog();
  await sdNotify('STOPPING=1');
  await tap?.close();
  await host.close();
  if (status.code !== 0) process.stderr.write(`pmibridge relay: ${status.reason}\n`);
  return status.code;
}
