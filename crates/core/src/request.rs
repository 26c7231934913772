//! Client → server WebSocket messages: parsing and validation, one place for all of them.
//!
//! Parsing never panics and names the problem: a message that is not an object, a missing
//! or mistyped field, an unknown `type`, an invalid topic or pattern.

use std::collections::HashMap;

use crate::{ErrorCode, HubError, Mode, Pattern, Since, Topic};
use serde_json::{Map, Value};

/// A parsed client message.
#[derive(Debug)]
pub enum Request {
    Auth {
        token: String,
    },
    Subscribe {
        patterns: Vec<Pattern>,
        since: Since,
        mode: Option<Mode>,
    },
    Unsubscribe {
        patterns: Vec<Pattern>,
    },
    Get {
        patterns: Vec<Pattern>,
    },
    Set {
        topic: Topic,
        state: Value,
    },
    Patch {
        topic: Topic,
        patch: Value,
    },
    Delete {
        topic: Topic,
    },
    Event {
        topic: Topic,
        data: Value,
    },
    Command {
        target: Topic,
        name: String,
        args: Value,
    },
    Ping,
}

/// A client message's `id` (echoed in replies) and its parsed body or the error to answer.
pub struct Parsed {
    pub id: Option<Value>,
    pub request: Result<Request, HubError>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Parsed {
    match serde_json::from_str(text) {
        Ok(value) => parse_value(value),
        Err(e) => Parsed {
            id: None,
            request: Err(bad(format!("not valid JSON: {e}"))),
        },
    }
}

/// Parses a message that is already JSON (a transport that decodes it itself, such as
/// Socket.IO).
pub fn parse_value(value: Value) -> Parsed {
    let Value::Object(mut object) = value else {
        return Parsed {
            id: None,
            request: Err(bad("expected a JSON object")),
        };
    };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::Number(_) | Value::String(_))) => Some(id),
        Some(_) => {
            return Parsed {
                id: None,
                request: Err(bad("`id` must be a number or a string")),
            };
        }
    };
    Parsed {
        id,
        request: parse_object(object),
    }
}

fn parse_object(mut o: Map<String, Value>) -> Result<Request, HubError> {
    let kind = match o.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad("`type` must be a string")),
        None => return Err(bad("missing field `type`")),
    };
    Ok(match kind.as_str() {
        "auth" => Request::Auth {
            token: string(&mut o, "token")?,
        },
        "subscribe" => Request::Subscribe {
            patterns: patterns(&mut o)?,
            since: since(&mut o)?,
            mode: mode(&mut o)?,
        },
        "unsubscribe" => Request::Unsubscribe {
            patterns: patterns(&mut o)?,
        },
        "get" => Request::Get {
            patterns: patterns(&mut o)?,
        },
        "set" => Request::Set {
            topic: topic(&mut o, "topic")?,
            state: required(&mut o, "state")?,
        },
        "patch" => Request::Patch {
            topic: topic(&mut o, "topic")?,
            patch: required(&mut o, "patch")?,
        },
        "delete" => Request::Delete {
            topic: topic(&mut o, "topic")?,
        },
        "event" => Request::Event {
            topic: topic(&mut o, "topic")?,
            data: o.remove("data").unwrap_or(Value::Null),
        },
        "command" => Request::Command {
            target: topic(&mut o, "target")?,
            name: string(&mut o, "name")?,
            args: o
                .remove("args")
                .unwrap_or_else(|| Value::Object(Default::default())),
        },
        "ping" => Request::Ping,
        other => {
            return Err(HubError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {other:?}"),
            ));
        }
    })
}

fn bad(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::BadRequest, message)
}

fn required(o: &mut Map<String, Value>, field: &str) -> Result<Value, HubError> {
    o.remove(field)
        .ok_or_else(|| bad(format!("missing field `{field}`")))
}

fn string(o: &mut Map<String, Value>, field: &str) -> Result<String, HubError> {
    match required(o, field)? {
        Value::String(s) => Ok(s),
        _ => Err(bad(format!("`{field}` must be a string"))),
    }
}

