//! The server → client messages of the wire contract, serialized once and shared.
//!
//! Topics hold only `[A-Za-z0-9_.:@~-/]`, so they are written into JSON without escaping;
//! states arrive already serialized, so a snapshot is a concatenation, not a re-encoding.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

pub fn snapshot(topic: &str, rev: u64, state_json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(48 + topic.len() + state_json.len());
    out.put_slice(b"{\"type\":\"snapshot\",\"topic\":\"");
    out.put_slice(topic.as_bytes());
    out.put_slice(b"\",\"rev\":");
    put_u64(&mut out, rev);
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

pub fn removed(topic: &str, rev: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"removed\",\"topic\":\"{topic}\",\"rev\":{rev}}}"
    ))
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
    }
}
