//! The WebSocket endpoint `/ws`: one task per connection.
//!
//! The task waits on four things at once: a frame from the client, the client's outbox
//! becoming non-empty, a write becoming durable (its `result` is then queued), and the
//! heartbeat. Everything for the client, replies included, goes through the hub's outbox,
//! so a `result` always follows the snapshots it announces. Outgoing messages are fed into
//! the socket as a batch and flushed with one write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::stream::{FuturesOrdered, SplitSink, StreamExt};
use serde_json::{Value, json};
use statecast_core::{Client, ErrorCode, Frame, HubError, Outcome, Write};
use tokio::time::{Instant, MissedTickBehavior};

use crate::App;
use crate::metrics::Metrics;
use crate::request::{Request, parse};

/// Writes whose `result` may be outstanding at once; past this the connection stops
/// reading until results go out.
const MAX_IN_FLIGHT: usize = 256;
/// Most messages written in one batch.
const MAX_BATCH: usize = 1024;

const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_INVALID_UTF8: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;

type Ack = Pin<Box<dyn Future<Output = Bytes> + Send>>;
type Sink = SplitSink<WebSocket, Message>;

pub async fn upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    let max = app.config.max_frame_bytes;
    ws.read_buffer_size(4096)
        .write_buffer_size(64 << 10)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(app, socket))
}

async fn connection(app: Arc<App>, socket: WebSocket) {
    Metrics::add(&app.metrics.ws_connections_total, 1);
    Metrics::add(&app.metrics.ws_connections, 1);
    let client = app.hub.connect();
    let close = run(&app, &client, socket).await;
    if let Some(code) = close {
        tracing::debug!(code, "websocket closed");
    }
    app.metrics
        .ws_connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Runs the connection until it ends; returns the close code the server sent, if any.
async fn run(app: &App, client: &Client, socket: WebSocket) -> Option<u16> {
    let heartbeat = Duration::from_millis(app.config.heartbeat_ms.max(1));
    let dead_after = heartbeat.mul_f64(2.5);
    let (mut sink, mut stream) = socket.split();
    client.reply(welcome(app));
    let mut acks: FuturesOrdered<Ack> = FuturesOrdered::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut shutdown = app.shutdown.clone();
    loop {
        let reading = acks.len() < MAX_IN_FLIGHT && !client.is_congested();
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                let _ = send_close(&mut sink, CLOSE_GOING_AWAY, "server shutting down").await;
                return Some(CLOSE_GOING_AWAY);
            }
            _ = client.ready() => {
                frames.clear();
                let drained = client.drain(&mut frames, MAX_BATCH);
                if drained.closed {
                    let _ = send_close(&mut sink, CLOSE_GOING_AWAY, "server shutting down").await;
                    return Some(CLOSE_GOING_AWAY);
                }
                match tokio::time::timeout(dead_after, write_batch(app, &mut sink, &frames)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        Metrics::add(&app.metrics.dead_connections, 1);
                        return None;
                    }
                }
            }
            Some(ack) = acks.next(), if !acks.is_empty() => client.reply(ack),
            frame = stream.next(), if reading => {
                last_seen = Instant::now();
                let message = match frame {
                    None => return None,
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        let (code, reason) = read_error(e);
                        Metrics::add(&app.metrics.client_errors, 1);
                        if code == 0 {
                            return None;
                        }
                        let _ = send_close(&mut sink, code, reason).await;
                        // Complete the close handshake: wait briefly for the client's reply.
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Some(Ok(m)) = stream.next().await {
                                if matches!(m, Message::Close(_)) {
                                    break;
                                }
                            }
                        })
                        .await;
                        return Some(code);
                    }
                };
                match message {
                    Message::Text(text) => {
                        Metrics::add(&app.metrics.messages_in, 1);
                        Metrics::add(&app.metrics.bytes_in, text.len() as u64);
                        handle(app, client, &text, &mut acks);
                    }
                    Message::Binary(_) => {
                        Metrics::add(&app.metrics.client_errors, 1);
                        client.reply(error_message(
                            None,
                            &HubError::new(
                                ErrorCode::BadRequest,
                                "binary frames are not supported; send JSON in text frames",
                            ),
                        ));
                    }
                    Message::Close(_) => {
                        // tungstenite answers the close frame itself; flush that reply.
                        let _ = sink.close().await;
                        return None;
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            _ = ticker.tick() => {
                if last_seen.elapsed() > dead_after {
                    Metrics::add(&app.metrics.dead_connections, 1);
                    return None;
                }
                let ping = tokio::time::timeout(dead_after, sink.send(Message::Ping(Bytes::new())));
                if !matches!(ping.await, Ok(Ok(()))) {
                    return None;
                }
            }
        }
    }
}

async fn write_batch(app: &App, sink: &mut Sink, frames: &[Frame]) -> Result<(), axum::Error> {
    let mut bytes = 0;
    for frame in frames {
        bytes += frame.bytes.len();
        let text = Utf8Bytes::try_from(frame.bytes.clone()).map_err(axum::Error::new)?;
        sink.feed(Message::Text(text)).await?;
    }
    sink.flush().await?;
    Metrics::add(&app.metrics.messages_out, frames.len() as u64);
    Metrics::add(&app.metrics.bytes_out, bytes as u64);
    Metrics::add(&app.metrics.socket_writes, 1);
    Ok(())
}

