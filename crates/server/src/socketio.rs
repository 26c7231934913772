//! The Socket.IO endpoint (`/socket.io/`, protocol v5, served by `socketioxide` on the
//! hub's own listener), so that front ends written for Flask-SocketIO run unchanged.
//!
//! Two kinds of events share one connection:
//! - **Generic events**, the WebSocket protocol spoken as Socket.IO: a client emits
//!   `subscribe`, `unsubscribe`, `get`, `set`, `patch`, `delete`, `event`, `command`
//!   (`auth`, `ping` too) with the WebSocket message's fields as the payload, and gets the
//!   WebSocket `result` object as the acknowledgement; the hub emits `snapshot`, `patch`,
//!   `removed`, `event` and `lagged` with the WebSocket messages as payloads.
//! - **Mapped events** from the `[socketio]` section: an `emit` mapping sends a topic's
//!   whole state under an event name on connect and on every change; an `on` mapping turns a
//!   client event into `request_state` (every mapped state again) or into a command.
//!
//! Each connection runs one task (`Connection::run`), as a WebSocket does: it owns the
//! hub [`Client`]s (one for generic subscriptions, one in `full` mode for mapped topics),
//! takes the client's events in order from a bounded inbox, and emits what the hub queues.
//! Acknowledgements travel through the hub's outbox like WebSocket `result`s (tagged with a
//! number of the connection's own), so an acknowledgement always follows the snapshots it
//! announces. Nothing is unbounded: the inbox and the writes awaiting the store are
//! capped, and when socketioxide's send buffer is full the task stops draining the hub's
//! outbox, which then folds patches into snapshots as for any slow client.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromConnectParts, FromMessage, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError, SocketIo};
use statecast_core::request::{Request as ClientRequest, parse_value};
use statecast_core::{Client, ErrorCode, Frame, HubError, Mode, Pattern, Since, Topic};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::auth::{Grant, Peer};
use crate::metrics::Metrics;
use crate::sse::message_type;
use crate::ws::{Abuse, Ack, dispatch, ok};
use crate::{App, check_origin};

/// Client events waiting for the connection task; more are refused with `rate_limited`.
const INBOX: usize = 256;
/// Writes whose `result` may be outstanding, and requests awaiting their acknowledgement;
/// past these the task takes no more events (they wait in the inbox).
const MAX_IN_FLIGHT: usize = 256;
/// Packets socketioxide buffers per connection before its transport takes them (bounded
/// in count only, so kept small: the hub's outbox, bounded in bytes too, holds the rest).
const SEND_BUFFER: usize = 128;
/// Most hub messages taken from an outbox at once.
const MAX_BATCH: usize = 128;
/// First and longest wait before emitting again into a full send buffer.
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(50);

/// The events of the generic protocol; `[[socketio.on]]` may not take these names.
pub const GENERIC_EVENTS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "get",
    "set",
    "patch",
    "delete",
    "event",
    "command",
    "auth",
    "ping",
];
/// The events the hub emits (and `error`); `[[socketio.emit]]` may not take these names.
pub const SERVER_EVENTS: &[&str] = &["snapshot", "patch", "removed", "event", "lagged", "error"];
/// The hub's pushes (what is not one of these in an outbox is a reply).
const PUSHES: &[&str] = &["snapshot", "patch", "removed", "event", "lagged"];
/// Names Socket.IO clients keep for themselves.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The `[socketio]` section, checked.
#[derive(Debug, Clone)]
pub struct Mappings {
    /// Whether the endpoint is served at all.
    pub enabled: bool,
    /// Where: `/socket.io` unless the front end's `path` option says otherwise.
    pub path: String,
    pub emit: Vec<Emit>,
    pub on: Vec<On>,
}

impl Default for Mappings {
    fn default() -> Self {
        Mappings {
            enabled: true,
            path: "/socket.io".into(),
            emit: Vec::new(),
            on: Vec::new(),
        }
    }
}

/// `[[socketio.emit]]`: `topic`'s whole state is emitted as `event`.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    pub event: String,
    pub topic: Topic,
}

