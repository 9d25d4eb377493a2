// pmibridge monitor: watches one job through the tap (event schema v2, see src/tap/event.ts).
// Plain browser JS, no dependencies, no requests but the WebSocket to this page's own host.
// Everything that comes from events is untrusted: it reaches the page only through textContent
// and setAttribute, never as HTML.
'use strict';
(() => {
  const LOG_CAP = 2000; // rows kept in the message log
  const SAMPLE_CAP = 10000; // latencies kept for percentiles
  const $ = (id) => document.getElementById(id);
  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);

  // ---- job state: the same model as src/tap/state.ts, fed by the snapshot then live events ----

  /** Tap event → rank state (state.ts STATE_OF). */
  const STATE_OF = {
    bound: 'connected', initialized: 'initialized', finalized: 'finalized', 'rank-failed': 'failed',
    held: 'held', 'taken-over': 'connected', handshaken: 'connected', 'session-opened': 'connecting',
    'hold-expired': 'failed', 'session-closed': 'closed', aborted: 'aborted',
  };
  const REQUEST_LEGS = new Set(['client->server', 'client->relay']);
  const REPLY_LEGS = new Set(['server->client', 'relay->client']);

  const job = {
    views: new Map(), // 'r<rank>' or 's<session>' → { rank, session, state, lastCmd, sinceMs }
    viewOfSession: new Map(), // session → key of its rank's view (later relay events name only the session)
    barrier: { epoch: 0, entered: 0, size: 0 },
    kvsKeys: 0, // from barrier-complete (committed keys, presets included)
    kvsBase: 0, // keys the snapshot knew of; live puts count on top of it
    putKeys: new Set(), // keys put since the snapshot
    finished: null, // { ok, exitCode, reason } once the job has ended
    endMs: null, // server time the job ended (stops the clocks)
  };

  /** The view of a rank (or a relay session that does not know its rank yet), created on demand. */
  function view(rank, session) {
    if (rank === undefined && session === undefined) return null;
    const key = rank !== undefined ? `r${rank}` : (job.viewOfSession.get(session) ?? `s${session}`);
    let v = job.views.get(key);
    if (!v && rank !== undefined && session !== undefined) {
      v = job.views.get(`s${session}`); // a relay session learns its rank later: merge its view
      if (v) job.views.delete(`s${session}`);
    }
    if (rank !== undefined && session !== undefined) job.viewOfSession.set(session, key);
    if (!v) v = { rank: rank ?? null, session: session ?? null, state: 'connecting', lastCmd: '', sinceMs: 0 };
    if (rank !== undefined) v.rank = rank;
    if (session !== undefined) v.session = session;
    job.views.set(key, v);
    return v;
  }

  function applySnapshot(s, tMs) {
    job.views.clear();
    job.viewOfSession.clear();
    job.putKeys.clear();
    for (const r of Array.isArray(s?.ranks) ? s.ranks : []) {
      const v = view(num(r?.rank), num(r?.session));
      if (!v) continue;
      v.state = String(r.state ?? 'connecting');
      v.lastCmd = String(r.lastCmd ?? '');
      v.sinceMs = nsToMs(r.since);
    }
    const b = s?.barrier ?? {};
    job.barrier = { epoch: num(b.epoch) ?? 0, entered: num(b.entered) ?? 0, size: num(b.size) ?? 0 };
    job.kvsKeys = num(s?.kvsKeys) ?? 0;
    job.kvsBase = job.kvsKeys;
    job.finished = s?.finished ? statusOf(s.finished) : null;
    job.endMs = job.finished ? tMs : null;
  }

  function applyLine(ev, tMs) {
    const v = view(num(ev.rank), num(ev.session));
    if (v && REQUEST_LEGS.has(ev.leg)) {
      v.lastCmd = String(ev.cmd);
      v.sinceMs = tMs;
      if (ev.cmd === 'barrier_in' || ev.cmd === 'kvs-fence') v.state = 'in-barrier';
    }
    if (v && REPLY_LEGS.has(ev.leg) && (ev.cmd === 'barrier_out' || ev.cmd === 'kvs-fence-response')) v.state = 'initialized';
    const key = ev.attrs && Object.hasOwn(ev.attrs, 'key') && typeof ev.attrs.key === 'string' ? ev.attrs.key : undefined;
    // a rank's puts only (others are refused), and a bounded set: as the tap's own snapshot does
    if ((ev.cmd === 'put' || ev.cmd === 'kvs-put') && num(ev.rank) !== undefined && key !== undefined && job.putKeys.size < 65_536) job.putKeys.add(key);
  }

  function applyStateEvent(ev, tMs) {
    if (ev.event === 'barrier') {
      job.barrier = { epoch: num(ev.epoch) ?? 0, entered: num(ev.entered) ?? 0, size: num(ev.size) ?? 0 };
    } else if (ev.event === 'barrier-complete') {
      job.barrier = { ...job.barrier, epoch: num(ev.epoch) ?? 0, entered: 0 };
      job.kvsKeys = num(ev.keys) ?? job.kvsKeys;
    } else if (ev.event === 'job-finished') {
      job.finished = statusOf(ev);
      job.endMs = tMs;
    }
    const next = STATE_OF[ev.event];
    if (next) {
      const v = view(num(ev.rank), num(ev.session));
      if (v) v.state = next;
    }
  }

  /** `status.*` fields (job-finished, snapshot.finished) → { ok, exitCode, reason }. */
  function statusOf(o) {
    return { ok: o['status.ok'] === true, exitCode: num(o['status.exitCode']), reason: typeof o['status.reason'] === 'string' ? o['status.reason'] : '' };
  }

  let role = ''; // server, relay or run (from hello)
  const kvsCount = () => Math.max(job.kvsKeys, job.kvsBase + job.putKeys.size);

  // ---- time: event times are wall-clock ns strings; the browser's clock may differ ----

  /** ns decimal string → ms (a Number cannot hold the ns exactly, ms with a fraction it can). */
  function nsToMs(s) {
    if (typeof s !== 'string' || !/^\d{1,25}$/.test(s)) return 0;
    return s.length > 6 ? Number(s.slice(0, -6)) + Number(s.slice(-6)) / 1e6 : Number(s) / 1e6;
  }
  let clockOffset = Infinity; // min(browser time − event time): skew plus the smallest delay seen
  let frozenMs = null; // server time the clocks stopped at (job ended or tap gone)
  const serverNow = () => frozenMs ?? job.endMs ?? Date.now() - (Number.isFinite(clockOffset) ? clockOffset : 0);

  function fmtDuration(ms) {
    if (!Number.isFinite(ms) || ms < 0) return '';
    if (ms < 1) return `${Math.round(ms * 1000)} µs`;
    if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
    return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  }
  function fmtClock(ms, ns) {
    const d = new Date(ms);
    const p = (n, w = 2) => String(n).padStart(w, '0');
    const micros = typeof ns === 'string' && ns.length > 6 ? ns.slice(-6, -3) : '000';
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}${micros}`;
  }

  // ---- latency histogram ----

  const BOUNDS_NS = [1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9, Infinity];
  const bins = BOUNDS_NS.map(() => 0);
  const samples = []; // the latest SAMPLE_CAP latencies (ns), for percentiles
  let sampleNext = 0;
  let latencyTotal = 0;
  let latencyMax = 0;

  const fmtBound = (ns) => (ns < 1e6 ? `${ns / 1e3}µs` : ns < 1e9 ? `${ns / 1e6}ms` : `${ns / 1e9}s`);

  function addLatency(ns) {
    bins[BOUNDS_NS.findIndex((b) => ns <= b)]++;
    latencyTotal++;
    latencyMax = Math.max(latencyMax, ns);
    if (samples.length < SAMPLE_CAP) samples.push(ns);
    else {
      samples[sampleNext] = ns; // a ring: overwrite the oldest
      sampleNext = (sampleNext + 1) % SAMPLE_CAP;
    }
  }

  const binEls = BOUNDS_NS.map((b, i) => {
    const bin = document.createElement('div');
    bin.className = 'bin';
    bin.dataset.bucket = String(i);
    bin.dataset.count = '0';
    const count = document.createElement('div');
    count.className = 'count';
    const bar = document.createElement('div');
    bar.className = 'bar';
    const label = document.createElement('div');
    label.className = 'label';
    label.textContent = b === Infinity ? `>${fmtBound(BOUNDS_NS[i - 1])}` : fmtBound(b);
    if (b !== Infinity && !/^1\d*$/.test(String(b / 1e3))) label.classList.add('minor'); // only 10µs, 100µs, 1ms… shown
    bin.append(count, bar, label);
    $('histogram').append(bin);
    return { bin, count, bar, label: label.textContent };
  });

  function renderHistogram() {
    const most = Math.max(1, ...bins);
    bins.forEach((n, i) => {
      const el = binEls[i];
      el.bin.dataset.count = String(n);
      el.bin.title = `≤ ${el.label}: ${n} replies`;
      el.count.textContent = n ? String(n) : '';
      el.bar.style.height = `${(n / most) * 100 * 0.85}%`;
    });
    $('histogram').dataset.total = String(latencyTotal);
    $('latency-count').textContent = String(latencyTotal);
    if (!latencyTotal) return;
    const sorted = [...samples].sort((a, b) => a - b);
    const pct = (p) => fmtDuration(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] / 1e6);
    $('latency-summary').textContent = `p50 ${pct(0.5)} · p99 ${pct(0.99)} · max ${fmtDuration(latencyMax / 1e6)}`;
  }

  // ---- rank table and summary cards ----

  const rowOf = new Map(); // view object → its <tr>
  function rankRow(v) {
    let tr = rowOf.get(v);
    if (!tr) {
      tr = document.createElement('tr');
      for (const cls of ['rank', 'session', 'state', 'cmd', 'since']) {
        const td = document.createElement('td');
        td.className = cls;
        tr.append(td);
      }
      tr.cells[2].append(document.createElement('span'));
      rowOf.set(v, tr);
    }
    return tr;
  }

  function renderRanks() {
    const views = [...job.views.values()].sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9) || (a.session ?? 0) - (b.session ?? 0));
    const tbody = $('ranks');
    const keep = new Set();
    const counts = new Map();
    for (const v of views) {
      const tr = rankRow(v);
      keep.add(tr);
      tr.dataset.rank = v.rank === null ? '' : String(v.rank);
      tr.dataset.session = v.session === null ? '' : String(v.session);
      tr.dataset.state = v.state;
      tr.cells[0].textContent = v.rank === null ? '?' : String(v.rank);
      tr.cells[1].textContent = v.session === null ? '—' : String(v.session);
      const badge = tr.cells[2].firstChild;
      badge.className = `badge s-${v.state.replace(/[^a-z-]/g, '')}`;
      badge.textContent = v.state;
      tr.cells[3].textContent = v.lastCmd || '—';
      tbody.append(tr); // (re)appending keeps the rows in order
      counts.set(v.state, (counts.get(v.state) ?? 0) + 1);
    }
    for (const tr of [...tbody.rows]) if (!keep.has(tr)) tr.remove();
    for (const [v, tr] of rowOf) if (!keep.has(tr)) rowOf.delete(v);
    $('ranks-empty').hidden = views.length > 0;
    $('ranks-table').classList.toggle('no-sessions', !views.some((v) => v.session !== null)); // a server has no sessions
    $('rank-count').textContent = String(views.length);
    $('rank-states').textContent = views.length ? [...counts].map(([s, n]) => `${n} ${s}`).join(' · ') : 'none connected yet';
    tickClocks();
  }

  /** "time in it": since each rank sent its last command; ticks until the job ends. */
  function tickClocks() {
    const now = serverNow();
    for (const [v, tr] of rowOf) tr.cells[4].textContent = v.sinceMs ? fmtDuration(now - v.sinceMs) : '';
  }

  function renderSummary() {
    const { epoch, entered, size } = job.barrier;
    const b = $('barrier');
    b.dataset.epoch = String(epoch);
    b.dataset.entered = String(entered);
    b.dataset.size = String(size);
    b.dataset.full = String(size > 0 && entered >= size);
    const pb = $('barrier-progress');
    pb.setAttribute('aria-valuemax', String(size));
    pb.setAttribute('aria-valuenow', String(entered));
    $('barrier-bar').style.width = `${size ? Math.min(100, (entered / size) * 100) : 0}%`;
    $('barrier-text').textContent = size || epoch
      ? `${entered} / ${size} entered · ${epoch} barrier${epoch === 1 ? '' : 's'} completed`
      : role === 'relay' ? 'not visible through a relay (watch the server)' : 'no barrier yet';
    const keys = kvsCount();
    $('kvs-keys').textContent = String(keys);
    $('kvs-keys').dataset.keys = String(keys);
    const f = $('finished');
    f.hidden = !job.finished;
    if (job.finished) {
      f.dataset.ok = String(job.finished.ok);
      const code = job.finished.exitCode !== undefined ? ` (exit ${job.finished.exitCode})` : '';
      f.textContent = `${job.finished.ok ? 'Job finished' : 'Job failed'}: ${job.finished.reason || 'no reason given'}${code}`;
    }
    document.body.dataset.finished = job.finished ? (job.finished.ok ? 'ok' : 'failed') : '';
  }

  // Rendering is batched: a burst of events costs one render.
  let renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    setTimeout(() => {
      renderPending = false;
      renderRanks();
      renderSummary();
      renderHistogram();
    }, 30);
  }
  setInterval(tickClocks, 250);

  // ---- message log with filters ----

  const log = []; // { tr, rank, cmd }, oldest first
  const seenRanks = new Set();
  const seenCmds = new Set();
  const filter = { rank: '', cmd: '' };
  const matches = (e) => (filter.rank === '' || e.rank === filter.rank) && (filter.cmd === '' || e.cmd === filter.cmd);

  /** One row; `cmd` is the PMI command of a line, `*event` for a state event, '' otherwise. */
  function addLogRow({ kind, tMs, ns, rank, who, what, text, latencyNs, cmd = '', dir = '', leg = '' }) {
    const tr = document.createElement('tr');
    tr.dataset.kind = kind;
    tr.dataset.rank = rank;
    tr.dataset.cmd = cmd;
    if (dir) tr.dataset.dir = dir;
    if (leg) tr.dataset.leg = leg;
    if (latencyNs !== undefined) tr.dataset.latency = String(latencyNs);
    const cells = [['time', tMs ? fmtClock(tMs, ns) : ''], ['who', who], ['what', what], ['text', text], ['num', latencyNs !== undefined ? fmtDuration(latencyNs / 1e6) : '']];
    for (const [cls, value] of cells) {
      const td = document.createElement('td');
      td.className = cls;
      td.textContent = value;
      if (cls === 'text') td.title = value;
      tr.append(td);
    }
    const entry = { tr, rank, cmd };
    tr.hidden = !matches(entry);
    $('log').prepend(tr);
    log.push(entry);
    if (log.length > LOG_CAP) log.shift().tr.remove();
    if (rank !== '' && !seenRanks.has(rank)) {
      seenRanks.add(rank);
      fillSelect($('filter-rank'), [...seenRanks].sort((a, b) => Number(a) - Number(b)).map((r) => [r, `rank ${r}`]));
    }
    if (cmd !== '' && !seenCmds.has(cmd)) {
      seenCmds.add(cmd);
      const sorted = [...seenCmds].sort((a, b) => Number(a.startsWith('*')) - Number(b.startsWith('*')) || a.localeCompare(b));
      fillSelect($('filter-cmd'), sorted.map((c) => [c, c.startsWith('*') ? `${c.slice(1)} (state)` : c]));
    }
    updateLogCount();
  }

  /** Replace a filter's options, keeping "all" and the current choice. */
  function fillSelect(select, options) {
    const current = select.value;
    select.replaceChildren(new Option('all', ''), ...options.map(([value, label]) => new Option(label, value)));
    select.value = current;
  }

  function applyFilters() {
    filter.rank = $('filter-rank').value;
    filter.cmd = $('filter-cmd').value;
    for (const e of log) e.tr.hidden = !matches(e);
    updateLogCount();
  }

  let countPending = false;
  function updateLogCount() {
    if (countPending) return;
    countPending = true;
    setTimeout(() => {
      countPending = false;
      const shown = log.reduce((n, e) => n + (e.tr.hidden ? 0 : 1), 0);
      const el = $('log-count');
      el.dataset.shown = String(shown);
      el.dataset.total = String(log.length);
      el.textContent = `showing ${shown} of ${log.length}${log.length >= LOG_CAP ? ` (the latest ${LOG_CAP} kept)` : ''}`;
    }, 30);
  }

  $('filter-rank').addEventListener('change', applyFilters);
  $('filter-cmd').addEventListener('change', applyFilters);
  $('filter-reset').addEventListener('click', () => {
    $('filter-rank').value = '';
    $('filter-cmd').value = '';
    applyFilters();
  });

  /** An event's rank: its own, or (relay events naming only a session) that session's rank. */
  function rankOf(ev) {
    if (num(ev.rank) !== undefined) return ev.rank;
    const key = num(ev.session) !== undefined ? job.viewOfSession.get(ev.session) : undefined;
    return key !== undefined ? (job.views.get(key)?.rank ?? undefined) : undefined;
  }
  function whoOf(ev, rank) {
    if (rank !== undefined) return num(ev.rank) === undefined ? `rank ${rank} (session ${ev.session})` : `rank ${rank}`;
    return num(ev.session) !== undefined ? `session ${ev.session}` : num(ev.conn) !== undefined ? `conn ${ev.conn}` : '';
  }
  const COMMON = new Set(['v', 'seq', 't', 'job', 'kind', 'event', 'rank', 'session']);
  const detailOf = (ev) => Object.entries(ev).filter(([k]) => !COMMON.has(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');

  function note(text) {
    addLogRow({ kind: 'note', tMs: Date.now(), rank: '', who: '', what: 'monitor', text });
  }

  // ---- events ----

  function onEvent(ev) {
    if (!ev || typeof ev !== 'object') return;
    const tMs = nsToMs(ev.t);
    if (tMs) clockOffset = Math.min(clockOffset, Date.now() - tMs);
    switch (ev.kind) {
      case 'hello':
        $('job').textContent = typeof ev.job === 'string' ? `job ${ev.job}` : '';
        $('role').textContent = `${String(ev.role)}${ev.redact ? ' · values redacted' : ''}`;
        $('role').hidden = false;
        role = String(ev.role);
        if (ev.v !== 2) note(`schema version ${String(ev.v)}: this monitor knows version 2`);
        break;
      case 'snapshot':
        applySnapshot(ev.state, tMs);
        note(`snapshot: ${job.views.size} rank${job.views.size === 1 ? '' : 's'}, ${kvsCount()} KVS keys; live from here`);
        break;
      case 'line': {
        applyLine(ev, tMs);
        const latencyNs = num(ev.latencyNs);
        if (latencyNs !== undefined) addLatency(latencyNs);
        const dir = REQUEST_LEGS.has(ev.leg) || ev.leg === 'relay->upstream' ? 'req' : 'rep';
        const rank = rankOf(ev);
        addLogRow({ kind: 'line', tMs, ns: ev.t, rank: rank === undefined ? '' : String(rank), who: whoOf(ev, rank), what: String(ev.leg).replace('->', ' → '), text: (ev.wire === 'pmi2' ? '[PMI-2] ' : '') + String(ev.line), latencyNs, cmd: String(ev.cmd ?? ''), dir, leg: String(ev.leg) });
        break;
      }
      case 'state': {
        applyStateEvent(ev, tMs);
        const rank = rankOf(ev);
        addLogRow({ kind: 'state', tMs, ns: ev.t, rank: rank === undefined ? '' : String(rank), who: whoOf(ev, rank), what: `• ${String(ev.event)}`, text: detailOf(ev), cmd: `*${String(ev.event)}` });
        break;
      }
      case 'gap': {
        const dropped = num(ev.dropped) ?? 0;
        const g = $('gaps');
        const total = Number(g.dataset.dropped) + dropped;
        g.dataset.dropped = String(total);
        g.textContent = `${total} event${total === 1 ? '' : 's'} missed: this monitor fell behind, so rank states may be stale (reload for a fresh snapshot)`;
        g.hidden = false;
        addLogRow({ kind: 'gap', tMs, ns: ev.t, rank: '', who: '', what: 'gap', text: `${dropped} events missed` });
        break;
      }
      default:
        return;
    }
    scheduleRender();
  }

  // ---- connection: token from the page's URL, reconnect with back-off until the job ends ----

  function setStatus(status, text) {
    const s = $('status');
    s.dataset.status = status;
    s.textContent = text;
  }

  const token = new URLSearchParams(location.search).get('token');
  let retryMs = 1000;
  let everOpen = false;

  function connect() {
    // batch=1: the events of one loop turn arrive as one message, one JSON object per line.
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/tap?batch=1&token=${encodeURIComponent(token)}`;
    setStatus('connecting', everOpen ? 'reconnecting…' : 'connecting…');
    const ws = new WebSocket(url);
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      everOpen = true;
      retryMs = 1000;
      frozenMs = null;
      setStatus('open', `live · ${location.host}`);
    });
    ws.addEventListener('message', (m) => {
      if (typeof m.data !== 'string') return;
      for (const text of m.data.split('\n')) {
        let ev;
        try {
          ev = JSON.parse(text);
        } catch {
          continue;
        }
        onEvent(ev);
      }
    });
    ws.addEventListener('close', (e) => {
      frozenMs = serverNow(); // the clocks stop with the stream
      tickClocks();
      if (job.finished || e.code === 1001) {
        // 1001 "going away": the tap closed with its job (a relay has no job-finished event)
        setStatus('finished', `${job.finished ? 'job finished' : e.reason || 'tap shut down'} · the tap has closed`);
        return;
      }
      const why = opened ? `disconnected${e.reason ? ` (${e.reason})` : ''}` : 'cannot connect (tap gone, or wrong token)';
      setStatus('retrying', `${why} · retrying in ${Math.round(retryMs / 1000)} s`);
      if (opened) note(why);
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10_000);
    });
  }

  if (token) connect();
  else setStatus('no-token', 'no token: open the URL the tap printed (…/?token=…)');
  renderHistogram();
  updateLogCount();
})();
