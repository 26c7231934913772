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
//! The mappings themselves, and their checks, are in `mappings.rs`.
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
use statecast_core::backoff::Backoff;
use statecast_core::request::{Request as ClientRequest, parse_value};
use statecast_core::{Client, ErrorCode, Frame, HubError, Kind, Mode, Pattern, Since};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::app::App;
use crate::auth::Grant;
use crate::listener::Peer;
use crate::metrics::Metrics;
use crate::query;
use crate::session::{Ack, ReplyTo, Session, Shape, expired, next_ack};

mod mappings;

use mappings::GENERIC_EVENTS;
pub use mappings::{Emit, EmitConfig, Mappings, On, OnAction, OnConfig, SocketIoConfig};

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

/// The Socket.IO service, as a layer in front of the router's routes.
pub(crate) fn layer(app: &Arc<App>) -> SocketIoLayer {
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
    app.check_origin(&parts.headers, addr)?;
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
            let query = query::token(parts.uri.query());
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
    /// The first argument, if any; `Err`: why it is not JSON the hub takes (a number out of
    /// range, nesting deeper than 128), which is the answer rather than a field it lacks.
    data: Result<Option<Value>, String>,
    /// The client's acknowledgement id, when it waits for one.
    ack: Option<i64>,
}

/// How socketioxide's parser says that an event has no argument at all.
const NO_ARGUMENT: &str = "first element not found";

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
            data: match data {
                Ok(data) => Ok(Some(data)),
                // An event without arguments (`emit("request_state")`) is not an error.
                Err(e) if e.to_string().starts_with(NO_ARGUMENT) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            ack,
        };
        if let Err(mpsc::error::TrySendError::Full(incoming)) = inbox.try_send(incoming) {
            let e = HubError::new(
                ErrorCode::RateLimited,
                "too many events waiting; wait for acknowledgements before sending more",
            );
            // Best effort: a client this far ahead may also have filled the send buffer.
            let reply = ReplyTo::new(None, 0, shape(incoming.ack, false));
            let _ = answer(&s, incoming.ack, &reply.refused(&e));
        }
        Ok(Enqueued)
    }
}

/// Sends a reply shaped for `ack` ([`shape`]): as the acknowledgement, or without one, a
/// failure as an `error` event (a success needs no word).
fn answer(socket: &Arc<Socket>, ack: Option<i64>, reply: &Frame) -> Result<(), SendError> {
    let raw = match serde_json::from_slice::<&RawValue>(&reply.bytes) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::error!("socket.io: a reply the hub made is not JSON: {e}");
            return Ok(());
        }
    };
    match ack {
        Some(_) => {
            let mut none = socketioxide::handler::Value::Bytes(Bytes::new());
            let Ok(sender) = AckSender::from_message_parts(socket, &mut none, &ack);
            sender.send(raw)
        }
        None if reply.kind == Kind::Error => socket.emit("error", raw),
        None => Ok(()),
    }
}

/// The shape of the answers to an event with acknowledgement `ack`; `bare` for a
/// `[[socketio.on]]` command, answered with the command's answer itself.
fn shape(ack: Option<i64>, bare: bool) -> Shape {
    match (ack, bare) {
        (None, _) => Shape::NoAck,
        (Some(_), false) => Shape::Ack,
        (Some(_), true) => Shape::Bare,
    }
}

