// Client behaviour that needs no hub: heartbeat, auth, resubscribe with since.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../statecast.js';
import { waitFor } from '../test-support/hub.mjs';

function fakeSocketClass() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closed = false;
      sockets.push(this);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close() { this.closed = true; this.readyState = 3; }
    // test side
    open() { this.readyState = 1; this.onopen?.({}); }
    receive(msg) { this.onmessage?.({ data: JSON.stringify(msg) }); }
    drop() { this.readyState = 3; this.onclose?.({ code: 1006 }); }
  }
  return { FakeSocket, sockets };
}

test('auth first, pings, silent socket dropped, resubscribe with since', async () => {
  const { FakeSocket, sockets } = fakeSocketClass();
  const hub = connect('ws://hub.invalid/ws', { WebSocket: FakeSocket, token: 't0k', pingInterval: 40, backoffMin: 1, backoffMax: 5, fetch: async () => { throw new Error('offline'); } });
  try {
    hub.subscribe('a/#', () => {});
    hub.subscribe('a/#', () => {}); // shared pattern: one subscribe
    hub.subscribe('b/+', () => {});
    assert.equal(sockets.length, 1);
    sockets[0].open();
    assert.equal(hub.status, 'open');
    assert.deepEqual(sockets[0].sent[0], { type: 'auth', id: sockets[0].sent[0].id, token: 't0k' });
    assert.equal(sockets[0].sent[1].type, 'subscribe');
    assert.deepEqual(sockets[0].sent[1].patterns, ['a/#', 'b/+']);
    sockets[0].receive({ type: 'snapshot', topic: 'a/x', rev: 4, state: { k: 1 } });
    sockets[0].receive({ type: 'patch', topic: 'a/x', rev: 5, patch: { k: 2 } });
    sockets[0].receive({ type: 'snapshot', topic: 'b/y', rev: 9, state: [1] });
    assert.deepEqual(hub.state('a/x'), { k: 2 });
    // pings go out while messages keep arriving
    await waitFor(() => sockets[0].sent.some((m) => m.type === 'ping'), { what: 'ping' });
    // silence for 2 × pingInterval drops the socket and a new one is opened
    await waitFor(() => sockets.length === 2, { what: 'reconnect after silence' });
    assert.ok(sockets[0].closed);
    sockets[1].open();
    assert.equal(sockets[1].sent[0].type, 'auth');
    const sub = sockets[1].sent[1];
    assert.equal(sub.type, 'subscribe');
    assert.deepEqual(sub.patterns, ['a/#', 'b/+']);
    assert.deepEqual(sub.since, { 'a/x': 5, 'b/y': 9 });
    // a drop reconnects too
    sockets[1].drop();
    assert.equal(hub.status, 'connecting');
    await waitFor(() => sockets.length === 3, { what: 'reconnect after drop' });
  } finally {
    hub.close();
  }
  assert.equal(hub.status, 'closed');
});

test('unsubscribe only when the last callback of a pattern goes', () => {
  const { FakeSocket, sockets } = fakeSocketClass();
  const hub = connect('http://hub.invalid', { WebSocket: FakeSocket });
  try {
    assert.equal(sockets[0].url, 'ws://hub.invalid/ws');
    sockets[0].open();
    const off1 = hub.subscribe('x/#', () => {});
    const off2 = hub.subscribe('x/#', () => {});
    assert.equal(sockets[0].sent.filter((m) => m.type === 'subscribe').length, 1);
    sockets[0].receive({ type: 'snapshot', topic: 'x/1', rev: 1, state: { a: 1 } });
    off1();
    assert.equal(sockets[0].sent.filter((m) => m.type === 'unsubscribe').length, 0);
    off2();
    off2();
    assert.deepEqual(sockets[0].sent.filter((m) => m.type === 'unsubscribe').map((m) => m.patterns), [['x/#']]);
    assert.equal(hub.state('x/1'), undefined, 'no longer mirrored');
  } finally {
    hub.close();
  }
});

test('keeps reconnecting after repeated drops (backoff capped by backoffMax)', async () => {
  const { FakeSocket, sockets } = fakeSocketClass();
  const realRandom = Math.random;
  Math.random = () => 0.999;
  const hub = connect('ws://hub.invalid/ws', { WebSocket: FakeSocket, backoffMin: 10, backoffMax: 40, pollAfterFailures: 100 });
  try {
    for (let k = 0; k < 5; k++) {
      sockets[k].drop();
      await waitFor(() => sockets.length === k + 2, { what: `attempt ${k + 1}` });
    }
  } finally {
    Math.random = realRandom;
    hub.close();
  }
  assert.equal(sockets.length, 6);
});
