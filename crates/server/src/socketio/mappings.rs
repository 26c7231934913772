//! The `[socketio]` section: where the endpoint is and the event mappings that let
//! front ends written for Flask-SocketIO run unchanged, checked once at startup
//! ([`Mappings::from_config`]) against the router's own paths and the protocol's event
//! names.

use serde::Deserialize;
use statecast_core::Topic;

use crate::routes;

/// The events of the generic protocol; `[[socketio.on]]` may not take these names.
pub const GENERIC_EVENTS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "get",
    "set",
    "patch",
    "delete",
    "event",
    "command",
    "auth",
    "ping",
];
/// The events the hub emits (and `error`); `[[socketio.emit]]` may not take these names.
pub const SERVER_EVENTS: &[&str] = &["snapshot", "patch", "removed", "event", "lagged", "error"];
/// Names Socket.IO clients keep for themselves.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The `[socketio]` section, checked.
#[derive(Debug, Clone)]
pub struct Mappings {
    /// Whether the endpoint is served at all.
    pub enabled: bool,
    /// Where: `/socket.io` unless the front end's `path` option says otherwise.
    pub path: String,
    pub emit: Vec<Emit>,
    pub on: Vec<On>,
}

impl Default for Mappings {
    fn default() -> Self {
        Mappings {
            enabled: true,
            path: "/socket.io".into(),
            emit: Vec::new(),
            on: Vec::new(),
        }
    }
}

/// `[[socketio.emit]]`: `topic`'s whole state is emitted as `event`.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    pub event: String,
    pub topic: Topic,
}

/// `[[socketio.on]]`: what a client's `event` does.
#[derive(Debug, Clone, PartialEq)]
pub struct On {
    pub event: String,
    pub action: OnAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OnAction {
    /// Emit every mapped event's current state to this client again.
    RequestState,
    /// The event's payload becomes the args of command `name` to `target`.
    Command { target: Topic, name: String },
}

/// `[socketio]`: the endpoint, and event mappings for front ends written for
/// Flask-SocketIO.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Serve `/socket.io/` at all [default: true].
    pub enabled: Option<bool>,
    /// The endpoint's path, as the client's `path` option [default: /socket.io].
    pub path: Option<String>,
    /// `[[socketio.emit]]`: a topic's whole state, emitted under an event name.
    #[serde(default)]
    pub emit: Vec<EmitConfig>,
    /// `[[socketio.on]]`: what a client's event does.
    #[serde(default)]
    pub on: Vec<OnConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitConfig {
    pub event: String,
    pub topic: String,
}

/// Exactly one of `action` (`"request_state"`) or `command` (a target; `name` is the
/// command's name, the event's by default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnConfig {
    pub event: String,
    pub action: Option<String>,
    pub command: Option<String>,
    pub name: Option<String>,
}

