//! Subscribers and publishers. Everything runs on one thread (a current-thread runtime with
//! a `LocalSet`), so shared counters are `Rc<RefCell<..>>` and cost no atomics.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::protocol::{ChangeKind, Incoming, Interest, Protocol, rest_path};

pub type Ws = WebSocketStream<TcpStream>;

/// Loopback source addresses the client sockets are spread over, so ephemeral ports
/// never run out.
const SOURCE_ADDRESSES: u8 = 32;

/// Nanoseconds since the Unix epoch: the clock both the publisher and subscribers read.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What every subscriber adds to.
pub struct Totals {
    pub latency_us: Histogram<u64>,
    /// Only changes received while this is set are measured.
    pub measuring: bool,
    pub deliveries: u64,
    pub first_delivery: Option<Instant>,
    pub last_delivery: Option<Instant>,
}

impl Totals {
    pub fn new() -> Totals {
        Totals {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant figures are valid")),
            measuring: false,
            deliveries: 0,
            first_delivery: None,
            last_delivery: None,
        }
    }
}

/// One subscriber's view: per topic the rev and the `seq` member of the state it holds.
#[derive(Default)]
pub struct Subscriber {
    pub topics: HashMap<Box<str>, (u64, u64)>,
    /// Snapshots received after the initial sync: conflations (statecast) or the peers'
    /// full-state broadcasts.
    pub live_snapshots: u64,
    /// Patches whose rev was not the previous + 1.
    pub gaps: u64,
    /// Messages whose rev was lower than one already seen.
    pub regressions: u64,
    pub lagged: u64,
    pub closed: Option<String>,
    /// Per topic, a digest of every `(rev, seq)` received after the initial sync, in order
    /// (see [`fold`]); kept only when set to `Some` before subscribing (cluster scenario).
    pub sequence: Option<HashMap<Box<str>, u64>>,
}

/// Adds one change, `(rev, seq)`, to a digest of a sequence of changes. Order matters: two
/// subscribers have the same digest only if they saw the same changes in the same order.
pub fn fold(digest: u64, rev: u64, seq: u64) -> u64 {
    let mut x = digest.rotate_left(17)
        ^ rev.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ seq.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// Connects a WebSocket from loopback source address number `index`.
pub async fn connect(base_url: &str, protocol: Protocol, index: usize) -> Result<Ws, String> {
    connect_with(base_url, protocol, index, 0, None).await
}

/// As [`connect`], with a kernel receive buffer of `recv_buffer` bytes: a client that stops
/// reading soon leaves what the server sends it in the server's memory.
pub async fn connect_small_buffer(
    base_url: &str,
    protocol: Protocol,
    index: usize,
    recv_buffer: u32,
) -> Result<Ws, String> {
    connect_with(base_url, protocol, index, 0, Some(recv_buffer)).await
}

/// As [`connect`]; `write_buffer` bytes are gathered before a write (0: write each message).
async fn connect_with(
    base_url: &str,
    protocol: Protocol,
    index: usize,
    write_buffer: usize,
    recv_buffer: Option<u32>,
) -> Result<Ws, String> {
    let host_port = base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base_url}: only http:// URLs are supported"))?;
    let addr: SocketAddr = host_port
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("{host_port}: {e}"))?;
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(bytes) = recv_buffer {
        socket
            .set_recv_buffer_size(bytes)
            .map_err(|e| e.to_string())?;
    }
    if addr.ip().is_loopback() {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index % SOURCE_ADDRESSES as usize) as u8);
        socket
            .bind(SocketAddr::from((source, 0)))
            .map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let url = format!("ws://{host_port}{}", protocol.ws_path());
    let config = WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(write_buffer);
    let (ws, _) = client_async_with_config(url.as_str(), stream, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
    Ok(ws)
}

