//! Rules that turn an upstream message (a WebSocket frame, a line a command printed) into a
//! write on a topic.

use regex::Regex;
use serde_json::{Map, Number, Value};
use statecast_core::{Hub, HubError, Topic};

use crate::config::{Action, RuleConfig};
use crate::template::Template;

/// The rules of one source, checked in order.
pub struct Rules {
    default_topic: Topic,
    rules: Vec<Rule>,
}

struct Rule {
    matches: Option<Value>,
    regex: Option<Regex>,
    action: Action,
    select: Option<String>,
    into: Option<String>,
    topic: Option<Template>,
}

/// What a message turned into.
#[derive(Debug, PartialEq)]
pub struct Output {
    pub topic: Topic,
    pub action: Action,
    pub value: Value,
}

impl Rules {
    pub fn new(default_topic: &str, configs: &[RuleConfig]) -> Result<Rules, String> {
        let default_topic = Topic::new(default_topic).map_err(|e| format!("topic: {e}"))?;
        let mut rules = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let at = |what: &str, e: &dyn std::fmt::Display| format!("rule {}: {what}: {e}", i + 1);
            let regex = match &c.regex {
                Some(r) => Some(Regex::new(r).map_err(|e| at("regex", &e))?),
                None => None,
            };
            for pointer in [&c.select, &c.into].into_iter().flatten() {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(at(
                        "JSON pointer",
                        &format!("{pointer:?} must start with `/`"),
                    ));
                }
            }
            let topic = match &c.topic {
                Some(t) => Some(Template::parse(t).map_err(|e| at("topic", &e))?),
                None => None,
            };
            rules.push(Rule {
                matches: c.matches.clone(),
                regex,
                action: c.action,
                select: c.select.clone(),
                into: c.into.clone(),
                topic,
            });
        }
        Ok(Rules {
            default_topic,
            rules,
        })
    }

    /// The write for a text message: JSON when it parses, else `{"line": text}` (and the
    /// text regex rules look at). `Ok(None)` when no rule matches.
    pub fn apply_text(&self, text: &str) -> Result<Option<Output>, String> {
        let json = serde_json::from_str::<Value>(text).ok();
        self.apply(text, json)
    }

    fn apply(&self, text: &str, json: Option<Value>) -> Result<Option<Output>, String> {
        let message = json.unwrap_or_else(|| serde_json::json!({"line": text}));
        if self.rules.is_empty() {
            return Ok(Some(Output {
                topic: self.default_topic.clone(),
                action: Action::Event,
                value: message,
            }));
        }
        for rule in &self.rules {
            let captured;
            let msg = match &rule.regex {
                Some(regex) => {
                    let Some(caps) = regex.captures(text) else {
                        continue;
                    };
                    let mut fields = Map::new();
                    for name in regex.capture_names().flatten() {
                        if let Some(m) = caps.name(name) {
                            fields.insert(name.to_string(), Value::String(m.as_str().into()));
                        }
                    }
                    captured = Value::Object(fields);
                    &captured
                }
                None => &message,
            };
            if let Some(wanted) = &rule.matches
                && !contains(msg, wanted)
            {
                continue;
            }
            let selected = match &rule.select {
                Some(pointer) => match msg.pointer(pointer) {
                    Some(v) => v.clone(),
                    None => continue,
                },
                None => msg.clone(),
            };
            let value = match &rule.into {
                Some(pointer) => wrap(pointer, selected),
                None => selected,
            };
            let topic = match &rule.topic {
                Some(t) => {
                    let name = t.render(&serde_json::json!({ "msg": msg }))?;
                    Topic::new(&name).map_err(|e| format!("topic {name:?}: {e}"))?
                }
                None => self.default_topic.clone(),
            };
            return Ok(Some(Output {
                topic,
                action: rule.action,
                value,
            }));
        }
        Ok(None)
    }
}

impl Output {
    /// Writes the output into the hub; resolves once it is durable.
    pub async fn write(self, hub: &Hub) -> Result<bool, HubError> {
        Ok(match self.action {
            Action::Set => hub.set(&self.topic, self.value).await?.changed,
            Action::Patch => hub.patch(&self.topic, self.value).await?.changed,
            Action::Delete => hub.delete(&self.topic).await?.changed,
            Action::Event => {
                hub.event(&self.topic, self.value).await?;
                true
            }
        })
    }
}

