//! The WebSocket endpoint `/ws`: one task per connection.
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
//! an idle connection's socket itself ([`TcpWrite`], a `DirectWrite`), which saves waking
//! the task; the task then writes only what it drains (pongs too are queued), and stops
//! the hub's direct writes before its close frame, so the two never interleave.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use statecast_bridge::Command;
use statecast_core::{
    Client, DirectWrite, DirectWritten, ErrorCode, Frame, HubError, Outcome, Write,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::auth::{Action, Grant, Peer};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::{App, Slot, check_origin};
use statecast_core::request::{Request as ClientRequest, parse};

/// Writes whose `result` may be outstanding at once; past this the connection stops
/// reading until results go out.
const MAX_IN_FLIGHT: usize = 256;
/// Most messages written in one batch.
const MAX_BATCH: usize = 1024;
/// How long to wait for the client's answer to a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A client with more messages refused over the rate limit within this time than it may
/// send in it is closed.
const SUSTAINED_ABUSE: Duration = Duration::from_secs(5);

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_INVALID_UTF8: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Boxed: moved between the connection's stages, inline it would take room in each.
type Reader = Box<WebSocketStream<ReadHalf>>;
/// The `result` of a write, ready once the write is durable.
pub(crate) type Ack = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// Answers the upgrade request and runs the connection on its own task. The handshake is
/// done here, on hyper's upgrade, so the connection gets its `TcpStream` back: it writes
/// its own frames, and after a close for a bad frame it can drain what the client still
/// sends before closing (contract rule 5).
pub async fn upgrade(State(app): State<Arc<App>>, mut request: Request) -> Response {
    let key = match handshake_key(request.headers()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let (peer, slot) = match request.extensions().get::<Peer>() {
        Some(Peer(addr, slot)) => (Some(*addr), Some(Arc::clone(slot))),
        None => (None, None),
    };
    if let Err(e) = check_origin(&app, request.headers(), peer) {
        return ApiError(e).into_response();
    }
    // A token on the upgrade (header or `?token=`) must be valid; without one, the client
    // has `auth_timeout_ms` to send an `auth` message.
    let query_token = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decode)
    });
    let grant = match app
        .config
        .auth
        .grant(request.headers(), query_token.as_deref())
    {
        Ok(grant) => grant.map(Box::new),
        Err(e) => {
            app.refused(peer, &e);
            return ApiError(e).into_response();
        }
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return ApiError::new(ErrorCode::BadRequest, "this connection cannot be upgraded")
            .into_response();
    };
    let max = app.config.max_frame_bytes;
    // Client messages are small: a small read buffer (it grows for a large message) keeps
    // idle connections cheap; 384 bytes still takes a few pipelined writes per read.
    let config = WebSocketConfig::default()
        .read_buffer_size(384)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        // Copy out what hyper read past the request (usually nothing) and free its buffer,
        // which would otherwise live as long as the connection.
        let (read, write, early) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let (read, write) = parts.io.into_inner().into_split();
                let write = Arc::new(TcpWrite {
                    write,
                    app: Arc::clone(&app),
                });
                (
                    ReadSide::Tcp(read),
                    WriteSide::Tcp(write),
                    parts.read_buf.to_vec(),
                )
            }
            Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                Ok(parts) => {
                    let (read, write) = tokio::io::split(parts.io.into_inner());
                    (
                        ReadSide::Tls(read),
                        WriteSide::Tls(write),
                        parts.read_buf.to_vec(),
                    )
                }
                Err(_) => {
                    tracing::error!("websocket upgrade on a connection of an unknown kind");
                    return;
                }
            },
        };
        let reader = Box::new(
            WebSocketStream::from_partially_read(ReadHalf(read), early, Role::Server, Some(config))
                .await,
        );
        let session = Session {
            // With auth on, the session starts with its grant (or none yet); with auth off
            // it needs no state at all.
            state: app.config.auth.required().then(|| {
                Box::new(SessionState {
                    grant,
                    abuse: Abuse::default(),
                })
            }),
            slot,
        };
        connection(app, reader, Writer(write), session).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `%XX` escapes and `+` decoded (a token in a query string).
