//! Entities: views of part of a topic that a home-automation system shows and controls.
//! An entity's description is the state of the topic `_entities/<key>`; this module checks
//! one when it is written, so that a description that would confuse every integration
//! reading it is refused as a whole, with each mistake's JSON pointer (`invalid_state`).
//!
//! The rule: a description holds only the fields its platform knows (a typo such as
//! `units` is refused, not ignored), every pointer is a JSON pointer, every topic a topic
//! and every command `{target, name, args}`. docs/entities.md documents each platform.
//!
//! Written by hand rather than as a JSON Schema: the checks that matter (a pointer's
//! syntax, a topic's, `min < max`, one platform's fields and not another's) are the hub's
//! own rules, and the messages name them.

use serde_json::{Map, Value, json};

use crate::error::{ErrorCode, HubError};
use crate::topic::Topic;

/// The topics that hold descriptions: `_entities/<key>`.
pub const PREFIX: &str = "_entities/";
/// The longest key.
pub const MAX_KEY: usize = 64;

/// Every platform, as `platform` names it.
pub const PLATFORMS: [&str; 8] = [
    "sensor",
    "binary_sensor",
    "switch",
    "light",
    "number",
    "select",
    "button",
    "media_player",
];

/// `origin`'s one value: written by the hub from the config file's `[[entity]]` tables.
pub const ORIGIN_CONFIG: &str = "config";

/// Fields every platform has.
const COMMON: [&str; 7] = [
    "platform",
    "name",
    "topic",
    "device",
    "icon",
    "attributes",
    "origin",
];
const DEVICE: [&str; 5] = ["id", "name", "manufacturer", "model", "sw_version"];
const COMMAND: [&str; 3] = ["target", "name", "args"];
const STATE_CLASSES: [&str; 3] = ["measurement", "total", "total_increasing"];
const NUMBER_MODES: [&str; 3] = ["auto", "box", "slider"];

/// What a field of a platform holds.
#[derive(Clone, Copy)]
enum Kind {
    Pointer,
    Text,
    Number,
    Command,
    Options,
    StateClass,
    NumberMode,
    /// A whole number of at least 0 (a sensor's display precision).
    Count,
}

/// A platform's own fields, and which it needs.
fn fields(platform: &str) -> &'static [(&'static str, Kind, bool)] {
    use Kind::*;
    match platform {
        "sensor" => &[
            ("value", Pointer, true),
            ("unit", Text, false),
            ("device_class", Text, false),
            ("state_class", StateClass, false),
            ("precision", Count, false),
        ],
        "binary_sensor" => &[("value", Pointer, true), ("device_class", Text, false)],
        "switch" => &[
            ("value", Pointer, true),
            ("command", Command, true),
            ("device_class", Text, false),
        ],
        "light" => &[
            ("value", Pointer, true),
            ("command", Command, true),
            ("brightness", Pointer, false),
            ("brightness_command", Command, false),
            ("brightness_scale", Number, false),
        ],
        "number" => &[
            ("value", Pointer, true),
            ("command", Command, true),
            ("min", Number, false),
            ("max", Number, false),
            ("step", Number, false),
            ("unit", Text, false),
            ("device_class", Text, false),
            ("mode", NumberMode, false),
        ],
        "select" => &[
            ("value", Pointer, true),
            ("command", Command, true),
            ("options", Options, true),
        ],
        "button" => &[("command", Command, true), ("device_class", Text, false)],
        "media_player" => &[
            ("state", Pointer, true),
            ("title", Pointer, false),
            ("artist", Pointer, false),
            ("volume", Pointer, false),
            ("volume_max", Number, false),
            ("play", Command, false),
            ("pause", Command, false),
            ("stop", Command, false),
            ("next", Command, false),
            ("previous", Command, false),
            ("volume_set", Command, false),
        ],
        _ => &[],
    }
}

/// Whether `topic` holds an entity description.
pub fn is_entity_topic(topic: &str) -> bool {
    topic.starts_with(PREFIX)
}

