//! The server → client messages of the wire contract: every one is built here, and goes
//! to a transport as a [`Frame`] that carries its [`Kind`], so no transport reads the
//! bytes back to learn what it holds.
//!
//! Pushes (`snapshot`, `patch`, `removed`, `event`, `lagged`) are serialized once and shared
//! by every subscriber. Topics hold only `[A-Za-z0-9_.:@~-/]`, so they are written into JSON
//! without escaping; states arrive already serialized, so a snapshot is a concatenation,
//! not a re-encoding. Replies (`welcome`, `result`, `error`, `pong`) are one client's.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

/// What a message is: its `type` on the wire, or what the transport does instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Patch,
    Removed,
    /// A topic turned stale or fresh again.
    Stale,
    Event,
    Lagged,
    Welcome,
    /// A `result` with `ok: true`.
    Result,
    /// A `result` with `ok: false`.
    Failed,
    Error,
    Pong,
    /// The heartbeat: no bytes; the transport sends its own keep-alive (a WebSocket ping).
    Ping,
    /// Bytes the transport framed itself (a pong frame, the rest of a partial direct
    /// write): written as they are.
    Framed,
}

impl Kind {
    /// The message's `type` (`ping` and `framed` are no JSON message).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Patch => "patch",
            Kind::Removed => "removed",
            Kind::Stale => "stale",
            Kind::Event => "event",
            Kind::Lagged => "lagged",
            Kind::Welcome => "welcome",
            Kind::Result | Kind::Failed => "result",
            Kind::Error => "error",
            Kind::Pong => "pong",
            Kind::Ping => "ping",
            Kind::Framed => "framed",
        }
    }

    /// A message the hub sends on its own (not an answer to a request).
    pub fn is_push(self) -> bool {
        matches!(
            self,
            Kind::Snapshot | Kind::Patch | Kind::Removed | Kind::Stale | Kind::Event | Kind::Lagged
        )
    }

    /// The kind of a topic's message built here (`snapshot`, `patch`, `removed` or
    /// `stale`). The hub keeps those as bare bytes in its history and queues, so the kind
    /// is told by the first two letters of the `type`, at a fixed offset of the layout this
    /// module writes.
    fn of_state(bytes: &[u8]) -> Kind {
        debug_assert!(bytes.starts_with(TYPE));
        match bytes.get(TYPE.len()..TYPE.len() + 2) {
            Some(b"sn") => Kind::Snapshot,
            Some(b"st") => Kind::Stale,
            Some(b"pa") => Kind::Patch,
            _ => Kind::Removed,
        }
    }
}

/// How every message begins.
const TYPE: &[u8] = b"{\"type\":\"";

/// A message for a transport to send as one frame, with what it is.
#[derive(Debug, Clone)]
pub struct Frame {
    pub bytes: Bytes,
    pub kind: Kind,
    /// For a reply: the tag the transport gave the request when it is not a wire `id`
    /// (a Socket.IO acknowledgement's), so the reply finds its request unread; else 0.
    pub tag: u32,
}

impl Frame {
    pub fn new(kind: Kind, bytes: Bytes) -> Frame {
        Frame {
            bytes,
            kind,
            tag: 0,
        }
    }

    /// The heartbeat's tick.
    pub fn ping() -> Frame {
        Frame::new(Kind::Ping, Bytes::new())
    }

    /// A topic's message the hub queued (`snapshot`, `patch`, `removed` or `stale`).
    pub(crate) fn state(bytes: Bytes) -> Frame {
        Frame::new(Kind::of_state(&bytes), bytes)
    }

