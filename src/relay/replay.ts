/**
 * When the relay may answer a request itself instead of forwarding it: the replay rules. Each
 * applies only to what a takeover (a reconnect by PMI_ID) left behind, never to a live client's
 * new request, which always goes upstream.
 * The engine runs them as steps of the rule table in rules.ts (answer-from-session, wait,
 * kept-reply, ack-resent-put); this is the argument for them.
 *
 * | after a takeover, the new client sends…                | the relay…                                  | why it is safe |
 * |---------------------------------------------------------|---------------------------------------------|----------------|
 * | `initack`, `init`, `get_maxes`, `get_appnum`, `get_my_kvsname`, `get_universe_size` | answers from the session | the answers never change during a job |
 * | the request in flight at the takeover, identical        | hands it the reply when it comes            | it was asked once; asking twice would be a second barrier/put upstream |
 * | the request whose reply was kept, identical             | delivers the kept reply, once               | the predecessor never received it (below), so the re-send is that request |
 * | a read (`get`, queries) before that re-send             | answers it; the kept reply stays            | reads change nothing; MPICH reads before its barrier |
 * | a `put` its predecessor had acknowledged since the last barrier_out it received, same kvsname, key and value | acknowledges it | the value is in the KVS already; forwarding it again could undo a later writer's value |
 * | anything else                                           | forwards it and ends the catch-up; a kept reply is dropped (logged) | the client has moved on |
 *
 * A reply is *received* when the client sent a later line on that connection (PMI is lock-step:
 * it reads its reply before it asks again) or the kernel reports every byte sent to it taken —
 * acknowledged by the peer's TCP, or read from a Unix socket (SIOCOUTQ 0). A reply not known to
 * be received when its client leaves or is replaced (a CRIU-frozen connection drops it; a
 * SIGSTOPped process never reads it) is *kept*; a received one is never replayed, so a client's
 * next identical request (the next `barrier_in`) is a new one.
 */

/** The last reply sent to a session's client, until it is known to be received. */
export interface Unconfirmed {
  readonly line: string;
  readonly reply: string;
  /** Ticks seen since it was sent (the engine's `tick` input). */
  ticks: number;
}

/**
 * Puts a session's client had acknowledged since the last barrier_out it received: what a
 * restarted rank may re-send in its catch-up. A barrier_out ends the epoch only once received: a
 * rank restarted while its barrier_out was lost re-does the puts of the epoch it was in.
 */
export class PutHistory {
  private readonly puts = new Map<string, string>();
  private clearOnReceipt = false;

  acknowledged(kvsname: string, key: string, value: string): boolean {
    return this.puts.get(`${kvsname}\0${key}`) === value;
  }

  record(kvsname: string, key: string, value: string): void {
    this.puts.set(`${kvsname}\0${key}`, value);
  }

  /** A barrier_out was sent to the client: the epoch ends when it is known received. */
  barrierDelivered(): void {
    this.clearOnReceipt = true;
  }

  /** The client's last reply is known received. */
  received(): void {
    if (!this.clearOnReceipt) return;
    this.clearOnReceipt = false;
    this.puts.clear();
  }

  /** The client's last reply was lost (kept for a re-send): its epoch goes on. */
  notReceived(): void {
    this.clearOnReceipt = false;
  }
}
