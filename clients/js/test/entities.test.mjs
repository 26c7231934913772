// Entities through a real hub: `entities()` lists the mirrored descriptions with their
// values and availability, `operate()` sends a description's command with {value} filled in
// to the device behind a route run here, and a refusal rejects.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import WebSocket from 'ws';
import { connect } from '../statecast.js';
import { startHub, makeDataDir, removeDir, waitFor } from '../test-support/hub.mjs';

let hub;
let dataDir;
let device;
const received = [];

before(async () => {
  // The device: takes `switch` and `set_interval`, refuses anything else with 409.
  device = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      received.push({ url: req.url, body: JSON.parse(body) });
      res.setHeader('Content-Type', 'application/json');
      res.statusCode = req.url === '/cmd/reboot' ? 409 : 200;
      res.end(JSON.stringify(res.statusCode === 200 ? { done: true } : { error: 'busy' }));
    });
  });
  await new Promise((resolve) => device.listen(0, '127.0.0.1', resolve));
  dataDir = await makeDataDir();
  const config = path.join(dataDir, 'statecast.toml');
  await writeFile(config, `
[[route]]
target = "rail/+"
type = "http"
url = "http://127.0.0.1:${device.address().port}/cmd/{name}"
body = "{args}"

[[entity]]
key = "light"
platform = "switch"
topic = "rail/board"
value = "/outputs/0"
command = { target = "rail/board", name = "switch", args = { output = 0, on = "{value}" } }

[[entity]]
key = "blink"
platform = "number"
topic = "rail/board"
value = "/interval"
min = 0
max = 5000
command = { target = "rail/board", name = "set_interval", args = { ms = "{value}" } }

[[entity]]
key = "reboot"
platform = "button"
topic = "rail/board"
command = { target = "rail/board", name = "reboot" }
`);
  hub = await startHub({ dataDir: path.join(dataDir, 'data'), args: ['--config', config] });
});

after(async () => {
  if (hub) await hub.stop();
  await new Promise((resolve) => device.close(resolve));
  await removeDir(dataDir);
});

test('entities() lists the descriptions with their values; operate() sends their commands', async () => {
  const c = connect(hub.base, { WebSocket });
  c.on('error', () => {});
  try {
    c.subscribe('_entities/#', () => {});
    await waitFor(() => c.entities().length === 3, { what: 'three entities' });
    // Their topic is not mirrored yet: no value, not available.
    assert.deepEqual(
      c.entities().map((e) => [e.key, e.value, e.available]),
      [['blink', undefined, false], ['light', undefined, false], ['reboot', undefined, false]],
    );
    c.subscribe('rail/#', () => {});
    const put = await fetch(`${hub.base}/api/state/rail/board`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outputs: [true, false], interval: 250 }),
    });
    assert.equal(put.status, 200);
    await waitFor(() => c.entities().every((e) => e.available), { what: 'available entities' });
    const byKey = Object.fromEntries(c.entities().map((e) => [e.key, e]));
    assert.equal(byKey.light.value, true);
    assert.equal(byKey.blink.value, 250);
    assert.equal(byKey.blink.description.max, 5000);

    await waitFor(() => c.status === 'open', { what: 'open socket' });
    await c.operate('light', false);
    await c.operate('blink', 1000);
    assert.deepEqual(received, [
      { url: '/cmd/switch', body: { output: 0, on: false } },
      { url: '/cmd/set_interval', body: { ms: 1000 } },
    ]);
    await assert.rejects(c.operate('reboot', true), (e) => e.code === 'upstream' && e.status === 409);
    await assert.rejects(c.operate('nothing', 1), TypeError);
  } finally {
    c.close();
  }
});
