/**
 * Structured logs: pino JSON lines on stderr, fed by the observer bus. The one-line outcome of a
 * job is printed separately in plain words (by run and serve); logs are for detail and scripts.
 *
 * pino itself (≈20 ms of module loading, a fifth of `pmibridge run`'s start-up) is loaded only
 * when the first line is due: at the default level `warn` most jobs never write one. Levels are
 * pino's, so which lines are written and what they look like do not change.
 */
import { createRequire } from 'node:module';
import type { Level, Logger as PinoLogger } from 'pino';
import type { BusEvent, ObserverBus } from '../host/bus.js';
import type { RelayEvent } from '../relay/types.js';
import { UsageError } from './args.js';
import { LogThrottle, type ThrottleOptions } from './log-throttle.js';

/** pino's numeric levels (`pino.levels.values`), so that filtering needs no pino. */
const LEVEL_VALUES: Readonly<Record<string, number>> = { fatal: 60, error: 50, warn: 40, info: 30, debug: 20, trace: 10, silent: Infinity };

type LogFn = (objOrMsg: object | string, msg?: string) => void;

/** The part of pino's Logger the CLI uses. */
export type Logger = { isLevelEnabled(level: Level): boolean } & Record<Level, LogFn>;

export function createLogger(level: string, name = 'pmibridge'): Logger {
  const threshold = Object.hasOwn(LEVEL_VALUES, level) ? LEVEL_VALUES[level] : undefined;
  if (threshold === undefined) throw new UsageError(name, `--log-level must be one of ${Object.keys(LEVEL_VALUES).join(', ')}, got ${JSON.stringify(level)}`);
  let real: PinoLogger | undefined;
  const write =
    (lvl: Level): LogFn =>
    (objOrMsg, msg) => {
      if ((LEVEL_VALUES[lvl] ?? 0) < threshold) return;
      real ??= loadPino(level, name);
      if (typeof objOrMsg === 'string') real[lvl](objOrMsg);
      else real[lvl](objOrMsg, msg);
    };
  return {
    isLevelEnabled: (lvl) => (LEVEL_VALUES[lvl] ?? 0) >= threshold,
    fatal: write('fatal'),
    error: write('error'),
    warn: write('warn'),
    info: write('info'),
    debug: write('debug'),
    trace: write('trace'),
  };
}

/** pino is CommonJS: required synchronously, so the first line is written before we return. */
function loadPino(level: string, name: string): PinoLogger {
  const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
  // Synchronous writes: a log line written just before process.exit must not be lost.
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
}

function levelOf(ev: BusEvent): Level {
  switch (ev.type) {
    case 'line':
      return 'trace';
    case 'listening':
      return 'info';
    case 'peer-refused':
    case 'transport-error':
      return 'warn';
    case 'closed':
      return 'debug';
    case 'relay':
      switch (ev.event.type) {
        case 'refused':
        case 'protocol-error':
        case 'hold-expired':
          return 'warn';
        case 'held':
        case 'taken-over':
        case 'session-closed':
        case 'reply-kept':
        case 'stalled':
        case 'resumed':
          return 'info';
        default:
          return 'debug';
      }
    case 'engine':
      switch (ev.event.type) {
        case 'put':
          return 'trace';
        case 'connected':
          return ev.event.facts.remote ? 'warn' : 'debug'; // nobody checked who a remote peer is: say so, with its address
        case 'initialized':
        case 'barrier':
          return 'debug';
        case 'disconnected':
          return ev.event.clean ? 'debug' : 'info';
        // The job's outcome is printed in plain words by run/serve; its log lines are detail.
        case 'bound':
        case 'barrier-complete':
        case 'finalized':
        case 'aborted':
        case 'rank-failed':
        case 'job-finished':
          return 'info';
        case 'refused':
        case 'protocol-error':
          return 'warn';
      }
  }
}

function messageOf(ev: BusEvent): string {
  switch (ev.type) {
    case 'line':
      return `${ev.leg}${ev.rank !== undefined ? ` rank ${ev.rank}` : ''}: ${ev.line}`;
    case 'listening':
      return `listening on PMI_PORT=${ev.pmiPort}`;
    case 'peer-refused':
      return `refused a connection from ${ev.peer}: ${ev.reason}`;
    case 'transport-error':
      return ev.message;
    case 'closed':
      return `connection ${ev.conn} closed: ${ev.reason}`;
    case 'relay':
      return relayMessage(ev.event);
    case 'engine': {
      const e = ev.event;
      switch (e.type) {
        case 'connected':
          return `connection ${e.conn} opened (${e.facts.transport}${e.facts.peer ? ` ${e.facts.peer}` : ''})${e.facts.remote ? ': a peer on another host, admitted without a uid check (PMI has no authentication; bind loopback or a Unix socket to keep it out)' : ''}`;
        case 'bound':
          return `rank ${e.rank} is connection ${e.conn} (${e.how === 'anonymous' ? 'sent init without initack; given the lowest free rank' : e.how})`;
        case 'initialized':
          return `rank ${e.rank} initialized`;
        case 'refused':
          return `refused connection ${e.conn}: ${e.message}`;
        case 'protocol-error':
          return `${e.rank !== undefined ? `rank ${e.rank}` : `connection ${e.conn}`}: ${e.message}`;
        case 'put':
          return `rank ${e.rank} put ${e.key} (${e.bytes} bytes)`;
        case 'barrier':
          return `barrier ${e.epoch}: ${e.entered}/${e.size} ranks in`;
        case 'barrier-complete':
          return `barrier ${e.epoch} complete: ${e.committed} puts committed, ${e.keys} keys`;
        case 'finalized':
          return `rank ${e.rank} finalized (${e.finalized}/${e.size})`;
        case 'aborted':
          return `rank ${e.rank ?? '?'} aborted with exit code ${e.exitCode}${e.message ? `: ${e.message}` : ''}`;
        case 'disconnected':
          return `connection ${e.conn}${e.rank !== undefined ? ` (rank ${e.rank})` : ''} disconnected${e.clean ? '' : ' before finalize'}`;
        case 'rank-failed':
          return e.message;
        case 'job-finished':
          return `job finished: ${e.status.reason}`;
      }
    }
  }
}