async fn send_close(sink: &mut Sink, code: u16, reason: &str) -> Result<(), axum::Error> {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    sink.send(Message::Close(Some(frame))).await
}

/// The close code for a read error, or 0 when the connection is simply gone.
fn read_error(e: axum::Error) -> (u16, &'static str) {
    use tungstenite::error::{CapacityError, Error};
    let inner = e.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Utf8(_)) => (CLOSE_INVALID_UTF8, "invalid UTF-8 in a text frame"),
        Some(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
            (CLOSE_TOO_BIG, "message larger than max_frame_bytes")
        }
        Some(Error::Capacity(_)) => (CLOSE_TOO_BIG, "message too large"),
        Some(Error::Protocol(_)) => (1002, "protocol error"),
        Some(Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_)) | None => (0, ""),
        Some(_) => (CLOSE_INTERNAL, "internal error"),
    }
}

fn welcome(app: &App) -> Bytes {
    let session: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..16)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    Bytes::from(
        json!({
            "type": "welcome",
            "server": concat!("statecast/", env!("CARGO_PKG_VERSION")),
            "session": session,
            "heartbeat_ms": app.config.heartbeat_ms,
            "max_frame_bytes": app.config.max_frame_bytes,
        })
        .to_string(),
    )
}

/// Handles one client message: answers at once, or queues a write whose `result` is sent
/// when it is durable.
fn handle(app: &App, client: &Client, text: &str, acks: &mut FuturesOrdered<Ack>) {
    let parsed = parse(text);
    let id = parsed.id;
    let request = match parsed.request {
        Ok(r) => r,
        Err(e) => {
            Metrics::add(&app.metrics.client_errors, 1);
            client.reply(error_message(id.as_ref(), &e));
            return;
        }
    };
    let write = match request {
        Request::Ping => {
            client.reply(with_id(json!({"type": "pong"}), id.as_ref()));
            return;
        }
        Request::Auth => {
            // Authentication is off: any token is accepted.
            client.reply(ok(id.as_ref(), json!({})));
            return;
        }
        Request::Subscribe {
            patterns,
            since,
            mode,
        } => {
            let topics = client.subscribe(&patterns, &since, mode);
            client.reply(ok(id.as_ref(), json!({"topics": topics})));
            return;
        }
        Request::Unsubscribe { patterns } => {
            let removed = client.unsubscribe(&patterns);
            client.reply(ok(id.as_ref(), json!({"removed": removed})));
            return;
        }
        Request::Get { patterns } => {
            let topics = client.get(&patterns);
            client.reply(ok(id.as_ref(), json!({"topics": topics})));
            return;
        }
        Request::Command { target, .. } => {
            let e = HubError::new(ErrorCode::NoRoute, format!("no route for target {target}"));
            client.reply(error_message(id.as_ref(), &e));
            return;
        }
        Request::Set { topic, state } => Write::Set {
            topic,
            state,
            if_rev: None,
        },
        Request::Patch { topic, patch } => Write::Patch {
            topic,
            patch,
            if_rev: None,
        },
        Request::Delete { topic } => Write::Delete {
            topic,
            if_rev: None,
        },
        Request::Event { topic, data } => Write::Event { topic, data },
    };
    let is_event = matches!(write, Write::Event { .. });
    match app.hub.submit(write) {
        Err(e) => {
            Metrics::add(&app.metrics.client_errors, 1);
            client.reply(error_message(id.as_ref(), &e));
        }
        Ok(submitted) => {
            let done = submitted.wait();
            acks.push_back(Box::pin(async move {
                match done.await {
                    Ok(outcome) => write_result(id.as_ref(), outcome, is_event),
                    Err(e) => error_message(id.as_ref(), &e),
                }
            }));
        }
    }
}

fn write_result(id: Option<&Value>, outcome: Outcome, is_event: bool) -> Bytes {
    if is_event {
        ok(id, json!({}))
    } else {
        ok(id, json!({"rev": outcome.rev, "changed": outcome.changed}))
    }
}

fn ok(id: Option<&Value>, extra: Value) -> Bytes {
    let mut reply = json!({"type": "result", "ok": true});
    if let (Value::Object(reply), Value::Object(extra)) = (&mut reply, extra) {
        reply.extend(extra);
    }
    with_id(reply, id)
}

/// `result` with `ok:false` for a message with an `id`, else `error`.
pub fn error_message(id: Option<&Value>, e: &HubError) -> Bytes {
    match id {
        Some(_) => with_id(
            json!({"type": "result", "ok": false, "error": e.to_json()}),
            id,
        ),
        None => Bytes::from(json!({"type": "error", "error": e.to_json()}).to_string()),
    }
}

fn with_id(mut reply: Value, id: Option<&Value>) -> Bytes {
    if let (Value::Object(map), Some(id)) = (&mut reply, id) {
        map.insert("id".into(), id.clone());
    }
    Bytes::from(reply.to_string())
}