fn topic(o: &mut Map<String, Value>, field: &str) -> Result<Topic, HubError> {
    let name = string(o, field)?;
    Topic::new(&name)
        .map_err(|e| HubError::new(ErrorCode::InvalidTopic, format!("{field} {name:?}: {e}")))
}

fn patterns(o: &mut Map<String, Value>) -> Result<Vec<Pattern>, HubError> {
    let Value::Array(items) = required(o, "patterns")? else {
        return Err(bad("`patterns` must be an array of strings"));
    };
    items
        .iter()
        .map(|item| {
            let Value::String(text) = item else {
                return Err(bad("`patterns` must be an array of strings"));
            };
            parse_pattern(text)
        })
        .collect()
}

/// Parses a pattern, with the contract's error code.
pub fn parse_pattern(text: &str) -> Result<Pattern, HubError> {
    Pattern::new(text)
        .map_err(|e| HubError::new(ErrorCode::InvalidPattern, format!("pattern {text:?}: {e}")))
}

/// Parses a topic, with the contract's error code.
pub fn parse_topic(text: &str) -> Result<Topic, HubError> {
    Topic::new(text)
        .map_err(|e| HubError::new(ErrorCode::InvalidTopic, format!("topic {text:?}: {e}")))
}

fn since(o: &mut Map<String, Value>) -> Result<Since, HubError> {
    let value = match o.remove("since") {
        None | Some(Value::Null) => return Ok(Since::Now),
        Some(v) => v,
    };
    let Value::Object(map) = value else {
        return Err(bad("`since` must be an object of topic: rev"));
    };
    let mut revs = HashMap::with_capacity(map.len());
    for (topic, rev) in map {
        let Some(rev) = rev.as_u64() else {
            return Err(bad(format!(
                "`since` rev of {topic:?} must be a non-negative integer"
            )));
        };
        revs.insert(topic, rev);
    }
    Ok(Since::Revs(revs))
}

fn mode(o: &mut Map<String, Value>) -> Result<Option<Mode>, HubError> {
    match o.remove("mode") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "patch" => Ok(Some(Mode::Patch)),
        Some(Value::String(s)) if s == "full" => Ok(Some(Mode::Full)),
        Some(_) => Err(bad("`mode` must be \"patch\" or \"full\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        match parse(text).request {
            Err(e) => e.code,
            Ok(r) => panic!("{text} parsed as {r:?}"),
        }
    }

    #[test]
    fn refuses_bad_messages_with_codes() {
        assert_eq!(code("nope"), ErrorCode::BadRequest);
        assert_eq!(code("[1]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"set","state":1}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"set","topic":"a//b","state":1}"#),
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            code(r#"{"type":"set","topic":"a/+","state":1}"#),
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            code(r#"{"type":"subscribe","patterns":["a/#/b"]}"#),
            ErrorCode::InvalidPattern
        );
        assert_eq!(
            code(r#"{"type":"subscribe","patterns":"a"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"subscribe","patterns":["a"],"since":{"a":-1}}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"subscribe","patterns":["a"],"mode":"delta"}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn keeps_the_id_of_a_bad_message() {
        let parsed = parse(r#"{"id":"x","type":"fly"}"#);
        assert_eq!(parsed.id, Some(Value::from("x")));
        assert!(parsed.request.is_err());
    }

    #[test]
    fn parses_subscribe() {
        let parsed = parse(
            r#"{"id":2,"type":"subscribe","patterns":["a/#"],"since":{"a/b":3},"mode":"full"}"#,
        );
        let Ok(Request::Subscribe {
            patterns,
            since: Since::Revs(revs),
            mode,
        }) = parsed.request
        else {
            panic!("not a subscribe");
        };
        assert_eq!(patterns[0].as_str(), "a/#");
        assert_eq!(revs.get("a/b"), Some(&3));
        assert_eq!(mode, Some(Mode::Full));
    }
}
