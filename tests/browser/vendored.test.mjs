// The dashboard's chart library as the hub embeds it (crates/server/assets/uplot/) is the
// npm package pinned in this folder's package-lock.json, byte for byte, with its licence.
// To move to another version: `npm install --save-exact uplot@X` here, then copy
// node_modules/uplot/{dist/uPlot.iife.min.js,dist/uPlot.min.css,LICENSE} there.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "./support.mjs";

const PACKAGE = join(REPO, "tests", "browser", "node_modules", "uplot");
const EMBEDDED = join(REPO, "crates", "server", "assets", "uplot");

test("the embedded uPlot is the pinned package's", () => {
  const lock = JSON.parse(readFileSync(join(REPO, "tests", "browser", "package-lock.json"), "utf8"));
  const pinned = lock.packages["node_modules/uplot"].version;
  assert.equal(JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8")).version, pinned);
  for (const [from, to] of [
    ["dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
    ["dist/uPlot.min.css", "uPlot.min.css"],
    ["LICENSE", "LICENSE"],
  ]) {
    assert.ok(readFileSync(join(PACKAGE, from)).equals(readFileSync(join(EMBEDDED, to))), `${to} is the package's ${from}`);
  }
  assert.ok(readFileSync(join(EMBEDDED, "uPlot.iife.min.js"), "utf8").startsWith(`/*! https://github.com/leeoniya/uPlot (v${pinned}) */`));
});
