/**
 * The catalogue as a Markdown table: printed by `pmibridge protocol` and embedded in the README
 * between protocol-table markers (a test regenerates it and fails on any difference).
 */
import { QUERIES, REPLIES, type AttrDef } from './catalogue.js';

function attrList(attrs: Readonly<Record<string, AttrDef>>, required: boolean): string {
  const parts = Object.entries(attrs).map(([name, d]) => {
    const mark = required && d.required ? '' : '?';
    const alias = d.aliases?.length ? ` (or ${d.aliases.join(', ')})` : '';
    return `\`${name}\`${mark}${alias}`;
  });
  return parts.length ? parts.join(' ') : '—';
}

export function catalogueMarkdown(): string {
  const rows = [
    '| request `cmd=` | attributes (`?` optional) | reply `cmd=` | reply attributes after `rc` `msg?` | meaning |',
    '|---|---|---|---|---|',
  ];
  for (const [name, q] of Object.entries(QUERIES)) {
    const reply = q.reply ? REPLIES[q.reply as keyof typeof REPLIES] : undefined;
    const replyAttrs = reply ? attrList(reply.attrs, true) + (reply.attrs && 'trailer' in reply ? ' + `cmd=set size=`, `cmd=set rank=`, `cmd=set debug=` lines' : '') : '';
    rows.push(`| \`${name}\` | ${attrList(q.attrs, true)} | ${q.reply ? `\`${q.reply}\`` : '(none)'} | ${reply ? replyAttrs : '—'} | ${q.doc} |`);
  }
  rows.push('| `mcmd=spawn` … `endcmd` | multi-line block (spawn.ts) | `spawn_result` | `errcodes?` | MPI_Comm_spawn; answered rc=-1 (fixed-size jobs) |');
  rows.push('| anything else | — | `error` | — | garbage, blank line, NUL byte, PMI-2 framing, unknown command |');
  return `${rows.join('\n')}\n`;
}
