// Live updates of the dashboard in headless Chromium: the fleet page of a served `tads watch`
// output is open; when the test has the watcher commit another round, the page reads the API
// again by itself (no reload) and shows the new alerts.
//
//   NODE_PATH=~/.cache/tads/node/node_modules node tests/browser/live.cjs BASE_URL OUT_DIR
//
// Prints `ready` once the page is loaded (the test then lands files and runs the watcher), then
// one JSON line of what it saw; exits 1 on a console error or when no update came.
"use strict";
const { open } = require("./chromium.cjs");

async function main() {
  const [base, out] = process.argv.slice(2);
  const { browser, page, errors } = await open();
  const seen = {};
  const latest = () => page.locator("main > table").nth(1).locator("tbody > tr").count();
  const opened = () => page.locator("#open-cards .n").allTextContents();

  await page.goto(base + "/#/");
  await page.waitForSelector('main[data-loaded="fleet"]', { timeout: 20000 });
  // The live stream is open once its first event has named it so.
  await page.waitForFunction(() => document.getElementById("live").textContent.startsWith("live"), null, { timeout: 20000 });
  await page.evaluate(() => { window.__same_page = true; });
  seen.hosts_before = await page.locator("main > table").first().locator("tbody > tr").count();
  seen.latest_before = await latest();
  seen.open_before = await opened();
  const before = await page.locator("main").innerText();
  console.log("ready");

  // The watcher's next round: the page updates by itself.
  await page.waitForFunction(() => document.body.dataset.live !== undefined, null, { timeout: 60000 });
  await page.waitForSelector('main[data-loaded="fleet"]', { timeout: 20000 });
  seen.live_version = await page.evaluate(() => document.body.dataset.live);
  seen.live_line = await page.locator("#live").textContent();
  seen.same_page = await page.evaluate(() => window.__same_page === true);
  seen.hosts_after = await page.locator("main > table").first().locator("tbody > tr").count();
  seen.latest_after = await latest();
  seen.open_after = await opened();
  seen.changed = (await page.locator("main").innerText()) !== before;
  await page.screenshot({ path: `${out}/live.png`, fullPage: true });
  seen.errors = errors;
  await browser.close();
  console.log(JSON.stringify(seen));
  if (errors.length) process.exit(1);
}

main().catch((e) => { console.error(e); process.exit(1); });
