// The dashboard marks a stale topic, in headless Chromium against the real hub with a
// `stale_after` of 1 s: a topic that goes silent is dimmed and badged "stale since
// HH:MM:SS" (the time of its last write), an unchanged write clears the mark, and a page
// opened while the topic is stale badges it "stale · last change HH:MM:SS".
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM) and the hub binary
// (target/debug/statecast, or STATECAST_BIN). `.ci/run` installs and builds both.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OUTPUT, freePort, ownedForFile, putter, startHub, until } from "./support.mjs";

const owned = ownedForFile();

test("the dashboard dims a stale topic and says since when", async () => {
  mkdirSync(OUTPUT, { recursive: true });
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "statecast-dashboard-stale-"));
  const config = join(dir, "statecast.toml");
  writeFileSync(config, '[[topics]]\nmatch = "railhub/+"\nstale_after = "1s"\n');
  const base = `http://127.0.0.1:${port}`;
  owned.children.push(await startHub(port, join(dir, "data"), ["--config", config]));
  const put = putter(base);

  const browser = await owned.browser();
  // The badge shows the time in the browser's time zone: UTC here, as the hub's times.
  const context = await browser.newContext({ timezoneId: "UTC", viewport: { width: 390, height: 800 } });
  const page = await context.newPage();
  await page.goto(base + "/");
  await until("status open", async () => (await page.locator("#status").textContent()) === "open");

  // Written while the page watches: it turns stale in front of it.
  assert.equal((await put("railhub/esp32-01", { outputs: [true, false], uptime_s: 5 })).status, 200);
  assert.equal((await put("demo/hello", { hi: 1 })).status, 200);
  const { time } = await (await fetch(`${base}/api/state/railhub/esp32-01`)).json();
  const card = page.locator('section.topic[data-topic="railhub/esp32-01"]');
  const badge = card.locator(".badge");
  await until("the card", async () => (await card.count()) === 1);
  await until("the stale mark", async () => (await card.getAttribute("class"))?.split(" ").includes("stale"));
  assert.equal(await badge.textContent(), `stale since ${time.slice(11, 19)}`);
  assert.ok(await badge.isVisible(), "the badge shows");
  const opacity = await card.locator("pre").evaluate((el) => Number(getComputedStyle(el).opacity));
  assert.ok(opacity < 0.7, `the state is dimmed (opacity ${opacity})`);
  assert.ok((await card.locator("pre").textContent()).includes('"uptime_s": 5'), "the last state stays");

  // A topic no policy gives a stale_after stays unmarked.
  const other = page.locator('section.topic[data-topic="demo/hello"]');
  await until("the other card", async () => (await other.count()) === 1);
  assert.ok(!(await other.getAttribute("class"))?.split(" ").includes("stale"));
  assert.ok(!(await other.locator(".badge").isVisible()), "no badge on a fresh topic");
  await page.screenshot({ path: join(OUTPUT, "dashboard-stale.png"), fullPage: true });

  // The device is back (its same state again): the mark goes, the badge hides.
  assert.equal((await put("railhub/esp32-01", { outputs: [true, false], uptime_s: 5 })).status, 200);
  await until("the mark to go", async () => !(await card.getAttribute("class"))?.split(" ").includes("stale"));
  assert.ok(!(await badge.isVisible()), "the badge hides");
  assert.equal(await card.locator(".rev").textContent(), "rev 1", "an unchanged write makes no rev");

  // A page opened while the topic is stale: the snapshot says stale, not since when, so the
  // page shows the time of the last change from REST (the unchanged write above is no change).
  await until("stale again", async () => (await card.getAttribute("class"))?.split(" ").includes("stale"));
  const fresh = await context.newPage();
  await fresh.goto(base + "/");
  const later = fresh.locator('section.topic[data-topic="railhub/esp32-01"]');
  const lastChange = `stale · last change ${time.slice(11, 19)}`;
  await until("the stale card on a new page", async () => (await later.locator(".badge").textContent()) === lastChange);
  assert.ok(await later.locator(".badge").isVisible());
  assert.equal(await later.locator(".badge").getAttribute("title"),
    `no write within its stale_after; its state last changed at ${time}`);
  await fresh.screenshot({ path: join(OUTPUT, "dashboard-stale-opened-later.png"), fullPage: true });
  await context.close();
});
