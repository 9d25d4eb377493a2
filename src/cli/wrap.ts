/**
 * `pmibridge wrap -- prog`: run one rank behind a private relay. The relay forwards to the
 * upstream — by default whatever launched us (PMI_FD or PMI_PORT+PMI_ID), so
 * `mpiexec.hydra -n 4 pmibridge wrap -- ./prog` works, and a Unix socket bind-mounted into a
 * container can be the upstream of ranks inside it. How the child reaches the relay (`--pmi`):
 * - fd: a socketpair as PMI_FD (what every MPICH and flux client understands), plus PMI_PORT (a
 *   private Unix socket) and PMI_ID, which MPICH ignores while PMI_FD works and pmibridge's
 *   client falls back to when a debugger closed PMI_FD;
 * - tcp: PMI_PORT=127.0.0.1:P and PMI_ID, no PMI_FD — what hydra's -pmi-port gives, and what a
 *   rank launched by lldb needs (lldb closes fd 3, and MPICH prefers a set PMI_FD; MPICH parses
 *   PMI_PORT only as host:port);
 * - unix: PMI_PORT=unix://… (pmibridge clients only);
 * - auto (default): tcp when the program is a debugger or tracer (launcher/debuggers.ts), else fd.
 * `--attach` starts nothing in the chosen slot(s): see wrap-attach.ts.
 */
import { createLogger, logBus } from './log.js';
import { parseOrHelp, splitCommand, stringOption, UsageError, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { parseDuration, RELAY_OPTIONS, resolveUpstream } from './relay-options.js';
import { runChild, type WrapConnection } from './wrap-child.js';
import { attachHandStarted } from './wrap-attach.js';
import { outliveDump } from './wrap-checkpoint.js';
import { isRefusal, logAllBut, noticeRefusals } from './wrap-notices.js';
import { startTap, TAP_OPTIONS } from './tap-options.js';
import { ObserverBus } from '../host/bus.js';
import { RelayHost } from '../host/relay-host.js';
import { startsRankItself, TOOL_NAMES } from '../launcher/debuggers.js';

const LOOPBACK_TCP = { kind: 'tcp', host: '127.0.0.1', port: 0 } as const;

export const spec: CommandSpec = {
  name: 'wrap',
  usage: 'pmibridge wrap [--pmi fd|tcp|unix|auto] [--attach[=RANK|all]] [--checkpoint] [--upstream URL|env] [--hold DURATION] [--tap URL] [--] program [args…]',
  summary: 'Run one rank behind a private relay: the child reaches the relay by --pmi, the relay speaks to the upstream.',
  description: [
    'Default upstream: env (the PMI_FD or PMI_PORT+PMI_ID that launched wrap), e.g.',
    '  mpiexec.hydra -n 4 pmibridge wrap -- ./prog',
    'or an address such as unix:///run/pmi.sock (a socket bind-mounted into a container; then',
    'the session is PMI_ID from the environment, else PMI_RANK, else 0).',
    '',
    'How the child reaches the relay (--pmi):',
    '  fd    PMI_FD (socketpair at fd 3), PMI_RANK, PMI_SIZE; plus PMI_PORT (private Unix socket)',
    '        and PMI_ID as a fallback for pmibridge clients. Every MPICH and flux client speaks it.',
    '  tcp   PMI_PORT=127.0.0.1:P, PMI_ID, PMI_RANK, PMI_SIZE and no PMI_FD (as hydra -pmi-port).',
    '        For debuggers: lldb closes fd 3, and MPICH uses a set PMI_FD before PMI_PORT.',
    '  unix  PMI_PORT=unix://… (pmibridge clients only: MPICH reads PMI_PORT only as host:port).',
    '  auto  tcp when the program\'s basename is a debugger or tracer that starts the rank itself:',
    ...fill(`${TOOL_NAMES}; else fd.`, 84, '        '),
    '  e.g. mpiexec.hydra -n 4 pmibridge wrap -- lldb --batch -o run -- ./prog',
    '',
    '--checkpoint: the rank may be checkpointed with CRIU (criu dump kills it with SIGKILL; it comes',
    'back restored, no longer our child). A SIGKILL before PMI finalize then keeps the session, and wrap',
    'exits 0 once the restored rank finalized, 137 if the session ends without (a rank that really',
    'died: its connection closes). Implies --pmi tcp. See deploy/checkpoint.md.',
    '',
    '--attach RANK (or --attach=RANK): in the slot of upstream rank RANK, start nothing; print the',
    'environment and the plain, lldb and gdb command lines to start the rank by hand (PMI_PORT on',
    'loopback TCP), wait for it, and exit 0 once it finalized (1 if its session ended without).',
    'A bare --attach (or --attach all) does so in every slot. Other slots run the program as usual:',
    '  mpiexec.hydra -n 4 pmibridge wrap --attach 2 -- ./prog',
    '',
    '--tap ws://127.0.0.1:0: stream this rank\'s PMI traffic (both legs: child->relay, relay->upstream',
    'and the answers) to observers, as relay --tap does; the address and token go to stderr first:',
    '  srun -n 4 --mpi=pmi2 --label pmibridge wrap --tap ws://127.0.0.1:0 -- ./prog',
    '',
    'Exit status: the child\'s (128+N when a signal killed it); 127 when it cannot be started;',
    '1 when the upstream cannot be reached; 2 for a bad command line.',
  ].join('\n'),
  allowPositionals: true,
  options: {
    pmi: { type: 'string', arg: 'fd|tcp|unix|auto', default: 'auto', help: 'how the child reaches the relay (see above)' },
    attach: {
      type: 'string',
      arg: 'RANK|all',
      optionalValue: { accepts: /^(\d+|all)$/, bare: 'all' },
      help: 'do not start the program in RANK\'s slot (every slot: bare or all); print how to start it by hand and wait for it',
    },
    checkpoint: { type: 'boolean', help: 'the rank may be checkpointed with CRIU: a SIGKILL before PMI finalize keeps its session for the restored process (implies --pmi tcp)' },
    upstream: { type: 'string', arg: 'URL|env', default: 'env', help: 'the PMI server to forward to' },
    ...RELAY_OPTIONS,
    ...TAP_OPTIONS,
  },
};

/** Break a long list into lines of at most `width` characters. */
function fill(text: string, width: number, indent: string): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return line ? [...lines, indent + line] : lines;
}

