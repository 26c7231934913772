//! The Server-Sent Events stream `/api/stream`, for clients that cannot use WebSocket.
//!
//! Each message is the WebSocket JSON under `event: <type>`. A batch that leaves the
//! client at a safe resume point ends with `id: <epoch>:<seq>`; a reconnect sending it as
//! `Last-Event-ID` gets only what it missed (replayed patches, or snapshots where history
//! is gone). A comment on every heartbeat keeps idle streams alive through proxies.

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use statecast_core::{Client, Frame, Pattern, Since};

use crate::app::App;
use crate::error::ApiError;
use crate::listener::Peer;
use crate::metrics::Metrics;
use crate::query;
use statecast_core::request::parse_pattern;

const MAX_BATCH: usize = 1024;

pub(crate) async fn stream(
    State(app): State<Arc<App>>,
    Query(query): Query<Vec<(String, String)>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let peer = peer.map(|p| p.0.0);
    app.check_rate(peer.map(|p| p.ip()), None)?;
    app.check_origin(&headers, peer)?;
    let token = query::token(uri.query());
    let caller = app.caller(&headers, token.as_deref(), peer)?;
    let mut patterns: Vec<Pattern> = Vec::new();
    for (key, value) in &query {
        if key == "match" {
            patterns.push(parse_pattern(value)?);
        }
    }
    if patterns.is_empty() {
        patterns.push(parse_pattern("#")?);
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k == "last_event_id")
                .map(|(_, v)| v.clone())
        });
    let since = last_event_id
        .and_then(|id| parse_cursor(&id, app.hub.epoch()))
        .map_or(Since::Now, Since::Cursor);
    let client = app.hub.connect();
    client.set_scope(caller.grant.scope());
    client.subscribe(&patterns, &since, None);
    Metrics::add(&app.metrics.sse_connections_total, 1);
    Metrics::add(&app.metrics.sse_connections, 1);
    let state = StreamState {
        guard: ConnectionGuard(Arc::clone(&app)),
        client,
        frames: Vec::new(),
        last_cursor: None,
        expires: caller
            .grant
            .remaining()
            .map(|left| tokio::time::Instant::now() + left),
    };
    let body = Body::from_stream(stream::unfold(state, next_chunk));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        [("x-accel-buffering", "no")],
        body,
    )
        .into_response())
}

struct StreamState {
    guard: ConnectionGuard,
    client: Client,
    frames: Vec<Frame>,
    last_cursor: Option<u64>,
    /// When the caller's token expires: the stream ends (the client reconnects with a new
    /// one).
    expires: Option<tokio::time::Instant>,
}

/// Counts the stream as open while it exists.
struct ConnectionGuard(Arc<App>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .metrics
            .sse_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The next piece of the body: a batch of events, a keep-alive comment on a heartbeat
/// tick, or the end when the hub closes the client (shutdown).
async fn next_chunk(mut s: StreamState) -> Option<(Result<Bytes, std::io::Error>, StreamState)> {
    match s.expires {
        Some(at) => tokio::select! {
            _ = s.client.ready() => {}
            _ = tokio::time::sleep_until(at) => return None,
        },
        None => s.client.ready().await,
    }
    s.frames.clear();
    let drained = s.client.drain_resumable(&mut s.frames, MAX_BATCH);
    if drained.closed {
        return None;
    }
    if s.frames.is_empty() && drained.ticked {
        return Some((Ok(Bytes::from_static(b": keepalive\n\n")), s));
    }
    let epoch = s.guard.0.hub.epoch().to_owned();
    let cursor = drained.cursor.filter(|c| Some(*c) != s.last_cursor);
    let chunk = encode(&s.frames, cursor.map(|c| format!("{epoch}:{c}")));
    if cursor.is_some() {
        s.last_cursor = cursor;
    }
    let metrics = &s.guard.0.metrics;
    Metrics::add(&metrics.messages_out, s.frames.len() as u64);
    Metrics::add(&metrics.bytes_out, chunk.len() as u64);
    Metrics::add(&metrics.socket_writes, 1);
    Some((Ok(chunk), s))
}

/// Encodes a batch of messages as SSE events; `id` goes on the last one.
fn encode(frames: &[Frame], id: Option<String>) -> Bytes {
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.bytes.len() + 32).sum::<usize>() + 64);
    for frame in frames {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(frame.kind.name().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&frame.bytes);
        out.extend_from_slice(b"\n\n");
    }
    if let Some(id) = id {
        // An event's blank line ends it; put the id into the last one (or alone).
        if out.ends_with(b"\n\n") {
            out.pop();
        }
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    Bytes::from(out)
}

/// `<epoch>:<seq>` from this hub's store; anything else starts afresh.
fn parse_cursor(id: &str, epoch: &str) -> Option<u64> {
    let (id_epoch, seq) = id.trim().rsplit_once(':')?;
    (id_epoch == epoch).then(|| seq.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use statecast_core::Kind;

    #[test]
    fn encodes_events_with_the_id_on_the_last() {
        let frames = vec![
            Frame::new(
                Kind::Snapshot,
                Bytes::from_static(br#"{"type":"snapshot","topic":"a","rev":1,"state":1}"#),
            ),
            Frame::new(
                Kind::Patch,
                Bytes::from_static(br#"{"type":"patch","topic":"a","rev":2,"patch":2}"#),
            ),
        ];
        let text = encode(&frames, Some("e:5".into()));
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "event: snapshot\ndata: {\"type\":\"snapshot\",\"topic\":\"a\",\"rev\":1,\"state\":1}\n\n\
             event: patch\ndata: {\"type\":\"patch\",\"topic\":\"a\",\"rev\":2,\"patch\":2}\nid: e:5\n\n"
        );
        assert_eq!(&encode(&[], Some("e:5".into()))[..], b"id: e:5\n\n");
    }

    #[test]
    fn cursors_from_another_store_are_ignored() {
        assert_eq!(parse_cursor("abc:12", "abc"), Some(12));
        assert_eq!(parse_cursor("xyz:12", "abc"), None);
        assert_eq!(parse_cursor("garbage", "abc"), None);
    }
}
