//! The config file's `[[topics]]` tables, turned into the hub's [`Policies`]: each entry's
//! schema read (from a file relative to the config file, or inline) and compiled, its
//! durations parsed. A schema that cannot be read or compiled stops the hub at start, the
//! message naming the entry, the file and why.

use std::path::Path;

use serde::Deserialize;
use statecast_core::Pattern;
use statecast_core::policy::{Policies, Schema, TopicPolicy, parse_duration};

/// One `[[topics]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsEntry {
    #[serde(rename = "match")]
    pattern: String,
    schema: Option<SchemaSource>,
    stale_after: Option<String>,
    history: Option<String>,
}

/// Where an entry's schema is: a file's path (relative to the config file) or the schema
/// itself as a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SchemaSource {
    File(String),
    Inline(toml::Table),
}

/// Compiles `entries` in order; `base` is the config file's directory.
pub fn compile(entries: &[TopicsEntry], base: &Path) -> Result<Policies, String> {
    let mut list = Vec::with_capacity(entries.len());
    for (at, entry) in entries.iter().enumerate() {
        let name = format!("[[topics]] #{} (match = {:?})", at + 1, entry.pattern);
        let policy = compile_entry(entry, base).map_err(|e| format!("{name}: {e}"))?;
        list.push(policy);
    }
    Ok(Policies::new(list))
}

fn compile_entry(entry: &TopicsEntry, base: &Path) -> Result<TopicPolicy, String> {
    let pattern = Pattern::new(&entry.pattern).map_err(|e| format!("match: {e}"))?;
    let duration = |key: &str, text: &Option<String>| {
        text.as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("{key}: {e}"))
    };
    let stale_after = duration("stale_after", &entry.stale_after)?;
    if stale_after.is_some_and(|d| d.is_zero()) {
        return Err("stale_after: must be longer than 0 (leave it out for never)".into());
    }
    let history = duration("history", &entry.history)?;
    let schema = match &entry.schema {
        None => None,
        Some(SchemaSource::Inline(table)) => {
            let document = serde_json::to_value(table).map_err(|e| format!("schema: {e}"))?;
            Some(Schema::compile("inline", document).map_err(|e| format!("schema: {e}"))?)
        }
        Some(SchemaSource::File(file)) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("schema {}: {e}", path.display()))?;
            let document: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("schema {}: not JSON: {e}", path.display()))?;
            Some(
                Schema::compile(file, document)
                    .map_err(|e| format!("schema {}: {e}", path.display()))?,
            )
        }
    };
    Ok(TopicPolicy {
        pattern,
        schema,
        stale_after,
        history,
    })
}
