//! The WebSocket endpoint `/ws`: one task per connection, and this file its loop.
//!
//! The task waits on three things: the client's outbox (messages, and also the heartbeat
//! tick and the shutdown), a write becoming durable (its `result` is then queued), and a
//! frame from the client. Everything for the client, replies included, goes through the
//! hub's outbox, so a `result` always follows the snapshots it announces.
//!
//! The connection owns its `TcpStream`, split in two halves. tungstenite parses what the
//! client sends from the read half; outgoing frames are encoded here and a whole batch goes
//! out with one `write` on the write half. Server frames are unmasked and need no state, so
//! writing them directly saves tungstenite's write buffer, a lock shared by reader and
//! writer, and a copy per message. Over plain TCP the hub may also write a lone change to
//! an idle connection's socket itself (`TcpWrite`, a `DirectWrite`), which saves waking
//! the task; the task then writes only what it drains (pongs too are queued), and stops
//! the hub's direct writes before its close frame, so the two never interleave.
//!
//! - `upgrade.rs`: the handshake, and the task it starts.
//! - `socket.rs`: the socket's halves.
//! - `frame.rs`: frame encoding, batched writes and the hub's direct writes.
//! - here: the connection loop; what a request does is the session's (`session.rs`).

mod frame;
mod socket;
mod upgrade;

pub(crate) use upgrade::upgrade;

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use serde_json::json;
use statecast_core::request::{Request as ClientRequest, parse};
use statecast_core::{Client, DirectWrite, ErrorCode, Frame, HubError, Kind, message};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

use crate::app::App;
use crate::metrics::Metrics;
use crate::session::{Ack, ReplyTo, Session, expired, next_ack};
use frame::{OP_PONG, Writer, encode};
use socket::{Reader, WriteSide};

/// Writes whose `result` may be outstanding at once; past this the connection stops
/// reading until results go out.
const MAX_IN_FLIGHT: usize = 256;
/// Most messages written in one batch.
const MAX_BATCH: usize = 1024;
/// How long to wait for the client's answer to a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_INVALID_UTF8: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;

