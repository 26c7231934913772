//! Topic policies (`[[topics]]`): how the hub treats the topics a pattern matches — the
//! schema their state must satisfy, how long they stay fresh without a write, how long
//! their history is kept.
//!
//! The rule: for each topic the **first** policy whose pattern matches applies, and finding
//! it never scans the list. [`Policies::new`] compiles the patterns once into a
//! [`PatternIndex`], so a lookup walks the topic's segments (the same trie that finds a
//! change's subscribers) and takes the lowest matching position. A hub without policies
//! pays nothing: [`Policies::find`] returns at once.
//!
//! Schemas are JSON Schema 2020-12 (or the draft their `$schema` names), compiled once by
//! the `jsonschema` crate from a value the caller has read: the core reads no file and
//! fetches no `$ref`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{ErrorCode, HubError};
use crate::index::PatternIndex;
use crate::topic::Pattern;

/// Violations listed in one refusal; a state that breaks more gets the first ones and a
/// count, so an answer stays small whatever was sent.
const MAX_VIOLATIONS: usize = 32;

/// One `[[topics]]` entry.
#[derive(Debug, Clone)]
pub struct TopicPolicy {
    /// The topics it applies to (`match`).
    pub pattern: Pattern,
    /// What their state must satisfy.
    pub schema: Option<Schema>,
    /// No write for this long: the topic is stale.
    pub stale_after: Option<Duration>,
    /// How long their changes stay queryable (`Some(ZERO)`: none).
    pub history: Option<Duration>,
}

/// The policies of a hub, compiled for lookup. Cheap to clone.
#[derive(Clone, Default)]
pub struct Policies {
    list: Arc<[TopicPolicy]>,
    index: Arc<PatternIndex<u32>>,
}

impl Policies {
    /// Compiles `list`, in order: for a topic, the first entry that matches applies.
    pub fn new(list: Vec<TopicPolicy>) -> Policies {
        let mut index = PatternIndex::default();
        for (position, policy) in list.iter().enumerate() {
            index.insert(&policy.pattern, position as u32);
        }
        Policies {
            list: list.into(),
            index: Arc::new(index),
        }
    }

    /// The policy that applies to `topic`, if any.
    pub fn find(&self, topic: &str) -> Option<&TopicPolicy> {
        if self.list.is_empty() {
            return None;
        }
        let mut first: Option<u32> = None;
        self.index
            .for_each_match(topic, |at| first = Some(first.map_or(at, |f| f.min(at))));
        self.list.get(first? as usize)
    }

    /// The schema `topic`'s state must satisfy, if any.
    pub fn schema(&self, topic: &str) -> Option<&Schema> {
        self.find(topic)?.schema.as_ref()
    }

    /// How long `topic`'s changes stay queryable: its policy's `history`, or the default.
    pub fn history(&self, topic: &str) -> Duration {
        self.find(topic)
            .and_then(|p| p.history)
            .unwrap_or(crate::history::DEFAULT_KEEP)
    }

    /// Every policy, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &TopicPolicy> {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list.iter()).finish()
    }
}

/// A compiled JSON Schema, with the document it came from. Cheap to clone.
#[derive(Clone)]
pub struct Schema {
    /// Where it came from, for messages (a file's path, or `inline`).
    origin: Arc<str>,
    document: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

impl Schema {
    /// Compiles `document`; the error says why it is not a usable schema.
    pub fn compile(origin: &str, document: Value) -> Result<Schema, String> {
        let validator = jsonschema::validator_for(&document).map_err(|e| {
            let at = e.schema_path().as_str();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{e} (at {at})")
            }
        })?;
        Ok(Schema {
            origin: origin.into(),
            document: Arc::new(document),
            validator: Arc::new(validator),
        })
    }

