// The generic events over Socket.IO, with the stock socket.io-client: the WebSocket
// protocol's requests as events with acknowledgements, its pushes as events.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, connected, hubWith, refused, rest } from './support.mjs';

for (const transports of [['websocket'], ['polling']]) {
  describe(`generic events over ${transports[0]}`, () => {
    let hub;
    let socket;
    before(async () => {
      hub = await hubWith();
      socket = connect(hub.base, { transports });
      await connected(socket);
    });
    after(async () => {
      socket?.close();
      await hub?.close();
    });

    test('subscribe: snapshots first, then the ack; a REST write arrives as a patch', async () => {
      await rest(hub.base, 'PUT', '/api/state/board/a', { on: true, level: 1 });
      await rest(hub.base, 'PUT', '/api/state/board/b', { on: false });
      const from = socket.events.length;
      const ack = await socket.ask('subscribe', { patterns: ['board/#'] });
      assert.deepEqual(ack, { type: 'result', ok: true, topics: 2 });
      // Both snapshots were recorded before the ack resolved.
      const snapshots = socket.events.slice(from).filter((e) => e.name === 'snapshot');
      assert.deepEqual(
        snapshots.map((e) => e.args[0]),
        [
          { type: 'snapshot', topic: 'board/a', rev: 1, state: { on: true, level: 1 } },
          { type: 'snapshot', topic: 'board/b', rev: 1, state: { on: false } },
        ],
      );
      const mark = socket.events.length;
      await rest(hub.base, 'PATCH', '/api/state/board/a', { level: 2 });
      const patch = await socket.next('patch', (m) => m.topic === 'board/a', { from: mark });
      assert.deepEqual(patch.args[0], { type: 'patch', topic: 'board/a', rev: 2, patch: { level: 2 } });
    });

    test('set, patch, delete and get answer like WebSocket results', async () => {
      assert.deepEqual(await socket.ask('set', { topic: 'x/1', state: { a: 1 } }),
        { type: 'result', ok: true, rev: 1, changed: true });
      assert.deepEqual(await socket.ask('set', { topic: 'x/1', state: { a: 1 } }),
        { type: 'result', ok: true, rev: 1, changed: false });
      assert.deepEqual(await socket.ask('patch', { topic: 'x/1', patch: { b: 2 } }),
        { type: 'result', ok: true, rev: 2, changed: true });
      const { body } = await rest(hub.base, 'GET', '/api/state/x/1');
      assert.deepEqual(body.state, { a: 1, b: 2 });
      const from = socket.events.length;
      assert.deepEqual(await socket.ask('get', { patterns: ['x/#'] }), { type: 'result', ok: true, topics: 1 });
      const snap = await socket.next('snapshot', (m) => m.topic === 'x/1', { from });
      assert.deepEqual(snap.args[0].state, { a: 1, b: 2 });
      assert.deepEqual(await socket.ask('delete', { topic: 'x/1' }),
        { type: 'result', ok: true, rev: 3, changed: true });
      assert.equal((await rest(hub.base, 'GET', '/api/state/x/1')).status, 404);
      // An `id` in the payload comes back in the acknowledgement.
      assert.deepEqual(await socket.ask('set', { id: 'mine', topic: 'x/2', state: 1 }),
        { type: 'result', ok: true, rev: 1, changed: true, id: 'mine' });
    });

    test('events reach subscribers; unsubscribe stops them', async () => {
      await socket.ask('subscribe', { patterns: ['bell/#'] });
      const from = socket.events.length;
      assert.deepEqual(await socket.ask('event', { topic: 'bell/front', data: { rang: 1 } }),
        { type: 'result', ok: true });
      const ev = await socket.next('event', (m) => m.topic === 'bell/front', { from });
      assert.deepEqual(ev.args[0], { type: 'event', topic: 'bell/front', data: { rang: 1 } });
      assert.deepEqual(await socket.ask('unsubscribe', { patterns: ['bell/#'] }),
        { type: 'result', ok: true, removed: 1 });
      const mark = socket.events.length;
      await socket.ask('event', { topic: 'bell/front', data: { rang: 2 } });
      // A write acknowledged after the event was published: had the event been delivered,
      // it would be recorded before this ack.
      await socket.ask('set', { topic: 'bell-marker', state: 1 });
      assert.equal(socket.events.slice(mark).filter((e) => e.name === 'event').length, 0);
    });

    test('bad requests get error codes and change nothing', async () => {
      const code = async (name, data) => (await socket.ask(name, data)).error.code;
      assert.equal(await code('set', { topic: 'a//b', state: 1 }), 'invalid_topic');
      assert.equal(await code('subscribe', { patterns: ['a/#/b'] }), 'invalid_pattern');
      assert.equal(await code('set', { topic: 'bad/1', state: null }), 'bad_request');
      assert.equal(await code('set', { topic: 'bad/1' }), 'bad_request');
      assert.equal(await code('set', 'not an object'), 'bad_request');
      assert.equal(await code('delete', { topic: 'bad/never' }), 'not_found');
      assert.equal(await code('fly', { to: 'moon' }), 'unknown_type');
      assert.equal(await code('command', { target: 'nowhere/1', name: 'x' }), 'no_route');
      assert.equal((await rest(hub.base, 'GET', '/api/state/bad/1')).status, 404);
      // Without an acknowledgement, an error comes back as an `error` event.
      const from = socket.events.length;
      socket.emit('set', { topic: 'a//b', state: 1 });
      const err = await socket.next('error', () => true, { from });
      assert.equal(err.args[0].type, 'error');
      assert.equal(err.args[0].error.code, 'invalid_topic');
      assert.deepEqual(await socket.ask('ping'), { type: 'pong' });
    });

    test('subscribe with since resumes: only the missed change', async () => {
      await rest(hub.base, 'PUT', '/api/state/resume/t', { n: 1 });
      await rest(hub.base, 'PATCH', '/api/state/resume/t', { n: 2 });
      const from = socket.events.length;
      await socket.ask('subscribe', { patterns: ['resume/#'], since: { 'resume/t': 1 } });
      const got = socket.events.slice(from).filter((e) => e.args[0]?.topic === 'resume/t');
      assert.deepEqual(got.map((e) => e.args[0]),
        [{ type: 'patch', topic: 'resume/t', rev: 2, patch: { n: 2 } }]);
    });
  });
}

