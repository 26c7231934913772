// TypeScript declarations for statecast.js, the statecast hub client.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The connection status of a hub client. */
export type Status = 'connecting' | 'open' | 'resyncing' | 'polling' | 'origin_refused' | 'closed';

/** What happened to a topic, passed to subscription callbacks. */
export interface Change {
  type: 'snapshot' | 'patch' | 'removed' | 'event' | 'stale';
  /** The topic's rev after the change (for events: the mirrored rev, if any). */
  rev: number | undefined;
  /** The RFC 7396 merge patch (only for `patch`). */
  patch?: Json;
  /** The event payload (only for `event`). */
  data?: Json;
  /**
   * For `stale`: whether the topic turned stale (`true`: not written within its policy's
   * `stale_after`, or marked by a source whose device is gone) or fresh again (`false`, just
   * before the change that freshened it, if any). For `snapshot`: `true` when the topic is
   * stale (absent when fresh).
   */
  stale?: boolean;
  /** For `stale`: the time of the topic's last write, RFC 3339 with milliseconds (UTC). */
  since?: string;
}

/**
 * Called for every snapshot, patch, removal, event and turn to stale or fresh of a topic
 * matching the pattern.
 * `state` is the mirrored state after the change (`undefined` once removed; for events the
 * current mirrored state). Treat it as read-only.
 */
export type Callback = (topic: string, state: Json | undefined, change: Change) => void;

/** A `result` message from the hub (or the equivalent REST answer). */
export interface Result {
  type: 'result';
  ok: true;
  id?: number | string;
  /** For set/patch/delete: the topic's rev. */
  rev?: number;
  /** For set/patch/delete: whether the write changed anything. */
  changed?: boolean;
  [key: string]: unknown;
}

/**
 * A time for the history API: a `Date`, a number of Unix milliseconds, or a string the hub
 * reads: RFC 3339 (`2026-12-06T21:00:00.120Z`), Unix ms, or a duration before now (`-1h`,
 * `-90s`, `-15m`, `-7d`).
 */
export type TimeArg = Date | number | string;

/** One recorded change of a topic: the state after it, or its removal. */
export type HistoryChange =
  | {
      rev: number;
      /** When the hub recorded it, RFC 3339 with milliseconds (UTC). */
      time: string;
      /** The state after the change; with `fields`, `{"/battery": 80, ...}` (missing fields absent). */
      state: Json;
      removed?: undefined;
    }
  | { rev: number; time: string; removed: true; state?: undefined };

/** What `history` resolves to: the changes, oldest first. */
export type History = HistoryChange[] & {
  /**
   * Set when `limit` stopped the reading before the end: pass it as `from` (with the same
   * `to`) for the rest. Undefined when every change up to `to` is in.
   */
  readonly next?: string;
};

export interface HistoryOptions {
  /** The oldest time (default: as far back as the hub keeps). */
  from?: TimeArg;
  /** The newest time (default: now). */
  to?: TimeArg;
  /** JSON pointers (`['/battery', '/rf']`, or `'/battery,/rf'`): each state is reduced to them. */
  fields?: string[] | string;
  /** At most this many changes in all (default: every one, read page by page). */
  limit?: number;
}

/** One step of a series. The field is a level held until it changes. */
export interface SeriesPoint {
  /** The step's start, Unix milliseconds. */
  t: number;
  /** The least and greatest values held during the step. */
  min: number | null;
  max: number | null;
  /** The mean of the values held, weighted by how long each was held. */
  avg: number | null;
  /** The value at the step's end (carried forward from earlier steps). */
  last: number | null;
  /** The writes in the step. */
  changes: number;
}

export interface SeriesOptions {
  from?: TimeArg;
  to?: TimeArg;
  /** The step: a duration (`'60s'`, `'1m'`, `'1h'`) or a number of ms. */
  step?: string | number;
}

