//! Topic policies end to end, through the real binary and its TOML file: a schema refuses
//! a write on every path (REST, WebSocket, a source, a cluster of hubs) with the list of
//! violations and changes nothing; a schema that cannot be used stops the hub at start;
//! `GET /api/schemas` serves the schemas.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use common::*;
use serde_json::{Value, json};

/// A device state schema like the examples': outputs required, a battery in percent.
const RECEIVER_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["outputs"],
  "properties": {
    "battery": {"type": "integer", "minimum": 0, "maximum": 100},
    "outputs": {"type": "array", "items": {"type": "boolean"}}
  }
}"#;

/// A config dir with `schemas/receiver.json` and a `statecast.toml` holding `toml`.
fn config_dir(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(dir.path().join("schemas/receiver.json"), RECEIVER_SCHEMA).unwrap();
    let path = dir.path().join("statecast.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

const POLICIES: &str = r##"
    [[topics]]
    match = "mic/+"
    schema = "schemas/receiver.json"

    [[topics]]
    match = "#"
    stale_after = "1h"
"##;

/// The violations' pointers of an error object, sorted.
fn pointers(error: &Value) -> Vec<String> {
    let mut found: Vec<String> = error["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {error}"))
        .iter()
        .map(|v| v["pointer"].as_str().unwrap_or("?").to_owned())
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_and_websocket_write_that_breaks_the_schema_is_refused_and_changes_nothing() {
    let (_dir, config) = config_dir(POLICIES);
    let server = Server::start(&["--config", &config]);
    let good = json!({"battery": 80, "outputs": [true, false]});
    assert_eq!(server.put("/api/state/mic/1", &good).await.status, 200);
    let mut ws = server.ws().await;
    ws.request(json!({"type": "subscribe", "id": 0, "patterns": ["mic/#"]}))
        .await;

    // A whole state with two violations: both listed, with their pointers.
    let put = server
        .put(
            "/api/state/mic/1",
            &json!({"battery": "85%", "outputs": [1]}),
        )
        .await;
    assert_eq!(put.status, 422, "{}", put.text);
    let error = &put.json()["error"];
    assert_eq!(error["code"], "invalid_state", "{error}");
    assert_eq!(pointers(error), ["/battery", "/outputs/0"]);
    assert!(
        error["message"].as_str().unwrap().contains("receiver.json"),
        "{error}"
    );

    // A patch is checked by the state it would leave: removing `outputs` breaks `required`.
    let patch = server
        .patch("/api/state/mic/1", &json!({"outputs": null}))
        .await;
    assert_eq!(patch.status, 422, "{}", patch.text);
    assert_eq!(pointers(&patch.json()["error"]), [""]);
    // A patch that creates a topic is checked too ({} lacks `outputs`).
    let create = server
        .patch("/api/state/mic/2", &json!({"battery": 5}))
        .await;
    assert_eq!(create.status, 422, "{}", create.text);

    // The same over WebSocket: `result` ok:false with the violations.
    for request in [
        json!({"type": "set", "id": 1, "topic": "mic/1", "state": {"outputs": "on"}}),
        json!({"type": "patch", "id": 2, "topic": "mic/1", "patch": {"battery": 101}}),
    ] {
        let result = ws.call(request.clone()).await;
        assert_eq!(result["ok"], false, "{request} -> {result}");
        assert_eq!(result["error"]["code"], "invalid_state", "{result}");
        assert_eq!(pointers(&result["error"]).len(), 1, "{result}");
    }

    // Nothing changed: rev 1 and the first state; mic/2 was never created.
    let get = server.get("/api/state/mic/1").await.json();
    assert_eq!((get["rev"].clone(), get["state"].clone()), (json!(1), good));
    assert_eq!(server.get("/api/state/mic/2").await.status, 404);
    // And nothing was published: the next message the subscriber gets is the next good
    // change, as rev 2.
    let next = json!({"battery": 79, "outputs": [true, false]});
    assert_eq!(server.put("/api/state/mic/1", &next).await.status, 200);
    let pushed = ws.recv_json().await;
    assert_eq!(
        (pushed["type"].clone(), pushed["rev"].clone()),
        (json!("patch"), json!(2)),
        "{pushed}"
    );
    // Topics of another policy take any state.
    let free = server
        .put("/api/state/free/x", &json!({"battery": "85%"}))
        .await;
    assert_eq!(free.status, 200, "{}", free.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schemas_are_served_with_their_patterns() {
    let (_dir, config) = config_dir(
        r##"
        [[topics]]
        match = "mic/+"
        schema = "schemas/receiver.json"

        [[topics]]
        match = "railhub/#"
        schema = { type = "object", required = ["outputs"] }

        [[topics]]
        match = "#"
        stale_after = "90s"
        "##,
    );
    let server = Server::start(&["--config", &config]);
    let served = server.get("/api/schemas").await;
    assert_eq!(served.status, 200, "{}", served.text);
    let receiver: Value = serde_json::from_str(RECEIVER_SCHEMA).unwrap();
    assert_eq!(
        served.json(),
        json!({"schemas": [
            {"match": "mic/+", "schema": receiver},
            {"match": "railhub/#", "schema": {"type": "object", "required": ["outputs"]}},
        ]})
    );
    // The inline schema applies as the file's does.
    let refused = server
        .put("/api/state/railhub/esp32-01", &json!({"uptime": 1}))
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
}

/// Runs `statecast serve --config <config>` to its end and returns (exit success, stderr).
fn serve_to_exit(config: &str) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--config", config])
        .env_remove("STATECAST_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_schema_that_cannot_be_used_stops_the_hub_with_a_message_naming_it() {
    let cases = [
        // Not a schema: an unknown type.
        (r#"{"type": "percent"}"#, "percent"),
        // Not JSON at all.
        ("{outputs: []", "not JSON"),
    ];
    for (schema, why) in cases {
        let (dir, config) = config_dir(
            r#"
            [[topics]]
            match = "mic/+"
            schema = "schemas/broken.json"
            "#,
        );
        std::fs::write(dir.path().join("schemas/broken.json"), schema).unwrap();
        let (ok, stderr) = serve_to_exit(&config);
        assert!(!ok, "the hub started with {schema}: {stderr}");
        assert!(
            stderr.contains("schemas/broken.json") && stderr.contains(why),
            "{schema}: {stderr}"
        );
        assert!(
            stderr.contains(r#"[[topics]] #1 (match = "mic/+")"#),
            "{stderr}"
        );
    }
    // A missing file and a bad duration are named the same way.
    let (_dir, config) = config_dir(
        r#"
        [[topics]]
        match = "mic/+"
        schema = "schemas/missing.json"
        "#,
    );
    let (ok, stderr) = serve_to_exit(&config);
    assert!(!ok && stderr.contains("schemas/missing.json"), "{stderr}");
    let (_dir, config) = config_dir(
        r#"
        [[topics]]
        match = "mic/+"
        stale_after = "90 seconds"
        "#,
    );
    let (ok, stderr) = serve_to_exit(&config);
    assert!(
        !ok && stderr.contains("stale_after") && stderr.contains("90 seconds"),
        "{stderr}"
    );
}

/// A device whose answer the test sets.
async fn start_device(state: Value) -> (Arc<Mutex<Value>>, String) {
    let shared = Arc::new(Mutex::new(state));
    let app = axum::Router::new()
        .route(
            "/status",
            get(
                |State(s): State<Arc<Mutex<Value>>>| async move { Json(s.lock().unwrap().clone()) },
            ),
        )
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (shared, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_device_sends_a_bad_state_reports_it_and_keeps_the_last_good_one() {
    let good = json!({"battery": 80, "outputs": [true]});
    let (device, addr) = start_device(good.clone()).await;
    let (_dir, config) = config_dir(&format!(
        r#"
        [[topics]]
        match = "mic/+"
        schema = "schemas/receiver.json"

        [[source]]
        name = "receiver"
        type = "http_poll"
        url = "http://{addr}/status"
        topic = "mic/1"
        min_interval_ms = 20
        idle_interval_ms = 20
        max_interval_ms = 20
        "#
    ));
    let server = Server::start(&["--config", &config]);
    let mut ws = server.ws().await;
    let got = ws
        .request(json!({"type": "subscribe", "id": 0, "patterns": ["mic/1", "_sources/receiver"]}))
        .await;
    let is_good = |m: &Value| m["topic"] == "mic/1" && m["state"] == good;
    if !got.iter().any(is_good) {
        ws.recv_until(is_good).await;
    }
    *device.lock().unwrap() = json!({"battery": "80%", "outputs": [true]});
    // Its health says why, and the source stays online: the device answers.
    let reported = ws
        .recv_until(|m| {
            m["topic"] == "_sources/receiver"
                && (m["state"]["last_error"].is_string() || m["patch"]["last_error"].is_string())
        })
        .await;
    let health = server.get("/api/state/_sources/receiver").await.json();
    let error = health["state"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("invalid_state") && error.contains("/battery"),
        "{health}"
    );
    assert_eq!(health["state"]["status"], "online", "{health}");
    // The topic kept its last valid state, and no change of it was published meanwhile.
    let kept = server.get("/api/state/mic/1").await.json();
    assert_eq!(
        (kept["rev"].clone(), kept["state"].clone()),
        (json!(1), good)
    );
    assert!(
        reported.iter().all(|m| m["topic"] != "mic/1"),
        "{reported:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_hubs_refuses_a_bad_state_on_every_hub() {
    let prefix = RedisPrefix::new("test-schema");
    let (_dir, config) = config_dir(POLICIES);
    let node = |id: &str| {
        Server::start(&[
            "--config",
            &config,
            "--cluster",
            SHARED_REDIS,
            "--cluster-prefix",
            prefix.as_str(),
            "--node-id",
            id,
        ])
    };
    let (a, b) = (node("a"), node("b"));
    let good = json!({"battery": 80, "outputs": [true]});
    assert_eq!(a.put("/api/state/mic/1", &good).await.status, 200);
    // On the other hub a patch that would break the state it holds from the first one.
    let refused = b.patch("/api/state/mic/1", &json!({"outputs": "x"})).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(pointers(&refused.json()["error"]), ["/outputs"]);
    let refused = b
        .put("/api/state/mic/1", &json!({"battery": -1, "outputs": []}))
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    // A good write through b is rev 2 on both: nothing was taken in between.
    assert_eq!(
        b.patch("/api/state/mic/1", &json!({"battery": 79}))
            .await
            .json()["rev"],
        2
    );
    for hub in [&a, &b] {
        let mut ws = hub.ws().await;
        let got = ws
            .request(json!({"type": "subscribe", "id": 1, "patterns": ["mic/1"]}))
            .await;
        assert_eq!(got[0]["rev"], 2, "{got:?}");
        assert_eq!(got[0]["state"], json!({"battery": 79, "outputs": [true]}));
    }
}
