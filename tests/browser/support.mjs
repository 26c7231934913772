// Helpers of the browser tests: the hub binary, free ports, bounded waits, Chromium.
import { spawn } from "node:child_process";
import { join, dirname } from "node:path";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { after } from "node:test";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = join(here, "..", "..");
export const BIN = process.env.STATECAST_BIN ?? join(REPO, "target", "debug", "statecast");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const OUTPUT = join(here, "output");
export const TIMEOUT = 10_000;

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a truthy value, failing after TIMEOUT. */
export async function until(what, check) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts the hub on `port` with `dataDir` (and `args`); resolves once /api/health answers. */
export async function startHub(port, dataDir, args = []) {
  const child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, ...args], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  try {
    await until("the hub to answer", async () => {
      if (child.exitCode !== null) throw new Error(`the hub exited with ${child.exitCode}`);
      try {
        return (await fetch(`http://127.0.0.1:${port}/api/health`)).ok;
      } catch {
        return false;
      }
    });
  } catch (e) {
    await stop(child);
    throw e;
  }
  return child;
}

/** `put(topic, state)`: a REST `PUT /api/state/{topic}` to the hub at `base`. */
export function putter(base) {
  return (topic, state) =>
    fetch(`${base}/api/state/${topic}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(state),
    });
}

/** SIGTERM to a child this test started; resolves once it has exited. */
export function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

/** Debian's Chromium, headless. */
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** What a test file starts (hub children, HTTP servers, one browser), all stopped after
 * its tests: push children and servers, and get the browser with `owned.browser()`. */
export function ownedForFile() {
  const owned = { children: [], servers: [], launched: null };
  owned.browser = async () => (owned.launched ??= await launch());
  after(async () => {
    await owned.launched?.close();
    await Promise.all(owned.children.map(stop));
    for (const s of owned.servers) s.close();
  });
  return owned;
}

/** The pixels of a PNG (a screenshot), decoded by Chromium in a blank page of `browser`:
 * `{ width, height, at(x, y) -> [r, g, b, a] }`. */
export async function decodePng(browser, png) {
  const page = await browser.newPage();
  try {
    const { width, height, rgba } = await page.evaluate(async (b64) => {
      const image = new Image();
      image.src = "data:image/png;base64," + b64;
      await image.decode();
      const canvas = document.createElement("canvas");
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(image, 0, 0);
      const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
      let binary = "";
      for (let i = 0; i < data.length; i += 0x8000) binary += String.fromCharCode(...data.subarray(i, i + 0x8000));
      return { width: canvas.width, height: canvas.height, rgba: btoa(binary) };
    }, png.toString("base64"));
    const data = Buffer.from(rgba, "base64");
    const at = (x, y) => {
      const i = (Math.round(y) * width + Math.round(x)) * 4;
      return [data[i], data[i + 1], data[i + 2], data[i + 3]];
    };
    return { width, height, at };
  } finally {
    await page.close();
  }
}
