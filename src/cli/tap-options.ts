/** `--tap …` options of run, serve and relay, and starting the tap from them. */
import { AddressError, parseAddress, type PmiAddress } from '../protocol/address.js';
import type { ObserverBus } from '../host/bus.js';
import { stringOption, UsageError, type OptionSpec, type ParsedValues } from './args.js';

export const TAP_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  tap: { type: 'string', arg: 'URL', help: 'stream all PMI traffic to observers: ws://127.0.0.1:PORT (0 = any free port) or a Unix socket path; also serves the web monitor at / and /metrics' },
  'tap-token-file': { type: 'string', arg: 'FILE', help: 'read the tap token from FILE, which must be yours alone (owned by this uid, mode 0600; created with a fresh token when missing); default: a new token, printed' },
  'tap-redact': { type: 'string', arg: 'values', help: 'hide KVS values from observers' },
  'metrics-public': { type: 'boolean', help: 'serve /metrics without the token' },
};

/** `ws://host:port` (or `tcp://…`, `host:port`) for TCP; `unix:///path` or a bare path. */
export function parseTapAddress(command: string, text: string): PmiAddress {
  try {
    return parseAddress(text.replace(/^ws:\/\//, 'tcp://').replace(/\/$/, ''), { allowPortZero: true });
  } catch (err) {
    if (err instanceof AddressError) throw new UsageError(command, `--tap: ${err.message.replace('invalid PMI address', 'invalid tap address')} (or ws://host:port)`);
    throw err;
  }
}

export interface StartedTap {
  close(): Promise<void>;
  readonly url: string;
  readonly token?: string;
}

/** Start the tap when --tap was given; prints where to watch on stderr. */
export async function startTap(command: string, values: ParsedValues, bus: ObserverBus, job: string, role: 'server' | 'relay' | 'run'): Promise<StartedTap | null> {
  const where = stringOption(values, 'tap');
  if (where === undefined) {
    for (const o of ['tap-token-file', 'tap-redact', 'metrics-public']) if (values[o] !== undefined && values[o] !== false) throw new UsageError(command, `--${o} needs --tap`);
    return null;
  }
  const redact = stringOption(values, 'tap-redact');
  if (redact !== undefined && redact !== 'values') throw new UsageError(command, `--tap-redact takes "values", got ${JSON.stringify(redact)}`);
  const listen = parseTapAddress(command, where);
  const { newToken, tokenFromFile } = await import('../tap/token.js');
  const file = stringOption(values, 'tap-token-file');
  const token = file ? tokenFromFile(file).token : newToken();
  const { TapServer } = await import('../tap/tap-server.js');
  const tap = new TapServer({ listen, token, job, role, bus, redact: redact === 'values', metricsPublic: Boolean(values['metrics-public']) });
  const url = await tap.start();
  const monitor = tap.monitorUrl();
  process.stderr.write(
    `pmibridge ${command}: tap on ${url}${file ? ` (token in ${file})` : ` token=${token}`}\n` +
      (monitor ? `pmibridge ${command}: monitor: ${file ? monitor.replace(/token=.*/, 'token=<token>') : monitor}\n` : `pmibridge ${command}: watch with: pmibridge tap ${url}${file ? ` --token-file ${file}` : ''}\n`),
  );
  return { close: () => tap.close(), url, ...(file ? {} : { token }) };
}
