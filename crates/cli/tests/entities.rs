//! Entities end to end, through the real binary: `[[entity]]` tables become `_entities/`
//! topics at start (and go again once the file no longer has them), only the hub writes
//! those, a client's description is checked on every write path, and a bad table stops the
//! hub naming it.

mod common;

use common::*;
use serde_json::{Value, json};

const TABLES: &str = r#"
[[entity]]
key = "mic_1_battery"
platform = "sensor"
name = "Receiver 1 battery"
topic = "micboard/SHURE001"
value = "/battery"
unit = "%"
device_class = "battery"
state_class = "measurement"
device = { id = "SHURE001", name = "Receiver 1", manufacturer = "Shure" }

[[entity]]
key = "station_light"
platform = "switch"
topic = "railhub/esp32-01"
value = "/outputs/0"
command = { target = "railhub/esp32-01", name = "switch", args = { output = 0, on = "{value}" } }
"#;

fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statecast.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// The violations' pointers of an error answer, in order.
fn pointers(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {body}"))
        .iter()
        .map(|v| v["pointer"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The keys of every entity the hub holds, sorted.
async fn keys(server: &Server) -> Vec<String> {
    let listed = server.get("/api/state?match=_entities/%2B").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let mut keys: Vec<String> = listed.json()["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| {
            t["topic"]
                .as_str()?
                .strip_prefix("_entities/")
                .map(str::to_owned)
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_tables_are_written_at_start_owned_by_the_hub_and_removed_once_gone_from_the_file() {
    let (_dir, path) = config(TABLES);
    let mut server = Server::start(&["--config", &path]);
    let battery = server.get("/api/state/_entities/mic_1_battery").await;
    assert_eq!(battery.status, 200, "{}", battery.text);
    assert_eq!(
        battery.json()["state"],
        json!({"platform": "sensor", "name": "Receiver 1 battery", "topic": "micboard/SHURE001",
               "value": "/battery", "unit": "%", "device_class": "battery",
               "state_class": "measurement", "origin": "config",
               "device": {"id": "SHURE001", "name": "Receiver 1", "manufacturer": "Shure"}})
    );

    // Only the hub writes them: REST and WebSocket writes are refused, and change nothing.
    let put = server
        .put(
            "/api/state/_entities/mic_1_battery",
            &json!({"platform": "button", "topic": "x", "command": {"target": "x", "name": "go"}}),
        )
        .await;
    assert_eq!(put.status, 403, "{}", put.text);
    assert!(
        put.text.contains("only the hub itself writes it"),
        "{}",
        put.text
    );
    let delete = server.delete("/api/state/_entities/station_light").await;
    assert_eq!(delete.status, 403, "{}", delete.text);
    let mut ws = server.ws().await;
    let answer = ws
        .call(
            json!({"type": "patch", "id": 1, "topic": "_entities/station_light",
                        "patch": {"name": "mine"}}),
        )
        .await;
    assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
    assert_eq!(keys(&server).await, ["mic_1_battery", "station_light"]);

    // A description a client writes elsewhere under _entities/ is its own.
    let own = json!({"platform": "binary_sensor", "topic": "door/front", "value": "/open"});
    assert_eq!(
        server
            .put("/api/state/_entities/front_door", &own)
            .await
            .status,
        200
    );

    // The file loses a table: its entity goes at the next start; the client's stays.
    let kept = TABLES
        .split("[[entity]]\nkey = \"station_light\"")
        .next()
        .unwrap();
    std::fs::write(&path, kept).unwrap();
    server.restart();
    assert_eq!(keys(&server).await, ["front_door", "mic_1_battery"]);
    // No longer the hub's: a client may write it again.
    let put = server
        .put(
            "/api/state/_entities/station_light",
            &json!({"platform": "switch", "topic": "railhub/esp32-01", "value": "/outputs/0",
                    "command": {"target": "railhub/esp32-01", "name": "switch"}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_description_is_refused_whole_on_every_write_path_with_each_pointer() {
    let server = Server::start(&[]);
    let good = json!({"platform": "number", "topic": "railhub/esp32-01", "value": "/interval",
                      "min": 0, "max": 5000, "step": 50, "unit": "ms",
                      "command": {"target": "railhub/esp32-01", "name": "set_interval",
                                  "args": {"ms": "{value}"}}});
    assert_eq!(
        server.put("/api/state/_entities/blink", &good).await.status,
        200
    );

    let bad = json!({"platform": "number", "topic": "railhub/+", "value": "interval",
                     "min": 10, "max": 5, "units": "ms",
                     "command": {"target": "railhub/esp32-01"}});
    let put = server.put("/api/state/_entities/blink", &bad).await;
    assert_eq!(put.status, 422, "{}", put.text);
    let body = put.json();
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");
    assert_eq!(
        pointers(&body),
        ["/topic", "/value", "/command/name", "/units", "/max"]
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("_entities/blink is not a valid entity description")),
        "{body}"
    );

    // A patch whose result is bad: refused the same way, over the WebSocket too.
    let patch = server
        .patch("/api/state/_entities/blink", &json!({"platform": "fan"}))
        .await;
    assert_eq!(patch.status, 422, "{}", patch.text);
    assert_eq!(pointers(&patch.json()), ["/platform"]);
    let mut ws = server.ws().await;
    let answer = ws
        .call(json!({"type": "patch", "id": 1, "topic": "_entities/blink",
                        "patch": {"step": 0}}))
        .await;
    assert_eq!(answer["error"]["code"], "invalid_state", "{answer}");

    // A key that is not one: refused as a topic.
    let put = server.put("/api/state/_entities/Blink-2", &good).await;
    assert_eq!(put.status, 400, "{}", put.text);
    assert_eq!(put.error_code(), "invalid_topic");

    // Nothing of it was applied.
    let now = server.get("/api/state/_entities/blink").await.json();
    assert_eq!(now["state"], good);
    assert_eq!(now["rev"], 1);
}

#[test]
fn a_bad_table_stops_the_hub_naming_it_and_the_mistake() {
    let (_dir, path) = config(
        "[[entity]]\nkey = \"mic\"\nplatform = \"sensor\"\ntopic = \"micboard/SHURE001\"\nunits = \"%\"\n",
    );
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--config", &path])
        .env_remove("STATECAST_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[[entity]] #1 (key = \"mic\")"), "{stderr}");
    assert!(stderr.contains("/value: missing"), "{stderr}");
    assert!(stderr.contains("/units: a sensor has no field"), "{stderr}");
}
