// The dashboard's list, in headless Chromium against the real hub: each card says when it
// was last updated and keeps that ticking, a removed topic leaves the list, the filter's
// example is a pattern that matches this hub's topics, and a filter that matches nothing
// says so.
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM) and the hub binary
// (target/debug/statecast, or STATECAST_BIN). `.ci/run` installs and builds both.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OUTPUT, freePort, ownedForFile, putter, startHub, stop, until } from "./support.mjs";

const owned = ownedForFile();

test("cards say when they changed, removed topics go, the filter says when nothing matches", async () => {
  mkdirSync(OUTPUT, { recursive: true });
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "statecast-dashboard-list-"));
  const base = `http://127.0.0.1:${port}`;
  owned.children.push(await startHub(port, join(dir, "data")));
  const put = putter(base);
  assert.equal((await put("micboard/SHURE001", { battery: 80 })).status, 200);

  const browser = await owned.browser();
  const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  await page.goto(base + "/");
  const card = (topic) => page.locator(`section.topic[data-topic="${topic}"]`);
  await until("the first card", async () => (await card("micboard/SHURE001").count()) === 1);

  // The filter's example names a pattern of this hub, and it matches.
  const example = await page.locator("#filter").getAttribute("placeholder");
  assert.ok(example.includes("micboard/#"), example);
  await page.locator("#filter").fill("micboard/#");
  assert.ok(await card("micboard/SHURE001").isVisible());
  assert.ok(!(await page.locator("#nomatch").isVisible()));
  // A filter that matches nothing says so.
  await page.locator("#filter").fill("railhub/+");
  await until("the no-match message", () => page.locator("#nomatch").isVisible());
  assert.equal(await page.locator("#nomatch code").textContent(), "railhub/+");
  await page.locator("#filter").fill("");

  // A change seen here: "updated N s ago", ticking.
  assert.equal((await put("micboard/SHURE001", { battery: 79 })).status, 200);
  const ago = card("micboard/SHURE001").locator(".ago");
  await until("updated 0 s ago", async () => (await ago.textContent()) === "updated 0 s ago");
  await until("the clock to tick", async () => (await ago.textContent()) === "updated 1 s ago");

  // A removed topic leaves the list; the count follows.
  assert.equal((await put("demo/hello", { hi: 1 })).status, 200);
  await until("two topics", async () => (await page.locator("#topics").textContent()) === "2");
  await fetch(`${base}/api/state/demo/hello`, { method: "DELETE" });
  await until("the removed card gone", async () => (await card("demo/hello").count()) === 0);
  assert.equal(await page.locator("#topics").textContent(), "1");
  await page.screenshot({ path: join(OUTPUT, "dashboard-list.png"), fullPage: true });
});

test("a banner says when the hub cannot be reached, and goes when it is back", async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "statecast-dashboard-banner-"));
  const base = `http://127.0.0.1:${port}`;
  let hub = await startHub(port, join(dir, "data"));
  owned.children.push(hub);
  const browser = await owned.browser();
  const page = await browser.newPage({ viewport: { width: 900, height: 500 } });
  await page.goto(base + "/");
  await until("status open", async () => (await page.locator("#status").textContent()) === "open");
  assert.ok(!(await page.locator("#offline").isVisible()), "no banner while connected");

  await stop(hub);
  await until("the banner", () => page.locator("#offline").isVisible());
  assert.match(await page.locator("#offline").textContent(), /cannot be reached/);
  await page.screenshot({ path: join(OUTPUT, "dashboard-offline.png") });

  hub = await startHub(port, join(dir, "data"));
  owned.children.push(hub);
  await until("status open again", async () => (await page.locator("#status").textContent()) === "open");
  assert.ok(!(await page.locator("#offline").isVisible()), "the banner goes");
});

test("each source's health shows as an online or offline badge", async () => {
  // A device that answers, and a port where nothing listens.
  const device = http.createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ uptime: 1 }));
  });
  await new Promise((resolve) => device.listen(0, "127.0.0.1", resolve));
  owned.servers.push(device);
  const nothing = await freePort();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "statecast-dashboard-sources-"));
  const config = join(dir, "statecast.toml");
  writeFileSync(config, `
[[source]]
name = "board"
type = "http_poll"
url = "http://127.0.0.1:${device.address().port}/status"
topic = "rail/board"

[[source]]
name = "gone"
type = "http_poll"
url = "http://127.0.0.1:${nothing}/status"
topic = "rail/gone"
`);
  owned.children.push(await startHub(port, join(dir, "data"), ["--config", config]));
  const browser = await owned.browser();
  const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
  await page.goto(`http://127.0.0.1:${port}/`);
  const badge = (name) => page.locator(`section.topic[data-topic="_sources/${name}"] .health`);
  await until("the online badge", async () => (await badge("board").getAttribute("data-status")) === "online");
  assert.match(await badge("board").textContent(), /^online · \d+ ms$/);
  await until("the offline badge", async () => (await badge("gone").getAttribute("data-status")) === "offline");
  assert.match(await badge("gone").textContent(), /^offline · .+/);
  assert.ok(await badge("gone").isVisible());
  await page.screenshot({ path: join(OUTPUT, "dashboard-sources.png"), fullPage: true });
});
