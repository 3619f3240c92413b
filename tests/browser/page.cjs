// Drives reelsmith's page in headless Chromium (playwright-core, the system's chromium), for
// tests/browser.rs. Environment: BASE_URL (the daemon), CHROMIUM (the executable), SHOTS (where the
// screenshots go), DAEMON_PID (stopped at the end to see the page say so), LONG_SCRIPT (for the job
// that is cancelled). Prints one JSON line of findings on stdout; the Rust test asserts on them.
// Exits non-zero with a message on the first expectation that times out.
"use strict";

const { openPage, failer } = require("./launch.cjs");
const path = require("path");

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SHOTS;
const STEP = 120000;

const fail = failer("browser test");

async function main() {
  const { browser, page } = await openPage();
  const problems = [];
  let stopped = false; // after the daemon is stopped, failed requests are the point
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  page.on("requestfailed", (r) => {
    const u = r.url();
    // Streams cut by the daemon's stop and aborted media loads are expected.
    if (!stopped && !u.includes("/stream") && !u.includes("/video")) problems.push(`request failed: ${u}`);
  });
  const outside = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(BASE) && !r.url().startsWith("data:")) outside.push(r.url());
  });
  // Every value the job page's progress bar takes, in order.
  await page.addInitScript(() => {
    window.__progress = [];
    new MutationObserver((list) => {
      for (const m of list) {
        if (m.target.id === "job-progress") window.__progress.push(Number(m.target.dataset.progress));
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-progress"] });
  });

  await page.goto(BASE + "/");
  await page.waitForSelector("#conn.live", { timeout: STEP });
  // The model list comes from /api/models (the offline fallback's default).
  await page.waitForFunction(() => document.querySelectorAll("#aiModel option").length >= 1 &&
    !document.getElementById("aiModel-help").textContent.startsWith("Loading"), null, { timeout: STEP });
  const models = await page.$$eval("#aiModel option", (os) => os.map((o) => o.value));

  // Keyboard: the first Tab reaches the skip link, which leads to the form.
  await page.keyboard.press("Tab");
  const firstFocus = await page.evaluate(() => document.activeElement.className);

  // Fill the form through its labels (a label that does not name its control fails here).
  await page.getByLabel("Subject").fill("Why octopuses have three hearts");
  await page.getByLabel("Your own script").fill(
    "Octopuses have three hearts. Two pump blood through the gills. The third pumps it through the body.");
  await page.getByLabel("Paragraphs").fill("1");
  await page.getByLabel("Style", { exact: true }).selectOption("word");
  await page.getByLabel("Colour").fill("#00ffcc");
  await page.getByLabel("Vertical position").selectOption("center");
  await page.getByLabel("Aspect ratio").selectOption("9:16");
  const voices = await page.$$eval("#voice option", (os) => os.length);
  await page.getByRole("button", { name: "Generate video" }).click();

  await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/, { timeout: STEP });
  const jobId = page.url().split("/").pop();
  // The log fills and the job finishes.
  await page.waitForFunction(() => document.querySelectorAll("#log li").length >= 3, null, { timeout: STEP });
  await page.waitForSelector("#job-state.completed", { timeout: 300000 }).catch(async () => {
    fail(`the first job did not complete: ${await page.textContent("#job-state")} / ${await page.textContent("#log")}`);
  });
  await page.waitForSelector("#result:not([hidden])", { timeout: STEP });
  await page.waitForFunction(() => {
    const v = document.getElementById("video");
    return v.readyState >= 1 && Number.isFinite(v.duration) && v.duration > 0;
  }, null, { timeout: STEP }).catch(async () => {
    const err = await page.evaluate(() => { const v = document.getElementById("video"); return v.error && `${v.error.code} ${v.error.message}`; });
    fail(`the <video> did not load: ${err}`);
  });
  const video = await page.evaluate(() => {
    const v = document.getElementById("video");
    return { duration: v.duration, width: v.videoWidth, height: v.videoHeight, src: v.currentSrc };
  });
  // Play a moment: the browser decodes frames, not only the header.
  const played = await page.evaluate(async () => {
    const v = document.getElementById("video");
    v.muted = true;
    try { await v.play(); } catch (e) { return `play failed: ${e.message}`; }
    await new Promise((r) => setTimeout(r, 700));
    v.pause();
    return v.currentTime;
  });
  const log = await page.$$eval("#log li", (lis) => lis.map((li) => ({
    id: Number(li.dataset.id), type: li.dataset.type, level: li.className,
    color: getComputedStyle(li).color,
  })));
  const links = await page.$$eval(".downloads a", (as) => as.map((a) => a.getAttribute("href")));
  const progress = await page.evaluate(() => window.__progress);
  const stageText = await page.textContent("#job-stage");
  const listRow = await page.textContent(`#jobs li[data-id="${jobId}"] .badge`);
  await page.screenshot({ path: path.join(SHOTS, "page-desktop.png"), fullPage: true });

  // Phone width: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(200);
  const phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(SHOTS, "page-phone.png"), fullPage: true });
  await page.goto(BASE + "/#/");
  await page.waitForSelector("#conn.live", { timeout: STEP });
  const phoneFormOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(SHOTS, "page-phone-form.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // A second job, cancelled from its page, then retried and cancelled again.
  await page.getByLabel("Subject").fill("A long one to cancel");
  await page.getByLabel("Your own script").fill(process.env.LONG_SCRIPT || "A long script.");
  await page.click("#submit");
  await page.waitForURL((u) => u.hash.startsWith("#/jobs/") && !u.hash.endsWith(jobId), { timeout: STEP });
  const second = page.url().split("/").pop();
  await page.waitForSelector("#cancel:not([disabled])", { timeout: STEP });
  const stateAtCancel = await page.textContent("#job-state");
  await page.click("#cancel");
  await page.waitForSelector("#job-state.cancelled", { timeout: STEP }).catch(async () => {
    fail(`cancel did not end the job: ${await page.textContent("#job-state")}`);
  });
  await page.waitForFunction(() => [...document.querySelectorAll("#log li")].some((li) => li.dataset.type === "cancelled"),
    null, { timeout: STEP });
  const cancelLevel = await page.$eval('#log li[data-type="cancelled"]', (li) => li.className);
  await page.waitForSelector("#retry:not([disabled])", { timeout: STEP });
  await page.click("#retry");
  await page.waitForFunction(() => !document.getElementById("job-state").classList.contains("cancelled"), null, { timeout: STEP });
  const stateAfterRetry = await page.textContent("#job-state");
  await page.waitForSelector("#cancel:not([disabled])", { timeout: STEP });
  await page.click("#cancel");
  await page.waitForSelector("#job-state.cancelled", { timeout: STEP });
  await page.screenshot({ path: path.join(SHOTS, "page-cancelled.png"), fullPage: true });

  // The daemon goes away: the page says so.
  stopped = true;
  process.kill(Number(process.env.DAEMON_PID), "SIGTERM");
  await page.waitForSelector("#offline:not([hidden])", { timeout: STEP }).catch(() => fail("no message when the daemon is down"));
  const offline = await page.textContent("#offline");
  const conn = await page.textContent("#conn");
  const submitDisabled = await page.$eval("#submit", (b) => b.disabled) &&
    await page.$eval("#retry", (b) => b.disabled);
  await page.screenshot({ path: path.join(SHOTS, "page-offline.png"), fullPage: true });

  await browser.close();
  const unexpected = problems.filter((p) => !/ERR_CONNECTION_REFUSED|Failed to load resource|net::ERR/.test(p));
  console.log(JSON.stringify({
    jobId, second, models, voices, firstFocus, video, played, log, links, progress, stageText, listRow,
    phoneOverflow, phoneFormOverflow, stateAtCancel, cancelLevel, stateAfterRetry, offline, conn,
    submitDisabled, outside, problems: unexpected,
  }));
}

main().catch((e) => fail(e.stack || String(e)));
