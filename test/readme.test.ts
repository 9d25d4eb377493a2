// The README's protocol table is generated from the catalogue: regenerate it and compare.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { catalogueMarkdown } from '../src/protocol/index.js';
import { repoRoot } from './fixtures/cli.js';

t.test('README protocol table matches the catalogue (update: pmibridge protocol)', async (t) => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const m = /<!-- protocol-table:start -->\n([\s\S]*?)<!-- protocol-table:end -->/.exec(readme);
  t.ok(m, 'README has the protocol-table markers');
  t.equal(m?.[1], catalogueMarkdown());
});

t.test('README names the two set-up commands that CI runs', async (t) => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const ci = readFileSync(join(repoRoot, '.ci/run'), 'utf8');
  t.match(readme, /npm ci && npm run demo/);
  t.match(readme, /sudo scripts\/install-system-deps\.sh && npm ci && npm test/);
  t.match(ci, /bash scripts\/install-system-deps\.sh && npm ci --no-audit --no-fund && npm test/);
});
