// The dashboard at `/`, in headless Chromium against the real hub: a REST write shows up in
// place, and the status pill shows a lost connection and its recovery.
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM) and the hub binary
// (target/debug/statecast, or STATECAST_BIN). `.ci/run` installs and builds both.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OUTPUT, freePort, launch, putter, startHub, stop as stopHub, until } from "./support.mjs";

const children = [];
let browser;
after(async () => {
  await browser?.close();
  await Promise.all(children.map(stopHub));
});

test("the dashboard shows writes in place and the connection's state", async () => {
  mkdirSync(OUTPUT, { recursive: true });
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "statecast-dashboard-"));
  const base = `http://127.0.0.1:${port}`;
  let hub = await startHub(port, dataDir);
  children.push(hub);

  const put = putter(base);
  assert.equal((await put("demo/railhub/esp32-01", { uptime: 1, outputs: [0, 1] })).status, 200);

  browser = await launch();
  const page = await browser.newPage({ viewport: { width: 390, height: 800 } }); // a phone
  await page.goto(base + "/");

  const status = () => page.locator("#status").textContent();
  await until("status open", async () => (await status()) === "open");
  const card = page.locator('section.topic[data-topic="demo/railhub/esp32-01"]');
  await until("the topic", async () => (await card.locator("pre").textContent())?.includes(`"uptime": 1`));

  // A REST write appears in place, with its rev.
  const patch = await fetch(`${base}/api/state/demo/railhub/esp32-01`, {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ uptime: 2 }),
  });
  assert.equal(patch.status, 200);
  await until("the new value", async () => (await card.locator("pre").textContent())?.includes('"uptime": 2'));
  assert.equal(await card.locator(".rev").textContent(), "rev 2");
  assert.equal(await page.locator('section.topic').count(), 1);

  // The filter hides what does not match.
  assert.equal((await put("demo/micboard/SHURE001", { battery: 80 })).status, 200);
  await until("the second topic", async () => (await page.locator("section.topic").count()) === 2);
  await page.fill("#filter", "micboard/+");
  await until("filtering", async () => !(await card.isVisible()));
  await page.fill("#filter", "");
  await page.screenshot({ path: join(OUTPUT, "dashboard.png"), fullPage: true });

  // The hub goes away: the status says so; it comes back: the status recovers and the
  // change made meanwhile is shown.
  await stopHub(hub);
  await until("status not open", async () => (await status()) !== "open");
  await page.screenshot({ path: join(OUTPUT, "dashboard-disconnected.png") });
  hub = await startHub(port, dataDir);
  children.push(hub);
  assert.equal((await put("demo/micboard/SHURE001", { battery: 79 })).status, 200);
  await until("status open again", async () => (await status()) === "open");
  const mic = page.locator('section.topic[data-topic="demo/micboard/SHURE001"]');
  await until("the change made while away", async () => (await mic.locator("pre").textContent())?.includes('"battery": 79'));
});
