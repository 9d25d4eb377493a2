/**
 * What `wrap` says, in plain words, when its relay turns a client away. A user starting a rank
 * by hand (`wrap --attach`) must learn at once why nothing happens: a wrong PMI_ID, or a process
 * of another uid. The generic log lines would say less (and suggest `--allow-uid`, which wrap
 * does not have), so these two events are written here instead of by the logger.
 */
import type { BusEvent, ObserverBus } from '../host/bus.js';
import type { Logger } from './log.js';

export interface SlotFacts {
  readonly rank: number;
  readonly pmiid: number;
  /** The relay's TCP PMI_PORT, when it has one. */
  readonly pmiPort?: string;
  /** Still waiting for a hand-started rank (wrap --attach): say so. */
  readonly waiting: () => boolean;
}

/** The refusals written by {@link noticeRefusals}; the logger should skip them. */
export function isRefusal(ev: BusEvent): boolean {
  return ev.type === 'peer-refused' || (ev.type === 'relay' && ev.event.type === 'refused');
}

export function refusalText(ev: BusEvent, slot: SlotFacts): string | undefined {
  const myUid = process.getuid?.() ?? -1;
  let what: string;
  if (ev.type === 'peer-refused') {
    const who = ev.uid === undefined ? 'its uid could not be determined' : `it runs as uid ${ev.uid}`;
    // The listener's peer text may end in " uid N", which `who` says in words.
    what = `refused a connection from ${ev.peer.replace(/ uid \d+$/, '')}: ${who}, and only uid ${myUid} (which runs this wrap) may join rank ${slot.rank}; start the rank as uid ${myUid}`;
  } else if (ev.type === 'relay' && ev.event.type === 'refused') {
    const use = `PMI_ID=${slot.pmiid}${slot.pmiPort ? ` with PMI_PORT=${slot.pmiPort}` : ''}`;
    what = `refused client ${ev.event.client}: ${ev.event.message}; this wrap serves rank ${slot.rank} only: use ${use}`;
  } else {
    return undefined;
  }
  const still = slot.waiting() ? `; still waiting for rank ${slot.rank}` : '';
  return `pmibridge wrap: ${what}${still}\n`;
}

/** Write each refusal as one plain line on stderr, at the logger's warn level. */
export function noticeRefusals(bus: ObserverBus, log: Logger, slot: SlotFacts, out: NodeJS.WritableStream = process.stderr): () => void {
  return bus.subscribe((ev) => {
    if (!log.isLevelEnabled('warn')) return;
    const text = refusalText(ev, slot);
    if (text) out.write(text);
  });
}

/** Log every bus event but the refusals (see above). */
export function logAllBut(bus: ObserverBus, logView: ObserverBus, skip: (ev: BusEvent) => boolean): () => void {
  return bus.subscribe((ev) => {
    if (!skip(ev)) logView.emit(ev);
  }, { lines: logView.wantsLines });
}
