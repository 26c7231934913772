//! Shared parts of the bridge's integration tests: real devices (an axum HTTP server, a
//! WebSocket upstream, an MQTT client on the local Mosquitto broker) and a hub watcher,
//! on top of the testkit's (`statecast_testkit`) bounded waits and merge-patch oracle.
//! Nothing here sleeps to synchronise: every wait is for a condition, and every wait gives
//! up after [`TIMEOUT`] with a message saying what it waited for.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::Value;
use statecast_bridge::{Bridge, BridgeConfig, Command, CommandError, Handlers};
use statecast_core::{Client, Hub, HubConfig, MemoryEngine, Pattern, Since, Topic};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;

pub use statecast_testkit::{TIMEOUT, free_port, merge_apply, within};

/// The local Mosquitto broker the MQTT tests use.
pub const BROKER: &str = "mqtt://127.0.0.1:1883";

/// A fresh in-memory hub.
pub fn hub() -> Hub {
    Hub::open(MemoryEngine, HubConfig::default()).expect("open the hub")
}

/// Parses a bridge configuration as a user writes it.
pub fn config(text: &str) -> BridgeConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("config does not parse: {e}\n{text}"))
}

/// Starts a bridge from TOML with no handlers.
pub fn start(hub: &Hub, text: &str) -> Bridge {
    start_with(hub, text, Handlers::new())
}

pub fn start_with(hub: &Hub, text: &str, handlers: Handlers) -> Bridge {
    Bridge::start(hub, config(text), handlers)
        .unwrap_or_else(|e| panic!("the bridge does not start: {e}\n{text}"))
}

/// A command as a client sends it.
pub fn command(target: &str, name: &str, args: Value) -> Command {
    Command {
        target: Topic::new(target).expect("valid target"),
        name: name.into(),
        args,
    }
}

/// Sends a command through the bridge and waits (bounded) for its answer.
pub async fn send(
    bridge: &Bridge,
    target: &str,
    name: &str,
    args: Value,
) -> Result<Value, CommandError> {
    within(
        &format!("the answer to {name} on {target}"),
        bridge.command(command(target, name, args)),
    )
    .await
}

/// A random suffix for names that must not collide with other tests or earlier runs.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A topic's current state in the hub, parsed.
pub fn state(hub: &Hub, topic: &str) -> Option<Value> {
    hub.get(topic)
        .map(|s| serde_json::from_slice(&s.state).expect("states are JSON"))
}

pub fn rev(hub: &Hub, topic: &str) -> u64 {
    hub.get(topic)
        .unwrap_or_else(|| panic!("{topic} does not exist"))
        .rev
}

// ---------------------------------------------------------------------------------------
// Watching the hub
// ---------------------------------------------------------------------------------------

/// A hub client subscribed to some patterns. It keeps every frame it received, in order,
/// and each topic's state as the frames build it (snapshots, merge patches, removals).
pub struct Watch {
    client: Client,
    /// Every frame received, parsed.
    pub frames: Vec<Value>,
    states: HashMap<String, Value>,
    /// Each topic's state after each state frame for it (`None`: removed).
    history: HashMap<String, Vec<Option<Value>>>,
}