/// The connection, from the welcome to the close.
async fn connection(app: Arc<App>, reader: Reader, writer: Writer, mut session: Session) {
    Metrics::add(&app.metrics.ws_connections_total, 1);
    Metrics::add(&app.metrics.ws_connections, 1);
    let client = app.hub.connect();
    if let WriteSide::Tcp(tcp) = &writer.0 {
        client.write_directly(Arc::clone(tcp) as Arc<dyn DirectWrite>);
    }
    if app.config.auth.required() {
        client.set_scope(session.scope());
    }
    let ending = run(&app, &client, reader, writer, &mut session).await;
    drop(client);
    if let Some((code, reader)) = ending {
        tracing::debug!(code, "websocket closed by the server");
        // Boxed: it runs once per connection, and inline it would enlarge every connection
        // (guarded by `the_connection_future_stays_small` in `upgrade.rs`).
        Box::pin(finish_close(reader)).await;
    }
    app.metrics
        .ws_connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Runs the connection until it ends. When the server sent a close frame, returns its code
/// and the reader, so the close handshake can be completed.
async fn run(
    app: &App,
    client: &Client,
    mut reader: Reader,
    mut writer: Writer,
    session: &mut Session,
) -> Option<(u16, Reader)> {
    let heartbeat = Duration::from_millis(app.config.heartbeat_ms.max(1));
    let dead_after = heartbeat.mul_f64(2.5);
    client.reply(welcome(app));
    // Boxed, and only when auth is on: most connections carry no timer of their own.
    let mut deadline = session
        .deadline(app)
        .map(|at| Box::pin(tokio::time::sleep_until(at)));
    // Created on the first write: most connections only subscribe.
    let mut acks: Option<FuturesOrdered<Ack>> = None;
    let mut last_seen = Instant::now();
    let mut shutdown = app.shutdown.clone();
    loop {
        let in_flight = acks.as_ref().map_or(0, FuturesOrdered::len);
        let reading = in_flight < MAX_IN_FLIGHT && !client.is_congested();
        tokio::select! {
            biased;
            _ = client.ready() => {
                // A fresh vector per batch: an idle connection keeps no buffer.
                let mut frames = Vec::new();
                let drained = client.drain(&mut frames, MAX_BATCH);
                if drained.closed {
                    let _ = writer.close(client, CLOSE_GOING_AWAY, "server shutting down").await;
                    return Some((CLOSE_GOING_AWAY, reader));
                }
                if drained.ticked {
                    if last_seen.elapsed() > dead_after {
                        Metrics::add(&app.metrics.dead_connections, 1);
                        return None;
                    }
                    frames.push(Frame::ping());
                }
                // Boxed: inline, the write's futures and timer would enlarge every idle
                // connection (see `the_connection_future_stays_small`).
                let written = Box::pin(write_or_give_up(app, &mut writer, &frames, dead_after, &mut shutdown)).await;
                client.written();
                match written {
                    Written::Ok => {}
                    Written::Failed => return None,
                    Written::Dead => {
                        Metrics::add(&app.metrics.dead_connections, 1);
                        return None;
                    }
                }
            }
            Some(ack) = next_ack(&mut acks), if in_flight > 0 => client.reply(ack),
            _ = expired(&mut deadline), if deadline.is_some() => {
                let e = match session.grant() {
                    None => HubError::new(ErrorCode::Unauthorized, "no `auth` message within the auth timeout"),
                    Some(_) => HubError::new(ErrorCode::Unauthorized, "the token has expired; send `auth` with a fresh one before it does"),
                };
                app.refused(session.peer(), &e);
                client.reply(ReplyTo::message(None).refused(&e));
                Box::pin(policy_close(app, client, &mut writer, "unauthorized")).await;
                return Some((CLOSE_POLICY, reader));
            }
            frame = reader.next(), if reading => {
                last_seen = Instant::now();
                let message = match frame {
                    None => return None,
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        let (code, reason) = read_error(&e)?;
                        Metrics::add(&app.metrics.client_errors, 1);
                        let _ = writer.close(client, code, reason).await;
                        return Some((code, reader));
                    }
                };
                match message {
                    Message::Text(text) => {
                        Metrics::add(&app.metrics.messages_in, 1);
                        Metrics::add(&app.metrics.bytes_in, text.len() as u64);
                        match handle(app, client, session, &text, &mut acks) {
                            Next::Continue => {}
                            Next::Reauthenticated => {
                                deadline = session.deadline(app).map(|at| Box::pin(tokio::time::sleep_until(at)));
                            }
                            Next::Close(reason) => {
                                Box::pin(policy_close(app, client, &mut writer, reason)).await;
                                return Some((CLOSE_POLICY, reader));
                            }
                        }
                    }
                    Message::Binary(_) => {
                        Metrics::add(&app.metrics.client_errors, 1);
                        client.reply(ReplyTo::message(None).refused(&HubError::new(
                            ErrorCode::BadRequest,
                            "binary frames are not supported; send JSON in text frames",
                        )));
                    }
                    Message::Ping(payload) => {
                        // Queued: only what is drained is written (see the module docs).
                        let mut pong = Vec::with_capacity(payload.len() + 2);
                        encode(&mut pong, OP_PONG, &payload);
                        client.reply_raw(pong.into());
                    }
                    Message::Close(frame) => {
                        // The client closes: answer with its code, and the socket closes.
                        let code = frame.map_or(CLOSE_NORMAL, |f| u16::from(f.code));
                        let _ = writer.close(client, code, "").await;
                        return None;
                    }
                    Message::Pong(_) | Message::Frame(_) => {}
                }
            }
        }
    }
}

enum Written {
    Ok,
    Failed,
    /// The client read nothing for 2.5 heartbeats.
    Dead,
}

