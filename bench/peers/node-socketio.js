#!/usr/bin/env node
// Benchmark peer: Socket.IO v4 on Node's http server.
//
// Written the way Socket.IO users write it: one room per topic (room "#" for
// "every topic"), `socket.join(topic)` on subscribe, and
// `io.to(topic).to("#").emit("snapshot", ...)` for the broadcast (Socket.IO
// encodes the packet once per broadcast and sends it once to each socket,
// even one that is in both rooms). Acknowledgements carry the results.
// Default options: path /socket.io/, transports polling + websocket, the `ws`
// engine, no per-message deflate.
//
// Usage: node bench/peers/node-socketio.js --port 9002   (or PORT=9002)
'use strict';

const http = require('http');
const { Server } = require('socket.io');

function parsePort(defaultPort) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port' && i + 1 < argv.length) return Number(argv[i + 1]);
    if (argv[i].startsWith('--port=')) return Number(argv[i].slice(7));
  }
  if (process.env.PORT) return Number(process.env.PORT);
  return defaultPort;
}

const PORT = parsePort(9002);
const HOST = '127.0.0.1';
const ALL = '#';

// ---- state -------------------------------------------------------------
const states = new Map(); // topic -> { rev, state }

function setState(topic, state) {
  const entry = states.get(topic);
  const rev = entry ? entry.rev + 1 : 1;
  states.set(topic, { rev, state });
  io.to(topic).to(ALL).emit('snapshot', { type: 'snapshot', topic, rev, state });
  return rev;
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

// Socket.IO attaches to this server and answers /socket.io/ itself; every
// other request reaches this handler.
const httpServer = http.createServer((req, res) => {
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

// ---- Socket.IO -------------------------------------------------------------
const io = new Server(httpServer);

io.on('connection', (socket) => {
  socket.on('subscribe', (payload, ack) => {
    const topics = payload && Array.isArray(payload.topics) ? payload.topics.map(String) : [];
    socket.join(topics);
    if (typeof ack === 'function') ack({ ok: true });
  });

  socket.on('set', (payload, ack) => {
    if (!payload || typeof payload.topic !== 'string') {
      if (typeof ack === 'function') ack({ ok: false, error: 'topic required' });
      return;
    }
    const rev = setState(payload.topic, payload.state);
    if (typeof ack === 'function') ack({ ok: true, rev });
  });
});

httpServer.listen(PORT, HOST, () => {
  console.log(`node-socketio listening on http://${HOST}:${PORT} (socket.io ${require('socket.io/package.json').version})`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
