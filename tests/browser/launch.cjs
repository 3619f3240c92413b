// What both page scripts share: headless Chromium (the system's, from CHROMIUM) with autoplay
// allowed, one desktop-sized page, and a `fail` that names the script.
"use strict";

const { chromium } = require("playwright-core");

async function openPage() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  return { browser, context, page };
}

function failer(name) {
  return (msg) => {
    console.error(`${name}: ${msg}`);
    process.exit(1);
  };
}

module.exports = { openPage, failer };
