/**
 * B7 — the tap's cost: relay throughput (16 lock-step clients → `pmibridge relay` → `pmibridge
 * serve`, Unix sockets) with `--tap` and 8 WebSocket observers, one of them stalled, against the
 * same relay without a tap. Goal: ≥ 0.9×.
 *
 * - The request is the forwarded `get` (a missing key, one per client, as B3): every request
 *   crosses all four legs, so the tap publishes four `line` events per request — its heaviest
 *   case (a get the relay's KVS cache answers has two).
 * - Observers: one separate Node process (lib/tap-observers.ts, `ws` package) on the tap's Unix
 *   socket with the token: 7 read and count every message, 1 pauses its socket once open and
 *   never reads (a frozen monitor). The relay bounds each observer's send buffer and cuts off one
 *   that keeps falling behind (src/tap/tap-server.ts), which is what is measured; the note says
 *   what the observers saw.
 * - Without a tap the relay publishes nothing (no line events are even built), so the ratio is
 *   the whole cost of watching: recording, serialising once, and sending to 8 observers.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FORWARDED_GET, interleave, latencyVs, runLoad, throughputVs, type LoadMode, type LoadSpec } from './lib/pmi-load.js';
import { envWithoutPmi, start } from './lib/proc.js';
import { median } from './lib/stats.js';
import type { BenchContext, Benchmark } from './lib/types.js';

const CLIENTS = 16;
const LIVE = 7;
const STALLED = 1;

interface ObserverReport {
  readonly live: ReadonlyArray<{ messages: number; bytes: number; missed: number; closeCode: number | null }>;
  readonly stalled: ReadonlyArray<{ messages: number; closeCode: number | null }>;
}

const observerScript = join(dirname(fileURLToPath(import.meta.url)), 'lib', 'tap-observers.js');

/** A relay spec with a fresh tap (Unix socket, token file) and the observers attached to it. */
function tapSpec(ctx: BenchContext, base: LoadSpec, reports: ObserverReport[], batch: boolean): LoadSpec {
  const dir = mkdtempSync(join(ctx.tmp, 'tap-'));
  const sock = join(dir, 'tap.sock');
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  return {
    ...base,
    relay: {
      args: ['--tap', sock, '--tap-token-file', tokenFile],
      attach: async () => {
        const obs = start(process.execPath, [observerScript, sock, tokenFile, String(LIVE), String(STALLED), ...(batch ? ['batch'] : [])], { env: envWithoutPmi(), limitMs: 120_000 });
        try {
          await obs.waitForLine(/^ready$/, 15_000);
        } catch (err) {
          obs.kill();
          throw err;
        }
        return async () => {
          obs.child.kill('SIGTERM');
          const e = await obs.exited;
          const last = e.stdout.trim().split('\n').pop() ?? '';
          if (e.code === 0 && last.startsWith('{')) reports.push(JSON.parse(last) as ObserverReport);
          else ctx.log(`B7: the observers ended with code ${e.code}: ${e.stderr.slice(-300)}`);
        };
      },
    },
  };
}

function observerNote(reports: readonly ObserverReport[]): string {
  if (reports.length === 0) return 'no observer report';
  const live = reports.flatMap((r) => r.live);
  const stalled = reports.flatMap((r) => r.stalled);
  const events = median(live.map((l) => l.messages + l.missed));
  const gapped = live.filter((l) => l.missed > 0);
  return (
    `per tap run: ~${Math.round(events)} events; ${gapped.length} of ${live.length} live observers fell behind and were told of a gap` +
    (gapped.length ? ` (up to ${Math.max(...gapped.map((l) => l.missed))} events missed)` : '') +
    `; the stalled one: ~${Math.round(median(stalled.map((s) => s.messages)))} reached its socket buffers ` +
    '(the relay drops what does not fit in a 256 KiB send buffer and disconnects it after 10,000 drops)'
  );
}

export const benchmark: Benchmark = {
  id: 'B7',
  title: `relay throughput with a tap of ${LIVE + STALLED} observers (1 stalled) vs no tap, ${CLIENTS} clients`,
  async run(ctx) {
    const runs = ctx.quick ? 2 : 5;
    // Every run starts a fresh relay and server: the warm-up lets their JIT settle first.
    const mode: LoadMode = ctx.quick ? { kind: 'window', warmupMs: 250, windowMs: 400, tailMs: 100 } : { kind: 'window', warmupMs: 500, windowMs: 2000, tailMs: 200 };
    const base: LoadSpec = { clients: CLIENTS, connsPerProcess: 1, mode, request: FORWARDED_GET };
    const batched: ObserverReport[] = [];
    const single: ObserverReport[] = [];
    ctx.log(`B7: ${runs} runs × ${mode.windowMs} ms, relay without the tap, and with observers batched (?batch=1) and one event per message`);
    const r = await interleave(runs, {
      plain: () => runLoad(ctx, 'relay', 'unix', base),
      batch: () => runLoad(ctx, 'relay', 'unix', tapSpec(ctx, base, batched, true)),
      single: () => runLoad(ctx, 'relay', 'unix', tapSpec(ctx, base, single, false)),
    });
    const name = `${CLIENTS} clients, ${LIVE + STALLED} observers (1 stalled)`;
    // The goal is read on batched observers: that is how pmibridge's own viewers (`pmibridge tap`,
    // the monitor) connect; plain v1 observers (one event per message) are shown beside it.
    return [
      throughputVs(`B7 relay throughput with tap, ${name}, batched`, r.batch, r.plain, 'relay, no tap', { op: '>=', ratio: 0.9 }, runs, observerNote(batched)),
      latencyVs(`B7 relay RTT with tap, ${name}, batched`, r.batch, r.plain, 'relay, no tap', null, runs),
      throughputVs(`B7 relay throughput with tap, ${name}, one event per message`, r.single, r.plain, 'relay, no tap', null, runs, observerNote(single)),
    ];
  },
};
