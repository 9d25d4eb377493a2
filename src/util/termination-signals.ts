/**
 * The signals that end a pmibridge process: each command catches all of them, so it can pass
 * them on (to ranks, to a child), remove what it created (private socket directories) and exit
 * 128+N, where Node's default would end it on the spot. SIGHUP is what a closed terminal or ssh
 * session sends, SIGQUIT what Ctrl-\ sends. (Node resets inherited dispositions at start-up,
 * so `nohup` cannot make us ignore SIGHUP anyway: use setsid or a service manager instead.)
 */
import { constants as osConstants } from 'node:os';

export const TERMINATION_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const;

/** 128 + the signal's number, as a shell reports a process killed by it. */
export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (osConstants.signals[sig] ?? 1);
}

/** Call `handler` on each termination signal until the returned function is called. */
export function onTermination(handler: (sig: NodeJS.Signals) => void): () => void {
  const installed = TERMINATION_SIGNALS.map((sig) => {
    const listener = () => handler(sig);
    process.on(sig, listener);
    return [sig, listener] as const;
  });
  return () => {
    for (const [sig, listener] of installed) process.off(sig, listener);
  };
}
