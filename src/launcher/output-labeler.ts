/**
 * `--label`: prefix every line a rank writes with `[rank] `. Partial lines are held until their
 * newline (or the stream's end) so output of concurrent ranks never interleaves mid-line.
 */
import type { Readable, Writable } from 'node:stream';

export function labelStream(input: Readable, output: Writable, label: string): Promise<void> {
  let carry = '';
  input.setEncoding('utf8');
  input.on('data', (chunk: string) => {
    const text = carry + chunk;
    const last = text.lastIndexOf('\n');
    if (last < 0) {
      carry = text;
      return;
    }
    carry = text.slice(last + 1);
    const lines = text.slice(0, last).split('\n');
    output.write(`${lines.map((l) => label + l).join('\n')}\n`);
  });
  return new Promise((resolve) => {
    const done = () => {
      if (carry) output.write(`${label}${carry}\n`);
      carry = '';
      resolve();
    };
    input.once('end', done);
    input.once('error', done);
  });
}
