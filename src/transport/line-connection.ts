/**
 * A stream socket carrying PMI messages: framing (PMI-1 lines and PMI-2 frames, told apart by their
 * first bytes: wire-framer.ts), latin1 bytes, backpressure, orderly close.
 *
 * Backpressure: when our replies are not being read (the peer's receive buffer and our write
 * queue are full) we stop reading the peer's requests until the queue drains. The check is made
 * after every line, not after every read: one 64 KiB read of small requests can ask for megabytes
 * of replies (2 MiB for `get`s of 1 KiB values), so once the queue (plus the replies batched so
 * far) reaches the socket's high-water mark, the rest of that read is kept, unhandled, until
 * 'drain'. A pipelining client that never reads thus costs at most one read (64 KiB, as bytes),
 * the framed lines of one 4 KiB slice of it, the framer's partial line, and the high-water mark
 * plus one reply; a flooding one is simply slowed.
 *
 * This is every request's path in the server and the relay, so it is kept lean:
 * - Batching: the replies to the lines of one chunk of input go out in one socket write, after the
 *   chunk, instead of one write per line (a write is a syscall, a WriteWrap and a tick of the
 *   stream machinery). A lock-step peer sends one line per chunk and sees no difference; a
 *   pipelining one gets its answers in fewer, larger writes, in the same order.
 * - Reads into one shared buffer (see userBufferReads below) instead of a fresh Buffer and a trip
 *   through the Readable stream per read.
 */
import type { Socket } from 'node:net';
import { WireFramer, type WireItem } from '../protocol/wire-framer.js';
import { CLOSE_MAX_MS, destroyAfterEnd } from './close-soon.js';

export interface LineConnectionHandlers {
  /**
   * One framed message. After `bad-frame` or `foreign` nothing more is read from the peer; at EOF
   * a message cut short comes as `truncated`, before onClose.
   */
  onInput(input: WireItem): void;
  /** Called once, when the socket is gone for whatever reason. */
  onClose(reason: string): void;
  /** Called when we release a connection we ended (close-soon.ts), just before its fd closes. */
  beforeRelease?: () => void;
}

export interface LineConnectionOptions {
  /**
   * 'auto' (default): read into the shared buffer when this Node allows it, else through 'data'
   * events. 'stream': always 'data' events (tests compare the two paths).
   */
  readonly reads?: 'auto' | 'stream';
  /**
   * Classify the peer's first bytes and report HTTP, TLS, SSH, PMIx or binary as `foreign`
   * (default true: every listener's peer). An upstream server's replies need no such check.
   */
  readonly detectForeign?: boolean;
  /** A peer that spoke PMI-1 keeps speaking PMI-1 (wire-framer.ts `pmi1Sticky`; default true: clients). */
  readonly pmi1Sticky?: boolean;
}

export class LineConnection {
  private readonly framer: WireFramer;
  private closed = false;
  private ending = false;
  /** The error code that ended the connection (ECONNRESET, ETIMEDOUT…), if an error did. */
  closeError: string | null = null;
  /** Bytes sent while a chunk of input is being handled (written after it); null outside. */
  private batch: string | null = null;
  private shared = false;
  /** Still to switch to the shared buffer, once the stream's buffered bytes are delivered. */
  private switchPending: boolean;
  /**
   * Input not handled yet because the write queue was full, handled on 'drain': the framed lines
   * of one slice (held[heldFrom…]) and the raw bytes of the rest of the read (a copy).
   */
  private held: WireItem[] = NO_FRAMES;
  private heldFrom = 0;
  private heldBytes: Buffer | null = null;

  constructor(
    readonly socket: Socket,
    maxLine: number,
    private readonly handlers: LineConnectionHandlers,
    opts: LineConnectionOptions = {},
  ) {
    this.framer = new WireFramer({ maxLine, detectForeign: opts.detectForeign ?? true, pmi1Sticky: opts.pmi1Sticky ?? true });
    // Also with the shared buffer: delivers what the stream read before we were attached.
    socket.on('data', (chunk: Buffer) => {
      this.onData(chunk);
      if (this.switchPending) this.useSharedBuffer();
    });
    this.switchPending = opts.reads !== 'stream';
    if (this.switchPending) this.useSharedBuffer();
    socket.on('drain', () => this.onDrain());
    socket.on('end', () => {
      // Half-close from the peer: nothing more will come; close our side after pending writes.
      this.atEnd();
      this.finish('peer closed the connection');
      if (!socket.destroyed) socket.end();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!this.closed) this.closeError = err.code ?? 'error';
      this.finish(`socket error: ${err.code ?? err.message}`);
    });
    socket.on('close', () => this.finish('connection closed'));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** True once reads arrive through the shared buffer rather than 'data' events. */
  get userBuffer(): boolean {
    return this.shared;
  }

