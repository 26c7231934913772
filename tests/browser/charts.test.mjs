// The dashboard's history charts, in headless Chromium against the real hub: a topic given a
// known sequence of values, opened, shows a chart per numeric field whose data is the
// hub's `series` for the query the page made, drawn where uPlot says (pixels read back
// from a screenshot), extended live by a new write; the list shows a sparkline per numeric
// field; another range asks another step. A topic without history, and a hub without the
// history API, show no chart and no error.
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM) and the hub binary
// (target/debug/statecast, or STATECAST_BIN). `.ci/run` installs and builds both.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OUTPUT, decodePng, freePort, ownedForFile, startHub, until } from "./support.mjs";

const owned = ownedForFile();
/** Whether a pixel is the charts' line (LINE in crates/server/assets/charts.js, #2563eb)
 * drawn over at least half of it: antialiased on the white plot, its red falls from 255
 * towards 37 as the line covers more of it, its blue stays high. The min–max band (30 %
 * and 10 % of that colour) and the grey grid are not. */
const isLine = ([r, g, b]) => r <= 150 && g <= 180 && b >= 200 && b - r >= 80;
/** The step the page uses for its default range (15 min, at most 300 points): 3 s. */
const STEP_MS = 3000;

async function hub(config = "") {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "statecast-charts-"));
  const file = join(dir, "statecast.toml");
  writeFileSync(file, config);
  owned.children.push(await startHub(port, join(dir, "data"), ["--config", file]));
  const base = `http://127.0.0.1:${port}`;
  const put = async (topic, state) => {
    const r = await fetch(`${base}/api/state/${topic}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(state),
    });
    assert.equal(r.status, 200, await r.text());
  };
  return { base, put };
}

/** A page of its own context at `url`, once connected: what it says of errors (page
 * errors, console errors and warnings) in `problems`, the history requests it makes in
 * `asked`; `before(page)` runs before it opens. */
async function page(browser, url, before = async () => {}) {
  const context = await browser.newContext({ viewport: { width: 900, height: 1000 }, deviceScaleFactor: 1 });
  const p = await context.newPage();
  const problems = [], asked = [];
  p.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  p.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  p.on("request", (r) => { if (r.url().includes("/api/history/")) asked.push(r.url()); });
  await before(p);
  await p.goto(url);
  await until("status open", async () => (await p.locator("#status").textContent()) === "open");
  return { page: p, problems, asked };
}

const charts = (p) => p.evaluate(() => window.statecastCharts());

/** The hub's own answer to the query a chart made, as the chart's data (x in seconds). */
async function hubSeries(base, query, withBand) {
  const r = await fetch(base + query);
  assert.equal(r.status, 200, `${query}: ${r.status}`);
  const { points } = await r.json();
  const x = points.map((p) => p.t / 1000), avg = points.map((p) => p.avg);
  return withBand ? [x, avg, points.map((p) => p.min), points.map((p) => p.max)] : [x, avg];
}

/** Waits until the wall clock is in the next step: each value of the sequence gets its own
 * point (the data is being made, nothing is synchronised by it). */
async function nextStep() {
  const step = Math.floor(Date.now() / STEP_MS);
  await until("the next step", () => Math.floor(Date.now() / STEP_MS) > step);
}

/** Screenshots a chart's plotting area and checks that its line is drawn through every
 * point uPlot says it drew, and that the plot is neither blank nor all line. */
async function checkDrawn(browser, plot, drawn, name) {
  const png = await plot.locator(".u-over").screenshot({ path: join(OUTPUT, name) });
  const image = await decodePng(browser, png);
  // A point on the plot's left or right edge is not checked: a steep segment ending there
  // is clipped to a faint sliver (seen: the newest point of a sparkline, at x = width - 1).
  // The middle of each segment is checked too (uPlot draws straight segments): a sparkline
  // of two points has both on the edges.
  const middles = drawn.slice(1).map(([x, y], i) => [(x + drawn[i][0]) / 2, (y + drawn[i][1]) / 2]);
  const inside = [...drawn, ...middles]
    .filter(([x, y]) => x >= 1.5 && x <= image.width - 1.5 && y >= 0 && y <= image.height);
  assert.ok(inside.length > 0, `${name}: points drawn inside the plot (${JSON.stringify(drawn)})`);
  for (const [x, y] of inside) {
    let hit = false;
    for (let dx = -3; dx <= 3 && !hit; dx++) {
      for (let dy = -3; dy <= 3 && !hit; dy++) {
        const px = x + dx, py = y + dy;
        if (px >= 0 && py >= 0 && px < image.width && py < image.height) hit = isLine(image.at(px, py));
      }
    }
    assert.ok(hit, `${name}: the line passes through the point drawn at (${x.toFixed(1)}, ${y.toFixed(1)})`);
  }
  let line = 0;
  for (let y = 0; y < image.height; y++) for (let x = 0; x < image.width; x++) if (isLine(image.at(x, y))) line++;
  const share = line / (image.width * image.height);
  assert.ok(line >= 20 && share < 0.2, `${name}: a line, not a blank or filled plot (${line} line pixels, ${(share * 100).toFixed(1)} %)`);
}

test("an opened topic charts each numeric field from its series, live", async () => {
  mkdirSync(OUTPUT, { recursive: true });
  const { base, put } = await hub();
  const topic = "test/charts/mic1";
  const sequence = [80, 20, 65, 40, 90];
  for (const [i, battery] of sequence.entries()) {
    if (i > 0) await nextStep();
    await put(topic, { battery, rf: { level: -battery / 2, name: "ch" + i }, on: i % 2 === 0 });
  }
  // The hub's own series holds the sequence (each value the `last` of its step; steps
  // start at multiples of the step, as the page asks them).
  const from = Math.floor((Date.now() - 60_000) / STEP_MS) * STEP_MS;
  const since = await (await fetch(`${base}/api/history/${topic}?field=/battery&step=3s&from=${from}`)).json();
  const lasts = since.points.map((p) => p.last).filter((v, i, all) => i === 0 || v !== all[i - 1]);
  assert.deepEqual(lasts, sequence);

  const browser = await owned.browser();
  const { page: p, problems } = await page(browser, `${base}/#topic=${encodeURIComponent(topic)}`);
  await until("the charts", async () => {
    const c = (await charts(p)).filter((c) => c.kind === "chart");
    return c.length === 2 && c.every((c) => c.loaded);
  });
  await p.screenshot({ path: join(OUTPUT, "charts-detail.png"), fullPage: true });

  // One chart per numeric field (booleans and strings are not), each with the hub's series.
  const shown = (await charts(p)).filter((c) => c.kind === "chart");
  assert.deepEqual(shown.map((c) => c.field), ["/battery", "/rf/level"]);
  for (const c of shown) {
    assert.match(c.query, /[?&]step=3s&/);
    assert.deepEqual(c.data, await hubSeries(base, c.query, true), `${c.field}: the hub's series`);
    assert.ok(c.data[0].length >= sequence.length, `${c.field}: a point per step`);
  }
  assert.deepEqual(await p.locator("#charts .chart h3").allTextContents(), ["/battery", "/rf/level"]);
  assert.equal(await p.locator("#ranges button[aria-pressed=true]").textContent(), "15 min");
  const battery = p.locator('#charts .chart[data-field="/battery"]');
  await checkDrawn(browser, battery, shown[0].drawn, "charts-battery.png");

  // A new write extends the line at the right edge, where it is drawn too.
  const before = shown[0].data[0].length;
  await put(topic, { battery: 5, rf: { level: -2.5, name: "ch9" }, on: true });
  await until("the live value", async () => {
    const [c] = (await charts(p)).filter((c) => c.kind === "chart" && c.field === "/battery");
    return c.data[1].at(-1) === 5 && c.data[0].length === before + 1;
  });
  const [live] = (await charts(p)).filter((c) => c.kind === "chart" && c.field === "/battery");
  assert.ok(live.data[0].at(-1) * 1000 >= Number(new URL(base + live.query).searchParams.get("to")));
  assert.ok(live.drawn.at(-1)[0] > live.plot.width * 0.97, "the newest point at the right edge");
  assert.ok(live.x[1] === live.data[0].at(-1) && Math.abs(live.x[1] - live.x[0] - 15 * 60) < 1e-3,
    `the chart shows the 15 minutes up to it (${live.x})`);
  await checkDrawn(browser, battery, live.drawn, "charts-battery-live.png");
  assert.ok((await p.locator("#detail pre").textContent()).includes('"battery": 5'));

  // Another range: another step (1 h at most 300 points: 15 s), again the hub's series.
  await p.click('#ranges button[data-range="1h"]');
  await until("the 1 h charts", async () => {
    const c = (await charts(p)).filter((c) => c.kind === "chart");
    return c.length === 2 && c.every((c) => c.loaded && /[?&]step=15s&/.test(c.query));
  });
  for (const c of (await charts(p)).filter((c) => c.kind === "chart")) {
    assert.deepEqual(c.data, await hubSeries(base, c.query, true), `${c.field} over 1 h`);
  }
  assert.ok(new URLSearchParams(new URL(p.url()).hash.slice(1)).get("range") === "1h");

  // The list: a sparkline per numeric field of the card, from the last 15 minutes.
  await p.click("#back");
  const card = p.locator(`section.topic[data-topic="${topic}"]`);
  await until("the sparklines", async () => {
    const s = (await charts(p)).filter((c) => c.kind === "spark" && c.topic === topic);
    return s.length === 2 && s.every((c) => c.loaded);
  });
  assert.deepEqual(await card.locator(".spark .label").allTextContents(), ["battery", "rf/level"]);
  const sparks = (await charts(p)).filter((c) => c.kind === "spark");
  for (const s of sparks) assert.deepEqual(s.data, await hubSeries(base, s.query, false), `${s.field} sparkline`);
  // A sparkline extends live too (the topic is seconds old: one or two 15 s steps so far).
  const battery15 = sparks.find((s) => s.field === "/battery");
  await put(topic, { battery: 33, rf: { level: -16.5, name: "ch10" }, on: false });
  await until("the live value in the sparkline", async () => {
    const s = (await charts(p)).find((c) => c.kind === "spark" && c.field === "/battery");
    return s.loaded && s.data[1].at(-1) === 33 && s.data[0].length === battery15.data[0].length + 1;
  });
  const spark = (await charts(p)).find((c) => c.kind === "spark" && c.field === "/battery");
  assert.deepEqual(spark.data.map((s) => s.slice(0, -1)), battery15.data, "the series, then the live value");
  // The card's highlight of the change (yellow, fading) is over: the line is on white.
  await until("the highlight to end", async () => !(await card.getAttribute("class")).split(" ").includes("flash"));
  await checkDrawn(browser, card.locator('.spark[data-field="/battery"]'), spark.drawn, "charts-spark.png");
  await p.screenshot({ path: join(OUTPUT, "charts-list.png"), fullPage: true });
  assert.deepEqual(problems, []);
});

