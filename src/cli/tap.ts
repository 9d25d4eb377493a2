/** `pmibridge tap URL`: watch a job's PMI traffic in the terminal, like tcpdump for PMI. */
import { WebSocket } from 'ws';
import { helpText, parseCommand, stringOption, UsageError, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { parseTapAddress } from './tap-options.js';
import { formatAddress } from '../protocol/address.js';
import { tokenFromFile } from '../tap/token.js';

/** The token in a file of ours alone (tap/token.ts), or a usage error saying what is wrong with it. */
function readToken(path: string): string {
  try {
    return tokenFromFile(path, false).token;
  } catch (err) {
    throw new UsageError('tap', `--token-file: ${(err as Error).message}`);
  }
}

export const spec: CommandSpec = {
  name: 'tap',
  usage: 'pmibridge tap URL [--token T | --token-file F] [--rank R] [--cmd C] [--json]',
  summary: "Show a job's PMI traffic live: every PMI-1 line and PMI-2 frame on every hop, and state changes (ranks joining, barriers, finalize).",
  description: [
    'URL: what run/serve/relay --tap printed (ws://127.0.0.1:PORT, or a Unix socket path).',
    'The token comes from --token, --token-file, or $PMIBRIDGE_TAP_TOKEN. Colour on a terminal;',
    '--json prints the events as JSON lines (schema version 2, see the README) for scripts.',
    'Exits 0 when the job ends (the tap closes), 1 when it cannot connect or is refused.',
  ].join('\n'),
  options: {
    token: { type: 'string', arg: 'T', help: 'the tap token' },
    'token-file': { type: 'string', arg: 'FILE', help: 'read the token from FILE' },
    rank: { type: 'string', arg: 'R', multiple: true, help: 'only these ranks (repeatable)' },
    cmd: { type: 'string', arg: 'C', multiple: true, help: 'only lines of these commands, e.g. barrier_in, get (repeatable); state events always show' },
    json: { type: 'boolean', help: 'one JSON event per line' },
  },
  examples: ['pmibridge tap ws://127.0.0.1:7777 --token-file ~/.pmibridge-tap --rank 3', 'pmibridge tap ws://127.0.0.1:7777 --token "$T" --json | jq .'],
};

/** What a refusal of the tap means for whoever runs `pmibridge tap` (it sends no Origin). */
const REFUSALS: Readonly<Record<number, string>> = {
  401: ' (wrong or missing token)',
  403: ' (this uid may not observe the job)',
  421: ' (the tap answers only to its own addresses: use the one it printed, 127.0.0.1 or localhost)',
};

const COLOURS: Record<string, string> = { 'client->server': '36', 'client->relay': '36', 'relay->upstream': '34', 'upstream->relay': '35', 'server->client': '32', 'relay->client': '32' };

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand({ ...spec, allowPositionals: true }, argv);
  if (values['help']) {
    process.stdout.write(helpText(spec));
    return EXIT.OK;
  }
  const target = positionals[0];
  if (!target) throw new UsageError('tap', 'which tap? pmibridge tap ws://127.0.0.1:PORT (as printed by --tap)');
  const file = stringOption(values, 'token-file');
  const token = stringOption(values, 'token') ?? (file ? readToken(file) : process.env['PMIBRIDGE_TAP_TOKEN']);
  if (!token) throw new UsageError('tap', 'a token is needed: --token, --token-file or PMIBRIDGE_TAP_TOKEN');
  const addr = parseTapAddress('tap', target);
  // batch=1: a loop turn's events in one message, one JSON object per line (cheaper for the job).
  const url = addr.kind === 'unix' ? `ws+unix://${addr.path}:/tap?batch=1` : `ws://${formatAddress(addr)}/tap?batch=1`;
  const ranks = new Set(
    ((values['rank'] as string[] | undefined) ?? []).map((r) => {
      if (!/^\d+$/.test(r)) throw new UsageError('tap', `--rank needs a rank number, got ${JSON.stringify(r)}`);
      return Number(r);
    }),
  );
  const cmds = new Set((values['cmd'] as string[] | undefined) ?? []);
  const json = Boolean(values['json']);
  const colour = !json && process.stdout.isTTY;
  const paint = (code: string, s: string) => (colour ? `\x1b[${code}m${s}\x1b[0m` : s);

  return new Promise<number>((resolve) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, maxPayload: 64 * 1024 * 1024 });
    ws.on('unexpected-response', (_req, res) => {
      process.stderr.write(`pmibridge tap: refused: HTTP ${res.statusCode}${REFUSALS[res.statusCode ?? 0] ?? ''}\n`);
      resolve(EXIT.FAILURE);
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      process.stderr.write(`pmibridge tap: cannot connect to ${target}: ${err.code ?? err.message}\n`);
      resolve(EXIT.FAILURE);
    });
    ws.on('close', () => resolve(EXIT.OK));
    ws.on('message', (data: Buffer) => {
      for (const text of data.toString().split('\n')) show(text);
    });
    const show = (text: string): void => {
      let ev: Record<string, unknown>;
      try {
        ev = JSON.parse(text) as Record<string, unknown>;
      } catch {
        return;
      }
      const rank = typeof ev['rank'] === 'number' ? ev['rank'] : undefined;
      // Filters pick lines and state events; hello, snapshot and gap (events missed) always show.
      const filtered = ev['kind'] === 'line' || ev['kind'] === 'state';
      if (filtered && ranks.size && (rank === undefined || !ranks.has(rank))) return;
      if (cmds.size && ev['kind'] === 'line' && !cmds.has(String(ev['cmd']))) return;
      if (json) {
        process.stdout.write(`${JSON.stringify(ev)}\n`);
        return;
      }
      const t = typeof ev['t'] === 'string' && /^\d+$/.test(ev['t']) ? BigInt(ev['t']) : 0n;
      const time = new Date(Number(t / 1_000_000n)).toISOString().slice(11, 23);
      const session = typeof ev['session'] === 'number' ? ev['session'] : undefined;
      const who = rank !== undefined ? `rank ${rank}` : session !== undefined ? `session ${session}` : '';
      switch (ev['kind']) {
        case 'line': {
          const lat = typeof ev['latencyNs'] === 'number' ? paint('2', ` (${(ev['latencyNs'] / 1000).toFixed(0)} µs)`) : '';
          const leg = String(ev['leg']);
          const wire = ev['wire'] === 'pmi2' ? paint('2', '[PMI-2] ') : '';
          process.stdout.write(`${time} ${who.padEnd(9)} ${paint(COLOURS[leg] ?? '0', leg.padEnd(15))} ${wire}${String(ev['line'])}${lat}\n`);
          break;
        }
        case 'state': {
          const { v: _v, seq: _s, t: _t, job: _j, kind: _k, event, ...rest } = ev;
          const detail = Object.entries(rest).filter(([k]) => k !== 'rank' && k !== 'session').map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
          process.stdout.write(`${time} ${who.padEnd(9)} ${paint('33', `* ${String(event)}`)} ${detail}\n`);
          break;
        }
        case 'gap':
          process.stdout.write(paint('31', `${time} … ${String(ev['dropped'])} events missed (this viewer was too slow)\n`));
          break;
        case 'hello':
          process.stdout.write(paint('2', `watching job ${String(ev['job'])} (${String(ev['role'])}${ev['redact'] ? ', values redacted' : ''})\n`));
          break;
        case 'snapshot': {
          const st = ev['state'] as { ranks?: Array<{ rank: number | null; session: number | null; state: string; lastCmd: string }>; barrier?: { entered: number; size: number } } | undefined;
          for (const r of st?.ranks ?? []) process.stdout.write(paint('2', `  rank ${r.rank ?? '?'}${r.session !== null ? ` (session ${r.session})` : ''}: ${r.state}${r.lastCmd ? `, last ${r.lastCmd}` : ''}\n`));
          if (st?.barrier?.entered) process.stdout.write(paint('2', `  barrier: ${st.barrier.entered}/${st.barrier.size} in\n`));
          break;
        }
      }
    };
  });
}