/// `[[socketio.on]]`: what a client's `event` does.
#[derive(Debug, Clone, PartialEq)]
pub struct On {
    pub event: String,
    pub action: OnAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OnAction {
    /// Emit every mapped event's current state to this client again.
    RequestState,
    /// The event's payload becomes the args of command `name` to `target`.
    Command { target: Topic, name: String },
}

/// The Socket.IO service, as a layer in front of the router's routes.
pub fn layer(app: &Arc<App>) -> SocketIoLayer {
    let heartbeat = Duration::from_millis(app.config.heartbeat_ms.max(1));
    let max = app.config.max_frame_bytes;
    let (layer, io) = SocketIo::builder()
        .req_path(app.config.socketio.path.clone())
        // A client silent for 2.5 heartbeats is gone, as on /ws.
        .ping_interval(heartbeat)
        .ping_timeout(heartbeat.mul_f64(1.5))
        .max_payload(max as u64)
        .ws_max_message_size(max)
        .ws_max_frame_size(max)
        .max_buffer_size(SEND_BUFFER)
        .connect_timeout(Duration::from_millis(
            app.config.limits.handshake_timeout_ms,
        ))
        .build_layer();
    let admit_app = Arc::clone(app);
    let admit = move |socket: SocketRef, TryData(auth): TryData<Value>| async move {
        admit(&admit_app, &socket, auth.ok())
    };
    let run_app = Arc::clone(app);
    let connected = move |SocketArc(socket): SocketArc| async move {
        Connection::start(run_app, socket).await;
    };
    io.ns("/", connected.with(admit));
    layer
}

/// The connect middleware: checks the origin, the rate and the credential (the `auth`
/// payload's `token`, or a bearer header or `?token=` as on the other transports), then
/// readies the connection. A refusal is the client's `connect_error`, its message
/// `<code>: <why>`.
fn admit(app: &App, socket: &Socket, auth: Option<Value>) -> Result<(), HubError> {
    let parts = socket.req_parts();
    let peer = parts.extensions.get::<Peer>().cloned();
    let addr = peer.as_ref().map(|p| p.0);
    check_origin(app, &parts.headers, addr)?;
    app.check_rate(addr.map(|a| a.ip()), None)?;
    let token = match auth.as_ref().and_then(|a| a.get("token")) {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token.as_str()),
        Some(_) => {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                "`token` in the auth payload must be a string",
            ));
        }
    };
    let grant = match token {
        Some(token) if app.config.auth.required() => app
            .config
            .auth
            .verify(token)
            .inspect_err(|e| app.refused(addr, e))?,
        _ => {
            let query = parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .map(crate::ws::percent_decode)
            });
            app.caller(&parts.headers, query.as_deref(), addr)
                .map_err(|e| {
                    HubError::new(
                        e.code,
                        format!("{}; or give it as `auth: {{token}}`", e.message),
                    )
                })?
                .grant
        }
    };
    // Registered before the client learns it is connected, so no event can come first.
    let (inbox, events) = mpsc::channel(INBOX);
    let gone = Arc::new(Notify::new());
    let notify = Arc::clone(&gone);
    socket.on_fallback(|_: Enqueued| async {});
    socket.on_disconnect(move || async move { notify.notify_one() });
    socket.extensions.insert(Inbox(inbox));
    socket
        .extensions
        .insert(Ready(Arc::new(Mutex::new(Some(Prepared {
            grant,
            peer,
            events,
            gone,
        })))));
    Ok(())
}

/// The socket itself, for emitting and for acknowledging later.
struct SocketArc(Arc<Socket>);

impl FromConnectParts<socketioxide::adapter::LocalAdapter> for SocketArc {
    type Error = Infallible;
    fn from_connect_parts(
        s: &Arc<Socket>,
        _: &Option<socketioxide::handler::Value>,
    ) -> Result<Self, Infallible> {
        Ok(SocketArc(Arc::clone(s)))
    }
}

/// Where the connect middleware leaves what the connection task needs.
#[derive(Clone)]
struct Ready(Arc<Mutex<Option<Prepared>>>);

struct Prepared {
    grant: Grant,
    peer: Option<Peer>,
    events: mpsc::Receiver<Incoming>,
    /// Notified when the socket disconnects.
    gone: Arc<Notify>,
}

/// The sending end of a connection's inbox, in the socket's extensions.
#[derive(Clone)]
struct Inbox(mpsc::Sender<Incoming>);

