//! How the load generator speaks to each kind of server: statecast's own protocol, the plain
//! WebSocket + JSON protocol of the `ws`, uWebSockets.js and FastAPI peers, and Socket.IO
//! (Engine.IO v4 over WebSocket) for the Socket.IO peers. These are the thin adapters; the
//! peers themselves stay as their users write them.

use clap::ValueEnum;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// statecast: `/ws`, subscribe with patterns, snapshots then merge patches.
    Statecast,
    /// JSON over a plain WebSocket at `/ws`: subscribe to topics, full-state broadcasts.
    Plain,
    /// Socket.IO v4 at `/socket.io/`: `subscribe`/`set` events with acks, `snapshot` events.
    Socketio,
}

/// What the subscribers are subscribed to.
#[derive(Debug, Clone)]
pub enum Interest {
    /// One topic, every subscriber (fan-out).
    Topic(String),
    /// Subscriber `i` gets `dev/<i>/#` (statecast) or its own topic list (peers).
    Partition { topics: Vec<String> },
}

/// One change as a subscriber sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Snapshot,
    Patch,
    Removed,
}

/// A parsed frame.
#[derive(Debug)]
pub enum Incoming<'a> {
    Change {
        topic: &'a str,
        rev: u64,
        kind: ChangeKind,
        fields: Fields,
    },
    Ack {
        id: u64,
        ok: bool,
        rev: Option<u64>,
    },
    Lagged {
        dropped_events: u64,
    },
    /// A frame the client must answer with this text (Engine.IO ping).
    Reply(&'static str),
    Other,
}

/// The members of the benchmark state the load generator reads.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Fields {
    pub ts: Option<u64>,
    pub seq: Option<u64>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    topic: Option<&'a str>,
    rev: Option<u64>,
    id: Option<u64>,
    ok: Option<bool>,
    dropped_events: Option<u64>,
    #[serde(borrow)]
    state: Option<&'a RawValue>,
    #[serde(borrow)]
    patch: Option<&'a RawValue>,
}

impl Protocol {
    /// The WebSocket path to connect to.
    pub fn ws_path(self) -> &'static str {
        match self {
            Protocol::Statecast | Protocol::Plain => "/ws",
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// The health path that says the server is ready.
    pub fn health_path(self) -> &'static str {
        match self {
            Protocol::Statecast => "/api/health",
            _ => "/health",
        }
    }

    /// Frames to send right after connecting, before subscribing (Socket.IO's namespace
    /// connect).
    pub fn hello(self) -> Option<&'static str> {
        match self {
            Protocol::Socketio => Some("40"),
            _ => None,
        }
    }

    /// Whether `text` answers the hello (Socket.IO's namespace CONNECT reply `40{..}`).
    /// Socket.IO drops events sent before that reply, so clients wait for it.
    pub fn is_hello_reply(self, text: &str) -> bool {
        self == Protocol::Socketio && text.starts_with("40")
    }

    /// The subscribe request of subscriber `index`, acknowledged with id 1.
    pub fn subscribe(self, interest: &Interest, index: usize, subscribers: usize) -> String {
        let topics: Vec<&str> = match interest {
            Interest::Topic(t) => vec![t.as_str()],
            Interest::Partition { topics } => topics
                .iter()
                .enumerate()
                .filter(|(i, _)| i % subscribers == index)
                .map(|(_, t)| t.as_str())
                .collect(),
        };
        match self {
            Protocol::Statecast => {
                let patterns = match interest {
                    Interest::Topic(t) => vec![t.clone()],
                    Interest::Partition { .. } => vec![format!("dev/{index}/#")],
                };
                serde_json::json!({"type": "subscribe", "id": 1, "patterns": patterns}).to_string()
            }
            Protocol::Plain => {
                serde_json::json!({"type": "subscribe", "id": 1, "topics": topics}).to_string()
            }
            Protocol::Socketio => {
                format!(
                    "421{}",
                    serde_json::json!(["subscribe", {"topics": topics}])
                )
            }
        }
    }

    /// A WebSocket publish of `state_json` to `topic`, acknowledged with `id`.
    pub fn publish(self, id: u64, topic: &str, state_json: &str) -> String {
        match self {
            Protocol::Statecast | Protocol::Plain => {
                format!(r#"{{"type":"set","id":{id},"topic":"{topic}","state":{state_json}}}"#)
            }
            Protocol::Socketio => {
                format!(r#"42{id}["set",{{"topic":"{topic}","state":{state_json}}}]"#)
            }
        }
    }

    /// Parses one text frame.
    pub fn parse(self, text: &str) -> Incoming<'_> {
        match self {
            Protocol::Statecast | Protocol::Plain => parse_json(text),
            Protocol::Socketio => parse_socketio(text),
        }
    }
}