    /// The topic of a push that has one.
    pub fn topic(&self) -> Option<&str> {
        if !matches!(
            self.kind,
            Kind::Snapshot | Kind::Patch | Kind::Removed | Kind::Stale | Kind::Event
        ) {
            return None;
        }
        let start = TYPE.len() + self.kind.name().len() + TOPIC.len();
        let rest = self.bytes.get(start..)?;
        let end = rest.iter().position(|&b| b == b'"')?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// The `state` of a snapshot, as serialized JSON.
    pub fn state_json(&self) -> Option<&[u8]> {
        if self.kind != Kind::Snapshot {
            return None;
        }
        let topic = self.topic()?;
        let rest = &self.bytes[TYPE.len() + "snapshot".len() + TOPIC.len() + topic.len()..];
        let at = rest.windows(STATE.len()).position(|w| w == STATE)?;
        rest.get(at + STATE.len()..rest.len() - 1)
    }
}

/// What follows the `type` of a message with a topic, up to the topic.
const TOPIC: &[u8] = b"\",\"topic\":\"";
/// What precedes a snapshot's state.
const STATE: &[u8] = b",\"state\":";

pub fn snapshot(topic: &str, rev: u64, state_json: &[u8]) -> Bytes {
    snapshot_of(topic, rev, state_json, false)
}

/// A snapshot, marked `"stale":true` when the topic is stale (before its `state`, so the
/// state stays the message's end).
pub fn snapshot_of(topic: &str, rev: u64, state_json: &[u8], stale: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(62 + topic.len() + state_json.len());
    out.put_slice(b"{\"type\":\"snapshot\",\"topic\":\"");
    out.put_slice(topic.as_bytes());
    out.put_slice(b"\",\"rev\":");
    put_u64(&mut out, rev);
    if stale {
        out.put_slice(b",\"stale\":true");
    }
    out.put_slice(b",\"state\":");
    out.put_slice(state_json);
    out.put_u8(b'}');
    out.freeze()
}

pub fn patch(topic: &str, rev: u64, patch: &Value) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + topic.len()).writer();
    let head = format!("{{\"type\":\"patch\",\"topic\":\"{topic}\",\"rev\":{rev},\"patch\":");
    out.get_mut().put_slice(head.as_bytes());
    // Writing a `Value` into memory cannot fail.
    let _ = serde_json::to_writer(&mut out, patch);
    let mut out = out.into_inner();
    out.put_u8(b'}');
    out.freeze()
}

/// The merge patch inside a message [`patch`] built (its JSON, as written there).
pub fn patch_body(message: &[u8]) -> Option<&[u8]> {
    // Topics hold no `"`, so the first `,"patch":` is the field's, not part of the topic.
    const FIELD: &[u8] = b",\"patch\":";
    let at = message.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    message.get(at..message.len().checked_sub(1)?)
}

pub fn removed(topic: &str, rev: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"removed\",\"topic\":\"{topic}\",\"rev\":{rev}}}"
    ))
}

/// A topic turned stale (`stale`) or fresh again; `since_ms`: the time of its last write.
pub fn stale(topic: &str, rev: u64, stale: bool, since_ms: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"stale\",\"topic\":\"{topic}\",\"rev\":{rev},\"stale\":{stale},\"since\":\"{}\"}}",
        rfc3339(since_ms)
    ))
}

/// A time (Unix milliseconds) as the contract writes it: RFC 3339, UTC, with milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

pub fn event(topic: &str, data_json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(40 + topic.len() + data_json.len());
    out.put_slice(b"{\"type\":\"event\",\"topic\":\"");
    out.put_slice(topic.as_bytes());
    out.put_slice(b"\",\"data\":");
    out.put_slice(data_json);
    out.put_u8(b'}');
    out.freeze()
}

pub fn lagged(dropped_events: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"lagged\",\"dropped_events\":{dropped_events}}}"
    ))
}

/// The first message on a connection.
pub fn welcome(session: &str, heartbeat_ms: u64, max_frame_bytes: usize) -> Bytes {
    Bytes::from(
        json!({
            "type": "welcome",
            "server": concat!("statecast/", env!("CARGO_PKG_VERSION")),
            "session": session,
            "heartbeat_ms": heartbeat_ms,
            "max_frame_bytes": max_frame_bytes,
        })
        .to_string(),
    )
}

/// A `result` with `ok: true` and the members of `fields`, echoing the request's `id`.
pub fn result(id: Option<&Value>, fields: Value) -> Bytes {
    let mut reply = json!({"type": "result", "ok": true});
    if let (Value::Object(reply), Value::Object(fields)) = (&mut reply, fields) {
        reply.extend(fields);
    }
    with_id(reply, id)
}

/// A `result` with `ok: false` and `error` (the error's JSON).
pub fn failed(id: Option<&Value>, error: Value) -> Bytes {
    with_id(json!({"type": "result", "ok": false, "error": error}), id)
}