/// Something to send, in order.
enum Out {
    /// A push of the generic protocol, emitted under its `type`, or a reply, the
    /// acknowledgement of the waiting request its tag names.
    Message(Frame),
    /// A snapshot of a mapped topic: its state is emitted as `emit[event]`.
    State { event: usize, frame: Frame },
    /// An answer that needs no ordering with pushes (refusals).
    Answer { ack: Option<i64>, reply: Frame },
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
    session: Session,
    /// Generic subscriptions and replies; made on the first generic request.
    generic: Option<Client>,
    /// Mapped topics, in `full` mode; only when there are `emit` mappings.
    mapped: Option<Client>,
    /// The patterns of the mapped topics.
    mapped_patterns: Vec<Pattern>,
    acks: Option<FuturesOrdered<Ack>>,
    /// The acknowledgements of requests whose `result` is to come out of an outbox, by
    /// the tag the result carries.
    waiting: HashMap<u32, Option<i64>>,
    next_tag: u32,
    out: VecDeque<Out>,
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
            session: Session::new(&app, peer.map(|Peer(_, slot)| slot), Some(Box::new(grant))),
            mapped_patterns,
            acks: None,
            waiting: HashMap::new(),
            next_tag: 1,
            out: VecDeque::new(),
        };
        if !connection.mapped_patterns.is_empty() {
            let client = connection.new_client();
            client.subscribe(&connection.mapped_patterns, &Since::Now, Some(Mode::Full));
            connection.mapped = Some(client);
        }
        let end = connection.run(&mut events, &gone).await;
        drop(connection);
        if let End::Refuse(e) = end {
            let _ = answer(
                &socket,
                None,
                &ReplyTo::new(None, 0, Shape::NoAck).refused(&e),
            );
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
        client.set_scope(self.session.scope());
        client
    }

    async fn run(&mut self, events: &mut mpsc::Receiver<Incoming>, gone: &Notify) -> End {
        let mut expires = self
            .session
            .deadline(&self.app)
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            let blocked = match self.flush() {
                Flushed::All => {
                    backoff.reset();
                    false
                }
                Flushed::Full(sent_some) => {
                    // The transport is taking packets: look again soon.
                    if sent_some {
                        backoff.reset();
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
            // Taken before the select!: its branches' futures are built even when disabled.
            let wait = if blocked {
                backoff.next_wait()
            } else {
                Duration::ZERO
            };
            tokio::select! {
                biased;
                _ = gone.notified() => return End::Gone,
                _ = tokio::time::sleep(wait), if blocked => {}
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
                Some(ack) = next_ack(&mut self.acks), if in_flight > 0 => {
                    if let Some(client) = &self.generic {
                        client.reply(ack);
                    }
                }
                _ = expired(&mut expires) => {
                    let e = HubError::new(
                        ErrorCode::Unauthorized,
                        "the token has expired; emit `auth` with a fresh one before it does",
                    );
                    self.app.refused(self.session.peer(), &e);
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
        for frame in frames {
            match frame.kind {
                kind if !kind.is_push() => self.out.push_back(Out::Message(frame)),
                Kind::Snapshot if mapped => {
                    for (event, emit) in self.app.config.socketio.emit.iter().enumerate() {
                        if Some(emit.topic.as_str()) == frame.topic() {
                            self.out.push_back(Out::State {
                                event,
                                frame: frame.clone(),
                            });
                        }
                    }
                }
                // A removed mapped topic has no state to emit; lag needs no word there
                // either (the latest state always arrives).
                _ if mapped => {}
                _ => self.out.push_back(Out::Message(frame)),
            }
        }
        false
    }

    /// Emits what is in `out`, in order, until the send buffer is full.
    fn flush(&mut self) -> Flushed {
        let mut sent_some = false;
        while let Some(item) = self.out.pop_front() {
            let sent = match &item {
                Out::Message(frame) => self.send_message(frame),
                Out::State { event, frame } => {
                    let name = &self.app.config.socketio.emit[*event].event;
                    match frame.state_json().map(serde_json::from_slice::<&RawValue>) {
                        Some(Ok(state)) => self.socket.emit(name, state),
                        _ => {
                            tracing::error!("socket.io: a snapshot the hub made has no state");
                            Ok(())
                        }
                    }
                }
                Out::Answer { ack, reply } => answer(&self.socket, *ack, reply),
            };
            match sent {
                Ok(()) => {
                    sent_some = true;
                    if let Out::Message(frame) | Out::State { frame, .. } = &item {
                        Metrics::add(&self.app.metrics.messages_out, 1);
                        Metrics::add(&self.app.metrics.bytes_out, frame.bytes.len() as u64);
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
    fn send_message(&mut self, frame: &Frame) -> Result<(), SendError> {
        if frame.kind.is_push() {
            return match serde_json::from_slice::<&RawValue>(&frame.bytes) {
                Ok(raw) => self.socket.emit(frame.kind.name(), raw),
                Err(e) => {
                    tracing::error!("socket.io: a message the hub made is not JSON: {e}");
                    Ok(())
                }
            };
        }
        let Some(&ack) = self.waiting.get(&frame.tag) else {
            return Ok(());
        };
        let sent = answer(&self.socket, ack, frame);
        // Kept while the send buffer is full: the same message is tried again.
        if !matches!(
            sent,
            Err(SendError::Socket(SocketError::InternalChannelFull))
        ) {
            self.waiting.remove(&frame.tag);
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
        if let Err(over) = self.session.take_message(&self.app) {
            self.refuse(ack, None, &over.error);
            if over.close {
                return Err(HubError::new(ErrorCode::RateLimited, "rate limit exceeded"));
            }
            return Ok(());
        }
        let data = match data {
            Ok(data) => data,
            Err(why) => {
                let why = format!("the payload of `{event}` is not JSON the hub takes: {why}");
                self.refuse_bad_request(ack, why);
                return Ok(());
            }
        };
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
                let why = format!("the payload of `{event}` must be a JSON object");
                self.refuse_bad_request(ack, why);
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
                ack,
                reply: ReplyTo::new(id, 0, shape(ack, false)).pong(),
            }),
            ClientRequest::Auth { token } => return self.reauthenticate(&token, ack, id, expires),
            request => {
                let reply = self.wait(ack, id, false);
                self.ensure_generic();
                let Some(client) = &self.generic else {
                    return Ok(());
                };
                self.session
                    .dispatch(&self.app, client, request, reply, &mut self.acks);
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
        let reply = ReplyTo::new(id, 0, shape(ack, false));
        let fields = match self.session.authenticate(&self.app, token) {
            Ok(None) => json!({}),
            Ok(Some(grant)) => {
                for client in [&self.generic, &self.mapped].into_iter().flatten() {
                    client.set_scope(grant.scope());
                }
                *expires = grant
                    .remaining()
                    .map(|left| Box::pin(tokio::time::sleep_until(Instant::now() + left)));
                json!({"subject": grant.subject})
            }
            Err(e) => {
                // Answered before the disconnect; `flush` runs no more, so send it now.
                let _ = answer(&self.socket, ack, &reply.refused(&e));
                return Err(e);
            }
        };
        self.out.push_back(Out::Answer {
            ack,
            reply: reply.ok(fields),
        });
        Ok(())
    }

    /// A `[[socketio.on]]` event.
    fn mapped_event(&mut self, action: OnAction, data: Option<Value>, ack: Option<i64>) {
        match action {
            OnAction::RequestState => match &self.mapped {
                Some(mapped) => {
                    let topics = mapped.get(&self.mapped_patterns);
                    let reply = self.wait(ack, None, false);
                    if let Some(mapped) = &self.mapped {
                        mapped.reply(reply.ok(json!({"topics": topics})));
                    }
                }
                // No `emit` mappings: nothing to send.
                None => self.out.push_back(Out::Answer {
                    ack,
                    reply: ReplyTo::new(None, 0, shape(ack, false)).ok(json!({"topics": 0})),
                }),
            },
            OnAction::Command { target, name } => {
                let args = match data {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(args) => args,
                };
                let reply = self.wait(ack, None, true);
                if self.mapped.is_none() {
                    self.ensure_generic();
                }
                let Some(client) = self.mapped.as_ref().or(self.generic.as_ref()) else {
                    return;
                };
                self.session.dispatch(
                    &self.app,
                    client,
                    ClientRequest::Command { target, name, args },
                    reply,
                    &mut self.acks,
                );
            }
        }
    }

    /// Registers a request whose `result` will come out of an outbox, tagged so that the
    /// result finds it.
    fn wait(&mut self, ack: Option<i64>, id: Option<Value>, bare: bool) -> ReplyTo {
        let tag = self.next_tag;
        // Tags are unique while in flight (at most `MAX_IN_FLIGHT` are); 0 is none.
        self.next_tag = self.next_tag.checked_add(1).unwrap_or(1);
        self.waiting.insert(tag, ack);
        ReplyTo::new(id, tag, shape(ack, bare))
    }

    /// A payload the hub cannot take: `bad_request`, counted as a client error.
    fn refuse_bad_request(&mut self, ack: Option<i64>, why: String) {
        Metrics::add(&self.app.metrics.client_errors, 1);
        self.refuse(ack, None, &HubError::new(ErrorCode::BadRequest, why));
    }

    /// Answers with an error at once.
    fn refuse(&mut self, ack: Option<i64>, id: Option<Value>, e: &HubError) {
        self.out.push_back(Out::Answer {
            ack,
            reply: ReplyTo::new(id, 0, shape(ack, false)).refused(e),
        });
    }

    /// Makes the generic client on first use.
    fn ensure_generic(&mut self) {
        if self.generic.is_none() {
            self.generic = Some(self.new_client());
        }
    }
}

/// Resolves when the client has something to drain (never without a client).
async fn ready(client: Option<&Client>) {
    match client {
        Some(client) => client.ready().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statecast_core::message;

    #[test]
    fn raw_messages_pass_through_socketio_encoding_unchanged() {
        let frame = Frame::new(
            Kind::Snapshot,
            message::snapshot("a/b", 3, b"{\"x\":[1,2]}"),
        );
        let raw: &RawValue = serde_json::from_slice(&frame.bytes).unwrap();
        let state: &RawValue = serde_json::from_slice(frame.state_json().unwrap()).unwrap();
        assert_eq!(state.get(), "{\"x\":[1,2]}");
        assert_eq!(raw.get().as_bytes(), &frame.bytes[..]);
    }
}