/// Writes a batch, giving up on a client that does not read for `dead_after`, or when the
/// server shuts down while the write is blocked.
async fn write_or_give_up(
    app: &App,
    writer: &mut Writer,
    frames: &[Frame],
    dead_after: Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Written {
    tokio::select! {
        biased;
        written = tokio::time::timeout(dead_after, writer.batch(app, frames)) => match written {
            Ok(Ok(())) => Written::Ok,
            Ok(Err(_)) => Written::Failed,
            Err(_) => Written::Dead,
        },
        _ = shutdown.changed() => Written::Failed,
    }
}

/// After the server's close frame: read (and drop) what the client still sends until its
/// own close frame arrives, so closing the socket does not reset the connection with
/// unread data. A stream that failed (an oversized or invalid frame) cannot parse frames
/// any more; then the raw bytes are drained until the client goes quiet.
async fn finish_close(mut reader: Reader) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let framed = tokio::time::timeout_at(deadline, async {
        while let Some(frame) = reader.next().await {
            match frame {
                Ok(Message::Close(_)) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    })
    .await;
    if framed == Ok(true) {
        return;
    }
    let raw = &mut reader.get_mut().0;
    let mut buf = vec![0u8; 4096];
    // Quiet for this long: the client has said all it will.
    let quiet = Duration::from_millis(100);
    while Instant::now() < deadline {
        match tokio::time::timeout(quiet, raw.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
}

/// The close code for a read error, or `None` when the connection is simply gone.
fn read_error(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Utf8(_) => Some((CLOSE_INVALID_UTF8, "invalid UTF-8 in a text frame")),
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((CLOSE_TOO_BIG, "message larger than max_frame_bytes"))
        }
        WsError::Capacity(_) => Some((CLOSE_TOO_BIG, "message too large")),
        WsError::Protocol(_) => Some((CLOSE_PROTOCOL, "protocol error")),
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => None,
        _ => Some((CLOSE_INTERNAL, "internal error")),
    }
}

/// The first message: the session's name and the connection's settings.
fn welcome(app: &App) -> Frame {
    let session: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..16)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    Frame::new(
        Kind::Welcome,
        message::welcome(
            &session,
            app.config.heartbeat_ms,
            app.config.max_frame_bytes,
        ),
    )
}

/// What the connection does after a client message.
enum Next {
    Continue,
    /// A new grant: its expiry replaces the old deadline.
    Reauthenticated,
    /// A refused `auth`: what is queued goes out, then a 1008 close.
    Close(&'static str),
}

/// Sends what is queued for the client (the error that explains the close), then a 1008
/// close. Boxed at its call sites: inline, it would enlarge every connection's future
/// (see `the_connection_future_stays_small`).
async fn policy_close(app: &App, client: &Client, writer: &mut Writer, reason: &str) {
    let mut frames = Vec::new();
    client.drain(&mut frames, MAX_BATCH);
    let _ = writer.batch(app, &frames).await;
    let _ = writer.close(client, CLOSE_POLICY, reason).await;
}

/// Handles one client message: answers at once, or queues a write whose `result` is sent
/// when it is durable.
fn handle(
    app: &App,
    client: &Client,
    session: &mut Session,
    text: &str,
    acks: &mut Option<FuturesOrdered<Ack>>,
) -> Next {
    let parsed = parse(text);
    let reply = ReplyTo::message(parsed.id);
    if let Err(over) = session.take_message(app) {
        client.reply(reply.refused(&over.error));
        if over.close {
            return Next::Close("rate limit exceeded");
        }
        return Next::Continue;
    }
    let request = match parsed.request {
        Ok(r) => r,
        Err(e) => {
            Metrics::add(&app.metrics.client_errors, 1);
            client.reply(reply.refused(&e));
            return Next::Continue;
        }
    };
    match request {
        ClientRequest::Ping => client.reply(reply.pong()),
        ClientRequest::Auth { token } => {
            return match session.authenticate(app, &token) {
                Ok(None) => {
                    client.reply(reply.ok(json!({})));
                    Next::Continue
                }
                Ok(Some(grant)) => {
                    client.set_scope(grant.scope());
                    client.reply(reply.ok(json!({"subject": grant.subject})));
                    Next::Reauthenticated
                }
                Err(e) => {
                    client.reply(reply.refused(&e));
                    Next::Close("unauthorized")
                }
            };
        }
        request => session.dispatch(app, client, request, reply, acks),
    }
    Next::Continue
}
