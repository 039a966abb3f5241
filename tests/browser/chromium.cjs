// Debian's headless Chromium, driven by playwright-core (from npm), with a page that collects
// its console errors: what the browser tests share.
"use strict";
const { chromium } = require("playwright-core");

async function open() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  return { browser, page, errors };
}

module.exports = { open };
