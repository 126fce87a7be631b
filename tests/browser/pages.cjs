// Browser tests of ftsd's web pages: Debian's chromium driven by playwright-core (npm; never
// a browser download), run by tests/integration/web.rs against a server it started and fed a
// mock workload. One browser for the whole run. For each page: load it with the client
// certificate, wait for its data, check the values a user reads, that plots paint pixels and
// that nothing was logged to the console as an error; screenshot it into FTSD_SHOTS.
// The job page of a transfer still running must change to FINISHED by itself (htmx), without
// a reload. Prints one line per check; exits 1 on the first failure.
'use strict';

const path = require('path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('FTSD_URL');
const SHOTS = env('FTSD_SHOTS');
const JOB = env('FTSD_JOB'); // finished job
const FAILED_JOB = env('FTSD_FAILED_JOB');
const SLOW_JOB = env('FTSD_SLOW_JOB'); // running while the test starts
const SRC = env('FTSD_SOURCE_SE');
const DST = env('FTSD_DEST_SE');
// How long the slow transfer may take to show as finished on its page.
const REFRESH_WAIT_MS = 60000;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`  ok: ${what}`);
}

async function paintedPixels(page, selector) {
  return page.$$eval(selector, (canvases) =>
    canvases.map((c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
      return n;
    }),
  );
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    timezoneId: 'UTC',
    viewport: { width: 1400, height: 900 },
    clientCertificates: [{ origin: BASE, certPath: env('FTSD_CERT'), keyPath: env('FTSD_KEY') }],
  });
  const problems = [];
  const open = async (name, url) => {
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`${name}: console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`${name}: request failed: ${r.url()}`));
    const response = await page.goto(BASE + url);
    check(response && response.status() === 200, `${name}: ${url} answers 200 (got ${response && response.status()})`);
    const csp = response.headers()['content-security-policy'] || '';
    check(csp.startsWith("default-src 'self'"), `${name}: Content-Security-Policy ${csp}`);
    return page;
  };
  const done = async (name, page) => {
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
    const mine = problems.filter((p) => p.startsWith(`${name}:`));
    check(mine.length === 0, `${name}: no console errors ${mine.join('; ')}`);
    await page.close();
  };
  const q = (params) => '?' + new URLSearchParams(params).toString();

  console.log('job page refreshes by itself');
  {
    const page = await open('job-running', `/web/jobs/${SLOW_JOB}`);
    const before = await page.textContent('#job-state');
    check(before !== 'FINISHED', `the slow job is not finished yet (${before})`);
    await page.evaluate(() => { window.__notReloaded = true; });
    await page.waitForFunction(
      () => document.querySelector('#job-state').textContent === 'FINISHED', null,
      { timeout: REFRESH_WAIT_MS, polling: 250 },
    );
    check(await page.evaluate(() => window.__notReloaded === true), 'FINISHED appeared without a reload');
    check((await page.textContent('#files')).includes('FINISHED'), 'the file row says FINISHED');
    await done('job-running', page);
  }

  console.log('overview');
  {
    const page = await open('overview', '/web/');
    await page.waitForSelector('#overview tbody tr td a');
    const text = await page.textContent('#overview');
    check(text.includes(SRC) && text.includes(DST), 'the link is listed');
    const row = page.locator('#overview tbody tr', { hasText: SRC }).filter({ hasText: DST });
    check((await row.count()) === 1, 'one row for the link');
    const cells = await row.locator('td').allTextContents();
    check(cells[8] === '4', `4 finished on the link (${cells.join('|')})`);
    check(cells[9] === '1', `1 failed on the link (${cells[9]})`);
    check(cells[11] === '80.0 %', `success rate 80 % (${cells[11]})`);
    await page.waitForFunction(() => document.querySelector('figure.plot')?.dataset.drawn !== undefined, null, { timeout: 10000 });
    const px = await paintedPixels(page, 'figure.plot canvas');
    check(px.length === 1 && px[0] > 1000, `the transfers plot paints pixels (${px})`);
    check((await page.textContent('figure.plot .u-legend')).includes('finished/min'), 'the plot has its legend');
    await done('overview', page);
  }

  console.log('jobs');
  {
    const page = await open('jobs', '/web/jobs' + q({ state: 'FINISHED,FAILED' }));
    await page.waitForSelector('#jobs tbody tr td a');
    const text = await page.textContent('#jobs');
    check(text.includes(JOB) && text.includes(FAILED_JOB), 'the finished and the failed job are listed');
    // The job-id box of the layout goes to the job's page.
    await page.fill('header input[name=job_id]', JOB);
    await Promise.all([page.waitForURL(`**/web/jobs/${JOB}`), page.press('header input[name=job_id]', 'Enter')]);
    check((await page.textContent('#job-state')) === 'FINISHED', 'the job-id box opens the job');
    await done('jobs', page);
  }

  console.log('job detail');
  {
    const page = await open('job', `/web/jobs/${FAILED_JOB}`);
    await page.waitForSelector('#files tbody tr');
    check((await page.textContent('#job-state')) === 'FAILED', 'the job failed');
    const files = await page.textContent('#files');
    check(files.includes('SOURCE'), `the reason is shown (${files.slice(0, 200)})`);
    check((await page.textContent('#facts')).includes('Rc User'), 'the owner DN is shown');
    await done('job', page);
    // Its log, from the finished job's page.
    const finished = await open('job-finished', `/web/jobs/${JOB}`);
    const log = await finished.getAttribute('#files a[href$="/log"]', 'href');
    check(log && log.startsWith('/ftsmon/jobs/'), `the finished file links its log (${log})`);
    const r = await finished.request.get(BASE + log);
    check(r.status() === 200 && (await r.text()).length > 0, 'the log opens');
    await done('job-finished', finished);
  }

  console.log('transfers');
  {
    const page = await open('transfers', '/web/transfers' + q({ state: 'FINISHED', source_se: SRC, dest_se: DST }));
    await page.waitForSelector('#transfers tbody tr td a');
    check((await page.locator('#transfers tbody tr').count()) === 4, '4 finished transfers');
    await done('transfers', page);
  }

  console.log('optimizer');
  {
    const page = await open('optimizer', '/web/optimizer' + q({ time_window: '1' }));
    await page.waitForSelector('#optimizer tbody tr td a');
    check((await page.textContent('#optimizer')).includes(DST), 'the link has decisions');
    const link = page.locator('#optimizer tbody tr', { hasText: SRC }).filter({ hasText: DST }).locator('a').first();
    await Promise.all([page.waitForURL('**/web/optimizer/detail?*'), link.click()]);
    await page.waitForSelector('#decisions tbody tr td.num');
    await page.waitForFunction(() => [...document.querySelectorAll('figure.plot')].every((f) => f.dataset.drawn), null, { timeout: 10000 });
    const px = await paintedPixels(page, 'figure.plot canvas');
    check(px.length === 3 && px.every((n) => n > 1000), `the three optimizer plots paint pixels (${px})`);
    const legend = await page.textContent('#plot-throughput .u-legend');
    check(legend.includes('decision') && legend.includes('EMA'), 'decision and EMA in the legend');
    await page.locator('.grid2').screenshot({ path: path.join(SHOTS, 'optimizer-plots.png') });
    await done('optimizer-detail', page);
  }

  console.log('errors');
  {
    const page = await open('errors', '/web/errors');
    await page.waitForSelector('#errors tbody tr td a');
    check((await page.textContent('#errors')).includes(SRC), 'the failing link is listed');
    const link = page.locator('#errors tbody tr', { hasText: SRC }).filter({ hasText: DST }).locator('a').first();
    await Promise.all([page.waitForURL('**/web/errors/list?*'), link.click()]);
    await page.waitForSelector('#reasons tbody tr td a');
    const reasons = await page.textContent('#reasons');
    check(reasons.includes('SOURCE'), `the reason is listed (${reasons.slice(0, 200)})`);
    await Promise.all([page.waitForURL('**/web/transfers?*'), page.click('#reasons tbody tr td a')]);
    await page.waitForSelector('#transfers tbody tr td a');
    check((await page.locator('#transfers tbody tr').count()) === 1, 'the reason leads to its one failed transfer');
    await done('errors', page);
  }

  console.log('statistics');
  {
    const page = await open('stats', '/web/stats');
    await page.waitForSelector('#servers tbody tr td');
    check((await page.textContent('#servers')).includes('running'), 'this host is running');
    check((await page.textContent('#lasthour')).includes('finished'), 'the window counts');
    await done('stats', page);
  }

  console.log('configuration');
  {
    const page = await open('config', '/web/config');
    await page.waitForSelector('#gfal2-note');
    check((await page.textContent('#gfal2-note')).includes('show_gfal2_config'), 'gfal2 stays off unless opted in');
    check((await page.textContent('#audit-note')).includes('show_config_audit'), 'the audit stays off unless opted in');
    await done('config', page);
  }

  console.log('another user');
  {
    const other = await browser.newContext({
      ignoreHTTPSErrors: true,
      clientCertificates: [{ origin: BASE, certPath: env('FTSD_OTHER_CERT'), keyPath: env('FTSD_OTHER_CERT') }],
    });
    const page = await other.newPage();
    const r = await page.goto(`${BASE}/web/jobs/${JOB}`);
    check(r.status() === 403, `another user's job page is refused (${r.status()})`);
    check((await page.textContent('#error')).includes('403'), 'the refusal is a page');
    await other.close();
  }

  await browser.close();
  if (problems.length) throw new Error(problems.join('\n'));
}

main().then(
  () => console.log('browser tests passed'),
  (e) => {
    console.error(e.stack || String(e));
    process.exit(1);
  },
);
