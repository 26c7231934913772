// The drop-in mappings of [socketio] with the stock socket.io-client, as a Flask-SocketIO
// front end uses them: state events on connect and on change, `request_state`, commands,
// and reconnection after the hub restarts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, connected, device, hubWith, rest } from './support.mjs';

const mappings = (devicePort) => `
[socketio]
[[socketio.emit]]
event = "apps_list"
topic = "board/apps"
[[socketio.emit]]
event = "current_app"
topic = "board/current_app"
[[socketio.emit]]
event = "settings"
topic = "board/settings"

[[socketio.on]]
event = "request_state"
action = "request_state"
[[socketio.on]]
event = "set_app"
command = "board/main"
[[socketio.on]]
event = "update_settings"
command = "board/main"
name = "settings"
[[socketio.on]]
event = "reboot"
command = "board/broken"

[[route]]
target = "board/main"
type = "http"
url = "http://127.0.0.1:${devicePort}/api/{name}"
[[route]]
target = "board/broken"
type = "http"
url = "http://127.0.0.1:${devicePort}/fail"
`;

describe('mapped events', () => {
  let hub;
  let dev;
  before(async () => {
    dev = await device((req) => (req.url === '/fail'
      ? { status: 500, body: { error: 'overheated' } }
      : { status: 200, body: { accepted: req.body } }));
    hub = await hubWith(mappings(dev.port));
    await rest(hub.base, 'PUT', '/api/state/board/apps', { apps: ['clock', 'weather'] });
    await rest(hub.base, 'PUT', '/api/state/board/current_app', { name: 'clock' });
  });
  after(async () => {
    await hub?.close();
    await dev?.close();
  });

  test('each mapped topic is emitted on connect, then whole on every change', async () => {
    const socket = connect(hub.base);
    await connected(socket);
    const apps = await socket.next('apps_list');
    assert.deepEqual(apps.args, [{ apps: ['clock', 'weather'] }]);
    const current = await socket.next('current_app');
    assert.deepEqual(current.args, [{ name: 'clock' }]);
    // No generic pushes for a client that asked for none.
    assert.equal(socket.events.filter((e) => e.name === 'snapshot').length, 0);
    const from = socket.events.length;
    await rest(hub.base, 'PATCH', '/api/state/board/current_app', { since: 5 });
    const changed = await socket.next('current_app', () => true, { from });
    assert.deepEqual(changed.args, [{ name: 'clock', since: 5 }]);
    // A topic created later is emitted as it appears.
    await rest(hub.base, 'PUT', '/api/state/board/settings', { brightness: 3 });
    assert.deepEqual((await socket.next('settings', () => true, { from })).args, [{ brightness: 3 }]);
    socket.close();
  });

  test('request_state emits every mapped state again, then acknowledges', async () => {
    const socket = connect(hub.base, { transports: ['websocket'] });
    await connected(socket);
    await socket.next('settings');
    const from = socket.events.length;
    const ack = await socket.ask('request_state');
    assert.deepEqual(ack, { type: 'result', ok: true, topics: 3 });
    const names = socket.events.slice(from).map((e) => e.name).sort();
    assert.deepEqual(names, ['apps_list', 'current_app', 'settings']);
    // Without an acknowledgement, as Flask front ends emit it.
    const mark = socket.events.length;
    socket.emit('request_state');
    await socket.next('apps_list', () => true, { from: mark });
    socket.close();
  });

  test('a command mapping sends the payload to the device; its answer is the ack', async () => {
    const socket = connect(hub.base);
    await connected(socket);
    const ack = await socket.ask('set_app', { app: 'weather' });
    assert.deepEqual(ack, {
      status: 200,
      body: { accepted: { name: 'set_app', args: { app: 'weather' } } },
    });
    assert.deepEqual(dev.requests.at(-1), {
      method: 'POST',
      url: '/api/set_app',
      body: { name: 'set_app', args: { app: 'weather' } },
    });
    // `name` renames the command; no payload is `{}`.
    const renamed = await socket.ask('update_settings');
    assert.equal(renamed.status, 200, JSON.stringify(renamed));
    assert.deepEqual(dev.requests.at(-1).body, { name: 'settings', args: {} });
    // A device error comes back with its code, status and body.
    const failed = await socket.ask('reboot', { now: true });
    assert.deepEqual(Object.keys(failed), ['error']);
    assert.equal(failed.error.code, 'upstream');
    assert.equal(failed.error.status, 500);
    assert.deepEqual(failed.error.body, { error: 'overheated' });
    socket.close();
  });
});