/// Sends the protocol's hello, if it has one, and waits for its reply.
async fn hello(ws: &mut Ws, protocol: Protocol) -> Result<(), String> {
    let Some(hello) = protocol.hello() else {
        return Ok(());
    };
    ws.send(Message::text(hello))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no answer to the hello within 60 s".to_string())?;
        match frame {
            Some(Ok(Message::Text(t))) if protocol.is_hello_reply(&t) => return Ok(()),
            Some(Ok(Message::Text(t))) => {
                if let Incoming::Reply(reply) = protocol.parse(&t) {
                    ws.send(Message::text(reply))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before answering the hello".into()),
        }
    }
}

/// Sends the subscription and reads until it is acknowledged, recording initial snapshots.
pub async fn subscribe(
    ws: &mut Ws,
    protocol: Protocol,
    interest: &Interest,
    index: usize,
    subscribers: usize,
    sub: &mut Subscriber,
) -> Result<(), String> {
    hello(ws, protocol).await?;
    let request = protocol.subscribe(interest, index, subscribers);
    ws.send(Message::text(request))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Duration::from_secs(60);
    loop {
        let frame = tokio::time::timeout(deadline, ws.next())
            .await
            .map_err(|_| "no answer to subscribe within 60 s".to_string())?;
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before the subscription was acknowledged".into()),
        };
        match protocol.parse(&text) {
            Incoming::Ack { id: 1, ok, .. } => {
                return if ok {
                    Ok(())
                } else {
                    Err(format!("subscribe refused: {text}"))
                };
            }
            Incoming::Change {
                topic, rev, fields, ..
            } => {
                sub.topics
                    .insert(topic.into(), (rev, fields.seq.unwrap_or(0)));
            }
            Incoming::Reply(reply) => {
                ws.send(Message::text(reply))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
}

/// Reads a subscriber's stream until it closes, checking and measuring every change.
pub async fn run_subscriber(
    ws: Ws,
    protocol: Protocol,
    sub: Rc<RefCell<Subscriber>>,
    totals: Rc<RefCell<Totals>>,
) {
    let (mut sink, mut stream) = ws.split();
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                sub.borrow_mut().closed = Some(e.to_string());
                return;
            }
        };
        match protocol.parse(&text) {
            Incoming::Change {
                topic,
                rev,
                kind,
                fields,
            } => {
                let now = Instant::now();
                let mut totals = totals.borrow_mut();
                if totals.measuring {
                    if let Some(ts) = fields.ts {
                        let us = now_ns().saturating_sub(ts) / 1000;
                        let _ = totals.latency_us.record(us.max(1));
                    }
                    totals.deliveries += 1;
                    totals.first_delivery.get_or_insert(now);
                    totals.last_delivery = Some(now);
                }
                drop(totals);
                let mut sub = sub.borrow_mut();
                let sub = &mut *sub;
                let entry = sub.topics.get(topic).copied();
                match (kind, entry) {
                    (_, Some((held, _))) if rev < held => sub.regressions += 1,
                    (ChangeKind::Patch, Some((held, _))) if rev != held + 1 => sub.gaps += 1,
                    (ChangeKind::Patch, None) => sub.gaps += 1,
                    (ChangeKind::Snapshot, _) => sub.live_snapshots += 1,
                    _ => {}
                }
                let seq = fields.seq.or(entry.map(|e| e.1)).unwrap_or(0);
                if let Some(sequence) = sub.sequence.as_mut() {
                    match sequence.get_mut(topic) {
                        Some(digest) => *digest = fold(*digest, rev, seq),
                        None => {
                            sequence.insert(topic.into(), fold(0, rev, seq));
                        }
                    }
                }
                match entry {
                    Some(_) => {
                        if let Some(held) = sub.topics.get_mut(topic) {
                            *held = (rev.max(held.0), seq);
                        }
                    }
                    None => {
                        sub.topics.insert(topic.into(), (rev, seq));
                    }
                }
            }
            Incoming::Lagged { .. } => sub.borrow_mut().lagged += 1,
            Incoming::Reply(reply) if sink.send(Message::text(reply)).await.is_err() => return,
            _ => {}
        }
    }
    sub.borrow_mut()
        .closed
        .get_or_insert_with(|| "closed".into());
}