/// Whether `value` has every member of `wanted`, recursively (other values must be equal).
fn contains(value: &Value, wanted: &Value) -> bool {
    match (value, wanted) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w))),
        (Value::Number(have), Value::Number(want)) => same_number(have, want),
        (have, want) => have == want,
    }
}

/// Numbers keep the text they were written in (`arbitrary_precision`), but a rule matches
/// by value: `0.5` in the config matches a device's `5e-1`. An integer matches an integer
/// and a float a float, as `serde_json` compared them before it kept the text.
fn same_number(have: &Number, want: &Number) -> bool {
    let integer = |n: &Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    match (integer(have), integer(want)) {
        (Some(h), Some(w)) => h == w,
        (None, None) => have == want || have.as_f64().is_some_and(|h| Some(h) == want.as_f64()),
        _ => false,
    }
}

/// `{"a":{"b": value}}` for the pointer `/a/b`.
fn wrap(pointer: &str, value: Value) -> Value {
    let keys: Vec<&str> = pointer.split('/').skip(1).collect();
    keys.into_iter().rev().fold(value, |inner, key| {
        let key = key.replace("~1", "/").replace("~0", "~");
        Value::Object(Map::from_iter([(key, inner)]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(toml: &str) -> Rules {
        #[derive(serde::Deserialize)]
        struct R {
            rule: Vec<RuleConfig>,
        }
        let r: R = toml::from_str(toml).unwrap();
        Rules::new("audio/default", &r.rule).unwrap()
    }

    #[test]
    fn a_match_compares_numbers_by_value() {
        let r = rules(
            r#"
            [[rule]]
            match = { level = 0.5, channel = 2 }
            action = "set"
            "#,
        );
        for text in [
            r#"{"level":0.5,"channel":2}"#,
            r#"{"level":5e-1,"channel":2}"#,
            r#"{"level":0.50,"channel":2}"#,
        ] {
            let out = r.apply_text(text).unwrap().unwrap();
            assert_eq!(out.action, Action::Set, "{text}");
        }
        for text in [
            r#"{"level":0.51,"channel":2}"#,
            r#"{"level":0.5,"channel":2.0}"#,
            r#"{"level":0.5,"channel":3}"#,
        ] {
            assert!(r.apply_text(text).unwrap().is_none(), "{text} matched");
        }
    }

    #[test]
    fn without_rules_every_message_is_an_event() {
        let r = Rules::new("a/b", &[]).unwrap();
        let out = r.apply_text("plain words").unwrap().unwrap();
        assert_eq!(out.action, Action::Event);
        assert_eq!(out.value, json!({"line": "plain words"}));
        let out = r.apply_text(r#"{"x":1}"#).unwrap().unwrap();
        assert_eq!(out.value, json!({"x": 1}));
    }

    #[test]
    fn the_first_matching_rule_selects_wraps_and_names_the_topic() {
        let r = rules(
            r#"
            [[rule]]
            match = { event = "playback_state_changed" }
            action = "patch"
            select = "/new_state"
            into = "/playback/state"
            [[rule]]
            regex = "Event '(?P<event>\\w+)' on sink #(?P<index>\\d+)"
            topic = "audio/sink/{msg.index}"
            "#,
        );
        let out = r
            .apply_text(r#"{"event":"playback_state_changed","new_state":"playing"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(out.action, Action::Patch);
        assert_eq!(out.value, json!({"playback": {"state": "playing"}}));
        assert_eq!(out.topic.as_str(), "audio/default");

        let out = r.apply_text("Event 'change' on sink #3").unwrap().unwrap();
        assert_eq!(out.topic.as_str(), "audio/sink/3");
        assert_eq!(out.value, json!({"event": "change", "index": "3"}));

        assert_eq!(r.apply_text("Event 'new' on client #9").unwrap(), None);
        assert_eq!(r.apply_text(r#"{"event":"volume_changed"}"#).unwrap(), None);
    }

    #[test]
    fn a_topic_that_renders_invalid_is_an_error() {
        let r = rules("[[rule]]\ntopic = \"x/{msg.name}\"\n");
        assert!(r.apply_text(r#"{"name":"a/+"}"#).is_err());
        assert!(r.apply_text(r#"{"other":1}"#).is_err());
    }
}
