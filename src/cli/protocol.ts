/** `pmibridge protocol`: print the PMI-1 (or PMI-2) messages pmibridge speaks, from its own catalogues. */
import { parseOrHelp, pmiVersionOption, pmiVersionSpec, type CommandSpec } from './args.js';
import { EXIT } from './exit-codes.js';
import { PMI2_QUERIES, PMI2_RESPONSES, QUERIES, REPLIES, catalogueMarkdown, pmi2CatalogueMarkdown } from '../protocol/index.js';

export const spec: CommandSpec = {
  name: 'protocol',
  usage: 'pmibridge protocol [--json] [--pmi-version 1|2]',
  summary: 'Print the PMI-1 (or PMI-2) message catalogue pmibridge reads and writes (Markdown, or JSON for scripts).',
  options: {
    json: { type: 'boolean', help: 'print the catalogue tables as JSON' },
    'pmi-version': pmiVersionSpec('which wire protocol: 1 (PMI-1 lines) or 2 (PMI-2 length-prefixed frames)'),
  },
};

export function main(argv: string[]): Promise<number> {
  const parsed = parseOrHelp(spec, argv);
  if (!parsed) return Promise.resolve(EXIT.OK);
  const version = pmiVersionOption(spec, parsed.values);
  const json = parsed.values['json'] === true;
  if (version === 2) {
    process.stdout.write(json ? `${JSON.stringify({ queries: PMI2_QUERIES, responses: PMI2_RESPONSES }, null, 2)}\n` : pmi2CatalogueMarkdown());
  } else {
    process.stdout.write(json ? `${JSON.stringify({ queries: QUERIES, replies: REPLIES }, null, 2)}\n` : catalogueMarkdown());
  }
  return Promise.resolve(EXIT.OK);
}