/// One event from the client.
struct Incoming {
    event: String,
    /// The first argument, if any.
    data: Option<Value>,
    /// The client's acknowledgement id, when it waits for one.
    ack: Option<i64>,
}

/// An "extractor" that queues the event for the connection task. socketioxide runs
/// extractors on its reading task, in the order events arrive (handlers then run on tasks
/// of their own, in any order), so the inbox holds events in the order they were sent.
struct Enqueued;

impl FromMessage<socketioxide::adapter::LocalAdapter> for Enqueued {
    type Error = Infallible;
    fn from_message(
        s: Arc<Socket>,
        mut v: socketioxide::handler::Value,
        ack: Option<i64>,
    ) -> Result<Self, Infallible> {
        let Ok(event) = Event::from_message_parts(&s, &mut v, &ack) else {
            return Ok(Enqueued);
        };
        let Ok(TryData(data)) = TryData::<Value>::from_message_parts(&s, &mut v, &ack);
        let Some(Inbox(inbox)) = s.extensions.get::<Inbox>() else {
            return Ok(Enqueued);
        };
        let incoming = Incoming {
            event: event.0,
            data: data.ok(),
            ack,
        };
        if let Err(mpsc::error::TrySendError::Full(incoming)) = inbox.try_send(incoming) {
            let e = HubError::new(
                ErrorCode::RateLimited,
                "too many events waiting; wait for acknowledgements before sending more",
            );
            // Best effort: a client this far ahead may also have filled the send buffer.
            let _ = answer(&s, incoming.ack, None, error_value(&e));
        }
        Ok(Enqueued)
    }
}

/// Sends `body` as the acknowledgement `ack` (with the client's `id`, if it gave one), or
/// for an error without an acknowledgement, emits it as an `error` event.
fn answer(
    socket: &Arc<Socket>,
    ack: Option<i64>,
    id: Option<&Value>,
    mut body: Value,
) -> Result<(), SendError> {
    if let (Some(id), Value::Object(map)) = (id, &mut body) {
        map.insert("id".into(), id.clone());
    }
    match ack {
        Some(_) => {
            let mut none = socketioxide::handler::Value::Bytes(Bytes::new());
            let Ok(sender) = AckSender::from_message_parts(socket, &mut none, &ack);
            sender.send(&body)
        }
        None if body.get("ok") == Some(&Value::Bool(false)) => {
            let mut error = json!({"type": "error", "error": body["error"].take()});
            if let Some(id) = id {
                error["id"] = id.clone();
            }
            socket.emit("error", &error)
        }
        None => Ok(()),
    }
}

fn error_value(e: &HubError) -> Value {
    json!({"type": "result", "ok": false, "error": e.to_json()})
}

/// A request waiting for its `result` to come out of an outbox.
struct Waiting {
    ack: Option<i64>,
    /// The `id` the client put in its payload, echoed in the acknowledgement.
    id: Option<Value>,
    /// A `[[socketio.on]]` command: the acknowledgement is the command's answer itself (or
    /// `{"error": ...}`), as a Flask-SocketIO handler's return value was.
    bare: bool,
}

/// Something to send, in order.
enum Out {
    /// A message of the generic protocol, emitted under its `type`; a reply (a `result`,
    /// whose `type` need not come first) is the acknowledgement of a waiting request
    /// instead.
    Message(Bytes),
    /// A snapshot of a mapped topic: its state is emitted as `emit[event]`.
    State { event: usize, bytes: Bytes },
    /// An answer that needs no ordering with pushes (refusals).
    Answer { waiting: Waiting, body: Value },
}

enum Flushed {
    All,
    /// The send buffer is full: try again shortly. `true` if some went out first.
    Full(bool),
    /// The socket is gone.
    Closed,
}

/// One Socket.IO connection. See the module docs.
struct Connection {
    app: Arc<App>,
    socket: Arc<Socket>,
    grant: Grant,
    peer: Option<Peer>,
    /// Generic subscriptions and replies; made on the first generic request.
    generic: Option<Client>,
    /// Mapped topics, in `full` mode; only when there are `emit` mappings.
    mapped: Option<Client>,
    /// The patterns of the mapped topics.
    mapped_patterns: Vec<Pattern>,
    acks: Option<FuturesOrdered<Ack>>,
    waiting: HashMap<u64, Waiting>,
    next_id: u64,
    out: VecDeque<Out>,
    abuse: Abuse,
}

