/**
 * Tap observers for B7, as a process of their own (the relay must not share an event loop with
 * them): `node tap-observers.js TAP_SOCKET TOKEN_FILE LIVE STALLED`.
 *
 * Opens LIVE + STALLED WebSocket connections to a tap on a Unix socket, with the token. Live ones
 * read everything and only count it (messages, bytes, the events `gap` messages say they missed):
 * the cheapest observer there is, so that what B7 measures is the relay's side. Stalled ones pause
 * their socket as soon as they are open and never read again, as a frozen monitor would.
 *
 * Prints `ready` once every connection is open; on SIGTERM prints one JSON line
 * ({ live: [{ messages, bytes, missed, closeCode }], stalled: [{ messages, closeCode }] }) and
 * exits. The stalled ones are resumed first, for a moment, to learn how far they got: whether
 * the tap cut them off (no close frame: 1006) or they lasted until the job ended.
 */
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

interface Watch {
  readonly ws: WebSocket;
  messages: number;
  bytes: number;
  missed: number;
  closeCode: number | null;
}

const [sock, tokenFile, liveText, stalledText, mode] = process.argv.slice(2);
/** `batch`: ask for one message per loop turn (`?batch=1`), as `pmibridge tap` and the monitor do. */
const batch = mode === 'batch';
if (!sock || !tokenFile || !liveText || !stalledText) {
  process.stderr.write('usage: tap-observers TAP_SOCKET TOKEN_FILE LIVE STALLED [batch]\n');
  process.exit(2);
}
const token = readFileSync(tokenFile, 'utf8').trim();

function open(stalled: boolean): Promise<Watch> {
  const ws = new WebSocket(`ws+unix://${sock}:/tap${batch ? '?batch=1' : ''}`, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
  const w: Watch = { ws, messages: 0, bytes: 0, missed: 0, closeCode: null };
  ws.on('message', (raw: WebSocket.RawData) => {
    const data = raw as Buffer; // binaryType is 'nodebuffer': one Buffer per message
    w.messages++;
    w.bytes += data.length;
    // Only a gap is parsed: the kind never occurs inside a PMI line's text.
    // A batch holds one event per line.
    if (data.includes('"kind":"gap"')) {
      for (const text of data.toString('utf8').split('\n')) if (text.includes('"kind":"gap"')) w.missed += (JSON.parse(text) as { dropped: number }).dropped;
    }
  });
  ws.on('close', (code) => (w.closeCode = code));
  return new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', () => {
      if (stalled) ws.pause();
      resolve(w);
    });
  });
}

const live = await Promise.all(Array.from({ length: Number(liveText) }, () => open(false)));
const stalled = await Promise.all(Array.from({ length: Number(stalledText) }, () => open(true)));
for (const w of [...live, ...stalled]) w.ws.on('error', () => undefined); // a cut-off is a result, not a crash
process.stdout.write('ready\n');
// Stay until told: the relay closing the observers at the end of the job is not the end here.
const keepAlive = setInterval(() => undefined, 60_000);

process.once('SIGTERM', () => {
  for (const w of stalled) w.ws.resume();
  setTimeout(() => {
    const report = {
      live: live.map(({ messages, bytes, missed, closeCode }) => ({ messages, bytes, missed, closeCode })),
      stalled: stalled.map(({ messages, closeCode }) => ({ messages, closeCode })),
    };
    clearInterval(keepAlive);
    process.stdout.write(`${JSON.stringify(report)}\n`);
  }, 300);
});