impl Watch {
    /// Subscribes (from now: a snapshot of each matching topic first).
    pub fn new(hub: &Hub, patterns: &[&str]) -> Watch {
        let client = hub.connect();
        let patterns: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern::new(p).expect("valid pattern"))
            .collect();
        client.subscribe(&patterns, &Since::Now, None);
        let mut watch = Watch {
            client,
            frames: Vec::new(),
            states: HashMap::new(),
            history: HashMap::new(),
        };
        watch.pump();
        watch
    }

    /// Takes whatever is queued now, without waiting.
    pub fn pump(&mut self) {
        let mut frames = Vec::new();
        let drained = self.client.drain(&mut frames, usize::MAX);
        assert!(!drained.closed, "the hub closed the watcher");
        for frame in frames {
            let v: Value = serde_json::from_slice(&frame.bytes).expect("frames are JSON");
            let topic = v["topic"].as_str().unwrap_or_default().to_string();
            let after = match v["type"].as_str() {
                Some("snapshot") => Some(Some(v["state"].clone())),
                Some("patch") => {
                    let mut s = self.states.get(&topic).cloned().unwrap_or(Value::Null);
                    merge_apply(&mut s, &v["patch"]);
                    Some(Some(s))
                }
                Some("removed") => Some(None),
                _ => None,
            };
            if let Some(after) = after {
                match &after {
                    Some(s) => self.states.insert(topic.clone(), s.clone()),
                    None => self.states.remove(&topic),
                };
                self.history.entry(topic).or_default().push(after);
            }
            self.frames.push(v);
        }
    }

    /// Waits until `done` holds, taking frames as they come.
    pub async fn until(&mut self, what: &str, done: impl FnMut(&Watch) -> bool) {
        if !self.try_until(done).await {
            let recent = &self.frames[self.frames.len().saturating_sub(8)..];
            panic!(
                "timed out after {TIMEOUT:?} waiting for {what}; last frames: {}",
                serde_json::to_string_pretty(recent).unwrap_or_default()
            );
        }
    }

    /// Like [`Watch::until`], but says false instead of panicking when time is up.
    pub async fn try_until(&mut self, mut done: impl FnMut(&Watch) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, self.client.ready())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Waits until `topic` has a state for which `done` holds; returns that state.
    pub async fn state_where(
        &mut self,
        topic: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.until(what, |w| w.state(topic).is_some_and(&done))
            .await;
        self.state(topic).cloned().expect("checked above")
    }

    /// Waits until `topic` is removed (or absent).
    pub async fn gone(&mut self, topic: &str, what: &str) {
        self.until(what, |w| w.state(topic).is_none()).await;
    }

    /// Waits for a frame after `mark` that `pick` accepts; returns it.
    pub async fn frame_after(
        &mut self,
        mark: usize,
        what: &str,
        pick: impl Fn(&Value) -> bool,
    ) -> Value {
        self.until(what, |w| w.frames[mark..].iter().any(&pick))
            .await;
        self.frames[mark..]
            .iter()
            .find(|f| pick(f))
            .cloned()
            .expect("checked above")
    }

    pub fn state(&self, topic: &str) -> Option<&Value> {
        self.states.get(topic)
    }

    /// The position of the next frame, to look at what came after it.
    pub fn mark(&self) -> usize {
        self.frames.len()
    }

    /// Frames for `topic` received since `mark`.
    pub fn frames_since(&self, mark: usize, topic: &str) -> Vec<Value> {
        self.frames[mark..]
            .iter()
            .filter(|f| f["topic"] == topic)
            .cloned()
            .collect()
    }

    /// `topic`'s states, one per state frame received for it.
    pub fn history(&self, topic: &str) -> Vec<Option<Value>> {
        self.history.get(topic).cloned().unwrap_or_default()
    }
}

/// The health topic of the source `name`.
pub fn health_topic(name: &str) -> String {
    format!("_sources/{name}")
}

// ---------------------------------------------------------------------------------------
// An HTTP device
// ---------------------------------------------------------------------------------------

/// What a device answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200 with this JSON.
    Json(Value),
    /// This status and this body (as is).
    Status(u16, String),
    /// 200 with this body as text (not JSON, say).
    Text(String),
    /// Never answers.
    Hang,
}

/// A request the device received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query as sent.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct DeviceState {
    answer: Option<Answer>,
    /// Answers for particular paths, before `answer`.
    by_path: HashMap<String, Answer>,
    /// Sends `ETag: "v<version>"` and answers 304 to a matching `If-None-Match`.
    etag: bool,
    /// Sends a `Last-Modified` date per version and answers 304 to a matching
    /// `If-Modified-Since`.
    last_modified: bool,
    version: u64,
    seen: Vec<Seen>,
    not_modified: u64,
}

struct DeviceShared {
    state: Mutex<DeviceState>,
    /// Requests received so far.
    requests: watch::Sender<u64>,
}

