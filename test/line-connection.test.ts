/**
 * LineConnection over real sockets: both read paths (Node's shared-buffer `onread` and plain
 * 'data' events) deliver the same lines, replies to one chunk go out in one write, bytes read
 * before the connection was attached come first, and end() flushes what was sent.
 */
import t from 'tap';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LineConnection, type LineConnectionOptions } from '../src/transport/line-connection.js';

interface Echo {
  server: Server;
  path: string;
  conns: LineConnection[];
  writes: number[];
}

/** A server answering each line with `got <line>`; `bye` is answered, then the connection ended. */
async function echoServer(opts: LineConnectionOptions, delayAttachMs = 0): Promise<Echo> {
  const path = join(mkdtempSync(join(tmpdir(), 'pmibridge-lc-')), 's.sock');
  const conns: LineConnection[] = [];
  const writes: number[] = [];
  const server = createServer((socket: Socket) => {
    const attach = () => {
      const i = conns.length;
      writes[i] = 0;
      const counted = socket as unknown as { write: (...a: unknown[]) => boolean };
      const write = counted.write.bind(counted);
      counted.write = (...a) => {
        writes[i] = (writes[i] ?? 0) + 1;
        return write(...a);
      };
      const c: LineConnection = new LineConnection(
        socket,
        64,
        {
          onInput: (f) => {
            const line = f.kind === 'line' ? f.line : f.kind === 'overlong' ? `overlong ${f.length}` : f.kind;
            c.send(`got ${line}\n`);
            if (line === 'bye') c.end();
          },
          onClose: () => undefined,
        },
        opts,
      );
      conns.push(c);
    };
    if (delayAttachMs > 0) setTimeout(attach, delayAttachMs);
    else attach();
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, path, conns, writes };
}

/** Connect, write the chunks (a pause between them), read until `n` lines or EOF. */
async function talk(path: string, chunks: readonly string[], n: number, gapMs = 0): Promise<{ lines: string[]; ended: boolean }> {
  const s = connect(path);
  await once(s, 'connect');
  let text = '';
  let ended = false;
  const done = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.split('\n').length - 1 >= n) resolve();
    });
    s.on('end', () => {
      ended = true;
      resolve();
    });
  });
  for (const c of chunks) {
    s.write(c, 'latin1');
    if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
  }
  await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
  if (n > 0 && !ended) await Promise.race([once(s, 'end'), new Promise((r) => setTimeout(r, 200))]).then(() => (ended = s.readableEnded));
  s.destroy();
  return { lines: text.split('\n').slice(0, -1), ended };
}

const lines = Array.from({ length: 100 }, (_, i) => `cmd=get key=k${i}`);
const expected = lines.map((l) => `got ${l}`);

for (const reads of ['auto', 'stream'] as const) {
  t.test(`reads: ${reads}`, async (t) => {
    const e = await echoServer({ reads });
    t.teardown(() => e.server.close());

    const pipelined = await talk(e.path, [`${lines.join('\n')}\n`], lines.length);
    t.same(pipelined.lines, expected, 'a pipelined chunk: every reply, in order');
    t.equal(e.conns[0]?.userBuffer, reads === 'auto', reads === 'auto' ? 'reads into the shared buffer' : "reads through 'data' events");
    t.ok((e.writes[0] ?? 0) <= 3, `replies to one chunk go out together (${e.writes[0]} writes for ${lines.length} lines)`);

    const bytes = [...`cmd=get_maxes\n${'y'.repeat(70)}\ncmd=barrier_in\n`];
    const trickle = await talk(e.path, bytes, 3, 1);
    t.same(trickle.lines, ['got cmd=get_maxes', 'got overlong 70', 'got cmd=barrier_in'], 'byte by byte: lines and an overlong one');

    const bye = await talk(e.path, ['cmd=a\nbye\ncmd=after\n'], 3);
    t.same(bye.lines, ['got cmd=a', 'got bye'], 'end() sends what was sent before it, nothing after');
    t.ok(bye.ended, 'then the connection ends');
  });
}

t.test('bytes the socket read before it was attached come first, then reads move to the shared buffer', async (t) => {
  const e = await echoServer({}, 100);
  t.teardown(() => e.server.close());
  const r = await talk(e.path, ['cmd=early\n', 'cmd=late\n', 'cmd=later\n'], 3, 150);
  t.same(r.lines, ['got cmd=early', 'got cmd=late', 'got cmd=later'], 'in order');
  t.equal(e.conns[0]?.userBuffer, true, 'switched once the held bytes were delivered');
});

for (const reads of ['auto', 'stream'] as const) {
  t.test(`reads: ${reads}: a read of many lines stops being handled at the write high-water mark, and resumes in order`, async (t) => {
    const path = join(mkdtempSync(join(tmpdir(), 'pmibridge-lc-')), 's.sock');
    const conns: LineConnection[] = [];
    let handled = 0;
    const server = createServer((socket: Socket) => {
      const c: LineConnection = new LineConnection(socket, 64, {
        onInput: (f) => {
          handled++;
          c.send(`got ${f.kind === 'line' ? f.line : 'overlong'} ${'p'.repeat(1000)}\n`);
        },
        onClose: () => undefined,
      }, { reads });
      conns.push(c);
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    t.teardown(() => server.close());
    const n = 20_000; // ~20 MiB of replies to ~200 KiB of requests
    const s = connect(path);
    await once(s, 'connect');
    s.pause();
    s.write(Array.from({ length: n }, (_, i) => `line ${i}\n`).join(''));
    let last = -1;
    for (let waited = 0; waited < 10_000 && handled !== last; waited += 200) {
      last = handled;
      await new Promise((r) => setTimeout(r, 200));
    }
    const sock = conns[0]?.socket;
    t.ok(handled < n, `handling stopped while the client does not read (${handled} of ${n} lines handled)`);
    t.ok((sock?.writableLength ?? Infinity) <= (sock?.writableHighWaterMark ?? 0) + 1100, `write queue ${sock?.writableLength} bytes: at most the high-water mark plus one reply`);
    const got: string[] = [];
    let rest = '';
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 30_000);
      s.setEncoding('latin1');
      s.on('data', (d: string) => {
        const parts = (rest + d).split('\n');
        rest = parts.pop() ?? '';
        for (const p of parts) got.push(p.slice(0, p.indexOf(' p')));
        if (got.length >= n) {
          clearTimeout(timer);
          resolve();
        }
      });
      s.resume();
    });
    await done;
    s.destroy();
    t.equal(got.length, n, 'every line answered once the client reads');
    t.ok(got.every((g, i) => g === `got line ${i}`), 'in order');
  });
}
