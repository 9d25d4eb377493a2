/**
 * The relay's rule table (rules.ts) as Markdown: the README embeds it between relay-rules markers
 * and test/readme.test.ts regenerates it and fails on any difference, so the README describes
 * what the engine runs. Regenerate with:
 *   node -e "import('./dist/src/relay/rules-markdown.js').then((m) => process.stdout.write(m.relayRulesMarkdown()))"
 */
import { BLOCK, KIND_NAMES, KINDS, PMI1_KINDS, PMI2_KINDS, type RequestKind } from './kinds.js';
import { PHASES, RULES, STEPS, rowKinds, type Phase, type Step } from './rules.js';

const code = (s: string) => `\`${s}\``;

function wireNames(map: ReadonlyMap<string, RequestKind>, kind: RequestKind): string {
  const names = [...map].filter(([, k]) => k === kind).map(([n]) => (n === BLOCK ? '`mcmd=spawn` … `endcmd` block' : code(n)));
  // `other` is what no name maps to; names mapped to it explicitly are listed as well.
  if (kind === 'other') return names.length ? `any other (also ${names.join(', ')})` : 'any other';
  return names.length ? names.join(', ') : '—';
}

function kindsTable(): string[] {
  const rows = ['| kind | PMI-1 `cmd=` | PMI-2 `cmd=` | read | keeps catch-up | what it is |', '|---|---|---|---|---|---|'];
  for (const kind of KIND_NAMES) {
    const k = KINDS[kind];
    rows.push(`| ${code(kind)} | ${wireNames(PMI1_KINDS, kind)} | ${wireNames(PMI2_KINDS, kind)} | ${k.read ? 'yes' : ''} | ${k.keepsCatchUp ? 'yes' : ''} | ${k.meaning} |`);
  }
  return rows;
}

function phasesTable(): string[] {
  const rows = ['| phase | the session… |', '|---|---|'];
  for (const [phase, when] of Object.entries(PHASES) as Array<[Phase, string]>) rows.push(`| ${code(phase)} | ${when} |`);
  return rows;
}

function rulesTable(): string[] {
  const rows = ['| phase | request kind | steps, tried in order |', '|---|---|---|'];
  for (const row of RULES) {
    const kinds = row.kinds === 'any' ? 'any' : row.kinds === 'rest' ? `any other (${rowKinds(row).map(code).join(', ')})` : row.kinds.map(code).join(', ');
    rows.push(`| ${code(row.phase)} | ${kinds} | ${row.steps.map(code).join(' → ')} |`);
  }
  return rows;
}

function stepsTable(): string[] {
  const rows = ['| step | what the relay does | why it is safe |', '|---|---|---|'];
  for (const [step, s] of Object.entries(STEPS) as Array<[Step, (typeof STEPS)[Step]]>) rows.push(`| ${code(step)} | ${s.does} | ${s.why} |`);
  return rows;
}

export function relayRulesMarkdown(): string {
  return `${[
    'Each request is first given its **kind**, the same for PMI-1 and PMI-2:',
    '',
    ...kindsTable(),
    '',
    'The session is in the first of these **phases** that holds:',
    '',
    ...phasesTable(),
    '',
    'The **rules**: for a phase and a kind, the relay tries the steps in order; the first that applies answers, forwards or queues the request.',
    '',
    ...rulesTable(),
    '',
    'A takeover puts the session in **catch-up**; every request but the lines of a replayed block ends it, unless its kind keeps it (above) or it is a put the predecessor had acknowledged since the last `barrier_out` it received. Only `ack-resent-put` reads it.',
    '',
    ...stepsTable(),
  ].join('\n')}\n`;
}