describe('a token with a narrower grant', () => {
  let hub;
  before(async () => {
    hub = await hubWith(`${mappings(9)}
[auth]
[[auth.keys]]
key = "viewer"
read = ["board/#"]
[[auth.keys]]
key = "apps-only"
read = ["board/apps"]
[[auth.keys]]
key = "writer"
write = ["#"]
`);
    const auth = { Authorization: 'Bearer writer' };
    await rest(hub.base, 'PUT', '/api/state/board/apps', { apps: ['clock'] }, auth);
    await rest(hub.base, 'PUT', '/api/state/board/current_app', { name: 'clock' }, auth);
  });
  after(async () => { await hub?.close(); });

  test('gets only the mapped events of topics it may read', async () => {
    const socket = connect(hub.base, { auth: { token: 'apps-only' } });
    await connected(socket);
    await socket.next('apps_list');
    const from = socket.events.length;
    assert.deepEqual(await socket.ask('request_state'), { type: 'result', ok: true, topics: 1 });
    await rest(hub.base, 'PATCH', '/api/state/board/current_app', { name: 'snake' },
      { Authorization: 'Bearer writer' });
    await rest(hub.base, 'PATCH', '/api/state/board/apps', { apps: ['snake'] },
      { Authorization: 'Bearer writer' });
    // The apps change was written after the current_app change: had current_app been
    // sent, it would be recorded before this.
    await socket.next('apps_list', (s) => s.apps[0] === 'snake', { from });
    assert.equal(socket.events.filter((e) => e.name === 'current_app').length, 0);
    socket.close();
  });

  test('are refused before they reach a device', async () => {
    const socket = connect(hub.base, { auth: { token: 'viewer' } });
    await connected(socket);
    const ack = await socket.ask('set_app', { app: 'x' });
    assert.deepEqual(Object.keys(ack), ['error']);
    assert.equal(ack.error.code, 'forbidden');
    socket.close();
  });
});

describe('a hub restart', () => {
  test('the client reconnects by itself and gets the state again', async () => {
    const first = await hubWith(mappings(9));
    let hub = first;
    const socket = connect(first.base);
    try {
      await rest(hub.base, 'PUT', '/api/state/board/current_app', { name: 'clock' });
      await connected(socket);
      await socket.next('current_app', (s) => s.name === 'clock');
      // Generic resume too: a client that tracks revs subscribes with `since` on every
      // connect, as a statecast-aware page would.
      const revs = {};
      socket.on('snapshot', (m) => { revs[m.topic] = m.rev; });
      socket.on('patch', (m) => { revs[m.topic] = m.rev; });
      const subscribe = () => socket.emit('subscribe', { patterns: ['board/#'], since: { ...revs } });
      socket.on('connect', subscribe);
      subscribe();
      await socket.next('snapshot', (m) => m.topic === 'board/current_app');
      const mark = socket.events.length;
      await first.stop();
      const gone = await socket.next(':disconnect', () => true, { from: mark });
      assert.equal(gone.args[0], 'transport close');
      // Same port, same data dir; a write while the client is away.
      hub = await hubWith(mappings(9), { port: first.port, dir: first.dir });
      await rest(hub.base, 'PATCH', '/api/state/board/current_app', { name: 'weather' });
      await socket.next(':connect', () => true, { from: mark });
      const again = await socket.next('current_app', (s) => s.name === 'weather', { from: mark });
      assert.deepEqual(again.args, [{ name: 'weather' }]);
      // The resumed subscription got only the missed change, as a patch.
      const resumed = await socket.next('patch', (m) => m.topic === 'board/current_app', { from: mark });
      assert.deepEqual(resumed.args[0], { type: 'patch', topic: 'board/current_app', rev: 2, patch: { name: 'weather' } });
      assert.equal(socket.events.slice(mark).filter((e) => e.name === 'snapshot').length, 0);
    } finally {
      socket.close();
      await hub.close();
    }
  });
});
