/**
 * The relay's rule table (src/relay/rules.ts) and request kinds (src/relay/kinds.ts): every
 * (phase, kind) has exactly one rule, wire names map to kinds by the catalogues' spelling, and the
 * phase precedence is the one the table's rows assume. What the rules do is covered by the relay
 * engine tests (relay-engine, relay-receipt, relay-cache, relay-hardening).
 */
import t from 'tap';
import { PMI2_QUERIES, QUERIES } from '../src/protocol/index.js';
import { BLOCK, KIND_NAMES, PMI1_KINDS, PMI2_KINDS, pmi1Kind, pmi2Kind } from '../src/relay/kinds.js';
import { PHASES, RULES, STEPS, endsCatchUp, phaseOf, rowKinds, stepsFor, type Phase, type PhaseFacts } from '../src/relay/rules.js';

t.test('every (phase, kind) has one non-empty rule, and every step is used', async (t) => {
  const used = new Set<string>();
  for (const phase of Object.keys(PHASES) as Phase[]) {
    for (const kind of KIND_NAMES) {
      const steps = stepsFor(phase, kind);
      t.ok(steps.length > 0, `${phase}/${kind}`);
      for (const s of steps) used.add(s);
    }
  }
  t.same([...used].sort(), Object.keys(STEPS).sort());
  // `rest` rows resolve to the kinds no earlier row of their phase named.
  const busyRest = RULES.find((r) => r.phase === 'busy' && r.kinds === 'rest');
  t.same(rowKinds(busyRest as (typeof RULES)[number]), ['kvs-get', 'barrier', 'finalize', 'abort', 'name-publish', 'name-lookup', 'other']);
});

t.test('wire names are the catalogues’ names', async (t) => {
  for (const name of PMI1_KINDS.keys()) if (name !== BLOCK) t.ok(name in QUERIES, `PMI-1 ${name}`);
  for (const name of PMI2_KINDS.keys()) t.ok(name in PMI2_QUERIES, `PMI-2 ${name}`);
  t.equal(pmi1Kind('barrier_in'), 'barrier');
  t.equal(pmi1Kind(BLOCK), 'spawn');
  t.equal(pmi1Kind('spawn'), 'other', 'a single-line cmd=spawn is not a block');
  t.equal(pmi1Kind(''), 'other', 'an unparsable line');
  t.equal(pmi1Kind('__proto__'), 'other');
  t.equal(pmi2Kind('kvs-fence'), 'barrier');
  t.equal(pmi2Kind('ring'), 'other');
});

t.test('phase precedence', async (t) => {
  const none: PhaseFacts = { swallowingSpawn: false, spawnResultKept: false, inSpawn: false, opening: false, inflight: false, finalized: false };
  t.equal(phaseOf(none, 'kvs-get'), 'ready');
  t.equal(phaseOf({ ...none, finalized: true }, 'kvs-get'), 'finalized');
  t.equal(phaseOf({ ...none, inflight: true, finalized: true }, 'kvs-get'), 'busy');
  t.equal(phaseOf({ ...none, opening: true }, 'init'), 'busy');
  t.equal(phaseOf({ ...none, inSpawn: true, inflight: true }, 'barrier'), 'in-spawn');
  t.equal(phaseOf({ ...none, swallowingSpawn: true, inSpawn: true }, 'other'), 'replaying-spawn');
  // A kept spawn result starts a replay only for a block line outside an open block.
  t.equal(phaseOf({ ...none, spawnResultKept: true }, 'spawn'), 'replaying-spawn');
  t.equal(phaseOf({ ...none, spawnResultKept: true }, 'kvs-get'), 'ready');
  t.equal(phaseOf({ ...none, spawnResultKept: true, inSpawn: true }, 'spawn'), 'in-spawn');
});

t.test('catch-up: start-up and reads keep it; a re-sent put keeps it; writes end it', async (t) => {
  for (const k of ['handshake', 'init', 'query', 'kvs-get', 'name-lookup'] as const) t.notOk(endsCatchUp(k, false), k);
  for (const k of ['barrier', 'finalize', 'abort', 'name-publish', 'spawn', 'other'] as const) t.ok(endsCatchUp(k, true), k);
  t.notOk(endsCatchUp('kvs-put', true));
  t.ok(endsCatchUp('kvs-put', false));
});
