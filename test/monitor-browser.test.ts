// The web monitor in a real browser (Debian's Chromium driven by playwright-core): it connects
// with the token from its URL, applies the snapshot, follows a 4-rank job live (rank table,
// barrier bar, KVS count, log filters, latency histogram) and ends showing the job finished.
// UPDATE_SCREENSHOT=1 also writes the final screenshot to docs/monitor.png (the README shows it).
import t from 'tap';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { envWithPmibridge, exitOf, repoRoot, runCli, startCli, waitForLine, type RunResult } from './fixtures/cli.js';

const CHROMIUM = '/usr/bin/chromium';
const noChromium = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (Debian package chromium; scripts/install-system-deps.sh installs it)`;
if (noChromium && process.env['CI'] === 'true') throw new Error(`${noChromium}: CI must run the browser test`);

interface ServeJson {
  kvsname: string;
  listeners: Array<{ PMI_PORT: string }>;
  tap: { url: string; token: string };
}

const count = (page: Page, selector: string) => page.locator(selector).count();
const attr = async (page: Page, selector: string, name: string) => (await page.locator(selector).getAttribute(name)) ?? '';
const text = async (page: Page, selector: string) => (await page.locator(selector).textContent())?.trim() ?? '';

/** PNG signature and IHDR width × height. */
function pngSize(buf: Buffer): { width: number; height: number } | null {
  if (buf.length < 24 || buf.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a' || buf.subarray(12, 16).toString() !== 'IHDR') return null;
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

t.test('web monitor follows a 4-rank job live', { skip: noChromium, timeout: 60_000 }, async (t) => {
  const serve = startCli(['serve', '--size', '4', '--listen', 'unix', '--tap', 'ws://127.0.0.1:0', '--json']);
  t.teardown(() => void (serve.exitCode === null && serve.kill('SIGKILL')));
  const info = JSON.parse((await waitForLine(serve, /^\{.*\}$/))[0]) as ServeJson;
  const pmiPort = info.listeners[0]?.PMI_PORT ?? '';
  const base = info.tap.url.replace(/^ws:/, 'http:');
  t.match(base, /^http:\/\/127\.0\.0\.1:\d+$/, 'the tap is on loopback');

  // the page itself needs the token
  for (const path of ['/', '/?token=wrong', '/index.html']) {
    const res = await fetch(`${base}${path}`);
    t.equal(res.status, 401, `GET ${path} without the right token: 401`);
    await res.body?.cancel();
  }

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, deviceScaleFactor: 1, colorScheme: 'light', reducedMotion: 'reduce' }); // no bar animation: widths are read as rendered
  const problems: string[] = [];
  const foreign: string[] = [];
  const watch = (page: Page) => {
    // (the browser's own /favicon.ico request gets a 404 from the tap: not the page's doing)
    page.on('console', (m) => void (m.type() === 'error' && !m.location().url.endsWith('/favicon.ico') && problems.push(`console: ${m.text()}`)));
    page.on('pageerror', (e) => void problems.push(`page error: ${e.message}`));
    page.on('request', (r) => void (!r.url().startsWith(base) && !r.url().startsWith(base.replace(/^http:/, 'ws:')) && foreign.push(r.url())));
  };
  const page = await context.newPage();
  watch(page);

  const monitorUrl = `${base}/?token=${encodeURIComponent(info.tap.token)}`;
  const res = await page.goto(monitorUrl);
  t.equal(res?.status(), 200, 'the monitor page loads with the token');
  t.match(res?.headers()['content-security-policy'] ?? '', /connect-src 'self'/, 'served with a CSP');
  await page.waitForSelector('#status[data-status="open"]', { timeout: 10_000 });
  t.pass('the page connected to the tap');
  t.equal(await text(page, '#job'), `job ${info.kvsname}`, 'hello: the job is named');
  t.equal(await count(page, '#ranks tr'), 0, 'no ranks yet');

  const rank = (i: number): Promise<RunResult> =>
    runCli(['pmi', 'exchange', '--count', '3'], { env: envWithPmibridge({ PMI_PORT: pmiPort, PMI_ID: String(i) }), timeoutMs: 30_000 });

  // ranks 0-2 put their keys and wait in the first barrier for rank 3
  const early = [0, 1, 2].map(rank);
  await page.waitForSelector('#barrier[data-entered="3"][data-size="4"]', { timeout: 15_000 });
  await page.waitForFunction(() => document.querySelectorAll('#ranks tr[data-state="in-barrier"]').length === 3);
  t.equal(await attr(page, '#barrier-progress', 'aria-valuenow'), '3', 'barrier bar: 3 of 4 entered');
  const barWidth = await page.locator('#barrier-bar').evaluate((el) => el.getBoundingClientRect().width / (el.parentElement as HTMLElement).getBoundingClientRect().width);
  t.ok(Math.abs(barWidth - 0.75) < 0.05, `the bar is three quarters full (${barWidth.toFixed(2)})`);
  t.equal(await text(page, '#kvs-keys'), '9', '9 keys put so far (3 per rank, not yet committed)');
  t.equal(await text(page, 'tr[data-rank="1"] td.cmd'), 'barrier_in', "rank 1's last command");
  const before = await text(page, 'tr[data-rank="0"] td.since');
  await page.waitForFunction((b) => document.querySelector('tr[data-rank="0"] td.since')?.textContent !== b, before, { timeout: 5_000 });
  t.pass(`the time in barrier_in ticks (was ${before})`);

  // a second observer joining now starts from the snapshot
  const late = await context.newPage();
  watch(late);
  await late.goto(monitorUrl);
  await late.waitForSelector('#status[data-status="open"]');
  await late.waitForFunction(() => document.querySelectorAll('#ranks tr[data-state="in-barrier"]').length === 3);
  t.equal(await attr(late, '#barrier', 'data-entered'), '3', 'snapshot: barrier progress');
  t.equal(await text(late, '#kvs-keys'), '9', 'snapshot: KVS key count');
  t.equal(await text(late, 'tr[data-rank="2"] td.cmd'), 'barrier_in', 'snapshot: last command');
  await late.close();

  // rank 3 completes the job
  const results = await Promise.all([...early, rank(3)]);
  results.forEach((r, i) => t.equal(r.code, 0, `rank ${i} exchanged and finalized: ${r.stderr.trim()}`));
  t.same(await exitOf(serve, 15_000), { code: 0, signal: null }, 'serve: every rank finalized');

  await page.waitForFunction(() => document.querySelectorAll('#ranks tr[data-state="finalized"]').length === 4, undefined, { timeout: 10_000 });
  t.equal(await count(page, '#ranks tr'), 4, 'four rank rows');
  for (const r of [0, 1, 2, 3]) t.equal(await count(page, `tr[data-rank="${r}"][data-state="finalized"]`), 1, `rank ${r} finalized`);
  await page.waitForSelector('#finished[data-ok="true"]');
  t.match(await text(page, '#finished'), /Job finished: all 4 ranks finalized/, 'job finished banner');
  await page.waitForSelector('#status[data-status="finished"]');
  t.pass('connection status: finished once the tap closed');
  // two barriers (after the puts, before finalize); the second committed nothing new
  t.same([await attr(page, '#barrier', 'data-epoch'), await attr(page, '#barrier', 'data-entered'), await attr(page, '#barrier', 'data-size')], ['2', '0', '4'], 'barrier: 2 completed, none pending');
  // barrier-complete says keys=13: the 12 exchanged keys plus the preset PMI_process_mapping
  t.equal(await text(page, '#kvs-keys'), '13', 'KVS: 12 keys + PMI_process_mapping');
  t.equal(await count(page, '#gaps:not([hidden])'), 0, 'no events missed');

  // the log and its filters
  await page.waitForFunction(() => document.querySelector('#log-count')?.getAttribute('data-shown') === String(document.querySelectorAll('#log tr').length));
  const total = await count(page, '#log tr');
  t.ok(total > 150, `the log has every line and state change (${total} rows)`);
  await page.selectOption('#filter-rank', '2');
  const rank2 = await count(page, '#log tr:not([hidden])');
  t.ok(rank2 > 10 && rank2 < total, `filter rank 2: ${rank2} of ${total} rows`);
  t.equal(await count(page, '#log tr:not([hidden]):not([data-rank="2"])'), 0, 'only rank 2 rows shown');
  await page.selectOption('#filter-cmd', 'barrier_in');
  t.equal(await count(page, '#log tr:not([hidden])'), 2, 'rank 2 sent barrier_in twice');
  await page.selectOption('#filter-rank', '');
  t.equal(await count(page, '#log tr:not([hidden])'), 8, 'barrier_in: 2 per rank');
  await page.selectOption('#filter-cmd', '*finalized');
  t.equal(await count(page, '#log tr:not([hidden])'), 4, 'state event filter: 4 finalized');
  await page.click('#filter-reset');
  t.equal(await count(page, '#log tr:not([hidden])'), total, 'show all again');

  // latency histogram: one timed reply per request
  const timed = await count(page, '#log tr[data-latency]');
  const requests = await count(page, '#log tr[data-leg="client->server"]');
  t.ok(timed > 0 && timed === requests, `every request's reply was timed (${timed})`);
  t.equal(await attr(page, '#histogram', 'data-total'), String(timed), 'histogram total');
  const binSum = await page.$$eval('#histogram .bin', (bins) => bins.reduce((n, b) => n + Number(b.getAttribute('data-count')), 0));
  t.equal(binSum, timed, 'bins add up');
  const tallest = await page.$$eval('#histogram .bar', (bars) => Math.max(...bars.map((b) => b.getBoundingClientRect().height)));
  t.ok(tallest > 50, `bars are drawn (${tallest}px)`);

  // what a person sees
  await page.evaluate(() => window.scrollTo(0, 0));
  const png = await page.screenshot();
  const size = pngSize(png);
  t.ok(size && size.width === 1280 && size.height === 1000, `screenshot is a PNG (${JSON.stringify(size)})`);
  t.ok(png.length > 30_000, `screenshot is not blank (${png.length} bytes)`);
  if (process.env['UPDATE_SCREENSHOT'] === '1') {
    mkdirSync(join(repoRoot, 'docs'), { recursive: true });
    writeFileSync(join(repoRoot, 'docs/monitor.png'), png);
    t.comment('wrote docs/monitor.png');
  }

  t.same(problems, [], 'no page errors, console errors or CSP violations');
  t.same(foreign, [], 'no requests to anywhere but the tap');
});