/// The key of an entity topic, if the topic is one and its key is well formed.
pub fn key_of(topic: &str) -> Option<&str> {
    let key = topic.strip_prefix(PREFIX)?;
    valid_key(key).then_some(key)
}

/// `[a-z0-9_]`, 1 to [`MAX_KEY`] of them.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Refuses a write of `state` to the entity topic `topic` unless its key is well formed
/// and the state is a valid description (`invalid_state`, each mistake in the details as
/// `{"pointer", "message"}`). Topics outside `_entities/` pass.
pub fn check(topic: &str, state: &Value) -> Result<(), HubError> {
    let Some(key) = topic.strip_prefix(PREFIX) else {
        return Ok(());
    };
    if !valid_key(key) {
        return Err(HubError::new(
            ErrorCode::InvalidTopic,
            format!(
                "topic {topic:?}: an entity's key (after {PREFIX}) is 1 to {MAX_KEY} of \
                 a-z, 0-9 and _, one segment"
            ),
        ));
    }
    let violations = violations(state);
    let Some(first) = violations.first() else {
        return Ok(());
    };
    let more = match violations.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let message = format!(
        "{topic} is not a valid entity description: {}: {}{more} (see docs/entities.md)",
        match first.0.as_str() {
            "" => "/",
            p => p,
        },
        first.1
    );
    let details = violations
        .into_iter()
        .map(|(pointer, message)| json!({"pointer": pointer, "message": message}))
        .collect();
    Err(HubError::new(ErrorCode::InvalidState, message).with_details(Value::Array(details)))
}

/// Every mistake in a description: (pointer, message).
fn violations(state: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(object) = state.as_object() else {
        out.push((String::new(), "a description is a JSON object".into()));
        return out;
    };
    let platform = match object.get("platform") {
        None => {
            out.push((
                "/platform".into(),
                format!("missing: one of {}", PLATFORMS.join(", ")),
            ));
            None
        }
        Some(Value::String(p)) if PLATFORMS.contains(&p.as_str()) => Some(p.as_str()),
        Some(other) => {
            out.push((
                "/platform".into(),
                format!("{other} is not a platform: one of {}", PLATFORMS.join(", ")),
            ));
            None
        }
    };
    match object.get("topic") {
        // A button shows nothing: it may have no topic (it is available while the hub is).
        None if platform == Some("button") => {}
        None => out.push((
            "/topic".into(),
            "missing: the topic the entity shows".into(),
        )),
        Some(t) => check_topic("/topic", t, &mut out),
    }
    if let Some(name) = object.get("name") {
        check_text("/name", name, &mut out);
    }
    if let Some(icon) = object.get("icon") {
        check_text("/icon", icon, &mut out);
    }
    if let Some(origin) = object
        .get("origin")
        .filter(|o| o.as_str() != Some(ORIGIN_CONFIG))
    {
        out.push((
            "/origin".into(),
            format!(
                "{origin}: only \"{ORIGIN_CONFIG}\", which the hub writes for [[entity]] tables"
            ),
        ));
    }
    if let Some(device) = object.get("device") {
        check_device(device, &mut out);
    }
    if let Some(attributes) = object.get("attributes") {
        match attributes.as_object() {
            Some(map) => {
                for (name, pointer) in map {
                    check_pointer(&format!("/attributes/{}", escape(name)), pointer, &mut out);
                }
            }
            None => out.push((
                "/attributes".into(),
                "an object of attribute names and JSON pointers".into(),
            )),
        }
    }
    let Some(platform) = platform else {
        return out;
    };
    let own = fields(platform);
    for (name, kind, required) in own {
        let pointer = format!("/{name}");
        match object.get(*name) {
            None if *required => out.push((pointer, format!("missing: a {platform} needs it"))),
            None => {}
            Some(v) => check_kind(&pointer, *kind, v, &mut out),
        }
    }
    for name in object.keys() {
        if !COMMON.contains(&name.as_str()) && !own.iter().any(|(n, _, _)| n == name) {
            let known: Vec<&str> = own.iter().map(|(n, _, _)| *n).collect();
            out.push((
                format!("/{}", escape(name)),
                format!(
                    "a {platform} has no field {name:?} (its fields: {}; and {})",
                    known.join(", "),
                    COMMON.join(", ")
                ),
            ));
        }
    }
    check_platform(platform, object, &mut out);
    out
}

