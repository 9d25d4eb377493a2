/** `pmibridge protocol`: print the PMI-1 messages pmibridge speaks, from its own catalogue. */
import { parseOrHelp, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { QUERIES, REPLIES, catalogueMarkdown } from '../protocol/index.js';

export const spec: CommandSpec = {
  name: 'protocol',
  usage: 'pmibridge protocol [--json]',
  summary: 'Print the PMI-1 message catalogue pmibridge reads and writes (Markdown, or JSON for scripts).',
  options: { json: { type: 'boolean', help: 'print the catalogue tables as JSON' } },
};

export function main(argv: string[]): Promise<number> {
  const parsed = parseOrHelp(spec, argv);
  if (parsed?.values['json']) process.stdout.write(`${JSON.stringify({ queries: QUERIES, replies: REPLIES }, null, 2)}\n`);
  else if (parsed) process.stdout.write(catalogueMarkdown());
  return Promise.resolve(EXIT.OK);
}
