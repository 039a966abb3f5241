// The dashboard of `tads serve` in headless Chromium (Debian's, driven by playwright-core from
// npm): every page loads with no console error, a host's timeline draws its charts with the
// alerts shaded, a score job started from the Jobs page runs to its end, and each page is saved
// as a screenshot.
//
//   NODE_PATH=~/.cache/tads/node/node_modules node tests/browser/dashboard.cjs BASE_URL OUT_DIR
//
// Prints one JSON line of what it saw; exits 1 on any console error or missing element.
"use strict";
const { open } = require("./chromium.cjs");

async function main() {
  const [base, out] = process.argv.slice(2);
  const { browser, page, errors } = await open();
  const seen = {};

  const visit = async (hash, loaded, shot) => {
    await page.goto(base + "/" + hash);
    await page.waitForSelector(`main[data-loaded="${loaded}"]`, { timeout: 20000 });
    if (shot) await page.screenshot({ path: `${out}/${shot}.png`, fullPage: true });
  };

  await visit("#/", "fleet", "fleet");
  seen.open_cards = await page.locator("#open-cards .card").count();
  seen.latest_rows = await page.locator("main > table").nth(1).locator("tbody > tr").count();

  await visit("#/alerts?severity=critical", "alerts", "alerts");
  seen.critical_rows = await page.locator("main > table > tbody > tr").count();
  seen.critical_only = await page.locator("main > table > tbody > tr > td:nth-child(2)").allTextContents();

  await visit("#/quality", "quality", "quality");
  seen.recall_bars = await page.locator(".bar-row").count();
  seen.quality_tables = await page.locator("main > table").count();

  await visit("#/models", "models", null);
  seen.models = await page.locator("main > table > tbody > tr").count();

  // The host with the most alerts, from the API the page uses.
  const alerts = await (await fetch(base + "/api/alerts?limit=10000")).json();
  const counts = {};
  for (const a of alerts) counts[a.host_id] = (counts[a.host_id] || 0) + 1;
  const host = Object.entries(counts).sort((a, b) => b[1] - a[1])[0][0];
  seen.host = host;
  seen.host_alerts_api = counts[host];
  await visit("#/host/" + encodeURIComponent(host), "host", "host");
  seen.charts = await page.locator(".chart canvas").count();
  seen.host_alert_rows = await page.locator("main > table > tbody > tr").count();
  // Shading: the score chart has translucent red pixels where the alerts are (the canvas is
  // transparent elsewhere).
  seen.shaded_pixels = await page.evaluate(() => {
    const c = document.querySelector("#score-chart canvas");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] > 150 && d[i + 1] < 100 && d[i + 2] < 100 && d[i + 3] > 10 && d[i + 3] < 80) n++;
    }
    return n;
  });

  // Jobs: start a score job from the form (the first telemetry table and model) and see it
  // finish, live over Server-Sent Events.
  await visit("#/jobs", "jobs", null);
  await page.selectOption("#job-form select[name=kind]", "score");
  await page.fill("#job-form input[name=out]", "scores-from-ui");
  await page.click("#job-form button[type=submit]");
  const done = '#jobs tbody tr[data-state="succeeded"], #jobs tbody tr[data-state="failed"], #jobs tbody tr[data-state="cancelled"]';
  await page.waitForSelector(done, { timeout: 120000 }).catch(() => {});
  seen.job_message = await page.locator("#job-message").textContent();
  seen.job_rows = await page.locator("#jobs tbody tr").count();
  seen.job_state = await page.locator("#jobs tbody tr").first().getAttribute("data-state");
  seen.job_output = await page.locator("#jobs tbody tr td:nth-child(8)").first().textContent();
  await page.screenshot({ path: `${out}/jobs.png`, fullPage: true });

  await browser.close();
  seen.errors = errors;
  console.log(JSON.stringify(seen));
  const ok = errors.length === 0 && seen.open_cards === 3 && seen.latest_rows > 0 && seen.charts === 2 &&
    seen.host_alert_rows === seen.host_alerts_api && seen.shaded_pixels > 100 &&
    seen.critical_only.every((s) => s === "critical") && seen.models > 0 &&
    seen.recall_bars === 5 && seen.quality_tables === 2 && seen.job_rows === 1 &&
    seen.job_state === "succeeded" && seen.job_output.includes("scored");
  process.exit(ok ? 0 : 1);
}

main().catch((e) => { console.error(e); process.exit(1); });
