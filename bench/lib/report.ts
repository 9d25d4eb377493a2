/** The table on stdout and bench/results.json. */
import { writeFileSync } from 'node:fs';
import type { Figure, Goal, Skip } from './types.js';

function num(x: number | null | undefined, unit = ''): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '—';
  if (unit === 'req/s' || unit === 'conn/s') return Math.round(x).toString();
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** `≤ 1.3×` for a ratio goal; `≥ 1000 conn/s` (the figure's unit) for an absolute one. */
export function goalText(g: Goal | null, unit = ''): string {
  if (!g) return '—';
  const op = g.op === '<=' ? '≤' : '≥';
  return 'ratio' in g ? `${op} ${g.ratio}×` : `${op} ${g.value}${unit ? ` ${unit}` : ''}`;
}

/** A plain-text (and Markdown) table: name | value | p99 | unit | baseline | ratio | goal | met. */
export function formatTable(figures: readonly Figure[]): string {
  const header = ['name', 'value (median)', 'p99', 'unit', 'baseline', 'baseline p99', 'ratio', 'goal', 'met'];
  const rows = figures.map((f) => [
    f.name,
    num(f.value, f.unit),
    num(f.p99, f.unit),
    f.unit,
    f.baseline === null ? '—' : `${num(f.baseline, f.unit)} (${f.baselineName ?? '?'})`,
    num(f.baselineP99, f.unit),
    f.ratio === null ? '—' : `${f.ratio.toFixed(2)}×`,
    goalText(f.goal, f.unit),
    f.met === null ? '' : f.met ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

export interface ResultsFile {
  readonly meta: Record<string, unknown>;
  readonly figures: readonly Figure[];
  readonly skipped: readonly Skip[];
}

export function writeResults(path: string, results: ResultsFile): void {
  writeFileSync(path, `${JSON.stringify(results, null, 2)}\n`);
}