/// Rules across fields of one platform.
fn check_platform(platform: &str, object: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    let number = |name: &str| object.get(name).and_then(Value::as_f64);
    match platform {
        "number" => {
            if let (Some(min), Some(max)) = (number("min"), number("max"))
                && min >= max
            {
                out.push(("/max".into(), format!("{max} is not above min ({min})")));
            }
            if number("step").is_some_and(|s| s <= 0.0) {
                out.push(("/step".into(), "a step is above 0".into()));
            }
        }
        "light" => {
            if object.contains_key("brightness_command") && !object.contains_key("brightness") {
                out.push((
                    "/brightness_command".into(),
                    "needs `brightness`, the pointer to the light's brightness".into(),
                ));
            }
            if number("brightness_scale").is_some_and(|s| s <= 0.0) {
                out.push(("/brightness_scale".into(), "a scale is above 0".into()));
            }
        }
        "media_player" => {
            if number("volume_max").is_some_and(|s| s <= 0.0) {
                out.push(("/volume_max".into(), "a maximum is above 0".into()));
            }
            if object.contains_key("volume_set") && !object.contains_key("volume") {
                out.push((
                    "/volume_set".into(),
                    "needs `volume`, the pointer to the player's volume".into(),
                ));
            }
        }
        _ => {}
    }
}

fn check_kind(pointer: &str, kind: Kind, value: &Value, out: &mut Vec<(String, String)>) {
    match kind {
        Kind::Pointer => check_pointer(pointer, value, out),
        Kind::Text => check_text(pointer, value, out),
        Kind::Number => {
            if !value.as_f64().is_some_and(f64::is_finite) {
                out.push((pointer.into(), format!("{value} is not a number")));
            }
        }
        Kind::Command => check_command(pointer, value, out),
        Kind::Options => match value.as_array() {
            Some(options) if !options.is_empty() => {
                for (i, option) in options.iter().enumerate() {
                    let p = format!("{pointer}/{i}");
                    check_text(&p, option, out);
                    if options[..i].contains(option) {
                        out.push((p, format!("{option} is listed twice")));
                    }
                }
            }
            _ => out.push((pointer.into(), "a non-empty array of strings".into())),
        },
        Kind::Count => {
            if value.as_u64().is_none_or(|n| n > 15) {
                out.push((
                    pointer.into(),
                    format!("{value} is not a whole number from 0 to 15"),
                ));
            }
        }
        Kind::NumberMode => match value.as_str() {
            Some(s) if NUMBER_MODES.contains(&s) => {}
            _ => out.push((
                pointer.into(),
                format!("{value} is not a mode: one of {}", NUMBER_MODES.join(", ")),
            )),
        },
        Kind::StateClass => match value.as_str() {
            Some(s) if STATE_CLASSES.contains(&s) => {}
            _ => out.push((
                pointer.into(),
                format!(
                    "{value} is not a state class: one of {}",
                    STATE_CLASSES.join(", ")
                ),
            )),
        },
    }
}

fn check_text(pointer: &str, value: &Value, out: &mut Vec<(String, String)>) {
    if value.as_str().is_none_or(str::is_empty) {
        out.push((pointer.into(), format!("{value} is not a non-empty string")));
    }
}

fn check_topic(pointer: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value.as_str() {
        Some(t) => {
            if let Err(e) = Topic::new(t) {
                out.push((pointer.into(), e.to_string()));
            }
        }
        None => out.push((pointer.into(), format!("{value} is not a topic (a string)"))),
    }
}

