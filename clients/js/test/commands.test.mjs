// Commands through a real hub whose route sends them to a device HTTP server run here.
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
const clients = [];

before(async () => {
  // The device: `POST /cmd/switch` answers with what it did, anything else 409.
  device = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      received.push({ url: req.url, body: JSON.parse(body) });
      res.setHeader('Content-Type', 'application/json');
      if (req.url === '/cmd/switch') {
        res.end(JSON.stringify({ done: true }));
      } else {
        res.statusCode = 409;
        res.end(JSON.stringify({ error: 'busy' }));
      }
    });
  });
  await new Promise((resolve) => device.listen(0, '127.0.0.1', resolve));
  dataDir = await makeDataDir();
  const config = path.join(dataDir, 'statecast.toml');
  await writeFile(config, `
[[route]]
target = "dev/+"
type = "http"
url = "http://127.0.0.1:${device.address().port}/cmd/{name}"
`);
  hub = await startHub({ dataDir: path.join(dataDir, 'data'), args: ['--config', config] });
});

after(async () => {
  for (const c of clients) c.close();
  if (hub) await hub.stop();
  await new Promise((resolve) => device.close(resolve));
  await removeDir(dataDir);
});

for (const transport of ['WebSocket', 'REST']) {
  test(`a command over ${transport} returns the device's answer, a refusal its status and body`, async () => {
    const options = transport === 'REST'
      ? { WebSocket: class { constructor() { throw new Error('no sockets here'); } }, backoffMin: 60000 }
      : { WebSocket };
    const c = connect(hub.base, options);
    c.on('error', () => {});
    clients.push(c);
    if (transport === 'WebSocket') await waitFor(() => c.status === 'open', { what: 'open socket' });

    const before = received.length;
    const answer = await c.command('dev/1', 'switch', { on: true });
    assert.equal(answer.ok, true);
    assert.deepEqual(answer.result, { status: 200, body: { done: true } });
    assert.deepEqual(received[before], { url: '/cmd/switch', body: { name: 'switch', args: { on: true } } });

    await assert.rejects(c.command('dev/1', 'explode', {}), (err) =>
      err.code === 'upstream' && err.status === 409 && err.body.error === 'busy');
    await assert.rejects(c.command('other/1', 'switch', {}), (err) => err.code === 'no_route');
  });
}