/// The last acknowledged rev and seq of each topic published.
pub type Finals = Rc<RefCell<HashMap<String, (u64, u64)>>>;

/// Every acknowledged publish: `(topic, rev, seq)`, in the order the acks arrived.
pub type AckLog = Rc<RefCell<Vec<(Box<str>, u64, u64)>>>;

/// The state the bench publishes: a timestamp for latency, a sequence number for checking,
/// and padding to a realistic size.
pub fn state_json(seq: u64, payload: &str) -> String {
    format!(r#"{{"ts":{},"seq":{seq},"payload":"{payload}"}}"#, now_ns())
}

/// Publishes over one pipelined WebSocket connection.
pub struct WsPublisher {
    protocol: Protocol,
    sink: SplitSink<Ws, Message>,
    pending: Rc<RefCell<HashMap<u64, (String, u64)>>>,
    window: Rc<tokio::sync::Semaphore>,
    reader: tokio::task::JoinHandle<Result<(), String>>,
    next_id: u64,
    pub refused: Rc<RefCell<u64>>,
}

impl WsPublisher {
    pub async fn connect(
        base_url: &str,
        protocol: Protocol,
        window: usize,
        finals: Finals,
        acks: Option<AckLog>,
    ) -> Result<WsPublisher, String> {
        let mut ws = connect_with(base_url, protocol, 0, 64 << 10, None).await?;
        hello(&mut ws, protocol).await?;
        let (sink, stream) = ws.split();
        let pending: Rc<RefCell<HashMap<u64, (String, u64)>>> = Rc::default();
        let window = Rc::new(tokio::sync::Semaphore::new(window));
        let refused = Rc::new(RefCell::new(0));
        let reader = tokio::task::spawn_local(read_acks(
            stream,
            protocol,
            Rc::clone(&pending),
            Rc::clone(&window),
            finals,
            acks,
            Rc::clone(&refused),
        ));
        Ok(WsPublisher {
            protocol,
            sink,
            pending,
            window,
            reader,
            next_id: 100,
            refused,
        })
    }

    /// Sends one change; waits only when `window` changes are unacknowledged.
    pub async fn publish(&mut self, topic: &str, seq: u64, payload: &str) -> Result<(), String> {
        self.publish_state(topic, seq, &state_json(seq, payload))
            .await
    }

    /// Sends one change of a state the caller made (serialized JSON).
    pub async fn publish_state(
        &mut self,
        topic: &str,
        seq: u64,
        state: &str,
    ) -> Result<(), String> {
        let permit = self
            .window
            .acquire()
            .await
            .map_err(|_| "the publisher connection closed".to_string())?;
        permit.forget();
        self.next_id += 1;
        let id = self.next_id;
        self.pending
            .borrow_mut()
            .insert(id, (topic.to_owned(), seq));
        let text = self.protocol.publish(id, topic, state);
        self.sink
            .feed(Message::text(text))
            .await
            .map_err(|e| e.to_string())?;
        // A burst leaves in few writes: flush every 32 messages or when the window is full.
        if self.window.available_permits() == 0 || id.is_multiple_of(32) {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        self.sink.flush().await.map_err(|e| e.to_string())
    }

    /// Waits for every acknowledgement.
    pub async fn finish(mut self) -> Result<(), String> {
        self.sink.flush().await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.pending.borrow().is_empty() {
            if self.reader.is_finished() || Instant::now() > deadline {
                return Err(format!(
                    "{} publishes were never acknowledged",
                    self.pending.borrow().len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.reader.abort();
        Ok(())
    }
}

async fn read_acks(
    mut stream: SplitStream<Ws>,
    protocol: Protocol,
    pending: Rc<RefCell<HashMap<u64, (String, u64)>>>,
    window: Rc<tokio::sync::Semaphore>,
    finals: Finals,
    acks: Option<AckLog>,
    refused: Rc<RefCell<u64>>,
) -> Result<(), String> {
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(_) => continue,
            Err(e) => return Err(e.to_string()),
        };
        if let Incoming::Ack { id, ok, rev } = protocol.parse(&text) {
            let Some((topic, seq)) = pending.borrow_mut().remove(&id) else {
                continue;
            };
            window.add_permits(1);
            match (ok, rev) {
                (true, Some(rev)) => {
                    if let Some(acks) = &acks {
                        acks.borrow_mut().push((topic.as_str().into(), rev, seq));
                    }
                    let mut finals = finals.borrow_mut();
                    let entry = finals.entry(topic).or_insert((0, 0));
                    if rev >= entry.0 {
                        *entry = (rev, seq);
                    }
                }
                _ => *refused.borrow_mut() += 1,
            }
        }
    }
    Ok(())
}

/// Publishes with REST `PUT`s, at most `concurrency` at a time.
pub struct RestPublisher {
    client: reqwest::Client,
    base_url: String,
    window: std::sync::Arc<tokio::sync::Semaphore>,
    concurrency: usize,
    finals: Finals,
    pub refused: Rc<RefCell<u64>>,
}

impl RestPublisher {
    pub fn new(base_url: &str, concurrency: usize, finals: Finals) -> RestPublisher {
        RestPublisher {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency)
                .build()
                .unwrap_or_default(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            window: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency)),
            concurrency,
            finals,
            refused: Rc::default(),
        }
    }

    pub async fn publish(&mut self, topic: &str, seq: u64, payload: &str) -> Result<(), String> {
        let permit = std::sync::Arc::clone(&self.window)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let request = self
            .client
            .put(format!("{}{}", self.base_url, rest_path(topic)))
            .header("content-type", "application/json")
            .body(state_json(seq, payload));
        let finals = Rc::clone(&self.finals);
        let refused = Rc::clone(&self.refused);
        let topic = topic.to_owned();
        tokio::task::spawn_local(async move {
            let result = put(request).await;
            drop(permit);
            match result {
                Ok(rev) => {
                    let mut finals = finals.borrow_mut();
                    let entry = finals.entry(topic).or_insert((0, 0));
                    if rev >= entry.0 {
                        *entry = (rev, seq);
                    }
                }
                Err(_) => *refused.borrow_mut() += 1,
            }
        });
        Ok(())
    }

    pub async fn finish(self) -> Result<(), String> {
        let all = self.concurrency as u32;
        let _all = self
            .window
            .acquire_many(all)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

async fn put(request: reqwest::RequestBuilder) -> Result<u64, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    body.get("rev")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("no rev in {body}"))
}

/// Waits until every subscriber holds the final rev of each topic it `follows` (given the
/// subscriber's index and the topic); `false` when nothing was delivered for 10 s before
/// that.
pub async fn caught_up(
    subscribers: &[Rc<RefCell<Subscriber>>],
    finals: &HashMap<String, (u64, u64)>,
    totals: &Rc<RefCell<Totals>>,
    follows: impl Fn(usize, &str) -> bool,
) -> bool {
    let mut last_progress = (Instant::now(), 0u64);
    loop {
        let done = subscribers.iter().enumerate().all(|(i, sub)| {
            let sub = sub.borrow();
            finals.iter().all(|(topic, (rev, _))| {
                !follows(i, topic)
                    || sub
                        .topics
                        .get(topic.as_str())
                        .is_some_and(|(held, _)| held >= rev)
            })
        });
        if done {
            return true;
        }
        let deliveries = totals.borrow().deliveries;
        if deliveries != last_progress.1 {
            last_progress = (Instant::now(), deliveries);
        } else if last_progress.0.elapsed() > Duration::from_secs(10) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
