// Print a CI-readable closing line from tap's saved per-file results (.tap/test-results/**/*.tap).
// tap's own closing line ("# { total: N, pass: N }") is not the "N passed, N failed" form CI counts.
// Usage: tap; node scripts/tap-summary.mjs   → "tests: 12 passed, 0 failed, 1 skipped"
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Parser } from 'tap-parser';

const root = process.argv[2] ?? '.tap/test-results';
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.tap')) files.push(p);
  }
}
if (existsSync(root)) walk(root);

let pass = 0, fail = 0, skip = 0;
const failedFiles = [];
for (const f of files) {
  const events = Parser.parse(readFileSync(f, 'utf8'), { flat: true }); // leaf asserts only
  let sawPlan = false, fileFail = 0;
  for (const [ev, a] of events) {
    if (ev === 'assert') {
      if (a.skip || a.todo) skip++;
      else if (a.ok) pass++;
      else { fail++; fileFail++; }
    }
    if (ev === 'complete' && !a.ok && fileFail === 0) { fail++; fileFail++; } // crash, bad plan, bail-out
    if (ev === 'plan') sawPlan = true;
  }
  if (!sawPlan && fileFail === 0) { fail++; fileFail++; } // file produced no plan at all
  if (fileFail) failedFiles.push(f);
}
if (files.length === 0) { fail++; console.log('no tap results found under ' + root); }
for (const f of failedFiles) console.log('failed: ' + f);
console.log(`tests: ${pass} passed, ${fail} failed, ${skip} skipped`);
process.exitCode = fail ? 1 : 0;
