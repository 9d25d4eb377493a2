// The README's protocol table is generated from the catalogue: regenerate it and compare.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { catalogueMarkdown, pmi2CatalogueMarkdown } from '../src/protocol/index.js';
import { relayRulesMarkdown } from '../src/relay/rules-markdown.js';
import { repoRoot } from './fixtures/cli.js';

t.test('README protocol table matches the catalogue (update: pmibridge protocol)', async (t) => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const m = /<!-- protocol-table:start -->\n([\s\S]*?)<!-- protocol-table:end -->/.exec(readme);
  t.ok(m, 'README has the protocol-table markers');
  t.equal(m?.[1], catalogueMarkdown());
});

{
  // The PMI-2 table (`pmibridge protocol --pmi-version 2`), once the README carries it.
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const m = /<!-- protocol2-table:start -->\n([\s\S]*?)<!-- protocol2-table:end -->/.exec(readme);
  t.test(
    'README PMI-2 protocol table matches the catalogue (update: pmibridge protocol --pmi-version 2)',
    { skip: m ? false : 'the README has no protocol2-table markers yet' },
    async (t) => {
      t.equal(m?.[1], pmi2CatalogueMarkdown());
    },
  );
}

t.test('README relay rules match the table the relay runs (update: see src/relay/rules-markdown.ts)', async (t) => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const m = /<!-- relay-rules:start -->\n([\s\S]*?)<!-- relay-rules:end -->/.exec(readme);
  t.ok(m, 'README has the relay-rules markers');
  t.equal(m?.[1], relayRulesMarkdown());
});

t.test('README names the two set-up commands that CI runs', async (t) => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const ci = readFileSync(join(repoRoot, '.ci/run'), 'utf8');
  t.match(readme, /npm ci && npm run demo/);
  t.match(readme, /sudo scripts\/install-system-deps\.sh && npm ci && npm test/);
  t.match(ci, /bash scripts\/install-system-deps\.sh && npm ci --no-audit --no-fund && npm test/);
});
