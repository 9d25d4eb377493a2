/**
 * The catalogues as Markdown tables: PMI-1's is printed by `pmibridge protocol` and embedded in
 * the README between protocol-table markers (a test regenerates it and fails on any difference);
 * PMI-2's by `pmibridge protocol --pmi-version 2`.
 */
import { QUERIES, REPLIES, type AttrDef } from './catalogue.js';
import { PMI2_QUERIES, PMI2_RESPONSES, type Pmi2AttrDef, type Pmi2ListDef, type Pmi2QueryDef } from './pmi2-catalogue.js';

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

// ---- PMI-2 ---------------------------------------------------------------------------------------

function pmi2Attr(name: string, d: Pmi2AttrDef, response: boolean): string {
  const optional = d.required ? '' : '?';
  const shown = d.writeDefault === undefined ? '' : `=${typeof d.writeDefault === 'boolean' ? (d.writeDefault ? 'TRUE' : 'FALSE') : String(d.writeDefault)}`;
  const alias = d.aliases?.length ? ` (or ${d.aliases.map((a) => `\`${a}\``).join(', ')})` : '';
  const also = d.alsoWrite ? ` (also written as \`${d.alsoWrite}\`)` : '';
  const type = d.type === 'string' ? '' : ` ${d.type}`;
  return `\`${name}\`${optional}${response ? shown : ''}${type}${response ? also : alias}`;
}

function pmi2List(l: Pmi2ListDef): string {
  const items = l.item !== undefined ? `\`${l.item}0\`…` : `\`${l.key as string}0\`/\`${l.value as string}0\`…`;
  return `\`${l.count}\`${l.omitEmpty ? '?' : ''} + ${items}`;
}

function pmi2Attrs(attrs: Readonly<Record<string, Pmi2AttrDef>>, lists: Readonly<Record<string, Pmi2ListDef>> | undefined, response: boolean): string[] {
  return [...Object.entries(attrs).map(([n, d]) => pmi2Attr(n, d, response)), ...Object.values(lists ?? {}).map(pmi2List)];
}

/** The PMI-2 catalogue as a Markdown table (`pmibridge protocol --pmi-version 2`). */
export function pmi2CatalogueMarkdown(): string {
  const rows = [
    '| command `cmd=` | attributes (`?` optional) | response `cmd=` | response attributes after `rc` `errmsg?` (`=`: written by default) | meaning |',
    '|---|---|---|---|---|',
  ];
  for (const [name, q] of Object.entries(PMI2_QUERIES) as Array<[string, Pmi2QueryDef]>) {
    const parts = pmi2Attrs(q.attrs, q.lists, false);
    if (q.segments) {
      const seg = q.segments;
      parts.splice(0, 0, `\`${seg.count}\``);
      parts.push(`per segment: ${pmi2Attrs(seg.attrs, seg.lists, false).join(' ')}`);
    }
    const response = q.response ? PMI2_RESPONSES[q.response as keyof typeof PMI2_RESPONSES] : undefined;
    const responseAttrs = response ? pmi2Attrs(response.attrs, undefined, true) : [];
    rows.push(
      `| \`${name}\` | ${parts.length ? parts.join(' ') : '—'} | ${q.response ? `\`${q.response}\`` : '(none)'} | ${responseAttrs.length ? responseAttrs.join(' ') : '—'} | ${q.doc} |`,
    );
  }
  rows.push('| any command | `thrid`? | | `thrid` echoed first | request id of a threaded client |');
  rows.push('| anything else | — | `<cmd>-response` | — | unknown command: rc=-1 |');
  return `${rows.join('\n')}\n`;
}