/// A JSON pointer (RFC 6901): empty, or `/`-separated, `~` only as `~0` or `~1`.
fn check_pointer(pointer: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let Some(p) = value.as_str() else {
        out.push((
            pointer.into(),
            format!("{value} is not a JSON pointer (a string)"),
        ));
        return;
    };
    if !p.is_empty() && !p.starts_with('/') {
        out.push((
            pointer.into(),
            format!("{p:?} is not a JSON pointer: it starts with /"),
        ));
        return;
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            out.push((
                pointer.into(),
                format!("{p:?}: ~ is written ~0 in a JSON pointer"),
            ));
            return;
        }
    }
}

fn check_command(pointer: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let Some(command) = value.as_object() else {
        out.push((
            pointer.into(),
            "a command is an object {target, name, args}".into(),
        ));
        return;
    };
    match command.get("target") {
        None => out.push((
            format!("{pointer}/target"),
            "missing: the command's target".into(),
        )),
        Some(t) => check_topic(&format!("{pointer}/target"), t, out),
    }
    match command.get("name") {
        None => out.push((
            format!("{pointer}/name"),
            "missing: the command's name".into(),
        )),
        Some(n) => check_text(&format!("{pointer}/name"), n, out),
    }
    if let Some(args) = command.get("args").filter(|a| !a.is_object()) {
        out.push((
            format!("{pointer}/args"),
            format!("{args} is not an object"),
        ));
    }
    for name in command.keys().filter(|k| !COMMAND.contains(&k.as_str())) {
        out.push((
            format!("{pointer}/{}", escape(name)),
            format!("a command has no field {name:?} (its fields: target, name, args)"),
        ));
    }
}

fn check_device(value: &Value, out: &mut Vec<(String, String)>) {
    let Some(device) = value.as_object() else {
        out.push((
            "/device".into(),
            "a device is an object {id, name, ...}".into(),
        ));
        return;
    };
    match device.get("id") {
        None => out.push(("/device/id".into(), "missing: the device's id".into())),
        Some(id) => check_text("/device/id", id, out),
    }
    for (name, v) in device {
        if DEVICE.contains(&name.as_str()) {
            if name != "id" {
                check_text(&format!("/device/{name}"), v, out);
            }
        } else {
            out.push((
                format!("/device/{}", escape(name)),
                format!(
                    "a device has no field {name:?} (its fields: {})",
                    DEVICE.join(", ")
                ),
            ));
        }
    }
}

