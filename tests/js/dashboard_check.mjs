// Drives herd's dashboard in a real browser (Debian's chromium through
// playwright-core) and checks what tests/tests/dashboard.rs asks:
//
// - every view renders with the simulated fleet's data, with no console
//   error, and every request the page makes goes to herd's own origin
//   (checked by intercepting every request of the browser context);
// - live, without a reload: a device's thermal state changed through its
//   /_sim/sensors shows on its Fleet card within 3 s; a request sent here
//   appears in the Routing feed with its winner; a killed device turns
//   offline;
// - a Control action (drain, then undrain) takes effect on the fleet;
// - tabs are a WAI-ARIA tablist reachable by keyboard; the page fits 390 px;
// - a screenshot of every view (1280 px light and dark, 390 px) is saved.
//
// Usage: node dashboard_check.mjs '<json config>' — see `Config` below.
// Prints one JSON line (what it measured and saw) and exits 0, or prints
// what failed and exits 1.

import { chromium } from "playwright-core";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";

/** @typedef {{
 *   mode: "herd" | "herd-epp",
 *   url: string,            // where the dashboard is served
 *   out: string,            // screenshot directory
 *   devices: Record<string, string>,  // device name -> its URL (/_sim/*)
 *   send: string,           // base URL requests are sent to (herd, or Envoy before herd-epp)
 *   model: string,          // a model every device has loaded or on disk
 *   hot: string,            // device made hot through /_sim/sensors
 *   kill: string,           // device killed through /_sim/kill
 *   drain?: string,         // device drained and undrained from the Control view (herd)
 *   tag?: string,           // a tag requests were sent with (herd)
 *   bench?: { node: string, model: string },  // a benchmark run from the page (herd)
 *   pulled?: string,        // a model herd auto-pulled before the page opened (herd)
 * }} Config */

const cfg = /** @type {Config} */ (JSON.parse(process.argv[2]));
const origin = new URL(cfg.url).origin;
const chromiumPath = process.env.HERD_CHROMIUM || "/usr/bin/chromium";
const summary = { mode: cfg.mode, requests: [], violations: [], console_errors: [], screenshots: [], checks: [] };

function fail(msg) {
  throw new Error(msg);
}

function check(ok, msg) {
  if (!ok) fail(msg);
  summary.checks.push(msg);
}

async function until(what, f, timeout = 10000) {
  const start = Date.now();
  for (;;) {
    const v = await f();
    if (v) return Date.now() - start;
    if (Date.now() - start > timeout) fail(`timed out after ${timeout} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function json(url, init) {
  const r = await fetch(url, init);
  const text = await r.text();
  if (!r.ok) fail(`${init?.method || "GET"} ${url}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function main() {
  if (!existsSync(chromiumPath)) {
    fail(`${chromiumPath} is missing: install Debian's chromium (apt-get install -y chromium; tests/run.sh does) or set HERD_CHROMIUM`);
  }
  mkdirSync(cfg.out, { recursive: true });
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-default-browser-check"],
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function newPage(browser, width, height, scheme) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme: scheme, reducedMotion: "reduce" });
  // Every request of the page, checked at the door: herd's origin only.
  await context.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.origin !== origin) {
      summary.violations.push(route.request().url());
      return route.abort();
    }
    const path = u.pathname;
    if (!summary.requests.includes(path)) summary.requests.push(path);
    return route.continue();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on("console", (m) => {
    if (m.type() === "error") summary.console_errors.push(m.text());
  });
  page.on("pageerror", (e) => summary.console_errors.push("pageerror: " + e.message));
  return { context, page };
}

async function view(page, id) {
  await page.click(`#tab-${id}`);
  await page.waitForSelector(`#panel-${id}:not([hidden])`);
}

async function shot(page, name) {
  const path = join(cfg.out, name + ".png");
  await page.waitForTimeout(150);
  await page.screenshot({ path, fullPage: true });
  summary.screenshots.push(path);
}

const text = (page, sel) => page.locator(sel).first().textContent({ timeout: 2000 }).catch(() => null);

