// statecast client: a dependency-free ES module for browsers and Node 20+.
// See README.md and docs/protocol.md of the statecast repository.

/**
 * Applies an RFC 7396 JSON merge patch to `target` and returns the result.
 * Neither argument is modified: objects along the patched paths are copied.
 */
export function applyMergePatch(target, patch) {
  if (!isPlainObject(patch)) return patch;
  const result = isPlainObject(target) ? { ...target } : {};
  for (const key of Object.keys(patch)) {
    const value = patch[key];
    if (value === null) delete result[key];
    else result[key] = applyMergePatch(result[key], value);
  }
  return result;
}

/**
 * Whether an MQTT-style pattern (`+` = one segment, final `#` = zero or more
 * remaining segments) matches a topic.
 */
export function matchTopic(pattern, topic) {
  const p = pattern.split('/');
  const t = topic.split('/');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '#' && i === p.length - 1) return true;
    if (i >= t.length) return false;
    if (p[i] !== '+' && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function makeError(code, message, detail) {
  const err = new Error(message || code);
  err.code = code;
  // A device's refusal of a command carries its HTTP status and body.
  if (detail && detail.status !== undefined) err.status = detail.status;
  if (detail && detail.body !== undefined) err.body = detail.body;
  return err;
}

function deriveUrls(url) {
  const base = typeof globalThis.location === 'object' && globalThis.location ? globalThis.location.href : undefined;
  const u = new URL(String(url), base);
  const secure = u.protocol === 'wss:' || u.protocol === 'https:';
  let path = u.pathname.replace(/\/+$/, '');
  let wsPath;
  if (u.protocol === 'ws:' || u.protocol === 'wss:') {
    wsPath = path || '/ws';
    path = path.replace(/\/ws$/, '');
  } else if (u.protocol === 'http:' || u.protocol === 'https:') {
    wsPath = path + '/ws';
  } else {
    throw new TypeError(`statecast: unsupported URL scheme ${u.protocol}`);
  }
  return {
    wsUrl: `${secure ? 'wss' : 'ws'}://${u.host}${wsPath}${u.protocol.startsWith('ws') ? u.search : ''}`,
    httpBase: `${secure ? 'https' : 'http'}://${u.host}${path}`,
  };
}

function encodeTopic(topic) {
  return String(topic).split('/').map(encodeURIComponent).join('/');
}

/**
 * A time parameter of the history API: a Date (sent as RFC 3339), a number (Unix
 * milliseconds) or a string the hub reads (RFC 3339, Unix ms, or a duration before now such
 * as `-1h`, `-90s`, `-7d`).
 */
function timeParam(value, name) {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new TypeError(`statecast: ${name} is an invalid Date`);
    return value.toISOString();
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`statecast: ${name} must be a finite number of Unix ms`);
    return String(Math.trunc(value));
  }
  if (typeof value === 'string') return value;
  throw new TypeError(`statecast: ${name} must be a Date, a number of Unix ms or a string`);
}

/** A series' step: a number of milliseconds, or a duration string (`60s`, `1m`, `1h`). */
function stepParam(value) {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value <= 0) throw new TypeError('statecast: step must be a positive whole number of ms');
    return `${value}ms`;
  }
  if (typeof value === 'string') return value;
  throw new TypeError('statecast: step must be a number of ms or a duration such as "60s"');
}

