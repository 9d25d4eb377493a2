/**
 * A stream socket carrying PMI-1 lines: framing, latin1 bytes, backpressure, orderly close.
 *
 * Backpressure: when our replies are not being read (the peer's receive buffer and our write
 * queue are full) we stop reading the peer's requests until the queue drains. A lock-step client
 * cannot then make us buffer more than one window of replies, and a flooding one is simply slowed.
 * Memory per connection stays bounded by the framer's line limit plus the write high-water mark.
 */
import type { Socket } from 'node:net';
import { LineFramer, type Framed } from '../protocol/line-framer.js';

export interface LineConnectionHandlers {
  onInput(input: Framed): void;
  /** Called once, when the socket is gone for whatever reason. */
  onClose(reason: string): void;
}

export class LineConnection {
  private readonly framer: LineFramer;
  private closed = false;
  private ending = false;

  constructor(
    readonly socket: Socket,
    maxLine: number,
    private readonly handlers: LineConnectionHandlers,
  ) {
    this.framer = new LineFramer(maxLine);
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.framer.push(chunk)) {
        if (this.closed) return;
        this.handlers.onInput(f);
      }
    });
    socket.on('drain', () => socket.resume());
    socket.on('end', () => {
      // Half-close from the peer: nothing more will come; close our side after pending writes.
      this.finish('peer closed the connection');
      if (!socket.destroyed) socket.end();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => this.finish(`socket error: ${err.code ?? err.message}`));
    socket.on('close', () => this.finish('connection closed'));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Queue bytes (complete lines) for the peer. */
  send(data: string): void {
    if (this.closed || this.ending || this.socket.destroyed) return;
    if (!this.socket.write(data, 'latin1')) this.socket.pause();
  }

  /** Flush what was sent, then close. */
  end(): void {
    if (this.ending || this.socket.destroyed) return;
    this.ending = true;
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private finish(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.handlers.onClose(reason);
  }
}