describe('auth and permissions', () => {
  let hub;
  before(async () => {
    hub = await hubWith(`
[auth]
[[auth.keys]]
name = "panel"
key = "panel-key"
read = ["board/#"]
write = ["board/settings"]
command = ["board/main"]
[[auth.keys]]
name = "admin"
key = "admin-key"
read = ["#"]
write = ["#"]
`);
    await rest(hub.base, 'PUT', '/api/state/board/settings', { brightness: 5 },
      { Authorization: 'Bearer admin-key' });
    await rest(hub.base, 'PUT', '/api/state/secret/x', { pin: 1234 },
      { Authorization: 'Bearer admin-key' });
  });
  after(async () => { await hub?.close(); });

  test('no token or a bad one: connect_error with the code', async () => {
    for (const opts of [{}, { auth: { token: 'wrong' } }, { auth: { token: 7 } }]) {
      const socket = connect(hub.base, { transports: ['websocket'], ...opts });
      const err = await refused(socket);
      assert.match(err.message, /^(unauthorized|bad_request): /);
      socket.close();
    }
  });

  test('a token in the auth payload: reads narrowed, writes outside the grant forbidden', async () => {
    const socket = connect(hub.base, { transports: ['websocket'], auth: { token: 'panel-key' } });
    await connected(socket);
    const ack = await socket.ask('subscribe', { patterns: ['#'] });
    assert.equal(ack.topics, 1);
    const topics = socket.events.filter((e) => e.name === 'snapshot').map((e) => e.args[0].topic);
    assert.deepEqual(topics, ['board/settings']);
    assert.deepEqual(await socket.ask('patch', { topic: 'board/settings', patch: { brightness: 6 } }),
      { type: 'result', ok: true, rev: 2, changed: true });
    const denied = await socket.ask('set', { topic: 'secret/x', state: { pin: 0 } });
    assert.equal(denied.ok, false);
    assert.equal(denied.error.code, 'forbidden');
    const { body } = await rest(hub.base, 'GET', '/api/state/secret/x', undefined,
      { Authorization: 'Bearer admin-key' });
    assert.deepEqual(body.state, { pin: 1234 });
    assert.equal((await socket.ask('command', { target: 'other/1', name: 'x' })).error.code, 'forbidden');
    socket.close();
  });

  test('a bearer header or ?token= work too', async () => {
    for (const opts of [
      { extraHeaders: { Authorization: 'Bearer panel-key' } },
      { query: { token: 'panel-key' } },
    ]) {
      const socket = connect(hub.base, { transports: ['websocket'], ...opts });
      await connected(socket);
      assert.equal((await socket.ask('get', { patterns: ['#'] })).topics, 1);
      socket.close();
    }
  });

  test('a refused `auth` event ends the connection; a good one widens the scope', async () => {
    const socket = connect(hub.base, { transports: ['websocket'], auth: { token: 'panel-key' } });
    await connected(socket);
    const ok = await socket.ask('auth', { token: 'admin-key' });
    assert.deepEqual(ok, { type: 'result', ok: true, subject: 'admin' });
    assert.equal((await socket.ask('get', { patterns: ['#'] })).topics, 2);
    const from = socket.events.length;
    const bad = await socket.ask('auth', { token: 'nope' });
    assert.equal(bad.error.code, 'unauthorized');
    const gone = await socket.next(':disconnect', () => true, { from });
    assert.equal(gone.args[0], 'io server disconnect');
    socket.close();
  });
});

describe('a page from another site', () => {
  let hub;
  before(async () => { hub = await hubWith('allowed_origins = ["http://good.example"]\n'); });
  after(async () => { await hub?.close(); });

  test('is refused unless its origin is allowed', async () => {
    const evil = connect(hub.base, { transports: ['websocket'], extraHeaders: { Origin: 'http://evil.example' } });
    assert.match((await refused(evil)).message, /^forbidden: origin http:\/\/evil.example/);
    evil.close();
    const good = connect(hub.base, { transports: ['websocket'], extraHeaders: { Origin: 'http://good.example' } });
    await connected(good);
    good.close();
  });
});
