// The JavaScript client on a page whose origin the hub refuses, in headless Chromium: the
// page (a static server on another port, so another origin) imports the client from the
// hub and connects. The client must say `origin_refused` (status, one error, a write's
// rejection) with the hub's hint to use `allowed_origins`, never `unreachable`/`polling`;
// with the page's origin in `allowed_origins` the same page connects.
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM) and the hub binary
// (target/debug/statecast, or STATECAST_BIN).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, ownedForFile, startHub } from "./support.mjs";

const owned = ownedForFile();

/** A page on its own port: another origin than the hub's. */
async function startSite() {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>elsewhere</title><p>a page on another site</p>");
  });
  owned.servers.push(server);
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return `http://127.0.0.1:${port}`;
}

/** Starts a hub whose config file holds `config`; returns its base URL. */
async function hubWith(config) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "statecast-origin-"));
  const file = join(dataDir, "statecast.toml");
  writeFileSync(file, config);
  owned.children.push(await startHub(port, dataDir, ["--config", file]));
  return `http://127.0.0.1:${port}`;
}

/** In the page: connects with the hub's own client, waits (bounded) for `want` or
 * `origin_refused`, tries a patch, and returns what the client said. */
function connectFromPage(page, hub, want) {
  return page.evaluate(
    async ({ hub, want }) => {
      const { connect } = await import(hub + "/statecast.js");
      const statuses = [];
      const errors = [];
      const client = connect(hub.replace("http", "ws") + "/ws", { backoffMin: 50, backoffMax: 200, pollAfterFailures: 1 });
      client.on("status", (s) => statuses.push(s));
      client.on("error", (e) => errors.push({ code: e.code, message: e.message }));
      const deadline = Date.now() + 8000;
      while (client.status !== want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      // A few more reconnect attempts: the status must stay where it is.
      const settle = Date.now() + 600;
      while (Date.now() < settle) await new Promise((r) => setTimeout(r, 20));
      let write;
      try {
        await client.patch("page/test", { from: location.origin });
        write = "ok";
      } catch (e) {
        write = { code: e.code, message: e.message };
      }
      const final = client.status;
      client.close();
      return { statuses, errors, write, final };
    },
    { hub, want },
  );
}

test("a page from a refused origin is told origin_refused, not unreachable", async () => {
  const site = await startSite();
  const hub = await hubWith("");
  const page = await (await owned.browser()).newPage();
  await page.goto(site + "/");
  const said = await connectFromPage(page, hub, "origin_refused");
  const seen = JSON.stringify(said);

  assert.equal(said.final, "origin_refused", seen);
  assert.ok(!said.statuses.includes("polling"), `it polled a hub that refuses it: ${seen}`);
  assert.ok(!said.statuses.includes("open"), seen);
  const refusals = said.errors.filter((e) => e.code === "origin_refused");
  assert.equal(refusals.length, 1, seen);
  assert.match(refusals[0].message, new RegExp(`add "${site}" to allowed_origins`), seen);
  assert.equal(said.write.code, "origin_refused", seen);
  assert.match(said.write.message, /allowed_origins/, seen);
  assert.equal((await fetch(`${hub}/api/state/page/test`)).status, 404, "the refused write changed state");
});

test("the same page connects and writes once its origin is allowed", async () => {
  const site = await startSite();
  const hub = await hubWith(`allowed_origins = ["${site}"]\n`);
  const page = await (await owned.browser()).newPage();
  await page.goto(site + "/");
  const said = await connectFromPage(page, hub, "open");
  const seen = JSON.stringify(said);

  assert.equal(said.final, "open", seen);
  assert.ok(!said.statuses.includes("origin_refused"), seen);
  assert.deepEqual(said.errors, [], seen);
  assert.equal(said.write, "ok", seen);
  assert.deepEqual((await (await fetch(`${hub}/api/state/page/test`)).json()).state, { from: site });
});