pub(crate) fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Sec-WebSocket-Key` of a valid upgrade request.
fn handshake_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "/ws expects a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "missing Sec-WebSocket-Key"))
}

/// The read half of the socket as tungstenite's stream. tungstenite also writes (its
/// automatic answers to pings and closes); those writes are dropped here, because the
/// connection answers on the write half itself.
struct ReadHalf(ReadSide);

/// The socket's two halves: plain TCP (split without a lock) or TLS (split by tokio).
enum ReadSide {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

enum WriteSide {
    /// Shared with the hub, which writes lone changes to an idle connection itself.
    Tcp(Arc<TcpWrite>),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// The write half of a plain TCP connection, written with non-blocking writes from the
/// connection's task and, through [`DirectWrite`], from the hub's publisher.
struct TcpWrite {
    write: OwnedWriteHalf,
    app: Arc<App>,
}

/// Messages up to this size are framed on the stack and sent with one `send`, which
/// costs less than a `writev` of header and message.
const DIRECT_STACK: usize = 2048;

impl DirectWrite for TcpWrite {
    fn try_write(&self, message: &[u8]) -> DirectWritten {
        let (header, header_len) = frame_header(OP_TEXT, message.len());
        let header = &header[..header_len];
        let total = header.len() + message.len();
        // Straight to the non-blocking socket, past tokio's readiness bookkeeping: a
        // refused write just leaves the message to the task, which waits properly.
        let socket = socket2::SockRef::from(self.write.as_ref());
        let mut framed = [0; DIRECT_STACK];
        let written = if total <= DIRECT_STACK {
            framed[..header.len()].copy_from_slice(header);
            framed[header.len()..total].copy_from_slice(message);
            socket.send(&framed[..total])
        } else {
            socket.send_vectored(&[IoSlice::new(header), IoSlice::new(message)])
        };
        let written = match written {
            Ok(0) | Err(_) => return DirectWritten::Nothing,
            Ok(n) => n,
        };
        let metrics = &self.app.metrics;
        Metrics::add(&metrics.messages_out, 1);
        Metrics::add(&metrics.bytes_out, message.len() as u64);
        Metrics::add(&metrics.socket_writes, 1);
        if written == total {
            return DirectWritten::All;
        }
        let rest: Vec<u8> = header
            .iter()
            .chain(message)
            .skip(written)
            .copied()
            .collect();
        DirectWritten::Part(Bytes::from(rest))
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            ReadSide::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The write half: server frames, encoded here (unmasked, as RFC 6455 has servers send
/// them) and written a batch at a time.
struct Writer(WriteSide);

impl Writer {
    /// Writes the hub's messages as text frames (an empty one is the heartbeat's ping) in
    /// one `write`.
    async fn batch(&mut self, app: &App, frames: &[Frame]) -> io::Result<()> {
        let size: usize = frames.iter().map(|f| f.bytes.len() + 10).sum();
        let mut out = Vec::with_capacity(size);
        let (mut bytes, mut messages) = (0, 0);
        for frame in frames {
            if frame.raw {
                out.extend_from_slice(&frame.bytes);
                continue;
            }
            if frame.bytes.is_empty() {
                encode(&mut out, OP_PING, &[]);
                continue;
            }
            // The hub's messages are serde_json output or built from it: valid UTF-8.
            encode(&mut out, OP_TEXT, &frame.bytes);
            bytes += frame.bytes.len();
            messages += 1;
        }
        self.write_all(&out).await?;
        Metrics::add(&app.metrics.messages_out, messages);
        Metrics::add(&app.metrics.bytes_out, bytes as u64);
        Metrics::add(&app.metrics.socket_writes, 1);
        Ok(())
    }

    /// Writes a close frame; the hub writes nothing more to the socket.
    async fn close(&mut self, client: &Client, code: u16, reason: &str) -> io::Result<()> {
        // A frame the hub began must end before the close frame starts.
        let mut out = client.stop_direct().map_or_else(Vec::new, Vec::from);
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        encode(&mut out, OP_CLOSE, &payload);
        self.write_all(&out).await
    }

    async fn write_all(&mut self, mut out: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            // Shared with the hub's direct writes, so written through `&self`: try at
            // once, and wait only when the socket is full (polled: an awaited `writable()`
            // would put its waiter into every connection's future).
            WriteSide::Tcp(tcp) => {
                let stream: &TcpStream = tcp.write.as_ref();
                std::future::poll_fn(|cx| {
                    while !out.is_empty() {
                        match stream.try_write(out) {
                            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                            Ok(n) => out = &out[n..],
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                std::task::ready!(stream.poll_write_ready(cx))?;
                            }
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    Poll::Ready(Ok(()))
                })
                .await
            }
            WriteSide::Tls(tls) => {
                tls.write_all(out).await?;
                // TLS holds records until flushed.
                tls.flush().await
            }
        }
    }
}

/// Appends one final (unfragmented), unmasked frame.
fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let (header, len) = frame_header(opcode, payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
}

/// The header of a final, unmasked frame, and its length.
fn frame_header(opcode: u8, payload_len: usize) -> ([u8; 10], usize) {
    let mut header = [0; 10];
    header[0] = 0x80 | opcode;
    let len = match payload_len {
        n if n < 126 => {
            header[1] = n as u8;
            2
        }
        n if n <= 0xFFFF => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    };
    (header, len)
}

/// Who is on the other end. Kept small: it lives in every connection's future.
struct Session {
    /// The connection's place in the connection limits; it knows the peer's address and
    /// holds the connection's message budget.
    slot: Option<Arc<Slot>>,
    /// Made when auth is on or the client first goes over the rate limit.
    state: Option<Box<SessionState>>,
}

#[derive(Default)]
struct SessionState {
    /// `None` until an `auth` message when auth is on and the upgrade carried no token.
    grant: Option<Box<Grant>>,
    abuse: Abuse,
}

/// A client's messages refused over the rate limit. A client over the rate now and then
/// only gets errors; one that has more refused within `SUSTAINED_ABUSE` than it may send in
/// that time is closed.
#[derive(Default)]
pub(crate) struct Abuse {
    /// The start of the window in which `refused` messages were over the rate limit.
    limited_since: Option<Instant>,
    refused: u32,
}

impl Abuse {
    /// Counts one refused message; `true` when the client is to be closed.
    pub(crate) fn refuse(&mut self, app: &App) -> bool {
        let now = Instant::now();
        match self.limited_since {
            Some(since) if now - since <= SUSTAINED_ABUSE => self.refused += 1,
            _ => {
                self.limited_since = Some(now);
                self.refused = 1;
            }
        }
        let allowance =
            u64::from(app.config.limits.messages_per_second) * SUSTAINED_ABUSE.as_secs();
        u64::from(self.refused) > allowance
    }
}

impl Session {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.slot.as_ref().map(|slot| slot.peer)
    }

    /// The client's grant: everything while auth is off, `None` before it authenticated.
    fn grant(&self) -> Option<&Grant> {
        match &self.state {
            None => Some(&EVERYTHING),
            Some(state) => state.grant.as_deref(),
        }
    }

    fn state(&mut self) -> &mut SessionState {
        self.state.get_or_insert_with(Default::default)
    }

    /// When the connection must have authenticated again: at the end of the auth timeout
    /// while it has no grant, at its token's expiry after (auth on only).
    fn deadline(&self, app: &App) -> Option<Instant> {
        let state = self.state.as_ref()?;
        match &state.grant {
            None => Some(Instant::now() + app.config.auth.auth_timeout),
            Some(grant) => grant.remaining().map(|left| Instant::now() + left),
        }
    }
}

/// The grant of every client while auth is off.
static EVERYTHING: std::sync::LazyLock<Grant> = std::sync::LazyLock::new(Grant::everything);

async fn connection(app: Arc<App>, reader: Reader, writer: Writer, mut session: Session) {
    Metrics::add(&app.metrics.ws_connections_total, 1);
    Metrics::add(&app.metrics.ws_connections, 1);
    let client = app.hub.connect();
    if let WriteSide::Tcp(tcp) = &writer.0 {
        client.write_directly(Arc::clone(tcp) as Arc<dyn DirectWrite>);
    }
    if session.state.is_some() {
        client.set_scope(match session.grant() {
            Some(grant) => grant.scope(),
            None => Some(Vec::new()),
        });
    }
    let ending = run(&app, &client, reader, writer, &mut session).await;
    drop(client);
    if let Some((code, reader)) = ending {
        tracing::debug!(code, "websocket closed by the server");
        // Boxed: it runs once per connection, and inline it would enlarge every connection.
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
                    frames.push(Frame::message(Bytes::new()));
                }
                // Boxed: inline, the write's futures and timer would enlarge every idle
                // connection.
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
                client.reply(error_message(None, &e));
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
                        client.reply(error_message(
                            None,
                            &HubError::new(
                                ErrorCode::BadRequest,
                                "binary frames are not supported; send JSON in text frames",
                            ),
                        ));
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

/// Resolves at the deadline (never without one).
async fn expired(deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next write result, in the order the writes were sent.
pub(crate) async fn next_ack(acks: &mut Option<FuturesOrdered<Ack>>) -> Option<Bytes> {
    acks.as_mut()?.next().await
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

/// What the connection does after a client message.
enum Next {
    Continue,
    /// A new grant: its expiry replaces the old deadline.
    Reauthenticated,
    /// A refused `auth`: what is queued goes out, then a 1008 close.
    Close(&'static str),
}

/// Sends what is queued for the client (the error that explains the close), then a 1008
/// close. Boxed at its call sites: inline, it would enlarge every connection's future.
async fn policy_close(app: &App, client: &Client, writer: &mut Writer, reason: &str) {
    let mut frames = Vec::new();
    client.drain(&mut frames, MAX_BATCH);
    let _ = writer.batch(app, &frames).await;
    let _ = writer.close(client, CLOSE_POLICY, reason).await;
}

/// Handles one client message: answers at once, or queues a write whose `result` is sent
/// when it is durable. Every request but `ping` and `auth` needs a grant that allows it.
fn handle(
    app: &App,
    client: &Client,
    session: &mut Session,
    text: &str,
    acks: &mut Option<FuturesOrdered<Ack>>,
) -> Next {
    let parsed = parse(text);
    let id = parsed.id;
    let peer = session.peer();
    if let Err(e) = app.check_rate(peer.map(|p| p.ip()), session.slot.as_deref()) {
        client.reply(error_message(id.as_ref(), &e));
        if session.state().abuse.refuse(app) {
            app.refused(peer, &e);
            return Next::Close("rate limit exceeded");
        }
        return Next::Continue;
    }
    let request = match parsed.request {
        Ok(r) => r,
        Err(e) => {
            Metrics::add(&app.metrics.client_errors, 1);
            client.reply(error_message(id.as_ref(), &e));
            return Next::Continue;
        }
    };
    let grant = match (&request, session.grant()) {
        (ClientRequest::Ping, _) => {
            client.reply(with_id(json!({"type": "pong"}), id.as_ref()));
            return Next::Continue;
        }
        (ClientRequest::Auth { token }, _) => {
            if !app.config.auth.required() {
                client.reply(ok(id.as_ref(), json!({})));
                return Next::Continue;
            }
            return match app.config.auth.verify(token) {
                Ok(grant) => {
                    client.set_scope(grant.scope());
                    client.reply(ok(id.as_ref(), json!({"subject": grant.subject})));
                    session.state().grant = Some(Box::new(grant));
                    Next::Reauthenticated
                }
                Err(e) => {
                    app.refused(peer, &e);
                    client.reply(error_message(id.as_ref(), &e));
                    Next::Close("unauthorized")
                }
            };
        }
        (_, None) => {
            let e = HubError::new(
                ErrorCode::Unauthorized,
                "authenticate first: send {\"type\":\"auth\",\"token\":...}",
            );
            app.refused(peer, &e);
            client.reply(error_message(id.as_ref(), &e));
            return Next::Continue;
        }
        (_, Some(grant)) => grant,
    };
    dispatch(app, client, grant, peer, request, id, acks);
    Next::Continue
}

/// Carries out a request of a client holding `grant` (every request but `ping` and
/// `auth`): checks that the grant allows it, then answers at once through the client's
/// outbox, or queues a write in `acks` whose `result` is ready when the write is durable.
/// Replies carry `id`. Shared by the WebSocket and Socket.IO transports.
pub(crate) fn dispatch(
    app: &App,
    client: &Client,
    grant: &Grant,
    peer: Option<std::net::SocketAddr>,
    request: ClientRequest,
    id: Option<Value>,
    acks: &mut Option<FuturesOrdered<Ack>>,
) {
    let needed = match &request {
        ClientRequest::Set { topic, .. }
        | ClientRequest::Patch { topic, .. }
        | ClientRequest::Delete { topic } => Some((Action::Write, topic)),
        ClientRequest::Event { topic, .. } => Some((Action::Event, topic)),
        ClientRequest::Command { target, .. } => Some((Action::Command, target)),
        _ => None,
    };
    if let Some((action, topic)) = needed
        && let Err(e) = grant.check(action, topic)
    {
        app.refused(peer, &e);
        client.reply(error_message(id.as_ref(), &e));
        return;
    }
    let write = match request {
        ClientRequest::Ping | ClientRequest::Auth { .. } => return,
        ClientRequest::Subscribe {
            patterns,
            since,
            mode,
        } => {
            let max = app.config.limits.max_subscriptions;
            if client.subscription_count() + patterns.len() > max {
                let e = HubError::new(
                    ErrorCode::TooLarge,
                    format!("at most {max} subscriptions per connection (max_subscriptions)"),
                );
                client.reply(error_message(id.as_ref(), &e));
                return;
            }
            let topics = client.subscribe(&patterns, &since, mode);
            client.reply(ok(id.as_ref(), json!({"topics": topics})));
            return;
        }
        ClientRequest::Unsubscribe { patterns } => {
            let removed = client.unsubscribe(&patterns);
            client.reply(ok(id.as_ref(), json!({"removed": removed})));
            return;
        }
        ClientRequest::Get { patterns } => {
            let topics = client.get(&patterns);
            client.reply(ok(id.as_ref(), json!({"topics": topics})));
            return;
        }
        ClientRequest::Command { target, name, args } => {
            // Answered on its own task: a slow device holds up neither this connection's
            // other requests nor its pushes.
            let Ok(permit) = Arc::clone(&app.commands_in_flight).try_acquire_owned() else {
                let e = HubError::new(ErrorCode::RateLimited, "too many commands in flight");
                client.reply(error_message(id.as_ref(), &e));
                return;
            };
            let replier = client.replier();
            let bridge = Arc::clone(&app.bridge);
            tokio::spawn(async move {
                let answer = bridge.command(Command { target, name, args }).await;
                drop(permit);
                replier.reply(match answer {
                    Ok(result) => ok(id.as_ref(), json!({ "result": result })),
                    Err(e) => with_id(
                        json!({"type": "result", "ok": false, "error": e.to_json()}),
                        id.as_ref(),
                    ),
                });
            });
            return;
        }
        ClientRequest::Set { topic, state } => Write::Set {
            topic,
            state,
            if_rev: None,
        },
        ClientRequest::Patch { topic, patch } => Write::Patch {
            topic,
            patch,
            if_rev: None,
        },
        ClientRequest::Delete { topic } => Write::Delete {
            topic,
            if_rev: None,
        },
        ClientRequest::Event { topic, data } => Write::Event { topic, data },
    };
    let is_event = matches!(write, Write::Event { .. });
    match app.hub.submit(write) {
        Err(e) => {
            Metrics::add(&app.metrics.client_errors, 1);
            client.reply(error_message(id.as_ref(), &e));
        }
        Ok(submitted) => {
            let done = submitted.wait();
            let acks = acks.get_or_insert_with(FuturesOrdered::new);
            acks.push_back(Box::pin(async move {
                match done.await {
                    Ok(outcome) => write_result(id.as_ref(), outcome, is_event),
                    Err(e) => error_message(id.as_ref(), &e),
                }
            }));
        }
    }
}

pub(crate) fn write_result(id: Option<&Value>, outcome: Outcome, is_event: bool) -> Bytes {
    if is_event {
        ok(id, json!({}))
    } else {
        ok(id, json!({"rev": outcome.rev, "changed": outcome.changed}))
    }
}

pub(crate) fn ok(id: Option<&Value>, extra: Value) -> Bytes {
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
