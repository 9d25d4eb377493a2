/**
 * `pmibridge protocol`: the PMI-1 table by default (what the README embeds), the PMI-2 table with
 * `--pmi-version 2`, JSON of either catalogue, and a usage error for any other version.
 */
import t from 'tap';
import { main } from '../src/cli/protocol.js';
import { UsageError } from '../src/cli/args.js';
import { PMI2_QUERIES, PMI2_RESPONSES, QUERIES, catalogueMarkdown, pmi2CatalogueMarkdown } from '../src/protocol/index.js';

async function capture(argv: string[]): Promise<{ code: number; out: string }> {
  const write = process.stdout.write.bind(process.stdout);
  let out = '';
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  });
  try {
    return { code: await main(argv), out };
  } finally {
    process.stdout.write = write;
  }
}

t.test('the PMI-1 table by default, unchanged', async (t) => {
  t.same(await capture([]), { code: 0, out: catalogueMarkdown() });
  t.same(await capture(['--pmi-version', '1']), { code: 0, out: catalogueMarkdown() });
  const json = JSON.parse((await capture(['--json'])).out) as { queries: unknown };
  t.same(Object.keys(json.queries as object), Object.keys(QUERIES));
});

t.test('--pmi-version 2: the PMI-2 table, every command and response in it', async (t) => {
  const { code, out } = await capture(['--pmi-version', '2']);
  t.equal(code, 0);
  t.equal(out, pmi2CatalogueMarkdown());
  for (const [name, def] of Object.entries(PMI2_QUERIES)) {
    t.match(out, `| \`${name}\` |`, `row for ${name}`);
    if (def.response) t.match(out, `\`${def.response}\``, `${name} answers in ${def.response}`);
  }
  t.match(out, '`argc` + `argv0`…', 'indexed attributes are shown');
  t.match(out, '`pmiverbose`?=FALSE bool', 'defaults written are shown');
  for (const line of out.trimEnd().split('\n')) t.match(line, /^\|.*\|$/, 'a table row');
  const json = JSON.parse((await capture(['--json', '--pmi-version=2'])).out) as { queries: object; responses: object };
  t.same(Object.keys(json.queries), Object.keys(PMI2_QUERIES));
  t.same(Object.keys(json.responses), Object.keys(PMI2_RESPONSES));
});

t.test('any other version is a usage error', async (t) => {
  await t.rejects(capture(['--pmi-version', '3']), UsageError);
  await t.rejects(capture(['--pmi-version', 'two']), UsageError);
});
