/**
 * Prometheus metrics (prom-client), fed by the same bus as logs and the tap. One registry per
 * process, served at /metrics on the tap's HTTP port.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BusEvent } from '../host/bus.js';
import { queryDef } from '../protocol/catalogue.js';
import { pmi2QueryDef } from '../protocol/pmi2-catalogue.js';

/**
 * The `cmd` label of a request: its name when a catalogue (PMI-1 or PMI-2) knows it, else `other`. Clients
 * choose what they send, and each new label value is a new series (a counter and a 13-bucket
 * histogram per hop) kept for the life of the process: 20 000 made-up commands made /metrics
 * 87 MiB. The catalogue bounds the label set whatever arrives; the tap's line events still show
 * each command as it was.
 */
export function cmdLabel(cmd: string): string {
  return cmd === 'mcmd=spawn' || queryDef(cmd) !== undefined || pmi2QueryDef(cmd) !== undefined ? cmd : 'other';
}

export class TapMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({ name: 'pmibridge_requests_total', help: 'PMI requests answered, by command, result (ok: rc=0) and hop (a relayed request is answered on two hops)', labelNames: ['cmd', 'result', 'leg'] as const, registers: [this.registry] });
  private readonly latency = new Histogram({
    name: 'pmibridge_request_duration_seconds',
    help: 'Time from a request to its reply on one hop, by command and hop',
    labelNames: ['cmd', 'leg'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5, 30],
    registers: [this.registry],
  });
  readonly states = new Gauge({ name: 'pmibridge_ranks', help: 'Ranks (server) or sessions (relay) by state', labelNames: ['state'] as const, registers: [this.registry] });
  private readonly takeovers = new Counter({ name: 'pmibridge_takeovers_total', help: 'Relay sessions taken over by a new connection (reconnects)', labelNames: ['was_held'] as const, registers: [this.registry] });
  private readonly holdsExpired = new Counter({ name: 'pmibridge_hold_expired_total', help: 'Relay sessions closed because their client did not come back in time', registers: [this.registry] });
  private readonly refused = new Counter({ name: 'pmibridge_refused_peers_total', help: 'Connections refused (wrong uid, bad handshake)', labelNames: ['where'] as const, registers: [this.registry] });
  readonly observerDrops = new Counter({ name: 'pmibridge_tap_observer_drops_total', help: 'Tap events not delivered to a slow observer', registers: [this.registry] });
  readonly observers = new Gauge({ name: 'pmibridge_tap_observers', help: 'Connected tap observers', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'pmibridge_process_' });
  }

  /**
   * Labelled children by label values: prom-client hashes a labels object on every inc/observe
   * (sorting its keys), which cost more than the rest of a tapped request; the label sets are few.
   */
  private readonly requestChildren = new Map<string, { inc(): void }>();
  private readonly latencyChildren = new Map<string, { observe(v: number): void }>();

  /** A reply on `leg` to a request of `request` (any command, even a made-up one) took `latencyNs`. */
  reply(request: string, leg: string, line: string, latencyNs: number | undefined): void {
    const cmd = cmdLabel(request);
    const rc = /(?:^|[\s;])rc=(-?\d+)/.exec(line)?.[1]; // PMI-1 `rc=` after a space, PMI-2 after a `;`
    const result = rc === undefined || rc === '0' ? 'ok' : 'error';
    const rkey = `${cmd}\0${leg}\0${result}`;
    let counter = this.requestChildren.get(rkey);
    if (!counter) this.requestChildren.set(rkey, (counter = this.requests.labels({ cmd, leg, result })));
    counter.inc();
    if (latencyNs === undefined) return;
    const lkey = `${cmd}\0${leg}`;
    let hist = this.latencyChildren.get(lkey);
    if (!hist) this.latencyChildren.set(lkey, (hist = this.latency.labels({ cmd, leg })));
    hist.observe(latencyNs / 1e9);
  }

  event(ev: BusEvent): void {
    if (ev.type === 'peer-refused') this.refused.inc({ where: 'listener' });
    else if (ev.type === 'engine' && ev.event.type === 'refused') this.refused.inc({ where: 'handshake' });
    else if (ev.type === 'relay') {
      if (ev.event.type === 'taken-over' && (ev.event.previous !== null || ev.event.wasHeld)) this.takeovers.inc({ was_held: String(ev.event.wasHeld) });
      else if (ev.event.type === 'hold-expired') this.holdsExpired.inc();
      else if (ev.event.type === 'refused') this.refused.inc({ where: 'relay' });
    }
  }
}
