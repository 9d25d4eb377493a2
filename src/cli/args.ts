/**
 * Declarative command-line options: one spec per subcommand drives node:util parseArgs (no
 * dependency) and the `--help` text, so the two cannot disagree.
 */
import { parseArgs } from 'node:util';

export interface OptionSpec {
  readonly short?: string;
  readonly type: 'string' | 'boolean';
  readonly multiple?: boolean;
  readonly default?: string | boolean;
  /** Placeholder shown in help, e.g. N or URL. */
  readonly arg?: string;
  readonly help: string;
  /**
   * A string option whose value may be left out, like git's `--color[=WHEN]`: `--NAME=V`, or
   * `--NAME V` when V matches `accepts` (so the program that follows is never taken for it), or a
   * bare `--NAME`, which means `bare`. Handled by splitCommand.
   */
  readonly optionalValue?: { readonly accepts: RegExp; readonly bare: string };
}

export interface CommandSpec {
  readonly name: string;
  readonly usage: string;
  readonly summary: string;
  readonly description?: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  readonly allowPositionals?: boolean;
  readonly examples?: readonly string[];
}

export class UsageError extends Error {
  constructor(readonly command: string, message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const COMMON: Readonly<Record<string, OptionSpec>> = {
  help: { short: 'h', type: 'boolean', help: 'show this help and exit' },
  'log-level': { type: 'string', arg: 'LEVEL', default: 'warn', help: 'log level on stderr: error, warn, info, debug, trace, silent (logs are JSON lines)' },
};

/** What node:util parseArgs returns for our option specs. */
export type ParsedValues = Record<string, string | boolean | Array<string | boolean> | undefined>;

export function parseCommand(spec: CommandSpec, argv: readonly string[]): { values: ParsedValues; positionals: string[] } {
  const options = { ...COMMON, ...spec.options };
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        Object.entries(options).map(([name, o]) => [
          name,
          { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}), ...(o.default !== undefined ? { default: o.default } : {}) },
        ]),
      ),
      allowPositionals: spec.allowPositionals ?? false,
      strict: true,
    });
    return { values, positionals };
  } catch (err) {
    throw new UsageError(spec.name, (err as Error).message.replace(/\. To specify a positional.*$/s, ''));
  }
}

/** Parse a command line; print the help and return null when --help was asked. */
export function parseOrHelp(spec: CommandSpec, argv: readonly string[]): { values: ParsedValues; positionals: string[] } | null {
  const parsed = parseCommand(spec, argv);
  if (!parsed.values['help']) return parsed;
  process.stdout.write(helpText(spec));
  return null;
}

export function helpText(spec: CommandSpec): string {
  const options = { ...spec.options, ...COMMON };
  const rows = Object.entries(options).map(([name, o]) => {
    const value = o.optionalValue ? `[=${o.arg ?? 'VALUE'}]` : ` ${o.arg ?? 'VALUE'}`;
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? value : ''}`;
    const def = o.default !== undefined && o.default !== false ? ` (default: ${String(o.default)})` : '';
    return [flag, `${o.help}${def}${o.multiple ? ' (repeatable)' : ''}`] as const;
  });
  const width = Math.min(34, Math.max(...rows.map(([f]) => f.length)) + 2);
  const lines = [`Usage: ${spec.usage}`, '', spec.summary];
  if (spec.description) lines.push('', spec.description);
  lines.push('', 'Options:');
  for (const [flag, text] of rows) lines.push(flag.length >= width ? `  ${flag}\n  ${' '.repeat(width)}${text}` : `  ${flag.padEnd(width)}${text}`);
  if (spec.examples?.length) lines.push('', 'Examples:', ...spec.examples.map((e) => `  ${e}`));
  return `${lines.join('\n')}\n`;
}

/** Integer option with bounds, or a UsageError naming the option. */
export function intOption(spec: CommandSpec, values: ParsedValues, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !/^-?\d+$/.test(raw)) throw new UsageError(spec.name, `--${name} needs an integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < min || n > max) throw new UsageError(spec.name, `--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** `--pmi-version 1|2`: which wire protocol a command speaks (PMI-1 by default). */
export function pmiVersionSpec(help: string): OptionSpec {
  return { type: 'string', arg: '1|2', default: '1', help };
}

/** The value of `--pmi-version`; anything but 1 or 2 is a usage error. */
export function pmiVersionOption(spec: CommandSpec, values: ParsedValues): 1 | 2 {
  const v = values['pmi-version'];
  if (v !== '1' && v !== '2') throw new UsageError(spec.name, `--pmi-version must be 1 or 2, got ${JSON.stringify(v)}`);
  return v === '2' ? 2 : 1;
}

export function stringOption(values: ParsedValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

export function listOption(values: ParsedValues, name: string): string[] {
  const v = values[name];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return typeof v === 'string' ? [v] : [];
}

/**
 * Split `[options] [--] prog args…`: our options stop at `--` or at the first word that is not an
 * option (as mpiexec does), so the program's own flags are never taken for ours. Options with an
 * optional value come back as `--NAME=VALUE`.
 */
export function splitCommand(spec: CommandSpec, argv: readonly string[]): { ours: string[]; command: string[] } {
  const options = { ...COMMON, ...spec.options };
  const takesValue = (flag: string): boolean => {
    if (flag.includes('=')) return false;
    if (flag.startsWith('--')) return options[flag.slice(2)]?.type === 'string';
    const short = Object.values(options).find((o) => o.short === flag.slice(1, 2));
    return short?.type === 'string' && flag.length === 2;
  };
  const ours: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') return { ours, command: argv.slice(i + 1) };
    if (a.startsWith('-') && a !== '-') {
      const optional = a.startsWith('--') ? options[a.slice(2)]?.optionalValue : undefined;
      if (optional) {
        const next = argv[i + 1];
        const given = next !== undefined && optional.accepts.test(next);
        ours.push(`${a}=${given ? next : optional.bare}`);
        if (given) i++;
        continue;
      }
      ours.push(a);
      if (takesValue(a) && i + 1 < argv.length) ours.push(argv[++i] as string);
      continue;
    }
    return { ours, command: argv.slice(i) };
  }
  return { ours, command: [] };
}