type PmiChoice = 'fd' | 'tcp' | 'unix' | 'auto';

export async function main(argv: string[]): Promise<number> {
  const { ours, command } = splitCommand(spec, argv);
  const parsed = parseOrHelp(spec, ours);
  if (!parsed) return EXIT.OK;
  const { values } = parsed;
  const [prog, ...args] = command;
  if (!prog) throw new UsageError('wrap', 'no program given: pmibridge wrap [--] program [args…]');
  const pmiText = stringOption(values, 'pmi') ?? 'auto';
  if (!['fd', 'tcp', 'unix', 'auto'].includes(pmiText)) throw new UsageError('wrap', `--pmi must be fd, tcp, unix or auto, got ${JSON.stringify(pmiText)}`);
  const pmi = pmiText as PmiChoice;
  const checkpoint = values['checkpoint'] === true;
  // CRIU restores a TCP connection (in place, or the client reconnects to PMI_PORT); it cannot
  // give a restored rank back its end of our socketpair or Unix connection.
  if (checkpoint && pmi !== 'auto' && pmi !== 'tcp') throw new UsageError('wrap', `--checkpoint needs --pmi tcp (CRIU restores TCP connections), not --pmi ${pmi}`);
  const attachText = stringOption(values, 'attach');
  if (attachText !== undefined && !/^(\d{1,9}|all)$/.test(attachText)) throw new UsageError('wrap', `--attach takes a rank or all, got ${JSON.stringify(attachText)}`);
  const upstream = resolveUpstream('wrap', stringOption(values, 'upstream') ?? 'env');
  const holdMs = parseDuration('wrap', stringOption(values, 'hold') ?? '0');
  const envId = Number(process.env['PMI_ID'] ?? process.env['PMI_RANK'] ?? '0');
  const session = upstream.envPmiid ?? (Number.isInteger(envId) && envId >= 0 ? envId : 0);
  const log = createLogger(stringOption(values, 'log-level') ?? 'warn', 'pmibridge-wrap');
  const bus = new ObserverBus();
  const logView = new ObserverBus();
  logBus(logView, log);
  logAllBut(bus, logView, isRefusal);
  // Before anything reaches the upstream or the child: a bad --tap is a usage error, and observers
  // can be watching before the child's first line.
  const tap = await startTap('wrap', values, bus, upstream.description, 'relay');
  const host = new RelayHost({ upstream: upstream.spec, holdMs, bus, kvsCache: values['no-kvs-cache'] !== true, mapId: (id) => (id === session ? session : undefined) });
  try {
    let identity;
    try {
      identity = await host.prepare(session);
    } catch (err) {
      throw new Error(`cannot reach the upstream PMI server (${upstream.description}): ${(err as Error).message}`, { cause: err });
    }
    const slot = { host, session, rank: identity.rank, size: identity.size };
    if (attachText !== undefined && attachText !== 'all' && Number(attachText) >= identity.size) {
      throw new UsageError('wrap', `--attach ${attachText}: the job has ${identity.size} rank(s), 0 to ${identity.size - 1}`);
    }
    // The rank is the upstream's (hydra's PMI_RANK, or the handshake's), not our session number.
    if (attachText === 'all' || (attachText !== undefined && Number(attachText) === identity.rank)) {
      const { pmiPort } = await host.listen(LOOPBACK_TCP);
      let waiting = true;
      noticeRefusals(bus, log, { rank: identity.rank, pmiid: session, pmiPort, waiting: () => waiting });
      const code = await attachHandStarted({ ...slot, pmiPort, command });
      waiting = false;
      return code;
    }
    const mode = checkpoint ? 'tcp' : pmi === 'auto' ? (startsRankItself(prog) ? 'tcp' : 'fd') : pmi;
    const conn: WrapConnection =
      mode === 'fd'
        ? { mode: 'fd', fallbackPort: (await host.listen('private-unix')).pmiPort }
        : { mode: 'port', pmiPort: (await host.listen(mode === 'tcp' ? LOOPBACK_TCP : 'private-unix')).pmiPort };
    noticeRefusals(bus, log, { rank: identity.rank, pmiid: session, ...(conn.mode === 'port' ? { pmiPort: conn.pmiPort } : {}), waiting: () => false });
    const afterKill = checkpoint && conn.mode === 'port' ? (pid: number | undefined) => outliveDump({ host, session, rank: identity.rank, pmiPort: conn.pmiPort }, pid) : undefined;
    return await runChild({ ...slot, conn, ...(afterKill ? { afterKill } : {}) }, prog, args);
  } finally {
    await tap?.close();
    await host.close();
  }
}
