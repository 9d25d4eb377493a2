#!/usr/bin/env node
/**
 * pmibridge command line. Each subcommand is its own module, imported only when used, so
 * `pmibridge pmi …` inside every rank does not pay for the launcher or the server.
 */
import { readFileSync } from 'node:fs';
import { UsageError } from './args.js';
import { EXIT } from './exit-codes.js';
import { guardStdio } from './stdio-guard.js';

const COMMANDS: Record<string, { summary: string; load: () => Promise<{ main(argv: string[]): Promise<number> }> }> = {
  run: { summary: 'start the embedded PMI server and launch N ranks of a program', load: () => import('./run.js') },
  serve: { summary: 'a standalone PMI server for ranks started by something else', load: () => import('./serve.js') },
  relay: { summary: 'forward PMI clients to an upstream server by PMI_ID, with reconnection', load: () => import('./relay.js') },
  wrap: { summary: 'run one rank behind a private relay (PMI_FD inside, any upstream outside)', load: () => import('./wrap.js') },
  pmi: { summary: 'PMI client commands for use inside a rank (info, put, get, barrier, exchange)', load: () => import('./pmi.js') },
  tap: { summary: "watch a job's PMI traffic live in the terminal (from run/serve/relay --tap)", load: () => import('./tap.js') },
  protocol: { summary: 'print the PMI-1 (or PMI-2) message catalogue pmibridge speaks', load: () => import('./protocol.js') },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`);
  return [
    'Usage: pmibridge <command> [options]',
    '',
    'Simple PMI (PMI-1 and PMI-2) for MPI ranks over PMI_FD, TCP and Unix sockets.',
    '',
    'Commands:',
    ...rows,
    '',
    "Run 'pmibridge <command> --help' for a command's options.",
    '',
  ].join('\n');
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`pmibridge ${version()}\n`);
    return EXIT.OK;
  }
  const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!cmd) {
    process.stderr.write(`pmibridge: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return EXIT.USAGE;
  }
  try {
    return await (await cmd.load()).main(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`pmibridge ${err.command}: ${err.message}\nTry 'pmibridge ${err.command} --help'.\n`);
      return EXIT.USAGE;
    }
    process.stderr.write(`pmibridge ${name}: ${(err as Error).message}\n`);
    return EXIT.FAILURE;
  }
}

guardStdio();
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`pmibridge: internal error: ${String((err as Error)?.stack ?? err)}\n`);
    process.exitCode = EXIT.FAILURE;
  },
);