/** A topic's state as it was at a time. */
export interface StateAt {
  topic: string;
  rev: number;
  /** The time of the change that made this state, RFC 3339 with milliseconds. */
  time: string;
  state: Json;
}

/** The error a write promise rejects with. */
/** An entity, as `hub.entities()` lists it. */
export interface Entity {
  /** Its key: the description is the state of `_entities/<key>`. */
  key: string;
  /** The description: `platform`, `topic`, `value`, `command`, ... (docs/entities.md). */
  description: { [key: string]: Json };
  /** The value at its pointer in its topic's state; undefined while not mirrored. */
  value: Json | undefined;
  /** Its topic is mirrored and not stale. */
  available: boolean;
}

export interface StatecastError extends Error {
  /**
   * The hub's error code (`invalid_topic`, `no_route`, `not_found`, ...), or
   * `bad_request` (for the history API: a bad time, pointer or step), `gone` (a time older
   * than the history the hub keeps), `disconnected` (the socket closed before the result arrived: the write may or may not
   * have happened), `closed` (the client was closed), `unreachable` (the REST request
   * failed), `origin_refused` (the hub refuses pages from this page's origin: add it to the
   * hub's `allowed_origins`, or open the page from the hub), `http_<status>` (an HTTP error
   * without a statecast error body).
   */
  code: string;
  /** For `upstream`: the device's HTTP status, when it answered. */
  status?: number;
  /** For `upstream`: the device's answer, when it answered. */
  body?: Json;
}

/** The minimal WebSocket constructor the client needs (browser WebSocket or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ConnectOptions {
  /** Sent as `{"type":"auth","token"}` first on every connection and as `Authorization: Bearer` on REST. */
  token?: string;
  /** WebSocket implementation; defaults to `globalThis.WebSocket` (pass `ws`'s in Node 20). */
  WebSocket?: WebSocketConstructor | any;
  /** fetch implementation for REST writes and polling; defaults to `globalThis.fetch`. */
  fetch?: typeof globalThis.fetch;
  /** Poll period in ms while polling. Default 10000. */
  pollInterval?: number;
  /** Start polling after this many consecutive failed connection attempts. Default 3. */
  pollAfterFailures?: number;
  /** Reconnect backoff base in ms. Default 500. */
  backoffMin?: number;
  /** Reconnect backoff cap in ms. Default 30000. */
  backoffMax?: number;
  /** Send `{"type":"ping"}` this often (ms); drop the socket after 2 × this without a message. Default 15000. */
  pingInterval?: number;
}

export interface Hub {
  /** The current status. */
  readonly status: Status;

  /**
   * Calls `callback` for every change of topics matching `pattern` (MQTT-style: `+` one
   * segment, final `#` the rest). Topics already mirrored are handed to the new callback as
   * snapshots right away. Returns the unsubscribe function.
   */
  subscribe(pattern: string, callback: Callback): () => void;

  /** The mirrored state of a subscribed topic, or undefined. */
  state(topic: string): Json | undefined;
  /** The mirrored rev of a subscribed topic, or undefined. */
  rev(topic: string): number | undefined;
  /**
   * Whether a mirrored topic is stale (no write within its policy's `stale_after`, or
   * marked by a source); undefined for a topic not mirrored.
   */
  isStale(topic: string): boolean | undefined;
  /**
   * Since when a stale topic is stale (the time of its last write, RFC 3339 with ms), when
   * the hub said so: a `stale` message tells it, a snapshot of a topic that was stale already
   * when subscribing does not. Undefined for a fresh topic.
   */
  staleSince(topic: string): string | undefined;
  /** The topics currently mirrored. */
  topics(): string[];