/** `?a=1&b=2` of the defined entries (`''` when none). */
function queryString(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined) q.set(key, value);
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** The most changes one history request may ask for (the hub's cap). */
const HISTORY_PAGE_MAX = 100000;

// Entities: descriptions held by the topics `_entities/<key>` (see docs/entities.md).
const ENTITY_PREFIX = '_entities/';

/** The value at JSON pointer `pointer` in `state`, or undefined. */
function pointerValue(state, pointer) {
  if (pointer === '') return state;
  let value = state;
  for (const raw of pointer.split('/').slice(1)) {
    if (value === null || typeof value !== 'object') return undefined;
    value = value[raw.replaceAll('~1', '/').replaceAll('~0', '~')];
  }
  return value;
}

/** A command's args with every string "{value}" replaced by `value` (a JSON value). */
function fillValue(args, value) {
  if (args === '{value}') return value;
  if (Array.isArray(args)) return args.map((a) => fillValue(a, value));
  if (args !== null && typeof args === 'object') {
    return Object.fromEntries(Object.entries(args).map(([k, v]) => [k, fillValue(v, value)]));
  }
  return args;
}

const OPEN = 1;

/**
 * Connects to a statecast hub. See statecast.d.ts for the options and the API.
 */
export function connect(url, options = {}) {
  const {
    token,
    WebSocket: WS = globalThis.WebSocket,
    fetch: fetchFn = globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined,
    pollInterval = 10000,
    pollAfterFailures = 3,
    backoffMin = 500,
    backoffMax = 30000,
    pingInterval = 15000,
  } = options;
  if (typeof WS !== 'function') {
    throw new TypeError('statecast: no WebSocket implementation; pass one as options.WebSocket');
  }
  const { wsUrl, httpBase } = deriveUrls(url);

  // subscriptions: every subscribe() call is one entry; patterns counts entries per pattern
  const entries = new Set();
  const patterns = new Map(); // pattern -> number of entries
  const mirror = new Map(); // topic -> { rev, state, stale, since }
  const resyncing = new Set(); // topics waiting for a snapshot after a gap
  const resyncGets = new Map(); // request id -> topic
  const pending = new Map(); // request id -> { resolve, reject }
  const listeners = { status: new Set(), error: new Set() };
  const etags = new Map(); // pattern -> ETag of the last poll

  let status = 'connecting';
  let closed = false;
  let socket = null;
  let socketOpen = false;
  let attempt = 0; // backoff exponent
  let failures = 0; // consecutive connection attempts that never opened
  let reconnectTimer = null;
  let pingTimer = null;
  let watchdogTimer = null;
  let lastMessageAt = 0;
  let polling = false;
  let pollTimer = null;
  let pollBusy = false;
  let nextId = 1;
  let originRefused = null; // the hub's message while it refuses this page's origin
  let originProbe = null; // the probe under way, if any

  // ---------------------------------------------------------------- events

  function emit(kind, value) {
    for (const fn of [...listeners[kind]]) {
      try {
        fn(value);
      } catch (err) {
        if (kind !== 'error') reportError(err);
      }
    }
  }

  function reportError(err) {
    if (listeners.error.size) emit('error', err);
    else if (typeof console !== 'undefined') console.error('statecast:', err);
  }

  function updateStatus() {
    let next;
    if (closed) next = 'closed';
    else if (socketOpen) next = resyncing.size ? 'resyncing' : 'open';
    else if (originRefused) next = 'origin_refused';
    else if (polling) next = 'polling';
    else next = 'connecting';
    if (next !== status) {
      status = next;
      emit('status', next);
    }
  }

  function notify(topic, state, change) {
    for (const entry of [...entries]) {
      if (!entry.active || !matchTopic(entry.pattern, topic)) continue;
      try {
        entry.callback(topic, state, change);
      } catch (err) {
        reportError(err);
      }
    }
  }

  // A snapshot or a poll says only whether the topic is stale, not since when: the time a
  // `stale` message gave is kept while the topic stays stale.
  function staleness(local, stale) {
    return { stale, since: stale && local && local.stale ? local.since : undefined };
  }

  function snapshotChange(rev, stale) {
    return stale ? { type: 'snapshot', rev, stale: true } : { type: 'snapshot', rev };
  }

  function isSubscribed(topic) {
    for (const p of patterns.keys()) if (matchTopic(p, topic)) return true;
    return false;
  }

  function sinceFor(pats) {
    const since = {};
    for (const [topic, local] of mirror) {
      if (pats.some((p) => matchTopic(p, topic))) since[topic] = local.rev;
    }
    return since;
  }

  // ------------------------------------------------------------- messages

  function send(msg) {
    if (!socket || !socketOpen) return false;
    try {
      socket.send(JSON.stringify(msg));
      return true;
    } catch {
      return false;
    }
  }

  function requestResync(topic) {
    if (resyncing.has(topic)) return;
    resyncing.add(topic);
    const id = nextId++;
    resyncGets.set(id, topic);
    send({ type: 'get', id, patterns: [topic] });
    updateStatus();
  }

  function handle(raw) {
    let msg = raw;
    if (typeof raw === 'string') {
      try {
        msg = JSON.parse(raw);
      } catch {
        return;
      }
    }
    if (!isPlainObject(msg)) return;
    const { topic } = msg;
    switch (msg.type) {
      case 'snapshot': {
        if (!isSubscribed(topic)) return;
        const stale = msg.stale === true;
        mirror.set(topic, { rev: msg.rev, state: msg.state, ...staleness(mirror.get(topic), stale) });
        if (resyncing.delete(topic)) updateStatus();
        notify(topic, msg.state, snapshotChange(msg.rev, stale));
        return;
      }
      case 'patch': {
        if (resyncing.has(topic) || !isSubscribed(topic)) return;
        const local = mirror.get(topic);
        if (local && msg.rev <= local.rev) return; // duplicate
        if (!local || msg.rev !== local.rev + 1) {
          requestResync(topic);
          return;
        }
        const state = applyMergePatch(local.state, msg.patch);
        // A change is a write: the hub said `stale:false` before it, this only makes sure.
        mirror.set(topic, { rev: msg.rev, state, stale: false, since: undefined });
        notify(topic, state, { type: 'patch', rev: msg.rev, patch: msg.patch });
        return;
      }
      case 'removed': {
        const had = mirror.delete(topic);
        const wasResyncing = resyncing.delete(topic);
        if (wasResyncing) updateStatus();
        if (had || wasResyncing) notify(topic, undefined, { type: 'removed', rev: msg.rev });
        return;
      }
      case 'stale': {
        // Sent when the topic turns stale or fresh, and on a resume (then often telling
        // what the client knows already: only a turn is handed to the callbacks).
        const local = mirror.get(topic);
        if (!local || typeof msg.stale !== 'boolean') return;
        const since = msg.stale && typeof msg.since === 'string' ? msg.since : undefined;
        const turned = local.stale !== msg.stale;
        mirror.set(topic, { ...local, stale: msg.stale, since });
        if (turned) {
          const change = { type: 'stale', rev: local.rev, stale: msg.stale };
          if (typeof msg.since === 'string') change.since = msg.since;
          notify(topic, local.state, change);
        }
        return;
      }
      case 'event': {
        const local = mirror.get(topic);
        notify(topic, local && local.state, { type: 'event', rev: local && local.rev, data: msg.data });
        return;
      }
      case 'result': {
        const id = msg.id;
        if (resyncGets.has(id)) {
          const t = resyncGets.get(id);
          resyncGets.delete(id);
          if (resyncing.delete(t)) {
            // the hub sent no snapshot: the topic is not live any more
            const local = mirror.get(t);
            mirror.delete(t);
            if (local) notify(t, undefined, { type: 'removed', rev: local.rev });
            updateStatus();
          }
          return;
        }
        const p = pending.get(id);
        if (!p) {
          if (msg.ok === false && msg.error) reportError(makeError(msg.error.code, msg.error.message));
          return;
        }
        pending.delete(id);
        if (msg.ok === false) {
          const e = msg.error || {};
          p.reject(makeError(e.code || 'internal', e.message, e));
        } else {
          p.resolve(msg);
        }
        return;
      }
      case 'error': {
        const e = msg.error || {};
        reportError(makeError(e.code || 'internal', e.message));
        return;
      }
      default:
        return; // welcome, pong, lagged, ...
    }
  }

  // ----------------------------------------------------------- connection

  function clearSocketTimers() {
    clearInterval(pingTimer);
    clearTimeout(watchdogTimer);
    pingTimer = null;
    watchdogTimer = null;
  }

  function armWatchdog() {
    const limit = 2 * pingInterval;
    const check = () => {
      const idle = Date.now() - lastMessageAt;
      if (idle >= limit) {
        dropSocket(socket, false);
        scheduleReconnect();
      } else {
        watchdogTimer = setTimeout(check, limit - idle);
      }
    };
    clearTimeout(watchdogTimer);
    watchdogTimer = setTimeout(check, limit);
  }

  // Forgets the current socket: rejects requests waiting on it and closes it.
  function dropSocket(ws, graceful) {
    if (!ws || ws !== socket) return;
    const wasOpen = socketOpen;
    if (!wasOpen) failures++;
    if (!wasOpen && !closed) checkOrigin();
    socket = null;
    socketOpen = false;
    clearSocketTimers();
    const noop = () => {};
    ws.onopen = () => {
      try {
        ws.close();
      } catch {
        /* ignore */
      }
    };
    ws.onmessage = noop;
    ws.onclose = noop;
    ws.onerror = noop;
    try {
      if (!graceful && typeof ws.terminate === 'function') ws.terminate();
      else ws.close(1000);
    } catch {
      /* ignore */
    }
    for (const [id, p] of pending) {
      pending.delete(id);
      p.reject(makeError(closed ? 'closed' : 'disconnected', 'the connection to the hub was lost before the result arrived'));
    }
    resyncGets.clear();
    updateStatus();
  }

  function openSocket() {
    reconnectTimer = null;
    if (closed) return;
    let ws;
    try {
      ws = new WS(wsUrl);
    } catch (err) {
      failures++;
      queueMicrotask(() => reportError(err)); // after connect() returned, so listeners can see it
      scheduleReconnect();
      return;
    }
    socket = ws;
    socketOpen = false;
    lastMessageAt = Date.now();
    armWatchdog(); // also bounds the connection attempt
    updateStatus();
    ws.onopen = () => {
      if (ws !== socket) return;
      socketOpen = true;
      originRefused = null;
      failures = 0;
      attempt = 0;
      lastMessageAt = Date.now();
      stopPolling();
      if (token != null) send({ type: 'auth', id: nextId++, token });
      // the new connection brings every topic in sync by itself
      resyncing.clear();
      if (patterns.size) {
        const pats = [...patterns.keys()];
        send({ type: 'subscribe', id: nextId++, patterns: pats, since: sinceFor(pats) });
      }
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send({ type: 'ping' }), pingInterval);
      updateStatus();
    };
    ws.onmessage = (ev) => {
      if (ws !== socket) return;
      lastMessageAt = Date.now();
      let data = ev.data;
      if (typeof data !== 'string') {
        if (data && typeof data.toString === 'function' && !(typeof Blob !== 'undefined' && data instanceof Blob)) {
          data = data.toString();
        } else return;
      }
      handle(data);
    };
    ws.onerror = () => {}; // a close follows
    ws.onclose = () => {
      if (ws !== socket) return;
      dropSocket(ws, true);
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (closed || reconnectTimer || socket) return;
    const delay = Math.random() * Math.min(backoffMax, backoffMin * 2 ** attempt);
    attempt++;
    // Polling a hub that refuses the page's origin would fail the same way: wait for the
    // origin probe's answer (it starts polling itself if the origin is not refused).
    if (failures >= pollAfterFailures && !originRefused && !originProbe) startPolling();
    reconnectTimer = setTimeout(openSocket, delay);
    updateStatus();
  }

  // -------------------------------------------------------------- origin

  // A browser sees a refused WebSocket upgrade (403) and a CORS-blocked request only as a
  // network failure, the same as a hub that is down. GET /api/origin answers pages of every
  // origin: the hub's message when it refuses this page's origin, else null (allowed, no
  // answer, or a hub without the endpoint).
  async function probeOrigin() {
    if (typeof fetchFn !== 'function') return null;
    try {
      const res = await fetchFn(`${httpBase}/api/origin`, { headers: { Accept: 'application/json' } });
      if (!res.ok) return null;
      const body = await res.json();
      if (!isPlainObject(body) || body.allowed !== false) return null;
      return typeof body.message === 'string' ? body.message : `the hub refuses pages from ${body.origin}`;
    } catch {
      return null;
    }
  }

  // After a socket that never opened: the status becomes `origin_refused` (and one
  // `origin_refused` error is reported) while the hub refuses the origin.
  function checkOrigin() {
    if (originProbe) return;
    originProbe = probeOrigin().then((refused) => {
      originProbe = null;
      if (closed || socketOpen) return;
      const news = refused && refused !== originRefused;
      originRefused = refused;
      if (refused) stopPolling();
      else if (failures >= pollAfterFailures) startPolling();
      updateStatus();
      if (news) reportError(makeError('origin_refused', refused));
    });
  }

  // -------------------------------------------------------------- polling

  function authHeaders() {
    return token != null ? { Authorization: `Bearer ${token}` } : {};
  }

  function startPolling() {
    if (polling || closed || typeof fetchFn !== 'function') return;
    polling = true;
    updateStatus();
    pollTimer = setTimeout(pollOnce, 0);
  }

  function stopPolling() {
    polling = false;
    clearTimeout(pollTimer);
    pollTimer = null;
    updateStatus();
  }

  async function pollOnce() {
    pollTimer = null;
    if (!polling || pollBusy) return;
    pollBusy = true;
    try {
      for (const pattern of [...patterns.keys()]) {
        if (!polling) break;
        const headers = { Accept: 'application/json', ...authHeaders() };
        const etag = etags.get(pattern);
        if (etag) headers['If-None-Match'] = etag;
        let res;
        try {
          res = await fetchFn(`${httpBase}/api/state?match=${encodeURIComponent(pattern)}`, { headers });
        } catch {
          continue;
        }
        if (res.status === 304 || !res.ok) continue;
        let body;
        try {
          body = await res.json();
        } catch {
          continue;
        }
        // a socket that opened meanwhile is the better source
        if (!polling || socketOpen || !patterns.has(pattern)) continue;
        const tag = res.headers && res.headers.get ? res.headers.get('ETag') : null;
        if (tag) etags.set(pattern, tag);
        else etags.delete(pattern);
        applyPolled(pattern, (body && body.topics) || []);
      }
    } finally {
      pollBusy = false;
      if (polling && !pollTimer) pollTimer = setTimeout(pollOnce, pollInterval);
    }
  }

  function applyPolled(pattern, list) {
    const seen = new Set();
    for (const item of list) {
      if (!item || typeof item.topic !== 'string' || !matchTopic(pattern, item.topic)) continue;
      seen.add(item.topic);
      const local = mirror.get(item.topic);
      const stale = item.stale === true;
      if (local && local.rev === item.rev) {
        // The same state, but it may have turned stale or fresh meanwhile.
        if (local.stale !== stale) {
          mirror.set(item.topic, { ...local, ...staleness(local, stale) });
          notify(item.topic, local.state, { type: 'stale', rev: local.rev, stale });
        }
        continue;
      }
      mirror.set(item.topic, { rev: item.rev, state: item.state, ...staleness(local, stale) });
      resyncing.delete(item.topic);
      notify(item.topic, item.state, snapshotChange(item.rev, stale));
    }
    for (const [topic, local] of [...mirror]) {
      if (!seen.has(topic) && matchTopic(pattern, topic)) {
        mirror.delete(topic);
        notify(topic, undefined, { type: 'removed', rev: local.rev });
      }
    }
  }

  // --------------------------------------------------------------- writes

  /** `asResult`: the REST answer is the WebSocket result's `result` member (commands). */
  function request(wsMsg, method, path, body, asResult = false) {
    if (closed) return Promise.reject(makeError('closed', 'the client is closed'));
    if (socket && socketOpen) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        if (!send({ ...wsMsg, id })) {
          pending.delete(id);
          rest(method, path, body, asResult).then(resolve, reject);
        }
      });
    }
    return rest(method, path, body, asResult);
  }

  async function rest(method, path, body, asResult = false) {
    const json = await fetchJson(method, path, body);
    if (asResult) return { type: 'result', ok: true, result: json };
    if (isPlainObject(json)) return { type: 'result', ok: true, ...json };
    return { type: 'result', ok: true, value: json };
  }

  /** One REST request: the answer's JSON, or the hub's error as a StatecastError. */
  async function fetchJson(method, path, body) {
    if (closed) throw makeError('closed', 'the client is closed');
    if (typeof fetchFn !== 'function') throw makeError('unreachable', 'no fetch implementation; pass one as options.fetch');
    const headers = { Accept: 'application/json', ...authHeaders() };
    const init = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetchFn(httpBase + path, init);
    } catch (err) {
      const refused = await probeOrigin();
      if (refused) throw makeError('origin_refused', refused);
      throw makeError('unreachable', `request to the hub failed: ${err && err.message ? err.message : err}`);
    }
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = (json && json.error) || {};
      throw makeError(e.code || `http_${res.status}`, e.message || `HTTP ${res.status}`, e);
    }
    return json;
  }

  // ------------------------------------------------------------------ API

  const hub = {
    get status() {
      return status;
    },

    subscribe(pattern, callback) {
      if (typeof pattern !== 'string') throw new TypeError('statecast: pattern must be a string');
      if (typeof callback !== 'function') throw new TypeError('statecast: callback must be a function');
      const entry = { pattern, callback, active: true };
      entries.add(entry);
      const count = patterns.get(pattern) || 0;
      patterns.set(pattern, count + 1);
      if (count === 0) {
        send({ type: 'subscribe', id: nextId++, patterns: [pattern], since: sinceFor([pattern]) });
      }
      // topics this client already mirrors: hand them to the new callback right away
      const known = [...mirror].filter(([topic]) => matchTopic(pattern, topic));
      if (known.length) {
        queueMicrotask(() => {
          for (const [topic] of known) {
            const local = mirror.get(topic);
            if (!entry.active || !local) continue;
            try {
              callback(topic, local.state, snapshotChange(local.rev, local.stale));
            } catch (err) {
              reportError(err);
            }
          }
        });
      }
      return () => {
        if (!entry.active) return;
        entry.active = false;
        entries.delete(entry);
        const n = patterns.get(pattern) - 1;
        if (n > 0) {
          patterns.set(pattern, n);
          return;
        }
        patterns.delete(pattern);
        etags.delete(pattern);
        send({ type: 'unsubscribe', id: nextId++, patterns: [pattern] });
        for (const topic of [...mirror.keys()]) {
          if (!isSubscribed(topic)) mirror.delete(topic);
        }
        for (const topic of [...resyncing]) {
          if (!isSubscribed(topic)) resyncing.delete(topic);
        }
        updateStatus();
      };
    },

    state(topic) {
      const local = mirror.get(topic);
      return local ? local.state : undefined;
    },

    rev(topic) {
      const local = mirror.get(topic);
      return local ? local.rev : undefined;
    },

    isStale(topic) {
      const local = mirror.get(topic);
      return local ? local.stale : undefined;
    },

    staleSince(topic) {
      const local = mirror.get(topic);
      return local && local.stale ? local.since : undefined;
    },

    topics() {
      return [...mirror.keys()];
    },

    set(topic, state) {
      return request({ type: 'set', topic, state }, 'PUT', `/api/state/${encodeTopic(topic)}`, state);
    },

    patch(topic, patch) {
      return request({ type: 'patch', topic, patch }, 'PATCH', `/api/state/${encodeTopic(topic)}`, patch);
    },

    delete(topic) {
      return request({ type: 'delete', topic }, 'DELETE', `/api/state/${encodeTopic(topic)}`, undefined);
    },

    event(topic, data) {
      return request({ type: 'event', topic, data }, 'POST', `/api/events/${encodeTopic(topic)}`, data);
    },

    command(target, name, args) {
      return request(
        { type: 'command', target, name, args },
        'POST',
        `/api/commands/${encodeTopic(target)}`,
        { name, args },
        true,
      );
    },

    entities() {
      const found = [];
      for (const [topic, local] of mirror) {
        if (!topic.startsWith(ENTITY_PREFIX)) continue;
        const description = local.state;
        if (description === null || typeof description !== 'object' || Array.isArray(description)) continue;
        const shown = typeof description.topic === 'string' ? mirror.get(description.topic) : undefined;
        const pointer = description.platform === 'media_player' ? description.state : description.value;
        found.push({
          key: topic.slice(ENTITY_PREFIX.length),
          description,
          value: shown && typeof pointer === 'string' ? pointerValue(shown.state, pointer) : undefined,
          available: shown !== undefined && !shown.stale,
        });
      }
      return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    },

    operate(key, value, control = 'command') {
      const local = mirror.get(ENTITY_PREFIX + key);
      const command = local && local.state && typeof local.state === 'object' ? local.state[control] : undefined;
      if (!command || typeof command.target !== 'string' || typeof command.name !== 'string') {
        return Promise.reject(
          new TypeError(`statecast: entity ${key} has no ${control} (subscribe to _entities/# first)`),
        );
      }
      return this.command(command.target, command.name, fillValue(command.args ?? {}, value));
    },

    async history(topic, { from, to, fields, limit } = {}) {
      if (typeof topic !== 'string') throw new TypeError('statecast: topic must be a string');
      if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
        throw new TypeError('statecast: limit must be a whole number of at least 1');
      }
      const params = {
        from: from === undefined ? undefined : timeParam(from, 'from'),
        to: to === undefined ? undefined : timeParam(to, 'to'),
        fields: fields === undefined ? undefined : Array.isArray(fields) ? fields.join(',') : String(fields),
      };
      const changes = [];
      let next;
      // Page after page (each `next` asked for as the following `from`) until none is left
      // or `limit` changes are in; `next` then says where the rest begins.
      for (;;) {
        const remaining = limit === undefined ? undefined : limit - changes.length;
        params.limit = remaining === undefined ? undefined : Math.min(remaining, HISTORY_PAGE_MAX);
        const page = await fetchJson('GET', `/api/history/${encodeTopic(topic)}${queryString(params)}`);
        const got = Array.isArray(page.changes) ? page.changes : [];
        changes.push(...(remaining === undefined ? got : got.slice(0, remaining)));
        next = typeof page.next === 'string' ? page.next : undefined;
        // An empty page with a `next` would never end: stop there, keeping the `next`.
        if (next === undefined || got.length === 0 || (limit !== undefined && changes.length >= limit)) break;
        params.from = next;
      }
      Object.defineProperty(changes, 'next', { value: next, enumerable: false });
      return changes;
    },

    async series(topic, field, { from, to, step } = {}) {
      if (typeof topic !== 'string') throw new TypeError('statecast: topic must be a string');
      if (typeof field !== 'string') throw new TypeError('statecast: field must be a JSON pointer string');
      const query = queryString({
        field,
        step: step === undefined ? undefined : stepParam(step),
        from: from === undefined ? undefined : timeParam(from, 'from'),
        to: to === undefined ? undefined : timeParam(to, 'to'),
      });
      const answer = await fetchJson('GET', `/api/history/${encodeTopic(topic)}${query}`);
      return Array.isArray(answer.points) ? answer.points : [];
    },

    async stateAt(topic, at) {
      if (typeof topic !== 'string') throw new TypeError('statecast: topic must be a string');
      if (at === undefined) throw new TypeError('statecast: stateAt needs a time');
      return fetchJson('GET', `/api/state/${encodeTopic(topic)}${queryString({ at: timeParam(at, 'at') })}`);
    },

    on(kind, fn) {
      if (!listeners[kind]) throw new TypeError(`statecast: unknown event ${kind}`);
      listeners[kind].add(fn);
      return () => listeners[kind].delete(fn);
    },

    close() {
      if (closed) return;
      closed = true;
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
      stopPolling();
      dropSocket(socket, true);
      updateStatus();
    },

    /** @internal Feeds one hub message (object or JSON text) to the client, as if received. */
    _handle(message) {
      handle(message);
    },

    /** @internal */
    get _polling() {
      return polling;
    },

    /** @internal */
    get _urls() {
      return { wsUrl, httpBase };
    },
  };

  openSocket();
  return hub;
}

export default { connect, applyMergePatch, matchTopic };
