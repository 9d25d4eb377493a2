/**
 * The transport half every PMI client shares: a socket, a framer that turns its bytes into items
 * (PMI-1 lines, or lines and PMI-2 frames), strict lock-step (one request, its reply, then the
 * next; concurrent calls queue), an optional per-reply timeout, and one terminal error once the
 * connection is gone. The PMI-1 and PMI-2 clients only add what their wire says.
 */
import type { Socket } from 'node:net';
import { RemotePmiError } from '../protocol/errors.js';

/** Bytes → items; `end` (optional) reports what was left inside a message at EOF. */
export interface ItemFramer<T> {
  push(chunk: Buffer): T[];
  end?(): T[];
}

export class ReplyChannel<T> {
  private readonly items: T[] = [];
  private waiter: { resolve: (item: T) => void; reject: (e: Error) => void } | null = null;
  private ended: Error | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly socket: Socket,
    private readonly framer: ItemFramer<T>,
    /** Fail a read whose reply takes longer (ms); 0 = wait forever, like MPICH. */
    private readonly timeoutMs = 0,
  ) {
    socket.on('data', (chunk: Buffer) => {
      for (const item of framer.push(chunk)) this.deliver(item);
    });
    const gone = (why: string) => () => {
      // A message cut short by EOF is handed on as an item, so the reader can say where it broke.
      if (!this.ended) for (const item of this.framer.end?.() ?? []) this.deliver(item);
      this.terminate(new RemotePmiError(`PMI server ${why}`));
    };
    socket.on('end', gone('closed the connection'));
    socket.on('close', gone('connection closed'));
    socket.on('error', (err: NodeJS.ErrnoException) => this.terminate(new RemotePmiError(`PMI connection error: ${err.code ?? err.message}`)));
  }

  /** Run `fn` after every earlier request has finished (lock-step). */
  serialize<R>(fn: () => Promise<R>): Promise<R> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  write(data: string): void {
    if (this.ended) throw this.ended;
    this.socket.write(data, 'latin1');
  }

  /** The next item, in arrival order; rejects once the connection is gone (or on timeout). */
  read(): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift() as T);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      const timeout = this.timeoutMs;
      const timer = timeout > 0 ? setTimeout(() => this.terminate(new RemotePmiError(`no reply from the PMI server within ${timeout} ms`, -1, 'E_TIMEOUT')), timeout) : null;
      this.waiter = {
        resolve: (item) => {
          if (timer) clearTimeout(timer);
          resolve(item);
        },
        reject: (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Write `data` (if any) and half-close; resolves once it is flushed. */
  end(data?: string): Promise<void> {
    return new Promise<void>((resolve) => (data === undefined ? this.socket.end(() => resolve()) : this.socket.end(data, 'latin1', () => resolve())));
  }

  close(): void {
    this.socket.destroy();
  }

  private deliver(item: T): void {
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w.resolve(item);
    } else {
      this.items.push(item);
    }
  }

  private terminate(err: Error): void {
    if (this.ended) return;
    this.ended = err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
    if (err instanceof RemotePmiError && err.code === 'E_TIMEOUT') this.socket.destroy();
  }
}