test("no history, no chart: a topic that keeps none, and a hub without the history API", async () => {
  const { base, put } = await hub('[[topics]]\nmatch = "nohist/#"\nhistory = "0"\n');
  await put("nohist/dev1", { battery: 50, temp: 21.5 });
  await put("kept/dev1", { battery: 50 });
  const browser = await owned.browser();

  // The hub keeps none for this topic: one request (a 404), no chart, a note.
  const { page: p, problems, asked } = await page(browser, `${base}/#topic=nohist/dev1`);
  await until("the note", async () => (await p.locator("#nohistory").textContent()) === "The hub keeps no history for this topic.");
  assert.equal(await p.locator("#charts .chart").count(), 0);
  assert.ok((await p.locator("#detail pre").textContent()).includes('"battery": 50'), "the state shows");
  // Back in the list, its card gets no sparkline and asks nothing more; a kept one does.
  await p.click("#back");
  await until("the kept topic's sparkline", async () =>
    (await charts(p)).some((c) => c.kind === "spark" && c.topic === "kept/dev1" && c.loaded));
  assert.equal(await p.locator('section.topic[data-topic="nohist/dev1"] .spark').count(), 0);
  assert.equal(asked.filter((u) => u.includes("/api/history/nohist/")).length, 1, asked.join("\n"));
  // The browser itself logs the one 404; the page adds nothing.
  assert.ok(problems.every((m) => m.includes("404")) && problems.length <= 1, problems.join("\n"));

  // An older hub (its OpenAPI description has no history): nothing asked, no chart.
  const older = await page(browser, `${base}/#topic=kept/dev1`, (q) =>
    q.route("**/api/openapi.json", async (route) => {
      const doc = await (await route.fetch()).json();
      for (const path of Object.keys(doc.paths)) if (path.startsWith("/api/history/")) delete doc.paths[path];
      await route.fulfill({ json: doc });
    }));
  const q = older.page;
  await until("the older hub's note", async () =>
    (await q.locator("#nohistory").textContent()) === "This hub keeps no history (it has no history API).");
  await q.click("#back");
  await until("the cards", async () => (await q.locator("section.topic").count()) === 2);
  assert.ok(await q.locator('section.topic[data-topic="kept/dev1"]').isVisible());
  assert.equal(await q.locator(".spark, .chart").count(), 0);
  assert.deepEqual(older.asked, []);
  assert.deepEqual(older.problems, []);
});
