// examples/led-board in headless Chromium: the page written for Flask-SocketIO (socket.io-client
// from npm, served by a static server on another port) against the real hub with the
// example's config and the example's board simulator. The page shows the board's state,
// its buttons send commands through the [[socketio.on]] mappings to the board, a refusal
// is shown, and after a hub restart the page reconnects by itself.
//
// Needs Debian's chromium, the hub binary, python3, and `npm ci` in examples/led-board
// (`.ci/run` does all of it).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, normalize, extname } from "node:path";
import { OUTPUT, REPO, TIMEOUT, freePort, launch, startHub as startHubWith, stop, until } from "./support.mjs";

const EXAMPLE = join(REPO, "examples", "led-board");

/** The board simulator on an ephemeral port; resolves with its port once it listens. */
function startBoard(hubBase) {
  const child = spawn("python3", [join(EXAMPLE, "board.py"), "--port", "0", "--hub", hubBase], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`the board did not start: ${out}`)), TIMEOUT);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/commands on http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`the board exited (${code}): ${out}`)));
  });
}

/** The example's config with the board's and the page's ports of this test. */
function exampleConfig(dir, boardPort, pagePort) {
  const text = readFileSync(join(EXAMPLE, "statecast.toml"), "utf8")
    .replaceAll("127.0.0.1:8090", `127.0.0.1:${boardPort}`)
    .replaceAll("127.0.0.1:8000", `127.0.0.1:${pagePort}`)
    .replaceAll("localhost:8000", `localhost:${pagePort}`);
  const file = join(dir, "statecast.toml");
  writeFileSync(file, text);
  return file;
}

async function startHub(port, dataDir, config) {
  const child = await startHubWith(port, dataDir, ["--config", config]);
  children.push(child);
  return child;
}

/** The example's folder over HTTP, as `python3 -m http.server` serves it in its README. */
async function startStatic(port) {
  const types = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const file = join(EXAMPLE, path === "/" ? "index.html" : path);
    if (!file.startsWith(EXAMPLE)) return res.writeHead(403).end();
    try {
      const body = await readFile(file);
      res.writeHead(200, { "Content-Type": types[extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

const children = [];
let browser;
let pages;
after(async () => {
  await browser?.close();
  pages?.close();
  await Promise.all(children.map(stop));
});

test("the LED board page runs unchanged on the hub's Socket.IO endpoint", async () => {
  mkdirSync(OUTPUT, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "statecast-led-board-"));
  const [hubPort, pagePort] = [await freePort(), await freePort()];
  const base = `http://127.0.0.1:${hubPort}`;
  const boardPort = await startBoard(base);
  const config = exampleConfig(dir, boardPort, pagePort);
  let hub = await startHub(hubPort, join(dir, "data"), config);
  pages = await startStatic(pagePort);
  const state = async (topic) => (await (await fetch(`${base}/api/state/${topic}`)).json()).state;
  await until("the board's state in the hub", async () => (await fetch(`${base}/api/state/ledboard/carousel`)).ok);

  browser = await launch();
  const page = await browser.newPage({ viewport: { width: 800, height: 700 } });
  const failures = [];
  page.on("pageerror", (e) => failures.push(e.message));
  await page.goto(`http://127.0.0.1:${pagePort}/?hub=${encodeURIComponent(base)}`);

  const text = (selector) => page.locator(selector).textContent();
  await until("connected", async () => (await text("#status")) === "connected");
  await until("the current app", async () => (await text("#matrix")) === "CLOCK");
  await until("the apps", async () => (await page.locator("#apps button").count()) === 4);
  await until("the settings", async () => (await text("#brightness-value")) === "60%");

  // Keep the carousel from moving on during the test: through the page, to the board.
  await page.locator("#carousel-enabled").uncheck();
  await until("the carousel off", async () => (await state("ledboard/carousel")).enabled === false);

  // A button: set_app → the board → its new state → every page.
  await page.click('#apps button[data-app="snake"]');
  await until("SNAKE on the matrix", async () => (await text("#matrix")) === "SNAKE");
  assert.equal(await page.locator("#apps button.current").getAttribute("data-app"), "snake");
  await page.locator("#night-mode").check();
  await until("night mode", async () => (await state("ledboard/settings")).night_mode === true);
  await until("the matrix dimmed", async () => page.locator("#matrix.night").count());

  // The board refuses a bad value; the page shows why, and nothing changed.
  await page.fill("#carousel-interval", "1");
  await page.locator("#carousel-interval").dispatchEvent("change");
  await until("the refusal", async () => (await text("#error")).includes("update_carousel: the device answered 400"));
  assert.equal((await state("ledboard/carousel")).interval_s, 15);
  await until("the field back at 15", async () => (await page.inputValue("#carousel-interval")) === "15");
  await page.screenshot({ path: join(OUTPUT, "led-board.png"), fullPage: true });

  // The hub restarts: the page notices, reconnects by itself and shows what changed.
  await stop(hub);
  await until("disconnected", async () => (await text("#status")) !== "connected");
  hub = await startHub(hubPort, join(dir, "data"), config);
  const set = await fetch(`http://127.0.0.1:${boardPort}/api/set_app`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "set_app", args: { app: "weather" } }),
  });
  assert.equal(set.status, 200);
  await until("connected again", async () => (await text("#status")) === "connected");
  await until("WEATHER on the matrix", async () => (await text("#matrix")) === "WEATHER");
  assert.deepEqual(failures, []);
});
