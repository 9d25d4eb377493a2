/** `--listen URL …` and `--allow-uid UID …`, shared by serve and relay. */
import { AddressError, parseAddress, type PmiAddress } from '../protocol/address.js';
import { listOption, UsageError, type OptionSpec, type ParsedValues } from './args.js';

export const ALLOW_UID_OPTION: OptionSpec = { type: 'string', arg: 'UID', multiple: true, help: 'also admit this uid on Unix and loopback TCP (default: only our own uid)' };

/** Listen addresses; "unix" means a socket in a new private directory. */
export function listenAddresses(command: string, urls: readonly string[]): Array<PmiAddress | 'private-unix'> {
  return urls.map((u) => {
    if (u === 'unix') return 'private-unix';
    try {
      return parseAddress(u, { allowPortZero: true });
    } catch (err) {
      if (err instanceof AddressError) throw new UsageError(command, `--listen: ${err.message}`);
      throw err;
    }
  });
}

export function allowUids(command: string, values: ParsedValues): number[] {
  return listOption(values, 'allow-uid').map((u) => {
    if (!/^\d+$/.test(u)) throw new UsageError(command, `--allow-uid needs a numeric uid, got ${JSON.stringify(u)}`);
    return Number(u);
  });
}
