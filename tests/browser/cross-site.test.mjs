// Cross-site writes in headless Chromium against the real hub without auth: a page from
// another origin (a static server on another port) sends the "simple requests" any page may
// send without asking (`fetch(..., {mode: "no-cors"})` with a Blob body, a form-style
// text/plain POST) and a state PUT; none of them reaches the command's device or changes
// state. The hub's own page (same origin) still writes and commands.
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM) and the hub binary
// (target/debug/statecast, or STATECAST_BIN).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, launch, startHub, stop, until } from "./support.mjs";

const children = [];
const servers = [];
let browser;
after(async () => {
  await browser?.close();
  await Promise.all(children.map(stop));
  for (const s of servers) s.close();
});

/** The device behind the command route, counting the commands it gets, and the foreign
 * site's page: one server, on its own port (so another origin than the hub's). */
async function startDeviceAndSite() {
  const device = { commands: 0 };
  const server = createServer((req, res) => {
    if (req.url.startsWith("/cmd")) {
      device.commands += 1;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end('{"rebooted":true}');
    }
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>elsewhere</title><p>a page on another site</p>");
  });
  servers.push(server);
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { device, site: `http://127.0.0.1:${port}` };
}

test("a page from another origin cannot command, publish or write state", async () => {
  const { device, site } = await startDeviceAndSite();
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "statecast-cross-site-"));
  const config = join(dataDir, "statecast.toml");
  writeFileSync(config, `[[route]]\ntarget = "dev/+"\ntype = "http"\nurl = "${site}/cmd"\n`);
  const hub = `http://127.0.0.1:${port}`;
  children.push(await startHub(port, dataDir, ["--config", config]));
  const refusedForbidden = async () => {
    const text = await (await fetch(`${hub}/metrics`)).text();
    return Number(text.match(/^statecast_refused_forbidden_total (\d+)/m)?.[1] ?? NaN);
  };
  const before = await refusedForbidden();

  browser = await launch();
  const page = await browser.newPage();
  await page.goto(site + "/");
  const outcomes = await page.evaluate(async (hub) => {
    const json = JSON.stringify({ name: "reboot", args: {} });
    const attempts = {
      "no-cors command, Blob body": () =>
        fetch(hub + "/api/commands/dev/1", { method: "POST", mode: "no-cors", body: new Blob([json]) }),
      "no-cors command, text/plain": () =>
        fetch(hub + "/api/commands/dev/1", {
          method: "POST",
          mode: "no-cors",
          headers: { "content-type": "text/plain" },
          body: json,
        }),
      "no-cors event": () =>
        fetch(hub + "/api/events/dev/1", { method: "POST", mode: "no-cors", body: new Blob(['{"x":1}']) }),
      "state PUT": () =>
        fetch(hub + "/api/state/dev/1", {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body: '{"owned":true}',
        }),
    };
    const out = {};
    for (const [what, attempt] of Object.entries(attempts)) {
      try {
        const res = await attempt();
        out[what] = res.type === "opaque" ? "opaque" : res.status;
      } catch (e) {
        out[what] = `refused by the browser: ${e.message}`;
      }
    }
    return out;
  }, hub);

  // The three no-cors requests reached the hub (the browser sent them: it hides only the
  // answer) and were refused there; the PUT was stopped by CORS before it was sent.
  assert.equal(outcomes["no-cors command, Blob body"], "opaque", JSON.stringify(outcomes));
  await until("the hub to refuse the three simple requests", async () => (await refusedForbidden()) - before >= 3);
  assert.equal(device.commands, 0, "the device got a command from another site");
  assert.equal((await fetch(`${hub}/api/state/dev/1`)).status, 404, "the state was written");

  // The hub's own page may write and command (same origin).
  await page.goto(hub + "/");
  const own = await page.evaluate(async () => {
    const put = await fetch("/api/state/dev/1", {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: '{"mine":true}',
    });
    const command = await fetch("/api/commands/dev/1", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"name":"reboot"}',
    });
    return [put.status, command.status];
  });
  assert.deepEqual(own, [200, 200]);
  assert.equal(device.commands, 1);
  assert.deepEqual((await (await fetch(`${hub}/api/state/dev/1`)).json()).state, { mine: true });
});