  /** Queue bytes (complete lines) for the peer. */
  send(data: string): void {
    if (this.closed || this.ending || this.socket.destroyed) return;
    if (this.batch !== null) this.batch += data;
    else this.write(data);
  }

  /**
   * Flush what was sent, then close: half-close at once, and release the socket soon after what
   * we wrote reached the kernel, whether or not the peer closes its end (close-soon.ts);
   * `graceMs` 0 for a peer we are throwing out, which need not be given time to close first.
   */
  end(graceMs?: number): void {
    if (this.socket.destroyed) return;
    if (this.ending) {
      if (graceMs !== undefined) destroyAfterEnd(this.socket, graceMs, undefined, this.handlers.beforeRelease); // sooner than first asked
      return;
    }
    this.flush();
    this.ending = true;
    this.held = NO_FRAMES;
    this.heldFrom = 0;
    this.heldBytes = null;
    this.socket.end();
    destroyAfterEnd(this.socket, graceMs, undefined, this.handlers.beforeRelease);
  }

  /**
   * Flush what was sent, then close our descriptor WITHOUT a shutdown(): what a process does to a
   * socket it inherited when it exits. A peer that holds a copy of our end (Slurm's stepd keeps
   * the task's end of each PMI socketpair) then sees nothing, while a FIN from `end()` would make
   * it read EOF; a peer that does not (hydra) sees EOF once no one holds our end any more. Closed
   * when what we wrote reached the kernel, or after CLOSE_MAX_MS if the peer never reads it.
   */
  release(): void {
    if (this.socket.destroyed || this.ending) return;
    this.flush();
    this.ending = true;
    this.held = NO_FRAMES;
    this.heldFrom = 0;
    this.heldBytes = null;
    this.socket.pause();
    const close = () => {
      clearTimeout(hard);
      if (this.socket.destroyed) return;
      this.handlers.beforeRelease?.();
      this.socket.destroy();
    };
    const hard = setTimeout(close, CLOSE_MAX_MS);
    hard.unref();
    if (this.socket.writableLength === 0) close();
    else this.socket.once('drain', close);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Move reads to the shared buffer, unless the stream still holds bytes read before we were
   * attached (a PMI_FD rank may speak before the server exists): those must come first, so the
   * switch waits until 'data' has delivered them.
   */
  private useSharedBuffer(): void {
    if (this.closed || this.socket.readableLength > 0) return;
    this.switchPending = false;
    this.shared = userBufferReads(this.socket, (n, buf) => this.onData(buf, n));
  }

  /** One chunk of input: `chunk`'s first `n` bytes, valid only during this call (the framer copies). */
  private onData(chunk: Buffer, n: number = chunk.length): void {
    if (this.heldFrom < this.held.length || this.heldBytes !== null) {
      // Only a read already under way when we paused can land here: after what is held, in order.
      this.heldBytes = Buffer.concat([this.heldBytes ?? Buffer.alloc(0), chunk.subarray(0, n)]);
      return;
    }
    this.pump(chunk, n, false);
  }

  /** The write queue drained: handle what was held back, then read again unless it filled up again. */
  private onDrain(): void {
    if (this.heldFrom < this.held.length || this.heldBytes !== null) {
      const bytes = this.heldBytes;
      this.heldBytes = null;
      this.pump(bytes, bytes?.length ?? 0, true);
    }
    if (this.heldFrom >= this.held.length && this.heldBytes === null && !this.socket.writableNeedDrain) this.socket.resume();
  }

  /**
   * Handle the held lines, then buf[0, end) a slice at a time, batching the replies. Whenever the
   * batch plus the socket's queue reach the high-water mark the batch is written; if the kernel
   * did not take it all (write() said false: 'drain' will come), the rest is held — the slice's
   * lines as framed, the rest of the read as bytes — and reading stops. Slicing keeps what is
   * held small: a 64 KiB read of short requests would be thousands of framed lines.
   * `owned`: buf is ours to keep (held bytes), not the shared read buffer.
   */
  private pump(buf: Buffer | null, end: number, owned: boolean): void {
    this.batch = '';
    let pos = 0;
    try {
      for (;;) {
        while (this.heldFrom < this.held.length) {
          if (this.closed || this.ending) return; // what is left is never answered: drop it
          this.handlers.onInput(this.held[this.heldFrom++] as WireItem);
          if (this.queueFull()) {
            if (buf !== null && pos < end) this.heldBytes = owned ? buf.subarray(pos, end) : Buffer.from(buf.subarray(pos, end));
            this.socket.pause(); // resumed by onDrain once what is held is handled
            return;
          }
        }
        this.held = NO_FRAMES;
        this.heldFrom = 0;
        if (buf === null || pos >= end || this.closed || this.ending) return;
        const stop = end - pos <= SLICE ? end : pos + SLICE;
        this.held = this.framer.push(pos === 0 && stop === end ? buf : buf.subarray(pos, stop), stop - pos);
        pos = stop;
      }
    } finally {
      this.flush();
      this.batch = null;
    }
  }

  /** Is the write queue full: the batch written because it reached the mark, and not all taken? */
  private queueFull(): boolean {
    if (!this.overHighWater()) return false;
    this.flush();
    return this.socket.writableNeedDrain && !this.closed && !this.socket.destroyed;
  }

  /** Replies batched so far plus the socket's queue reach its high-water mark. */
  private overHighWater(): boolean {
    return (this.batch?.length ?? 0) + this.socket.writableLength >= this.socket.writableHighWaterMark;
  }

  /** Write what the current chunk's handling sent so far. */
  private flush(): void {
    const data = this.batch;
    if (!data) return;
    this.batch = '';
    if (!this.closed && !this.socket.destroyed) this.write(data);
  }

  private write(data: string): void {
    if (!this.socket.write(data, 'latin1')) this.socket.pause();
  }

  /** EOF: a message the peer left unfinished is reported (held input is dropped: never answered). */
  private atEnd(): void {
    if (this.closed || this.ending || this.framer.stopped) return;
    for (const item of this.framer.end()) this.handlers.onInput(item);
  }

  private finish(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.handlers.onClose(reason);
  }
}

// ---- reads into one shared buffer ------------------------------------------------------------------
//
// By default a Node socket allocates a 64 KiB ArrayBuffer for every read, wraps the bytes in a
// Buffer and pushes it through the Readable stream to a 'data' event. Node's documented `onread`
// option (net.Socket / net.connect) instead reads into a buffer the caller provides and calls a
// function with the byte count: for a server doing one small read per request it saves about a
// microsecond of the request's CPU (and the garbage). `onread` cannot be passed for a socket
// that net.Server accepted or spawn() created, so we set on such a socket exactly what the Socket
// constructor sets for `onread`, and tell its handle, as the constructor does; net.Socket's own
// pause()/resume() honour it, so backpressure stays as it is. Every piece is checked first; when
// one is missing (another Node), the connection just keeps 'data' events. One buffer serves every connection: reads are handled one
// at a time, synchronously, and the framer copies whatever it keeps.

const shared = Buffer.allocUnsafe(64 * 1024);
const NO_FRAMES: WireItem[] = [];
/** Bytes of a read framed at a time (see pump): a few hundred typical requests. */
const SLICE = 4096;
let onreadSymbols: { buffer: symbol; callback: symbol } | null | undefined;

function symbolsOf(socket: Socket): { buffer: symbol; callback: symbol } | null {
  const syms = Object.getOwnPropertySymbols(socket);
  const buffer = syms.find((s) => s.description === 'kBuffer');
  const callback = syms.find((s) => s.description === 'kBufferCb');
  return buffer && callback ? { buffer, callback } : null;
}

function userBufferReads(socket: Socket, onread: (n: number, buf: Buffer) => void): boolean {
  onreadSymbols ??= symbolsOf(socket);
  const s = socket as unknown as Record<symbol, unknown> & { _handle?: { useUserBuffer?: (b: Uint8Array) => void } | null };
  const handle = s._handle;
  if (!onreadSymbols || typeof handle?.useUserBuffer !== 'function') return false;
  if (s[onreadSymbols.buffer] !== null || s[onreadSymbols.callback] !== null) return false; // not the state we know
  s[onreadSymbols.buffer] = shared;
  s[onreadSymbols.callback] = onread;
  handle.useUserBuffer(shared);
  return true;
}
