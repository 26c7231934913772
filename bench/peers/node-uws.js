#!/usr/bin/env node
// Benchmark peer: uWebSockets.js (uWS.App) for both REST and WebSocket.
//
// The official uWebSockets.js is installed from GitHub, which this project
// cannot reach. `@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0` (Truffle
// Suite's republish of uWebSockets.js v20.30.0, used by Ganache) ships the
// prebuilt binaries binaries/uws_<platform>_<arch>_<abi>.node, incl. linux x64
// ABI 115 (= Node 20) built against glibc <= 2.27. (`@btc-vision/uwebsockets.js`
// 20.57.0 also ships uws_linux_x64_115.node, but it needs GLIBC_2.38 and
// Debian 12 has 2.36.) That package's own loader silently falls back to a
// pure-JS implementation on `ws` when the binary does not load; this peer
// loads the native binary itself, exactly the way uWS.js's uws.js does, so a
// failure is loud and the benchmark never measures the fallback by mistake.
//
// Written the way uWS users write a pub/sub hub: the library's own topic tree
// does the fan-out — `ws.subscribe(topic)` on subscribe and
// `app.publish(topic, message)` on every change (the message is
// JSON.stringify'd once; uWS copies it once into each subscriber's buffer).
// Topic "#" is a topic like any other that every change is also published
// to. uWS has no multi-topic publish that dedupes, so to send a change once to
// a client subscribed to both T and "#", a socket subscribed to "#" is not
// (or no longer) subscribed to any other topic: it already gets everything.
//
// Usage: node bench/peers/node-uws.js --port 9003   (or PORT=9003)
'use strict';

const UWS_PACKAGE = '@trufflesuite/uws-js-unofficial';
const uWS = require(
  `${UWS_PACKAGE}/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
);

function parsePort(defaultPort) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port' && i + 1 < argv.length) return Number(argv[i + 1]);
    if (argv[i].startsWith('--port=')) return Number(argv[i].slice(7));
  }
  if (process.env.PORT) return Number(process.env.PORT);
  return defaultPort;
}

const PORT = parsePort(9003);
const HOST = '127.0.0.1';
const ALL = '#';
const STATE_PREFIX = '/api/state/';
const decoder = new TextDecoder();

const app = uWS.App();

function uwsVersion() {
  return require(`${UWS_PACKAGE}/package.json`).version;
}

// ---- state -------------------------------------------------------------
const states = new Map(); // topic -> { rev, state }

function setState(topic, state) {
  const entry = states.get(topic);
  const rev = entry ? entry.rev + 1 : 1;
  states.set(topic, { rev, state });
  const data = JSON.stringify({ type: 'snapshot', topic, rev, state });
  if (topic !== ALL) app.publish(topic, data);
  app.publish(ALL, data);
  return rev;
}

function subscribe(ws, topic) {
  if (topic === ALL) {
    if (ws.isSubscribed(ALL)) return;
    // "#" already delivers every topic: drop the per-topic subscriptions so
    // that a change is delivered once, not twice.
    for (const t of ws.getTopics()) ws.unsubscribe(t);
    ws.subscribe(ALL);
  } else if (!ws.isSubscribed(ALL)) {
    ws.subscribe(topic);
  }
}

// ---- REST ----------------------------------------------------------------
// The usual uWS body reader: collect the chunks (copying them, since the
// ArrayBuffer is only valid during the callback), parse on the last one.
function readJson(res, cb, onError) {
  let buffer;
  res.onData((ab, isLast) => {
    const chunk = Buffer.from(ab);
    if (isLast) {
      let json;
      try {
        json = JSON.parse(buffer ? Buffer.concat([buffer, chunk]) : chunk);
      } catch (e) {
        onError();
        return;
      }
      cb(json);
    } else {
      buffer = buffer ? Buffer.concat([buffer, chunk]) : Buffer.concat([chunk]);
    }
  });
}

function sendJson(res, status, body) {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').end(JSON.stringify(body));
  });
}

app.get('/health', (res) => {
  res.writeStatus('200 OK').writeHeader('Content-Type', 'application/json').end('{"ok":true}');
});

app.put('/api/state/*', (res, req) => {
  // Read everything from req now: it is only valid in this synchronous part.
  let topic;
  try {
    topic = decodeURIComponent(req.getUrl().slice(STATE_PREFIX.length));
  } catch (e) {
    topic = '';
  }
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  if (!topic) {
    sendJson(res, '400 Bad Request', { error: 'bad topic' });
    return;
  }
  readJson(
    res,
    (state) => {
      const rev = setState(topic, state);
      if (!aborted) sendJson(res, '200 OK', { topic, rev, changed: true });
    },
    () => {
      if (!aborted) sendJson(res, '400 Bad Request', { error: 'invalid JSON body' });
    },
  );
});

app.any('/*', (res) => {
  res.writeStatus('404 Not Found').writeHeader('Content-Type', 'application/json').end('{"error":"not found"}');
});

// ---- WebSocket -------------------------------------------------------------
app.ws('/ws', {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024 * 1024,
  // uWS's default (64 KiB) silently skips publishes to a subscriber that is
  // that far behind; ws and socket.io buffer without limit, so give uWS room
  // too rather than let it drop messages.
  maxBackpressure: 64 * 1024 * 1024,
  closeOnBackpressureLimit: 0,
  idleTimeout: 120,

  message: (ws, message, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(decoder.decode(message));
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
  },
  // uWS unsubscribes a closed socket from all of its topics by itself.
  close: () => {},
});

app.listen(HOST, PORT, (listenSocket) => {
  if (!listenSocket) {
    console.error(`node-uws: failed to listen on ${HOST}:${PORT}`);
    process.exit(1);
  }
  console.log(`node-uws listening on http://${HOST}:${PORT} (${UWS_PACKAGE} ${uwsVersion()}, native)`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