  /**
   * The entities whose descriptions are mirrored (subscribe to `_entities/#`, and to their
   * topics for their values), sorted by key: each with its description, its current value
   * (the value at its `value` pointer, a media player's `state`; undefined while its topic
   * is not mirrored) and whether it is available (its topic mirrored and not stale). See
   * docs/entities.md.
   */
  entities(): Entity[];
  /**
   * Operates an entity: sends its `command` (or another command field of its description,
   * such as a media player's `pause` or a light's `brightness_command`) with every
   * `"{value}"` in its args replaced by `value`. Rejects as `command` does, or with a
   * TypeError when the entity or that command is not known.
   */
  operate(key: string, value?: Json, control?: string): Promise<Result>;

  /** Replaces a topic's state. Over WebSocket when open, else `PUT /api/state/{topic}`. */
  set(topic: string, state: Json): Promise<Result>;
  /** Applies a merge patch. Over WebSocket when open, else `PATCH /api/state/{topic}`. */
  patch(topic: string, patch: Json): Promise<Result>;
  /** Removes a topic. Over WebSocket when open, else `DELETE /api/state/{topic}`. */
  delete(topic: string): Promise<Result>;
  /** Publishes an event. Over WebSocket when open, else `POST /api/events/{topic}`. */
  event(topic: string, data: Json): Promise<Result>;
  /**
   * Sends a command. Over WebSocket when open, else `POST /api/commands/{target}`. The
   * answer is the result's `result` (for an HTTP route `{status, body}`); a device's refusal
   * rejects with an error whose `code` is `upstream` and whose `status` and `body` are the
   * device's.
   */
  command(target: string, name: string, args?: Json): Promise<Result>;

  /**
   * The recorded changes of a topic, oldest first, over REST (`GET /api/history/{topic}`),
   * following the hub's pages until none is left or `limit` changes are in. Rejects with
   * `not_found` for a topic whose history is not kept, `bad_request` for a bad time or
   * pointer, `forbidden` for a topic the token may not read.
   */
  history(topic: string, options?: HistoryOptions): Promise<History>;
  /**
   * A numeric field of a topic summed up per step (`GET /api/history/{topic}?field=&step=`):
   * one point per step from `from` to `to`; a step before the topic existed is absent. Without
   * `from`, the steps start at the oldest change kept.
   */
  series(topic: string, field: string, options?: SeriesOptions): Promise<SeriesPoint[]>;
  /**
   * The topic's state as it was at `at` (`GET /api/state/{topic}?at=`). Rejects with
   * `not_found` if the topic did not exist then, `gone` if that is older than the history kept.
   */
  stateAt(topic: string, at: TimeArg): Promise<StateAt>;

  /** Listens to status changes. Returns the off function. */
  on(kind: 'status', fn: (status: Status) => void): () => void;
  /** Listens to errors not tied to a request (callback exceptions, hub `error` messages). */
  on(kind: 'error', fn: (error: Error | StatecastError) => void): () => void;

  /** Stops everything: closes the socket, stops reconnecting and polling. Status `closed`. */
  close(): void;

  /** @internal Feeds one hub message (object or JSON text) to the client as if received. Tests only. */
  _handle(message: object | string): void;
  /** @internal Whether the client is polling. Tests only. */
  readonly _polling: boolean;
  /** @internal The derived WebSocket URL and HTTP base. */
  readonly _urls: { wsUrl: string; httpBase: string };
}

/**
 * Connects to a hub. `url` is its WebSocket URL (`ws://host:8080/ws`) or its HTTP base URL
 * (`http://host:8080`, which means `ws://host:8080/ws`).
 */
export function connect(url: string | URL, options?: ConnectOptions): Hub;

/** Applies an RFC 7396 merge patch; returns a new value, the arguments are not modified. */
export function applyMergePatch(target: Json | undefined, patch: Json): Json;

/** Whether an MQTT-style pattern matches a topic. */
export function matchTopic(pattern: string, topic: string): boolean;

declare const _default: {
  connect: typeof connect;
  applyMergePatch: typeof applyMergePatch;
  matchTopic: typeof matchTopic;
};
export default _default;