/// Why a connection ends.
enum End {
    /// The socket disconnected, or the hub closed its clients (shutdown: the connection
    /// drops with the process, and the client reconnects by itself).
    Gone,
    /// The server disconnects the client, after telling it why.
    Refuse(HubError),
}

impl Connection {
    /// Runs the connection readied by `admit` until it ends.
    async fn start(app: Arc<App>, socket: Arc<Socket>) {
        let prepared = socket
            .extensions
            .get::<Ready>()
            .and_then(|Ready(ready)| ready.lock().unwrap_or_else(|e| e.into_inner()).take());
        let Some(Prepared {
            grant,
            peer,
            mut events,
            gone,
        }) = prepared
        else {
            return;
        };
        Metrics::add(&app.metrics.socketio_connections_total, 1);
        Metrics::add(&app.metrics.socketio_connections, 1);
        let mapped_patterns: Vec<Pattern> = app
            .config
            .socketio
            .emit
            .iter()
            .filter_map(|e| Pattern::new(e.topic.as_str()).ok())
            .collect();
        let mut connection = Connection {
            mapped: None,
            generic: None,
            app: Arc::clone(&app),
            socket: Arc::clone(&socket),
            grant,
            peer,
            mapped_patterns,
            acks: None,
            waiting: HashMap::new(),
            next_id: 0,
            out: VecDeque::new(),
            abuse: Abuse::default(),
        };
        if !connection.mapped_patterns.is_empty() {
            let client = connection.new_client();
            client.subscribe(&connection.mapped_patterns, &Since::Now, Some(Mode::Full));
            connection.mapped = Some(client);
        }
        let end = connection.run(&mut events, &gone).await;
        drop(connection);
        if let End::Refuse(e) = end {
            let _ = answer(&socket, None, None, error_value(&e));
            if let Err(SocketError::InternalChannelFull) = socket.disconnect() {
                tracing::debug!("socket.io: could not disconnect a client with a full buffer");
            }
        }
        app.metrics
            .socketio_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn new_client(&self) -> Client {
        let client = self.app.hub.connect();
        client.set_scope(self.grant.scope());
        client
    }

    fn addr(&self) -> Option<std::net::SocketAddr> {
        self.peer.as_ref().map(|p| p.0)
    }

    async fn run(&mut self, events: &mut mpsc::Receiver<Incoming>, gone: &Notify) -> End {
        let mut expires = self
            .grant
            .remaining()
            .map(|left| Box::pin(tokio::time::sleep_until(Instant::now() + left)));
        let mut retry = RETRY_MIN;
        loop {
            let blocked = match self.flush() {
                Flushed::All => {
                    retry = RETRY_MIN;
                    false
                }
                Flushed::Full(sent_some) => {
                    // The transport is taking packets: look again soon.
                    if sent_some {
                        retry = RETRY_MIN;
                    }
                    true
                }
                Flushed::Closed => return End::Gone,
            };
            let in_flight = self.acks.as_ref().map_or(0, FuturesOrdered::len);
            // Nothing more is taken in while the client does not take what it has: its
            // events wait in the inbox, and past that are refused.
            let reading = !blocked
                && in_flight < MAX_IN_FLIGHT
                && self.waiting.len() < MAX_IN_FLIGHT
                && !self.generic.as_ref().is_some_and(Client::is_congested);
            tokio::select! {
                biased;
                _ = gone.notified() => return End::Gone,
                _ = tokio::time::sleep(retry), if blocked => {
                    retry = (retry * 2).min(RETRY_MAX);
                }
                _ = ready(self.generic.as_ref()), if !blocked => {
                    if self.take(false) {
                        return End::Gone;
                    }
                }
                _ = ready(self.mapped.as_ref()), if !blocked => {
                    if self.take(true) {
                        return End::Gone;
                    }
                }
                Some(ack) = crate::ws::next_ack(&mut self.acks), if in_flight > 0 => {
                    if let Some(client) = &self.generic {
                        client.reply(ack);
                    }
                }
                _ = expired(&mut expires) => {
                    let e = HubError::new(
                        ErrorCode::Unauthorized,
                        "the token has expired; emit `auth` with a fresh one before it does",
                    );
                    self.app.refused(self.addr(), &e);
                    return End::Refuse(e);
                }
                incoming = events.recv(), if reading => {
                    let Some(incoming) = incoming else { return End::Gone };
                    if let Err(e) = self.handle(incoming, &mut expires) {
                        return End::Refuse(e);
                    }
                }
            }
        }
    }

    /// Moves what the hub queued for one client into `out`; `true` when the hub closed it.
    fn take(&mut self, mapped: bool) -> bool {
        let client = if mapped { &self.mapped } else { &self.generic };
        let Some(client) = client else {
            return false;
        };
        let mut frames: Vec<Frame> = Vec::new();
        let drained = client.drain(&mut frames, MAX_BATCH);
        if drained.closed {
            return true;
        }
        for Frame { bytes, .. } in frames {
            match message_type(&bytes) {
                kind if !PUSHES.contains(&kind) => self.out.push_back(Out::Message(bytes)),
                "snapshot" if mapped => {
                    let topic = snapshot_topic(&bytes);
                    for (event, emit) in self.app.config.socketio.emit.iter().enumerate() {
                        if Some(emit.topic.as_str()) == topic {
                            self.out.push_back(Out::State {
                                event,
                                bytes: bytes.clone(),
                            });
                        }
                    }
                }
                // A removed mapped topic has no state to emit; lag needs no word there
                // either (the latest state always arrives).
                _ if mapped => {}
                _ => self.out.push_back(Out::Message(bytes)),
            }
        }
        false
    }

    /// Emits what is in `out`, in order, until the send buffer is full.
    fn flush(&mut self) -> Flushed {
        let mut sent_some = false;
        while let Some(item) = self.out.pop_front() {
            let sent = match &item {
                Out::Message(bytes) => self.send_message(bytes),
                Out::State { event, bytes } => {
                    let name = &self.app.config.socketio.emit[*event].event;
                    match serde_json::from_slice::<StateOf<'_>>(bytes) {
                        Ok(StateOf { state }) => self.socket.emit(name, state),
                        Err(e) => {
                            tracing::error!("socket.io: a snapshot the hub made is not JSON: {e}");
                            Ok(())
                        }
                    }
                }
                Out::Answer { waiting, body } => {
                    answer(&self.socket, waiting.ack, waiting.id.as_ref(), body.clone())
                }
            };
            match sent {
                Ok(()) => {
                    sent_some = true;
                    if let Out::Message(bytes) | Out::State { bytes, .. } = &item {
                        Metrics::add(&self.app.metrics.messages_out, 1);
                        Metrics::add(&self.app.metrics.bytes_out, bytes.len() as u64);
                    }
                }
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    self.out.push_front(item);
                    return Flushed::Full(sent_some);
                }
                Err(SendError::Socket(SocketError::Closed)) => return Flushed::Closed,
                Err(SendError::Serialize(e)) => {
                    tracing::error!("socket.io: cannot encode a message: {e:?}");
                }
            }
        }
        Flushed::All
    }

    /// Emits one hub push under its type; a reply acknowledges its request.
    fn send_message(&mut self, bytes: &Bytes) -> Result<(), SendError> {
        let kind = message_type(bytes);
        if PUSHES.contains(&kind) {
            return match serde_json::from_slice::<&RawValue>(bytes) {
                Ok(raw) => self.socket.emit(kind, raw),
                Err(e) => {
                    tracing::error!("socket.io: a message the hub made is not JSON: {e}");
                    Ok(())
                }
            };
        }
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(bytes) else {
            return Ok(());
        };
        let Some(tag) = body.remove("id").and_then(|id| id.as_u64()) else {
            return Ok(());
        };
        let Some(waiting) = self.waiting.get(&tag) else {
            return Ok(());
        };
        let body = match body.remove("result") {
            Some(answer) if waiting.bare => answer,
            // Without an acknowledgement a failure goes out as an `error` event instead.
            None if waiting.bare && waiting.ack.is_some() => {
                json!({"error": body.remove("error").unwrap_or(Value::Null)})
            }
            result => {
                if let Some(result) = result {
                    body.insert("result".into(), result);
                }
                Value::Object(body)
            }
        };
        let sent = answer(&self.socket, waiting.ack, waiting.id.as_ref(), body);
        // Kept while the send buffer is full: the same message is tried again.
        if !matches!(
            sent,
            Err(SendError::Socket(SocketError::InternalChannelFull))
        ) {
            self.waiting.remove(&tag);
        }
        sent
    }

    /// Handles one client event, in the order they were sent. `Err`: disconnect.
    fn handle(
        &mut self,
        incoming: Incoming,
        expires: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ) -> Result<(), HubError> {
        Metrics::add(&self.app.metrics.messages_in, 1);
        let Incoming { event, data, ack } = incoming;
        let slot = self.peer.as_ref().map(|p| &*p.1);
        if let Err(e) = self.app.check_rate(self.addr().map(|a| a.ip()), slot) {
            self.refuse(ack, None, &e);
            if self.abuse.refuse(&self.app) {
                self.app.refused(self.addr(), &e);
                return Err(HubError::new(ErrorCode::RateLimited, "rate limit exceeded"));
            }
            return Ok(());
        }
        let mapping = self
            .app
            .config
            .socketio
            .on
            .iter()
            .find(|on| on.event == event)
            .map(|on| on.action.clone());
        if let Some(action) = mapping {
            self.mapped_event(action, data, ack);
            return Ok(());
        }
        if !GENERIC_EVENTS.contains(&event.as_str()) {
            Metrics::add(&self.app.metrics.client_errors, 1);
            let e = HubError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown event {event:?} (neither a statecast request nor in [[socketio.on]])"
                ),
            );
            self.refuse(ack, None, &e);
            return Ok(());
        }
        let mut object = match data {
            Some(Value::Object(object)) => object,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                Metrics::add(&self.app.metrics.client_errors, 1);
                let e = HubError::new(
                    ErrorCode::BadRequest,
                    format!("the payload of `{event}` must be a JSON object"),
                );
                self.refuse(ack, None, &e);
                return Ok(());
            }
        };
        let id = object.remove("id");
        object.insert("type".into(), Value::String(event));
        let request = match parse_value(Value::Object(object)).request {
            Ok(request) => request,
            Err(e) => {
                Metrics::add(&self.app.metrics.client_errors, 1);
                self.refuse(ack, id, &e);
                return Ok(());
            }
        };
        match request {
            ClientRequest::Ping => self.out.push_back(Out::Answer {
                waiting: Waiting {
                    ack,
                    id,
                    bare: false,
                },
                body: json!({"type": "pong"}),
            }),
            ClientRequest::Auth { token } => return self.reauthenticate(&token, ack, id, expires),
            request => {
                let tag = self.wait(ack, id);
                self.ensure_generic();
                let Some(client) = &self.generic else {
                    return Ok(());
                };
                dispatch(
                    &self.app,
                    client,
                    &self.grant,
                    self.peer.as_ref().map(|p| p.0),
                    request,
                    Some(tag),
                    &mut self.acks,
                );
            }
        }
        Ok(())
    }

    /// An `auth` event: a fresh token for an open connection (its grant and read scope
    /// change with it). A refused token ends the connection, as on /ws.
    fn reauthenticate(
        &mut self,
        token: &str,
        ack: Option<i64>,
        id: Option<Value>,
        expires: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ) -> Result<(), HubError> {
        if !self.app.config.auth.required() {
            self.out.push_back(Out::Answer {
                waiting: Waiting {
                    ack,
                    id,
                    bare: false,
                },
                body: json!({"type": "result", "ok": true}),
            });
            return Ok(());
        }
        let grant = match self.app.config.auth.verify(token) {
            Ok(grant) => grant,
            Err(e) => {
                self.app.refused(self.addr(), &e);
                // Answered before the disconnect; `flush` runs no more, so send it now.
                let _ = answer(&self.socket, ack, id.as_ref(), error_value(&e));
                return Err(e);
            }
        };
        for client in [&self.generic, &self.mapped].into_iter().flatten() {
            client.set_scope(grant.scope());
        }
        *expires = grant
            .remaining()
            .map(|left| Box::pin(tokio::time::sleep_until(Instant::now() + left)));
        self.out.push_back(Out::Answer {
            waiting: Waiting {
                ack,
                id,
                bare: false,
            },
            body: json!({"type": "result", "ok": true, "subject": grant.subject}),
        });
        self.grant = grant;
        Ok(())
    }

    /// A `[[socketio.on]]` event.
    fn mapped_event(&mut self, action: OnAction, data: Option<Value>, ack: Option<i64>) {
        match action {
            OnAction::RequestState => match &self.mapped {
                Some(mapped) => {
                    let topics = mapped.get(&self.mapped_patterns);
                    let tag = self.wait(ack, None);
                    if let Some(mapped) = &self.mapped {
                        mapped.reply(ok(Some(&tag), json!({"topics": topics})));
                    }
                }
                // No `emit` mappings: nothing to send.
                None => self.out.push_back(Out::Answer {
                    waiting: Waiting {
                        ack,
                        id: None,
                        bare: false,
                    },
                    body: json!({"type": "result", "ok": true, "topics": 0}),
                }),
            },
            OnAction::Command { target, name } => {
                let args = match data {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(args) => args,
                };
                let tag = self.wait(ack, None);
                if let Some(waiting) = tag.as_u64().and_then(|t| self.waiting.get_mut(&t)) {
                    waiting.bare = true;
                }
                if self.mapped.is_none() {
                    self.ensure_generic();
                }
                let Some(client) = self.mapped.as_ref().or(self.generic.as_ref()) else {
                    return;
                };
                dispatch(
                    &self.app,
                    client,
                    &self.grant,
                    self.peer.as_ref().map(|p| p.0),
                    ClientRequest::Command { target, name, args },
                    Some(tag),
                    &mut self.acks,
                );
            }
        }
    }

    /// Registers a request whose `result` will come out of an outbox; its tag is the `id`
    /// the result carries.
    fn wait(&mut self, ack: Option<i64>, id: Option<Value>) -> Value {
        let tag = self.next_id;
        self.next_id += 1;
        self.waiting.insert(
            tag,
            Waiting {
                ack,
                id,
                bare: false,
            },
        );
        json!(tag)
    }

    /// Answers with an error at once.
    fn refuse(&mut self, ack: Option<i64>, id: Option<Value>, e: &HubError) {
        self.out.push_back(Out::Answer {
            waiting: Waiting {
                ack,
                id,
                bare: false,
            },
            body: error_value(e),
        });
    }

    /// Makes the generic client on first use.
    fn ensure_generic(&mut self) {
        if self.generic.is_none() {
            self.generic = Some(self.new_client());
        }
    }
}

