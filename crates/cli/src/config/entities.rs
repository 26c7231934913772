//! The config file's `[[entity]]` tables: entity descriptions the hub writes to
//! `_entities/<key>` at start (`origin = "config"` added), and the topics they own, which
//! only the hub may write. A description the file no longer has is deleted at the next
//! start, if the hub wrote it (its `origin` says so); one a client wrote is left alone.
//!
//! Each table is checked at start, with the same rules as a client's write
//! (`statecast_core::entity`): a bad one stops the hub, naming the table and the mistake.

use serde_json::Value;
use statecast_core::entity::{self, ORIGIN_CONFIG, PREFIX};
use statecast_core::{Hub, Pattern, Topic};

/// One `[[entity]]` table, checked: its topic and its description.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityEntry {
    pub topic: Topic,
    pub description: Value,
}

/// Checks the `[[entity]]` tables as written.
pub fn compile(tables: &[toml::Table]) -> Result<Vec<EntityEntry>, String> {
    let mut out: Vec<EntityEntry> = Vec::with_capacity(tables.len());
    for (at, table) in tables.iter().enumerate() {
        let mut description =
            serde_json::to_value(table).map_err(|e| format!("[[entity]] #{}: {e}", at + 1))?;
        let key = match description.as_object_mut().and_then(|d| d.remove("key")) {
            Some(Value::String(key)) => key,
            Some(other) => {
                return Err(format!(
                    "[[entity]] #{}: key: {other} is not a string",
                    at + 1
                ));
            }
            None => {
                return Err(format!(
                    "[[entity]] #{}: key: missing (the entity's key: its topic is {PREFIX}<key>)",
                    at + 1
                ));
            }
        };
        let name = format!("[[entity]] #{} (key = {key:?})", at + 1);
        let topic = Topic::new(&format!("{PREFIX}{key}")).map_err(|e| format!("{name}: {e}"))?;
        if let Some(object) = description.as_object_mut() {
            if object.contains_key("origin") {
                return Err(format!("{name}: origin: the hub writes it, leave it out"));
            }
            object.insert("origin".into(), Value::from(ORIGIN_CONFIG));
        }
        entity::check(topic.as_str(), &description).map_err(|e| {
            let details = e
                .details
                .as_ref()
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .map(|v| {
                            format!(
                                "{}: {}",
                                v["pointer"].as_str().unwrap_or(""),
                                v["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or(e.message);
            format!("{name}: {details}")
        })?;
        if out.iter().any(|e| e.topic == topic) {
            return Err(format!("{name}: a second [[entity]] with this key"));
        }
        out.push(EntityEntry { topic, description });
    }
    Ok(out)
}

/// The topics the tables own (only the hub writes them).
pub fn reserved(entries: &[EntityEntry]) -> Vec<Pattern> {
    entries
        .iter()
        .filter_map(|e| Pattern::new(e.topic.as_str()).ok())
        .collect()
}

/// Writes every table's description and deletes those the hub wrote from a table that is
/// gone. Returns how many it wrote and deleted.
pub async fn apply(hub: &Hub, entries: &[EntityEntry]) -> Result<(usize, usize), String> {
    let all =
        Pattern::new(&format!("{PREFIX}+")).map_err(|e| format!("{PREFIX}+ is a pattern: {e}"))?;
    let mut deleted = 0;
    for old in hub.get_matching(&all) {
        let from_config = serde_json::from_slice::<Value>(&old.state)
            .ok()
            .is_some_and(|d| d.get("origin").and_then(Value::as_str) == Some(ORIGIN_CONFIG));
        if from_config && !entries.iter().any(|e| e.topic == old.topic) {
            hub.delete(&old.topic)
                .await
                .map_err(|e| format!("cannot delete {}: {}", old.topic.as_str(), e.message))?;
            deleted += 1;
        }
    }
    for entry in entries {
        hub.set(&entry.topic, entry.description.clone())
            .await
            .map_err(|e| format!("cannot write {}: {}", entry.topic.as_str(), e.message))?;
    }
    Ok((entries.len(), deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Vec<toml::Table> {
        let file: toml::Table = toml::from_str(text).unwrap();
        file["entity"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_table().unwrap().clone())
            .collect()
    }

    #[test]
    fn a_table_becomes_its_description_with_the_hubs_origin() {
        let entries = compile(&tables(
            "[[entity]]\nkey = \"mic_1_battery\"\nplatform = \"sensor\"\ntopic = \"micboard/SHURE001\"\nvalue = \"/battery\"\nunit = \"%\"\n",
        ))
        .unwrap();
        assert_eq!(entries[0].topic.as_str(), "_entities/mic_1_battery");
        assert_eq!(
            entries[0].description,
            serde_json::json!({"platform":"sensor","topic":"micboard/SHURE001","value":"/battery",
                               "unit":"%","origin":"config"})
        );
    }

    #[test]
    fn a_bad_table_names_itself_and_each_mistake() {
        let err = compile(&tables(
            "[[entity]]\nkey = \"x\"\nplatform = \"sensor\"\ntopic = \"t\"\nunits = \"%\"\n",
        ))
        .unwrap_err();
        assert!(err.starts_with("[[entity]] #1 (key = \"x\"): "), "{err}");
        assert!(err.contains("/value: missing"), "{err}");
        assert!(err.contains("/units: a sensor has no field"), "{err}");
        for (text, says) in [
            ("[[entity]]\nplatform = \"button\"\n", "key: missing"),
            ("[[entity]]\nkey = \"A\"\n", "an entity's key"),
            (
                "[[entity]]\nkey = \"b\"\norigin = \"config\"\nplatform = \"button\"\ntopic = \"t\"\ncommand = {target = \"t\", name = \"go\"}\n",
                "origin: the hub writes it",
            ),
            (
                "[[entity]]\nkey = \"b\"\nplatform = \"button\"\ntopic = \"t\"\ncommand = {target = \"t\", name = \"go\"}\n[[entity]]\nkey = \"b\"\nplatform = \"button\"\ntopic = \"t\"\ncommand = {target = \"t\", name = \"go\"}\n",
                "a second [[entity]]",
            ),
        ] {
            let err = compile(&tables(text)).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