    /// The schema as written.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Where it came from (a file's path, or `inline`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Refuses a `state` of `topic` that does not validate with `invalid_state`, listing
    /// each violation as `{"pointer", "message"}` in the error's details.
    pub fn check(&self, topic: &str, state: &Value) -> Result<(), HubError> {
        if self.validator.is_valid(state) {
            return Ok(());
        }
        let mut violations = Vec::new();
        let mut total = 0usize;
        for error in self.validator.iter_errors(state) {
            total += 1;
            if violations.len() < MAX_VIOLATIONS {
                violations.push(json!({
                    "pointer": error.instance_path().as_str(),
                    "message": error.to_string(),
                }));
            }
        }
        let first = violations
            .first()
            .map(|v| {
                format!(
                    "{}: {}",
                    pointer_text(&v["pointer"]),
                    v["message"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        let more = match total {
            0 | 1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Err(HubError::new(
            ErrorCode::InvalidState,
            format!(
                "the state of {topic} does not match its schema ({}): {first}{more}",
                self.origin
            ),
        )
        .with_details(Value::Array(violations)))
    }
}

/// A pointer as a message shows it: the root is `/`, not the empty string.
fn pointer_text(pointer: &Value) -> &str {
    match pointer.as_str() {
        Some("") | None => "/",
        Some(p) => p,
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Parses a duration as the config file writes it: `<number><unit>` with unit `ms`, `s`,
/// `m`, `h` or `d` (`"90s"`, `"7d"`), or `"0"`.
///
/// Written here rather than taken from a crate: the contract's form is narrower than what
/// general duration parsers take (`"1h 30m"`, `"2 weeks"`), and a config should mean the
/// same to every reader of the contract.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: write a whole number and a unit (ms, s, m, h or d), like \"90s\""
        )
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&at| at > 0)
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pattern: &str, stale_ms: u64) -> TopicPolicy {
        TopicPolicy {
            pattern: Pattern::new(pattern).unwrap(),
            schema: None,
            stale_after: Some(Duration::from_millis(stale_ms)),
            history: None,
        }
    }

    #[test]
    fn the_first_matching_policy_applies_whatever_the_trie_finds_first() {
        let policies = Policies::new(vec![
            policy("micboard/SHURE001", 1),
            policy("micboard/+", 2),
            policy("#", 3),
            policy("micboard/SHURE002", 4),
        ]);
        let stale = |t: &str| policies.find(t).and_then(|p| p.stale_after);
        assert_eq!(stale("micboard/SHURE001"), Some(Duration::from_millis(1)));
        // The later, more specific entry never applies: the earlier `micboard/+` does.
        assert_eq!(stale("micboard/SHURE002"), Some(Duration::from_millis(2)));
        assert_eq!(stale("railhub/esp32-01"), Some(Duration::from_millis(3)));
        assert!(Policies::default().find("a").is_none());
    }

    #[test]
    fn a_state_that_breaks_the_schema_is_refused_with_each_violation_and_its_pointer() {
        let schema = Schema::compile(
            "schemas/receiver.json",
            json!({"type": "object", "required": ["outputs"],
                   "properties": {"battery": {"type": "integer"}, "outputs": {"type": "array"}}}),
        )
        .unwrap();
        assert!(
            schema
                .check("mic/1", &json!({"battery": 85, "outputs": []}))
                .is_ok()
        );
        let error = schema
            .check("mic/1", &json!({"battery": "85%"}))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidState);
        let details = error.details.as_ref().unwrap().as_array().unwrap();
        let pointers: Vec<&str> = details
            .iter()
            .map(|v| v["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(pointers.len(), 2, "{details:?}");
        assert!(
            pointers.contains(&"/battery") && pointers.contains(&""),
            "{pointers:?}"
        );
        assert!(
            error.message.contains("schemas/receiver.json"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_schema_that_does_not_compile_says_why() {
        let error = Schema::compile("inline", json!({"type": "no-such-type"})).unwrap_err();
        assert!(error.contains("no-such-type"), "{error}");
    }

    #[test]
    fn durations_take_exactly_the_contracts_form() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "90",
            "1.5s",
            "-1s",
            "1h30m",
            "90 s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was taken");
        }
    }
}