/// An `error`: a failure with nothing to answer, or of a request without an `id`.
pub fn error(id: Option<&Value>, error: Value) -> Bytes {
    with_id(json!({"type": "error", "error": error}), id)
}

/// The answer to a `ping`.
pub fn pong(id: Option<&Value>) -> Bytes {
    with_id(json!({"type": "pong"}), id)
}

/// A failed command, answered in the command's own shape (a Socket.IO mapping's
/// acknowledgement, as a Flask-SocketIO handler returned it): `{"error": ...}`.
pub fn command_failed(error: Value) -> Bytes {
    Bytes::from(json!({ "error": error }).to_string())
}

fn with_id(mut reply: Value, id: Option<&Value>) -> Bytes {
    if let (Value::Object(map), Some(id)) = (&mut reply, id) {
        map.insert("id".into(), id.clone());
    }
    Bytes::from(reply.to_string())
}

fn put_u64(out: &mut BytesMut, n: u64) {
    let mut buf = itoa::Buffer::new();
    out.put_slice(buf.format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn the_patch_body_is_the_patch_as_written_into_the_message() {
        let patch_value = json!({"a": {"patch": 1}, "b": null});
        let message = patch("dev/x", 12, &patch_value);
        let body = patch_body(&message).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(body).unwrap(), patch_value);
    }

    #[test]
    fn messages_are_valid_json() {
        assert_eq!(
            parse(&snapshot("a/b", 7, br#"{"x":1}"#)),
            json!({"type":"snapshot","topic":"a/b","rev":7,"state":{"x":1}})
        );
        assert_eq!(
            parse(&patch("a/b", 8, &json!({"x": null}))),
            json!({"type":"patch","topic":"a/b","rev":8,"patch":{"x":null}})
        );
        assert_eq!(
            parse(&removed("a/b", 9)),
            json!({"type":"removed","topic":"a/b","rev":9})
        );
        assert_eq!(
            parse(&event("a/b", b"\"hi\"")),
            json!({"type":"event","topic":"a/b","data":"hi"})
        );
        assert_eq!(
            parse(&lagged(3)),
            json!({"type":"lagged","dropped_events":3})
        );
        let e = json!({"code": "forbidden", "message": "no"});
        let id = json!(7);
        assert_eq!(
            parse(&result(Some(&id), json!({"rev": 2}))),
            json!({"type":"result","ok":true,"rev":2,"id":7})
        );
        assert_eq!(
            parse(&failed(Some(&id), e.clone())),
            json!({"type":"result","ok":false,"error":e,"id":7})
        );
        assert_eq!(
            parse(&error(None, e.clone())),
            json!({"type":"error","error":e})
        );
        assert_eq!(parse(&pong(None)), json!({"type":"pong"}));
        assert_eq!(parse(&command_failed(e.clone())), json!({ "error": e }));
        let welcome = parse(&welcome("s", 25, 1024));
        assert_eq!(
            (
                &welcome["type"],
                &welcome["session"],
                &welcome["heartbeat_ms"]
            ),
            (&json!("welcome"), &json!("s"), &json!(25))
        );
    }

    #[test]
    fn a_state_message_knows_its_kind_topic_and_state() {
        let snapshot = Frame::state(super::snapshot("a/b", 7, br#"{"x":[1,2]}"#));
        assert_eq!(snapshot.kind, Kind::Snapshot);
        assert_eq!(snapshot.topic(), Some("a/b"));
        assert_eq!(snapshot.state_json(), Some(&br#"{"x":[1,2]}"#[..]));
        let patch = Frame::state(super::patch("a/b", 8, &json!({"x": 1})));
        assert_eq!((patch.kind, patch.topic()), (Kind::Patch, Some("a/b")));
        assert_eq!(patch.state_json(), None);
        let removed = Frame::state(super::removed("c", 9));
        assert_eq!((removed.kind, removed.topic()), (Kind::Removed, Some("c")));
        let event = Frame::new(Kind::Event, super::event("e/f", b"1"));
        assert_eq!(event.topic(), Some("e/f"));
        let lagged = Frame::new(Kind::Lagged, lagged(1));
        assert_eq!(lagged.topic(), None);
    }
}