/// A device's HTTP API: an axum server on 127.0.0.1 that records every request and answers
/// what the test sets. It can go away and come back on the same port.
pub struct Device {
    pub addr: SocketAddr,
    shared: Arc<DeviceShared>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Device {
    pub async fn start(answer: Answer) -> Device {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(DeviceShared {
            state: Mutex::new(DeviceState {
                answer: Some(answer),
                ..DeviceState::default()
            }),
            requests: watch::channel(0).0,
        });
        let mut device = Device {
            addr,
            shared,
            server: None,
        };
        device.serve(listener);
        device
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&self.shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("device server");
        });
        self.server = Some((stop, task));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops listening and closes its connections: the device is offline.
    pub async fn stop(&mut self) {
        let (stop, task) = self.server.take().expect("the device is running");
        let _ = stop.send(());
        within("the device server to stop", task)
            .await
            .expect("device server task");
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "the device is running");
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {} again: {e}", self.addr));
        self.serve(listener);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeviceState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets what the device answers from now on; returns the number of requests received
    /// so far (every later request gets the new answer).
    pub fn answer(&self, answer: Answer) -> u64 {
        let mut state = self.lock();
        state.answer = Some(answer);
        state.version += 1;
        *self.shared.requests.borrow()
    }

    /// Sets what the device answers on `path` (before the general answer).
    pub fn answer_on(&self, path: &str, answer: Answer) {
        let mut state = self.lock();
        state.by_path.insert(path.to_string(), answer);
        state.version += 1;
    }

    /// Turns on ETag support.
    pub fn with_etag(self) -> Device {
        self.lock().etag = true;
        self
    }

    pub fn etag(&self) -> String {
        format!("\"v{}\"", self.lock().version)
    }

    /// Turns on Last-Modified support.
    pub fn with_last_modified(self) -> Device {
        self.lock().last_modified = true;
        self
    }

    pub fn last_modified(&self) -> String {
        last_modified_of(self.lock().version)
    }

    pub fn requests(&self) -> u64 {
        *self.shared.requests.borrow()
    }