/// A member name as a pointer segment.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(topic: &str, state: Value) -> Vec<String> {
        match check(topic, &state) {
            Ok(()) => Vec::new(),
            Err(e) => e
                .details
                .as_ref()
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(|v| v["pointer"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_else(|| vec![format!("<{}>", e.code.as_str())]),
        }
    }

    #[test]
    fn the_contracts_examples_are_valid() {
        for example in [
            json!({"platform":"sensor","name":"Receiver 1 battery","topic":"micboard/SHURE001",
                   "value":"/battery","unit":"%","device_class":"battery","state_class":"measurement",
                   "device":{"id":"SHURE001","name":"Receiver 1","manufacturer":"Shure","model":"ULXD4"}}),
            json!({"platform":"switch","name":"Station light","topic":"railhub/esp32-01",
                   "value":"/outputs/0/active",
                   "command":{"target":"railhub/esp32-01","name":"set_output","args":{"output":0,"on":"{value}"}}}),
            json!({"platform":"number","name":"Blink interval","topic":"railhub/esp32-01",
                   "value":"/outputs/1/interval","min":0,"max":5000,"step":50,"unit":"ms",
                   "command":{"target":"railhub/esp32-01","name":"set_interval","args":{"output":1,"ms":"{value}"}}}),
            json!({"platform":"media_player","name":"Player 1","topic":"audio/player1",
                   "state":"/state","title":"/track/title","artist":"/track/artist","volume":"/volume",
                   "play":{"target":"audio/player1","name":"play","args":{}},
                   "pause":{"target":"audio/player1","name":"pause","args":{}},
                   "volume_set":{"target":"audio/player1","name":"set_volume","args":{"volume":"{value}"}}}),
        ] {
            assert_eq!(pointers("_entities/example", example), Vec::<String>::new());
        }
    }

    #[test]
    fn each_mistake_is_named_by_its_pointer() {
        let got = pointers(
            "_entities/bad",
            json!({"platform":"number","topic":"a/+","value":"battery","units":"%",
                   "min":10,"max":5,"step":0,
                   "command":{"target":"x","args":[1],"extra":true},
                   "device":{"name":""}}),
        );
        assert_eq!(
            got,
            [
                "/topic",
                "/device/id",
                "/device/name",
                "/value",
                "/command/name",
                "/command/args",
                "/command/extra",
                "/units",
                "/max",
                "/step"
            ]
        );
    }

    #[test]
    fn a_field_of_another_platform_is_refused_not_ignored() {
        let got = pointers(
            "_entities/s",
            json!({"platform":"sensor","topic":"t","value":"/v","options":["a"]}),
        );
        assert_eq!(got, ["/options"]);
    }

    #[test]
    fn an_unknown_platform_and_a_non_object_are_refused() {
        assert_eq!(
            pointers("_entities/x", json!({"platform":"fan","topic":"t"})),
            ["/platform"]
        );
        assert_eq!(pointers("_entities/x", json!([1])), [""]);
        assert_eq!(pointers("_entities/x", json!({"topic":"t"})), ["/platform"]);
    }

    #[test]
    fn a_key_is_lowercase_letters_digits_and_underscores_in_one_segment() {
        for bad in [
            "_entities/Bad",
            "_entities/a-b",
            "_entities/a/b",
            "_entities/",
        ] {
            assert_eq!(pointers(bad, json!({})), ["<invalid_topic>"], "{bad}");
        }
        let long = format!("_entities/{}", "a".repeat(MAX_KEY + 1));
        assert_eq!(pointers(&long, json!({})), ["<invalid_topic>"]);
        assert_eq!(key_of("_entities/mic_1_battery"), Some("mic_1_battery"));
    }

    #[test]
    fn attributes_precision_mode_and_a_topicless_button_are_known() {
        assert!(
            pointers(
                "_entities/s",
                json!({"platform":"sensor","topic":"t","value":"/v","precision":1,
                   "attributes":{"antenna":"/rf/antenna"}})
            )
            .is_empty()
        );
        assert_eq!(
            pointers(
                "_entities/s",
                json!({"platform":"sensor","topic":"t","value":"/v","precision":-1,
                       "attributes":{"antenna":"rf"}})
            ),
            ["/attributes/antenna", "/precision"]
        );
        assert_eq!(
            pointers(
                "_entities/n",
                json!({"platform":"number","topic":"t","value":"/v","mode":"dial",
                       "command":{"target":"t","name":"set"}})
            ),
            ["/mode"]
        );
        assert!(
            pointers(
                "_entities/b",
                json!({"platform":"button","command":{"target":"t","name":"go"}})
            )
            .is_empty()
        );
    }

    #[test]
    fn topics_outside_entities_are_not_checked() {
        assert!(check("micboard/x", &json!([1])).is_ok());
    }

    #[test]
    fn a_pointer_needs_its_slash_and_escapes() {
        let got = pointers(
            "_entities/s",
            json!({"platform":"sensor","topic":"t","value":"/a~2b"}),
        );
        assert_eq!(got, ["/value"]);
        assert!(
            pointers(
                "_entities/s",
                json!({"platform":"sensor","topic":"t","value":"/a~1b"})
            )
            .is_empty()
        );
        assert!(
            pointers(
                "_entities/s",
                json!({"platform":"sensor","topic":"t","value":""})
            )
            .is_empty()
        );
    }

    #[test]
    fn only_the_hub_writes_an_origin_and_only_config() {
        let with = |origin: Value| {
            pointers(
                "_entities/s",
                json!({"platform":"sensor","topic":"t","value":"/v","origin":origin}),
            )
        };
        assert!(with(json!("config")).is_empty());
        assert_eq!(with(json!("me")), ["/origin"]);
    }
}
