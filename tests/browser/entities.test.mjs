// The dashboard shows and operates entities, in headless Chromium against the real hub: a
// topic's card shows each entity that shows it with its value and unit, a switch toggles,
// a number is set, an option chosen and a button pressed, each reaching the device behind
// the hub's route (an HTTP server run here) with its args, and a refusal is shown.
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM) and the hub binary
// (target/debug/statecast, or STATECAST_BIN). `.ci/run` installs and builds both.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OUTPUT, freePort, ownedForFile, putter, startHub, until } from "./support.mjs";

const owned = ownedForFile();

test("the dashboard shows entities with their units and operates them", async () => {
  mkdirSync(OUTPUT, { recursive: true });
  // The device: every command is received; `reboot` is refused.
  const received = [];
  const device = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      received.push({ url: req.url, body: JSON.parse(body) });
      res.setHeader("content-type", "application/json");
      res.statusCode = req.url === "/cmd/reboot" ? 409 : 200;
      res.end(JSON.stringify(res.statusCode === 200 ? { ok: true } : { error: "busy now" }));
    });
  });
  await new Promise((resolve) => device.listen(0, "127.0.0.1", resolve));
  owned.servers.push(device);

  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "statecast-dashboard-entities-"));
  const config = join(dir, "statecast.toml");
  writeFileSync(config, `
[[route]]
target = "rail/+"
type = "http"
url = "http://127.0.0.1:${device.address().port}/cmd/{name}"
body = "{args}"

[[entity]]
key = "light"
name = "Station light"
platform = "switch"
topic = "rail/board"
value = "/outputs/0"
command = { target = "rail/board", name = "switch", args = { output = 0, on = "{value}" } }

[[entity]]
key = "blink"
name = "Blink"
platform = "number"
topic = "rail/board"
value = "/interval"
min = 0
max = 5000
step = 50
unit = "ms"
command = { target = "rail/board", name = "set_interval", args = { ms = "{value}" } }

[[entity]]
key = "mode"
name = "Mode"
platform = "select"
topic = "rail/board"
value = "/mode"
options = ["auto", "manual"]
command = { target = "rail/board", name = "set_mode", args = { mode = "{value}" } }

[[entity]]
key = "reboot"
name = "Reboot"
platform = "button"
topic = "rail/board"
command = { target = "rail/board", name = "reboot" }

[[entity]]
key = "wifi"
name = "Wi-Fi"
platform = "sensor"
topic = "rail/board"
value = "/wifi/rssi"
unit = "dBm"
`);
  const base = `http://127.0.0.1:${port}`;
  owned.children.push(await startHub(port, join(dir, "data"), ["--config", config]));
  const put = putter(base);
  assert.equal((await put("rail/board", { outputs: [false, true], interval: 250, mode: "auto", wifi: { rssi: -61 } })).status, 200);

  const browser = await owned.browser();
  const page = await browser.newPage({ viewport: { width: 900, height: 800 } });
  await page.goto(base + "/");
  const card = page.locator('section.topic[data-topic="rail/board"]');
  const entity = (key) => card.locator(`.entity[data-key="${key}"]`);
  await until("five entities on the card", async () => (await card.locator(".entity").count()) === 5);
  assert.equal(await entity("wifi").locator(".evalue").textContent(), "-61 dBm");
  assert.equal(await entity("blink").locator(".evalue").textContent(), "250 ms");
  assert.equal(await entity("light").locator(".ename").textContent(), "Station light");
  assert.equal(await entity("light").locator("button.toggle").getAttribute("aria-pressed"), "false");

  // Operated: each reaches the device with its args, {value} filled in.
  await entity("light").locator("button.toggle").click();
  await until("the switch command", () => received.length === 1);
  assert.deepEqual(received[0], { url: "/cmd/switch", body: { output: 0, on: true } });
  await entity("blink").locator("input").fill("1000");
  await entity("blink").locator("input").press("Enter");
  await until("the number command", () => received.length === 2);
  assert.deepEqual(received[1], { url: "/cmd/set_interval", body: { ms: 1000 } });
  await entity("mode").locator("select").selectOption("manual");
  await until("the select command", () => received.length === 3);
  assert.deepEqual(received[2], { url: "/cmd/set_mode", body: { mode: "manual" } });
  await entity("reboot").locator("button").click();
  await until("the button command", () => received.length === 4);
  assert.deepEqual(received[3], { url: "/cmd/reboot", body: {} });
  // The device refused: the entity says so.
  await until("the refusal shown", async () => (await entity("reboot").locator(".eerror").textContent()) !== "");

  // The device's new state comes back: the switch shows it, live.
  assert.equal((await put("rail/board", { outputs: [true, true], interval: 1000, mode: "manual", wifi: { rssi: -60 } })).status, 200);
  await until("the switch on", async () =>
    (await entity("light").locator("button.toggle").getAttribute("aria-pressed")) === "true");
  assert.equal(await entity("wifi").locator(".evalue").textContent(), "-60 dBm");
  await page.screenshot({ path: join(OUTPUT, "dashboard-entities.png"), fullPage: true });

  // A deleted topic leaves the list, and its entities with it; the descriptions stay.
  await fetch(`${base}/api/state/rail/board`, { method: "DELETE" });
  await until("the card gone", async () => (await card.count()) === 0);
  assert.equal(await page.locator('section.topic[data-topic="_entities/light"]').count(), 1);
});