    pub fn not_modified(&self) -> u64 {
        self.lock().not_modified
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Waits until the device has received at least `n` requests.
    pub async fn wait_requests(&self, n: u64) {
        let mut rx = self.shared.requests.subscribe();
        within(
            &format!("request {n} to the device"),
            rx.wait_for(|c| *c >= n),
        )
        .await
        .expect("the device is gone");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.server {
            task.abort();
        }
    }
}

async fn handle(
    State(shared): State<Arc<DeviceShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (answer, etag, modified) = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seen.push(Seen {
            method,
            uri: uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: headers.clone(),
            body,
        });
        let answer = state
            .by_path
            .get(uri.path())
            .or(state.answer.as_ref())
            .cloned()
            .expect("an answer is set");
        let etag = state.etag.then(|| format!("\"v{}\"", state.version));
        let modified = state.last_modified.then(|| last_modified_of(state.version));
        let sent = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let matched = (etag.is_some() && sent(header::IF_NONE_MATCH) == etag.as_deref())
            || (modified.is_some() && sent(header::IF_MODIFIED_SINCE) == modified.as_deref());
        if matched {
            state.not_modified += 1;
        }
        // Counted under the lock, so `Device::answer` splits requests cleanly.
        shared.requests.send_modify(|c| *c += 1);
        if matched {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        (answer, etag, modified)
    };
    let mut response = match answer {
        Answer::Json(v) => axum::Json(v).into_response(),
        Answer::Status(status, body) => {
            (StatusCode::from_u16(status).expect("valid status"), body).into_response()
        }
        Answer::Text(text) => text.into_response(),
        Answer::Hang => std::future::pending().await,
    };
    if let Some(etag) = etag {
        response
            .headers_mut()
            .insert(header::ETAG, etag.parse().expect("valid etag"));
    }
    if let Some(modified) = modified {
        response
            .headers_mut()
            .insert(header::LAST_MODIFIED, modified.parse().expect("valid date"));
    }
    response
}

/// An HTTP date that differs per version.
fn last_modified_of(version: u64) -> String {
    format!(
        "Mon, 23 Nov 2026 10:{:02}:{:02} GMT",
        version / 60 % 60,
        version % 60
    )
}

/// An address nothing listens on: bound once, then released.
pub fn unreachable_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------------------
// A WebSocket upstream
// ---------------------------------------------------------------------------------------

/// A WebSocket server on 127.0.0.1 that hands each accepted connection to the test.
pub struct Upstream {
    pub url: String,
    connections: mpsc::UnboundedReceiver<WebSocketStream<TcpStream>>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/events", listener.local_addr().expect("local addr"));
        let (tx, connections) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                        let _ = tx.send(ws);
                    }
                });
            }
        });
        Upstream {
            url,
            connections,
            task,
        }
    }

    /// The next connection the source opens.
    pub async fn accept(&mut self) -> WebSocketStream<TcpStream> {
        within(
            "the source to connect to the upstream",
            self.connections.recv(),
        )
        .await
        .expect("the upstream listener ended")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------------------

/// A client of the local broker, playing a device or a publisher.
pub struct Mqtt {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
    /// Messages that arrived while waiting for something else.
    messages: VecDeque<Publish>,
    /// Retained messages this client left on the broker; cleared on drop if the test
    /// did not (because it failed half-way, say).
    retained: HashSet<String>,
    task: JoinHandle<()>,
}

impl Mqtt {
    /// Connects and waits for the broker's ConnAck.
    pub async fn connect(name: &str) -> Mqtt {
        let mut options = MqttOptions::new(unique(name), "127.0.0.1", 1883);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut mqtt = Mqtt {
            client,
            events,
            messages: VecDeque::new(),
            retained: HashSet::new(),
            task,
        };
        mqtt.wait_packet(
            "the broker's ConnAck (is Mosquitto listening on 127.0.0.1:1883?)",
            |p| matches!(p, Packet::ConnAck(_)),
        )
        .await;
        mqtt
    }

    /// Waits for a packet `pick` accepts; messages met meanwhile are kept for later.
    async fn wait_packet(&mut self, what: &str, pick: impl Fn(&Packet) -> bool) -> Packet {
        within(what, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(packet)) if pick(&packet) => return packet,
                    Some(Ok(Packet::Publish(p))) => self.messages.push_back(p),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("MQTT connection failed while waiting for {what}: {e}"),
                    None => panic!("MQTT connection ended while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Publishes with QoS 1 and waits until the broker has it.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let payload = payload.into();
        if retain && payload.is_empty() {
            self.retained.remove(topic);
        } else if retain {
            self.retained.insert(topic.to_string());
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("queue the publish");
        self.wait_packet(
            &format!("the broker to acknowledge a publish on {topic}"),
            |p| matches!(p, Packet::PubAck(_)),
        )
        .await;
    }

    /// Subscribes and waits until the broker confirms.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue the subscribe");
        self.wait_packet(
            &format!("the broker to confirm the subscription to {filter}"),
            |p| matches!(p, Packet::SubAck(_)),
        )
        .await;
    }

    /// The next message on a subscribed topic.
    pub async fn next_message(&mut self) -> Publish {
        if let Some(p) = self.messages.pop_front() {
            return p;
        }
        match self
            .wait_packet("an MQTT message", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
        if !self.retained.is_empty() {
            clear_retained(std::mem::take(&mut self.retained));
        }
    }
}

/// Publishes an empty retained message on each topic, from a thread of its own (this runs
/// in `drop`, where nothing can be awaited), and waits for the broker to take them.
fn clear_retained(topics: HashSet<String>) {
    let cleared = std::thread::spawn(move || {
        let options = MqttOptions::new(unique("sctest-cleanup"), "127.0.0.1", 1883);
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        for topic in &topics {
            if client
                .publish(topic.as_str(), QoS::AtLeastOnce, true, Vec::new())
                .is_err()
            {
                return;
            }
        }
        let mut acked = 0;
        while acked < topics.len() {
            match connection.recv_timeout(TIMEOUT) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                _ => return,
            }
        }
    });
    let _ = cleared.join();
}