fn parse_json(text: &str) -> Incoming<'_> {
    let Ok(wire) = serde_json::from_str::<Wire<'_>>(text) else {
        return Incoming::Other;
    };
    let kind = match wire.kind {
        Some("snapshot") => ChangeKind::Snapshot,
        Some("patch") => ChangeKind::Patch,
        Some("removed") => ChangeKind::Removed,
        Some("result") => {
            return Incoming::Ack {
                id: wire.id.unwrap_or(0),
                ok: wire.ok.unwrap_or(false),
                rev: wire.rev,
            };
        }
        Some("lagged") => {
            return Incoming::Lagged {
                dropped_events: wire.dropped_events.unwrap_or(0),
            };
        }
        _ => return Incoming::Other,
    };
    let body = wire.state.or(wire.patch);
    let fields = body
        .and_then(|raw| serde_json::from_str::<Fields>(raw.get()).ok())
        .unwrap_or_default();
    match (wire.topic, wire.rev) {
        (Some(topic), Some(rev)) => Incoming::Change {
            topic,
            rev,
            kind,
            fields,
        },
        _ => Incoming::Other,
    }
}

fn parse_socketio(text: &str) -> Incoming<'_> {
    if text == "2" {
        return Incoming::Reply("3");
    }
    if let Some(event) = text.strip_prefix("42") {
        let Ok((name, payload)) = serde_json::from_str::<(&str, &RawValue)>(event) else {
            return Incoming::Other;
        };
        return match name {
            "snapshot" => parse_json(payload.get()),
            _ => Incoming::Other,
        };
    }
    if let Some(ack) = text.strip_prefix("43") {
        let digits = ack.bytes().take_while(u8::is_ascii_digit).count();
        let id = ack[..digits].parse().unwrap_or(0);
        #[derive(Deserialize)]
        struct AckBody {
            ok: Option<bool>,
            rev: Option<u64>,
        }
        let body = serde_json::from_str::<(AckBody,)>(&ack[digits..]).ok();
        return Incoming::Ack {
            id,
            ok: body.as_ref().and_then(|b| b.0.ok).unwrap_or(false),
            rev: body.and_then(|b| b.0.rev),
        };
    }
    Incoming::Other
}

/// The REST path that replaces a topic's state.
pub fn rest_path(topic: &str) -> String {
    format!("/api/state/{topic}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statecast_messages() {
        let m = Protocol::Statecast
            .parse(r#"{"type":"patch","topic":"b","rev":7,"patch":{"ts":5,"seq":3}}"#);
        match m {
            Incoming::Change {
                topic,
                rev,
                kind,
                fields,
            } => {
                assert_eq!((topic, rev, kind), ("b", 7, ChangeKind::Patch));
                assert_eq!((fields.ts, fields.seq), (Some(5), Some(3)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Protocol::Statecast.parse(r#"{"type":"result","id":4,"ok":true,"rev":9}"#),
            Incoming::Ack {
                id: 4,
                ok: true,
                rev: Some(9)
            }
        ));
    }

    #[test]
    fn parses_socketio_frames() {
        assert!(matches!(
            Protocol::Socketio.parse("2"),
            Incoming::Reply("3")
        ));
        let m = Protocol::Socketio.parse(
            r#"42["snapshot",{"type":"snapshot","topic":"t","rev":2,"state":{"ts":1,"seq":2}}]"#,
        );
        assert!(matches!(
            m,
            Incoming::Change {
                rev: 2,
                kind: ChangeKind::Snapshot,
                ..
            }
        ));
        assert!(matches!(
            Protocol::Socketio.parse(r#"4312[{"ok":true,"rev":3}]"#),
            Incoming::Ack {
                id: 12,
                ok: true,
                rev: Some(3)
            }
        ));
    }
}