/// The `state` of a snapshot, borrowed.
#[derive(serde::Deserialize)]
struct StateOf<'a> {
    #[serde(borrow)]
    state: &'a RawValue,
}

/// The topic of a snapshot the hub made (`{"type":"snapshot","topic":"...`; topics need
/// no escaping).
fn snapshot_topic(bytes: &[u8]) -> Option<&str> {
    let rest = bytes.strip_prefix(b"{\"type\":\"snapshot\",\"topic\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Resolves when the client has something to drain (never without a client).
async fn ready(client: Option<&Client>) {
    match client {
        Some(client) => client.ready().await,
        None => std::future::pending().await,
    }
}

/// Resolves at the deadline (never without one).
async fn expired(deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_topic_of_a_snapshot() {
        let bytes = statecast_core::message::snapshot("a/b", 3, b"{\"x\":1}");
        assert_eq!(snapshot_topic(&bytes), Some("a/b"));
        assert_eq!(
            snapshot_topic(b"{\"type\":\"patch\",\"topic\":\"a\"}"),
            None
        );
    }

    #[test]
    fn raw_messages_pass_through_socketio_encoding_unchanged() {
        let bytes = statecast_core::message::snapshot("a/b", 3, b"{\"x\":[1,2]}");
        let raw: &RawValue = serde_json::from_slice(&bytes).unwrap();
        let StateOf { state } = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(state.get(), "{\"x\":[1,2]}");
        assert_eq!(raw.get().as_bytes(), &bytes[..]);
    }
}
