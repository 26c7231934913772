#!/usr/bin/env node
// Benchmark peer: the `ws` package on Node's http server.
//
// Written the way `ws` users write a topic broadcast hub: one http.Server that
// serves the REST routes, a WebSocketServer attached to it on /ws, a map
// topic -> Set<WebSocket> for the subscriptions, and a broadcast loop that
// JSON.stringify's once and calls ws.send(data) on every subscriber.
//
// Usage: node bench/peers/node-ws.js --port 9001   (or PORT=9001)
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

function parsePort(defaultPort) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port' && i + 1 < argv.length) return Number(argv[i + 1]);
    if (argv[i].startsWith('--port=')) return Number(argv[i].slice(7));
  }
  if (process.env.PORT) return Number(process.env.PORT);
  return defaultPort;
}

const PORT = parsePort(9001);
const HOST = '127.0.0.1';
const ALL = '#';

// ---- state -------------------------------------------------------------
const states = new Map(); // topic -> { rev, state }
const subscribers = new Map(); // topic (or "#") -> Set<WebSocket>

function setState(topic, state) {
  const entry = states.get(topic);
  const rev = entry ? entry.rev + 1 : 1;
  states.set(topic, { rev, state });
  broadcast(topic, rev, state);
  return rev;
}

function broadcast(topic, rev, state) {
  const data = JSON.stringify({ type: 'snapshot', topic, rev, state });
  const direct = subscribers.get(topic);
  if (direct) {
    for (const client of direct) {
      if (client.readyState === WebSocket.OPEN) client.send(data);
    }
  }
  const wildcard = subscribers.get(ALL);
  if (wildcard) {
    for (const client of wildcard) {
      if (direct && direct.has(client)) continue; // once per client
      if (client.readyState === WebSocket.OPEN) client.send(data);
    }
  }
}

function subscribe(ws, topic) {
  let set = subscribers.get(topic);
  if (!set) {
    set = new Set();
    subscribers.set(topic, set);
  }
  set.add(ws);
  ws.topics.add(topic);
}

function unsubscribeAll(ws) {
  for (const topic of ws.topics) {
    const set = subscribers.get(topic);
    if (!set) continue;
    set.delete(ws);
    if (set.size === 0) subscribers.delete(topic);
  }
  ws.topics.clear();
}

// ---- REST ----------------------------------------------------------------
function sendJson(res, status, body) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

const STATE_PREFIX = '/api/state/';

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (req.method === 'GET' && path === '/health') {
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'PUT' && path.startsWith(STATE_PREFIX) && path.length > STATE_PREFIX.length) {
    let topic;
    try {
      topic = decodeURIComponent(path.slice(STATE_PREFIX.length));
    } catch (e) {
      return sendJson(res, 400, { error: 'bad topic' });
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let state;
      try {
        state = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        return sendJson(res, 400, { error: 'invalid JSON body' });
      }
      const rev = setState(topic, state);
      sendJson(res, 200, { topic, rev, changed: true });
    });
    return;
  }
  sendJson(res, 404, { error: 'not found' });
});

// ---- WebSocket -------------------------------------------------------------
const wss = new WebSocketServer({ server, path: '/ws' });

wss.on('connection', (ws) => {
  ws.topics = new Set();

  ws.on('message', (raw, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(isBinary ? raw.toString('utf8') : raw);
    } catch (e) {
      ws.send(JSON.stringify({ type: 'error', error: 'invalid JSON' }));
      return;
    }
    switch (msg && msg.type) {
      case 'subscribe': {
        if (Array.isArray(msg.topics)) {
          for (const t of msg.topics) subscribe(ws, String(t));
        }
        ws.send(JSON.stringify({ type: 'result', id: msg.id, ok: true }));
        break;
      }
      case 'set': {
        const rev = setState(String(msg.topic), msg.state);
        ws.send(JSON.stringify({ type: 'result', id: msg.id, ok: true, rev }));
        break;
      }
      case 'ping':
        ws.send(JSON.stringify({ type: 'pong', id: msg.id }));
        break;
      default:
        ws.send(JSON.stringify({ type: 'result', id: msg && msg.id, ok: false, error: 'unknown type' }));
    }
  });

  ws.on('close', () => unsubscribeAll(ws));
  ws.on('error', () => unsubscribeAll(ws));
});

server.listen(PORT, HOST, () => {
  console.log(`node-ws listening on http://${HOST}:${PORT} (ws ${require('ws/package.json').version})`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