function relayMessage(e: RelayEvent): string {
  switch (e.type) {
    case 'session-opened':
      return `session ${e.session} opened (upstream pmiid ${e.upstreamId})`;
    case 'handshaken':
      return `session ${e.session} is rank ${e.rank} of ${e.size} upstream`;
    case 'held':
      return `session ${e.session} held ${e.holdMs === null ? 'until the job ends' : `for ${e.holdMs} ms`} after its client went away (${e.reason})`;
    case 'taken-over':
      return e.previous === null && !e.wasHeld ? `session ${e.session} attached to client ${e.client}` : `session ${e.session} taken over by client ${e.client}${e.previous !== null ? ` (closed the older connection ${e.previous})` : ' (it was held)'}`;
    case 'replayed':
      return `session ${e.session}: ${e.what}`;
    case 'reply-kept':
      return `session ${e.session}: its client left before it received the reply to ${e.request} (${e.unread === null ? 'its connection was reset or cannot be asked' : `${e.unread} bytes unacknowledged or unread`}); kept for the client's re-send`;
    case 'stalled':
      return `session ${e.session} stalled: its client has not read its last reply (${e.unread} bytes waiting) — stopped, frozen or checkpointed; the session is kept as it is`;
    case 'resumed':
      return `session ${e.session} resumed: its client read its reply`;
    case 'answered-locally':
      return `session ${e.session}: answered ${e.cmd} from the session`;
    case 'hold-expired':
      return e.message;
    case 'finalized':
      return `session ${e.session} finalized`;
    case 'session-closed':
      return `session ${e.session} closed: ${e.reason}`;
    case 'refused':
      return `refused client ${e.client}: ${e.message}`;
    case 'protocol-error':
      return e.message;
  }
}

/**
 * The key under which an event about bad input is throttled, and whether per connection; or null
 * for events that are always written.
 */
function throttleKey(ev: BusEvent): { key: string; perConnection: boolean } | null {
  if (ev.type === 'peer-refused') return { key: ev.uid !== undefined ? `uid ${ev.uid}` : ev.peer.replace(/:\d+$/, ''), perConnection: false };
  if (ev.type === 'engine') {
    // A peer on another host is written at warn; many of them share the global budget.
    if (ev.event.type === 'connected' && ev.event.facts.remote) return { key: `remote ${(ev.event.facts.peer ?? '?').replace(/:\d+$/, '')}`, perConnection: false };
    if (ev.event.type === 'protocol-error' && ev.event.conn >= 0) return { key: `connection ${ev.event.conn}`, perConnection: true };
    if (ev.event.type === 'refused') return { key: `connection ${ev.event.conn}`, perConnection: false };
  }
  if (ev.type === 'relay' && (ev.event.type === 'protocol-error' || ev.event.type === 'refused')) {
    return { key: ev.event.client !== undefined ? `client ${ev.event.client}` : 'relay', perConnection: false };
  }
  return null;
}

/**
 * Log every bus event at its level; per-line events only when trace is on. Events about bad input
 * go through a LogThrottle (log-throttle.ts), so that a peer cannot make us write without bound.
 */
export function logBus(bus: ObserverBus, log: Logger, throttleOptions?: ThrottleOptions): void {
  const throttle = new LogThrottle(throttleOptions);
  let timer: NodeJS.Timeout | undefined;
  const writeExtra = (lines: readonly string[]) => {
    for (const line of lines) log.warn({ event: 'log-throttled' }, line);
    const until = throttle.pendingUntil;
    if (until !== null && timer === undefined) {
      // The count of a window is written when it ends, even if nothing else happens by then.
      timer = setTimeout(() => {
        timer = undefined;
        writeExtra(throttle.flush(performance.now()));
      }, Math.max(0, until - performance.now()) + 5);
      timer.unref();
    }
  };
  bus.subscribe(
    (ev) => {
      if (ev.type === 'closed') writeExtra(throttle.closed(`connection ${ev.conn}`, performance.now()));
      const level = levelOf(ev);
      if (!log.isLevelEnabled(level)) return;
      const message = messageOf(ev);
      const t = throttleKey(ev);
      if (t) {
        const d = throttle.offer(t.key, message, performance.now(), t.perConnection);
        if (d.write) write(ev, level, message);
        writeExtra(d.extra);
        return;
      }
      write(ev, level, message);
    },
    { lines: log.isLevelEnabled('trace') },
  );
  function write(ev: BusEvent, level: Level, message: string): void {
    const { type, ...rest } = ev.type === 'engine' ? ev.event : ev;
    log[level]({ event: type, ...rest }, message);
  }
}
