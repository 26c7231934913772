//! The `homeassistant` source end to end: the real binary with its TOML file, against a
//! real Home Assistant (2024.1.6, installed by `tests/homeassistant/setup.sh`; see
//! crates/testkit/src/homeassistant.rs). Entities reach a WebSocket client, a REST
//! command toggles one and the change comes back, Home Assistant's refusal is a 502, and
//! the source is in `/api/health`.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};

/// Reads messages into `states` (snapshots and patches applied) until `done` holds.
async fn until(
    ws: &mut Ws,
    states: &mut HashMap<String, Value>,
    done: impl Fn(&HashMap<String, Value>) -> bool,
) {
    while !done(states) {
        let m = ws.recv_json().await;
        let topic = m["topic"].as_str().unwrap_or_default().to_string();
        match m["type"].as_str() {
            Some("snapshot") => {
                states.insert(topic, m["state"].clone());
            }
            Some("patch") => merge_apply(states.entry(topic).or_default(), &m["patch"]),
            Some("removed") => {
                states.remove(&topic);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_assistant_mirror_through_the_binary() {
    let ha =
        HomeAssistant::start("input_boolean:\n  kitchen:\n    name: Kitchen\n    initial: false\n")
            .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nname = \"home\"\ntype = \"homeassistant\"\nurl = \"{}\"\n\
             token = \"{}\"\nentities = [\"input_boolean.*\"]\n",
            ha.url(),
            ha.token()
        ),
    )
    .expect("write the config");
    let server = Server::start(&["--config", config.to_str().expect("a UTF-8 path")]);

    let mut ws = server.ws().await;
    ws.send_json(&json!({"type": "subscribe", "id": 1, "patterns": ["_sources/home", "ha/#"]}))
        .await;
    let mut states = HashMap::new();
    until(&mut ws, &mut states, |s| {
        s.get("_sources/home")
            .is_some_and(|h| h["status"] == "online")
    })
    .await;
    let kitchen = states.get("ha/input_boolean.kitchen").cloned();
    let kitchen = kitchen.unwrap_or_else(|| panic!("the kitchen is not mirrored: {states:?}"));
    assert_eq!(kitchen["state"], "off");
    assert_eq!(kitchen["attributes"]["friendly_name"], "Kitchen");

    // A command over REST is a service call; its change is pushed to the socket.
    let resp = server
        .post(
            "/api/commands/ha/input_boolean.kitchen",
            &json!({"name": "input_boolean.toggle", "args": {}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp.json()["context"]["id"].is_string(), "{}", resp.text);
    until(&mut ws, &mut states, |s| {
        s.get("ha/input_boolean.kitchen")
            .is_some_and(|k| k["state"] == "on")
    })
    .await;

    // Home Assistant's refusal: 502 upstream, with its own code and message.
    let resp = server
        .post(
            "/api/commands/ha/input_boolean.kitchen",
            &json!({"name": "input_boolean.explode"}),
        )
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text);
    assert_eq!(resp.error_code(), "upstream");
    assert_eq!(
        resp.json()["error"]["body"]["code"],
        "not_found",
        "{}",
        resp.text
    );

    let health = server.get("/api/health").await.json();
    assert_eq!(
        health["sources"]["home"]["type"], "homeassistant",
        "{health}"
    );
    assert_eq!(health["sources"]["home"]["status"], "online", "{health}");
}