impl Mappings {
    /// The checked mappings; errors name the entry at fault.
    pub fn from_config(config: SocketIoConfig) -> Result<Mappings, String> {
        let path = config.path.unwrap_or_else(|| "/socket.io".into());
        let path = path.trim_end_matches('/').to_string();
        if !path.starts_with('/')
            || path.len() < 2
            || path.contains(['?', '#', ' '])
            || routes::TAKEN
                .iter()
                .any(|t| path == *t || path.starts_with(&format!("{t}/")))
        {
            return Err(format!(
                "socketio.path {path:?} must be a path such as \"/socket.io\", outside /api and /ws"
            ));
        }
        let check_name = |at: &str, event: &str, also: &[&str], what: &str| {
            if event.is_empty() {
                return Err(format!("{at}: `event` is empty"));
            }
            if RESERVED_EVENTS.contains(&event) || also.contains(&event) {
                return Err(format!(
                    "{at}: the event name {event:?} is taken ({what}); pick another"
                ));
            }
            Ok(())
        };
        let mut emit = Vec::new();
        for (i, e) in config.emit.into_iter().enumerate() {
            let at = format!("socketio.emit[{}] ({})", i + 1, e.event);
            check_name(&at, &e.event, SERVER_EVENTS, "an event the hub emits")?;
            if emit.iter().any(|other: &Emit| other.event == e.event) {
                return Err(format!("{at}: the event is mapped twice"));
            }
            let topic =
                Topic::new(&e.topic).map_err(|why| format!("{at}: topic {:?}: {why}", e.topic))?;
            emit.push(Emit {
                event: e.event,
                topic,
            });
        }
        let mut on = Vec::new();
        for (i, o) in config.on.into_iter().enumerate() {
            let at = format!("socketio.on[{}] ({})", i + 1, o.event);
            check_name(&at, &o.event, GENERIC_EVENTS, "a statecast request")?;
            if on.iter().any(|other: &On| other.event == o.event) {
                return Err(format!("{at}: the event is mapped twice"));
            }
            let action = match (o.action.as_deref(), o.command, o.name) {
                (Some("request_state"), None, None) => OnAction::RequestState,
                (Some(other), None, None) => {
                    return Err(format!(
                        "{at}: unknown action {other:?} (the one action is \"request_state\")"
                    ));
                }
                (None, Some(target), name) => OnAction::Command {
                    target: Topic::new(&target)
                        .map_err(|why| format!("{at}: command target {target:?}: {why}"))?,
                    name: name.unwrap_or_else(|| o.event.clone()),
                },
                (Some(_), None, Some(_)) => {
                    return Err(format!("{at}: `name` goes with `command`"));
                }
                _ => {
                    return Err(format!(
                        "{at}: give either `action = \"request_state\"` or `command = \"<target>\"`"
                    ));
                }
            };
            on.push(On {
                event: o.event,
                action,
            });
        }
        Ok(Mappings {
            enabled: config.enabled.unwrap_or(true),
            path,
            emit,
            on,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_json(section: serde_json::Value) -> Result<Mappings, String> {
        let config: SocketIoConfig = serde_json::from_value(section).map_err(|e| e.to_string())?;
        Mappings::from_config(config)
    }

    #[test]
    fn mappings_are_taken_as_given() {
        let m = from_json(json!({
            "path": "/io/",
            "emit": [{"event": "current_app", "topic": "board/current_app"}],
            "on": [
                {"event": "request_state", "action": "request_state"},
                {"event": "set_app", "command": "board/main"},
                {"event": "dim", "command": "board/main", "name": "brightness"},
            ],
        }))
        .unwrap();
        assert!(m.enabled);
        assert_eq!(m.path, "/io");
        assert_eq!(m.emit[0].event, "current_app");
        assert_eq!(m.emit[0].topic.as_str(), "board/current_app");
        assert_eq!(m.on[0].action, OnAction::RequestState);
        let OnAction::Command { target, name } = &m.on[1].action else {
            panic!("not a command: {:?}", m.on[1]);
        };
        assert_eq!((target.as_str(), name.as_str()), ("board/main", "set_app"));
        assert!(matches!(&m.on[2].action, OnAction::Command { name, .. } if name == "brightness"));
        // Without the section: served at /socket.io, no mappings.
        let m = Mappings::from_config(SocketIoConfig::default()).unwrap();
        assert_eq!(m.path, "/socket.io");
        assert!(m.enabled && m.emit.is_empty() && m.on.is_empty());
    }

    #[test]
    fn bad_mappings_are_refused_with_the_entry_named() {
        let emit = |entries: serde_json::Value| json!({ "emit": entries });
        let on = |entry: serde_json::Value| json!({ "on": [entry] });
        for (section, expected) in [
            (
                emit(json!([{"event": "patch", "topic": "a"}])),
                "socketio.emit[1] (patch): the event name",
            ),
            (
                emit(json!([{"event": "connect", "topic": "a"}])),
                "is taken",
            ),
            (
                emit(json!([{"event": "x", "topic": "a/#"}])),
                "socketio.emit[1] (x): topic",
            ),
            (
                emit(json!([{"event": "x", "topic": "a"}, {"event": "x", "topic": "b"}])),
                "socketio.emit[2] (x): the event is mapped twice",
            ),
            (
                emit(json!([{"event": "", "topic": "a"}])),
                "`event` is empty",
            ),
            (
                on(json!({"event": "subscribe", "action": "request_state"})),
                "a statecast request",
            ),
            (
                on(json!({"event": "x", "action": "reboot"})),
                "unknown action \"reboot\"",
            ),
            (on(json!({"event": "x"})), "give either"),
            (
                on(json!({"event": "x", "action": "request_state", "command": "a"})),
                "give either",
            ),
            (
                on(json!({"event": "x", "action": "request_state", "name": "n"})),
                "`name` goes with `command`",
            ),
            (
                on(json!({"event": "x", "command": "a//b"})),
                "command target",
            ),
            (on(json!({"event": "x", "kommand": "a"})), "kommand"),
        ] {
            let err = from_json(section.clone()).unwrap_err();
            assert!(err.contains(expected), "{section}: {err}");
        }
    }

    #[test]
    fn the_endpoint_takes_no_path_of_the_router() {
        for taken in routes::TAKEN {
            for path in [taken.to_string(), format!("{taken}/io")] {
                let err = from_json(json!({ "path": path })).unwrap_err();
                assert!(err.contains("socketio.path"), "{path}: {err}");
            }
        }
        for bad in ["socket.io", "/", "/a b", "/io?x"] {
            assert!(from_json(json!({ "path": bad })).is_err(), "{bad}");
        }
        // A path that only begins like a taken one is free.
        assert_eq!(from_json(json!({"path": "/wsio"})).unwrap().path, "/wsio");
    }
}