async function run(browser) {
  const herd = cfg.mode === "herd";
  const views = herd ? ["fleet", "routing", "models", "trends", "health", "usage", "benchmarks", "control"]
    : ["fleet", "routing", "models", "health"];
  const { context, page } = await newPage(browser, 1280, 900, "light");
  await page.goto(cfg.url + "/dashboard");
  await page.waitForSelector("#live.on", { timeout: 10000 });

  // Tabs: a tablist, one tab per view (no control in herd-epp), keyboard.
  const tabs = await page.$$eval('[role="tablist"] [role="tab"]', (t) => t.map((x) => x.dataset.view));
  check(JSON.stringify(tabs) === JSON.stringify(views), `tabs are ${views.join(",")} (got ${tabs.join(",")})`);
  check((await page.$$('[role="tabpanel"]')).length === views.length, "one tabpanel per tab");
  await page.focus("#tab-fleet");
  await page.keyboard.press("ArrowRight");
  check(await page.getAttribute("#tab-routing", "aria-selected") === "true", "ArrowRight moves to the next tab");
  check(await page.evaluate(() => document.activeElement.id) === "tab-routing", "focus follows the selected tab");
  await page.keyboard.press("End");
  check(await page.getAttribute(`#tab-${views[views.length - 1]}`, "aria-selected") === "true", "End selects the last tab");
  await page.keyboard.press("Home");
  check(await page.getAttribute("#tab-fleet", "aria-selected") === "true", "Home selects the first tab");
  if (!herd) check(await page.textContent("#shape").then((t) => t.includes("read-only")), "herd-epp says read-only");

  // Fleet: a card per device, with its state.
  for (const name of Object.keys(cfg.devices)) {
    await page.waitForSelector(`[data-node="${name}"] [data-field="status"]`, { timeout: 10000 });
    check(await text(page, `[data-node="${name}"] [data-field="status"]`) === "online", `${name} is online on its card`);
  }
  check((await text(page, `[data-node="${cfg.hot}"] [data-field="thermal"]`)) === "nominal", `${cfg.hot} starts nominal`);

  // Live: thermal state through the device's own /_sim/sensors, no reload.
  await page.evaluate(() => { window.__same_page = true; });
  const t0 = Date.now();
  await json(`${cfg.devices[cfg.hot]}/_sim/sensors`, { method: "POST", body: JSON.stringify({ thermal: "serious" }), headers: { "content-type": "application/json" } });
  await until(`${cfg.hot}'s card says serious`, async () => (await text(page, `[data-node="${cfg.hot}"] [data-field="thermal"]`)) === "serious", 3000);
  summary.thermal_ms = Date.now() - t0;
  check(await page.evaluate(() => window.__same_page === true), "the thermal change arrived without a reload");
  check(summary.thermal_ms < 3000, `thermal change shown in ${summary.thermal_ms} ms (< 3000)`);
  await shot(page, `${cfg.mode}-fleet-1280`);

  // Routing: a request sent here appears in the feed, with its winner.
  await view(page, "routing");
  const rsp = await fetch(`${cfg.send}/api/chat`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: cfg.model, messages: [{ role: "user", content: "hello dashboard" }], stream: false }),
  });
  const body = await rsp.text();
  check(rsp.ok, `the request is served (${rsp.status} ${body.slice(0, 200)})`);
  let winner;
  if (herd) {
    winner = rsp.headers.get("x-herd-node");
    const id = rsp.headers.get("x-request-id");
    check(winner && id, "herd names the node and the request");
    const row = `tr[data-request="${id}"] [data-field="winner"] strong`;
    summary.feed_ms = await until(`request ${id} in the routing feed`, async () => (await text(page, row)) === winner);
    summary.request_id = id;
  } else {
    const ep = rsp.headers.get("x-herd-epp-endpoint");
    winner = Object.entries(cfg.devices).find(([, u]) => new URL(u).host === ep)?.[0];
    check(winner, `herd-epp picked a known device (${ep})`);
    summary.feed_ms = await until(`a decision for ${winner} in the routing feed`, async () =>
      (await page.$$eval('[data-field="winner"] strong', (els) => els.map((e) => e.textContent))).includes(winner));
  }
  summary.winner = winner;
  await page.click("#feed-body tr:first-child button.link");
  await page.waitForSelector("#feed-body tr.detail svg");
  await page.fill("#explain-model", cfg.model);
  await page.click('#explain-form button[type="submit"]');
  await page.waitForSelector('[data-field="explain-winner"]');
  check((await text(page, '[data-field="explain-winner"]')).length > 0, "the explain form shows a winner");
  await shot(page, `${cfg.mode}-routing-1280`);

  // Models: where each model is; learned speed after the request.
  await view(page, "models");
  await page.waitForSelector(`#models-matrix tr[data-model="${cfg.model}"]`);
  await until("learned speed of the served node:model", () => page.$(`[data-perf^="${winner}:"]`), 8000);
  if (cfg.pulled) {
    await page.waitForSelector(`[data-pull="${cfg.pulled}"]`);
    check((await text(page, `[data-pull="${cfg.pulled}"] [role="progressbar"]`)) !== null, "the auto-pull shows its progress bar");
  }
  await shot(page, `${cfg.mode}-models-1280`);

  // Health: the hot device is reported, with evidence and a fix.
  await view(page, "health");
  const hotCheck = `[data-check="thermal_throttling"][data-subject="${cfg.hot}"]`;
  await until("the thermal check in the health view", () => page.$(hotCheck), 8000);
  check((await text(page, `${hotCheck} .fix`)).startsWith("Fix:"), "the check says how to fix it");
  check((await text(page, `${hotCheck} .evidence`)).includes("serious"), "the check shows its evidence");
  await until("a score below 100", async () => Number(await text(page, '[data-field="health-score"]')) < 100);
  await shot(page, `${cfg.mode}-health-1280`);

  if (herd) {
    // Trends: the store's analytics, by hour and day.
    await view(page, "trends");
    await until("trend charts", async () => (await page.$$("#trends-hour figure.chart svg")).length === 4 && (await page.$$("#trends-day figure.chart svg")).length === 4);
    await until("a point on the requests chart", () => page.$("#trends-hour figure.chart path.line"));
    await shot(page, "herd-trends-1280");

    // Tags & usage.
    await view(page, "usage");
    await until(`usage of tag ${cfg.tag}`, () => page.$(`[data-usage="${cfg.tag}"]`));
    await page.click('[data-by="model"]');
    await until(`usage of model ${cfg.model}`, () => page.$(`[data-usage="${cfg.model}"]`));
    await page.click('[data-by="tag"]');
    await until(`usage of tag ${cfg.tag} again`, () => page.$(`[data-usage="${cfg.tag}"]`));
    await shot(page, "herd-usage-1280");

    // Benchmarks: run one from the page, see it finish and stored.
    await view(page, "benchmarks");
    await page.selectOption("#bench-node", cfg.bench.node);
    await page.selectOption("#bench-model", cfg.bench.model);
    await page.fill("#bench-tokens", "8");
    await page.click("#bench-run");
    await page.waitForSelector('#bench-progress [role="progressbar"], [data-field="bench-done"]');
    await until("the benchmark's result", () => page.$('[data-field="bench-done"]'), 30000);
    const key = `${cfg.bench.node}:${cfg.bench.model}`;
    await until(`the stored run of ${key}`, () => page.$(`#bench-table [data-bench="${key}"]`));
    await shot(page, "herd-benchmarks-1280");

    // Control: drain, then undrain, through the page; the fleet follows.
    await view(page, "control");
    await page.waitForSelector(`#control-body tr[data-node="${cfg.drain}"]`);
    await until("the config in effect", async () => (await text(page, "#config-pre")).includes('"dashboard"'));
    const status = () => json(`${cfg.url}/fleet/status`);
    const draining = async () => (await status()).nodes.find((n) => n.id === cfg.drain)?.draining;
    check(!(await draining()), `${cfg.drain} starts undrained`);
    await page.click(`#control-body tr[data-node="${cfg.drain}"] [data-action="drain"]`);
    summary.drain_ms = await until(`${cfg.drain} draining in /fleet/status`, draining);
    await until(`the page shows ${cfg.drain} draining`, () => page.$(`#control-body tr[data-node="${cfg.drain}"] [data-field="draining"]`));
    await shot(page, "herd-control-1280");
    await page.click(`#control-body tr[data-node="${cfg.drain}"] [data-action="undrain"]`);
    summary.undrain_ms = await until(`${cfg.drain} no longer draining`, async () => (await draining()) === false);
    await until("the page shows it", async () => !(await page.$(`#control-body tr[data-node="${cfg.drain}"] [data-field="draining"]`)));
  }

  // A node killed turns offline on the page.
  await view(page, "fleet");
  await json(`${cfg.devices[cfg.kill]}/_sim/kill`, { method: "POST" }).catch(() => null);
  summary.offline_ms = await until(`${cfg.kill} offline on its card`, async () => (await text(page, `[data-node="${cfg.kill}"] [data-field="status"]`)) === "offline");
  check(await page.evaluate(() => window.__same_page === true), "still the same page, never reloaded");

  // Every view once more, in light and dark, then on a phone.
  for (const v of views) {
    await view(page, v);
    await shot(page, `${cfg.mode}-${v}-1280-light`);
  }
  await page.click("#theme");
  check(await page.evaluate(() => document.documentElement.dataset.theme) === "dark", "the theme button switches to dark");
  for (const v of views) {
    await view(page, v);
    await shot(page, `${cfg.mode}-${v}-1280-dark`);
  }
  await context.close();

  const phone = await newPage(browser, 390, 844, "light");
  await phone.page.goto(cfg.url + "/dashboard");
  await phone.page.waitForSelector("#live.on", { timeout: 10000 });
  for (const v of views) {
    await view(phone.page, v);
    await phone.page.waitForTimeout(300);
    const wide = await phone.page.evaluate(() => document.documentElement.scrollWidth);
    check(wide <= 391, `${v} fits 390 px (document ${wide} px wide)`);
    await shot(phone.page, `${cfg.mode}-${v}-390`);
  }
  await phone.context.close();

  check(summary.violations.length === 0, `no request left herd's origin (${summary.violations.join(", ")})`);
  check(summary.console_errors.length === 0, `no console error (${summary.console_errors.join(" | ")})`);
}

main().then(
  () => {
    console.log(JSON.stringify(summary));
  },
  (e) => {
    console.log(JSON.stringify(summary));
    console.error("dashboard check failed: " + e.message);
    process.exit(1);
  },
);
