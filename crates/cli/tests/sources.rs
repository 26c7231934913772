//! Sources and command routes end to end, through the real binary and its TOML file: a
//! device HTTP server in the test, polled by an `http_poll` source and commanded over REST
//! and WebSocket; an MQTT sensor on the real Mosquitto broker; health and metrics.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use common::*;
use serde_json::{Value, json};

/// An output controller: eight outputs, read with `GET /status`, switched with
/// `POST /cmd/{name}`; `POST /cmd/explode` is refused with 409.
#[derive(Default)]
struct Device {
    outputs: Mutex<[bool; 8]>,
    commands: Mutex<Vec<(String, Value)>>,
}

async fn status(State(device): State<Arc<Device>>) -> Json<Value> {
    let outputs = *device.outputs.lock().unwrap();
    Json(json!({"device": "esp32-01", "outputs": outputs}))
}

async fn command(
    State(device): State<Arc<Device>>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    device
        .commands
        .lock()
        .unwrap()
        .push((name.clone(), body.clone()));
    if name == "explode" {
        return (StatusCode::CONFLICT, Json(json!({"error": "busy"})));
    }
    let (Some(output), Some(on)) = (body["output"].as_u64(), body["on"].as_bool()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "output, on"})),
        );
    };
    device.outputs.lock().unwrap()[output as usize % 8] = on;
    (StatusCode::OK, Json(json!({"output": output, "on": on})))
}

/// Serves a fresh device on an ephemeral port; returns it and `127.0.0.1:PORT`.
async fn start_device() -> (Arc<Device>, String) {
    let device = Arc::new(Device::default());
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/cmd/{name}", post(command))
        .with_state(Arc::clone(&device));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (device, addr)
}

/// Writes `toml` to a file in `dir` and returns its path.
fn config_file(dir: &tempfile::TempDir, toml: &str) -> String {
    let path = dir.path().join("statecast.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_string_lossy().into_owned()
}

/// An `[[source]]` table: `http_poll` source `name` polling `url` into `topic`, with the
/// intervals (min, idle, max) in ms.
fn poll_source(name: &str, url: &str, topic: &str, intervals: (u64, u64, u64)) -> String {
    let (min, idle, max) = intervals;
    format!(
        r#"
        [[source]]
        name = "{name}"
        type = "http_poll"
        url = "{url}"
        topic = "{topic}"
        min_interval_ms = {min}
        idle_interval_ms = {idle}
        max_interval_ms = {max}
        "#
    )
}

/// A local address nothing listens on (bound once, then released).
fn closed_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_the_device_and_the_repoll_pushes_its_new_state() {
    let (device, addr) = start_device().await;
    let dir = tempfile::tempdir().unwrap();
    // Intervals of a minute: only the re-poll after the command can bring the new state
    // within the test's timeout.
    let config = config_file(
        &dir,
        &format!(
            r#"
            [[source]]
            name = "esp32"
            type = "http_poll"
            url = "http://{addr}/status"
            topic = "railhub/esp32-01"
            timeout_ms = 20000
            min_interval_ms = 60000
            idle_interval_ms = 60000
            max_interval_ms = 60000

            [[route]]
            target = "railhub/+"
            type = "http"
            url = "http://{addr}/cmd/{{name}}"
            body = {{ output = "{{args.output}}", on = "{{args.on}}", device = "{{2}}" }}
            repoll = true
            "#
        ),
    );
    let server = Server::start(&["--config", &config]);
    let mut ws = server.ws().await;
    ws.send_json(&json!({"type": "subscribe", "id": "s", "patterns": ["railhub/#"]}))
        .await;
    let seen = ws.recv_until(|m| m["type"] == "snapshot").await;
    let snapshot = seen.last().unwrap();
    assert_eq!(snapshot["topic"], "railhub/esp32-01");
    assert_eq!(snapshot["state"]["outputs"][2], false);

    let seen = ws
        .request(json!({
            "type": "command", "id": 7, "target": "railhub/esp32-01",
            "name": "switch", "args": {"output": 2, "on": true}
        }))
        .await;
    let result = seen.last().unwrap();
    assert_eq!(
        result,
        &json!({"type": "result", "id": 7, "ok": true,
                "result": {"status": 200, "body": {"output": 2, "on": true}}})
    );
    assert_eq!(
        device.commands.lock().unwrap()[0],
        (
            "switch".to_string(),
            json!({"output": 2, "on": true, "device": "esp32-01"})
        )
    );
    // The patch may have arrived before the result; wait for it if not.
    let patch = match seen.iter().find(|m| m["type"] == "patch") {
        Some(patch) => patch.clone(),
        None => ws.recv_until(|m| m["type"] == "patch").await.pop().unwrap(),
    };
    assert_eq!(patch["topic"], "railhub/esp32-01");
    assert_eq!(patch["patch"]["outputs"][2], true);

    // The device refuses: the caller sees its status and body.
    let refused = server
        .post(
            "/api/commands/railhub/esp32-01",
            &json!({"name": "explode", "args": {"output": 0, "on": false}}),
        )
        .await;
    assert_eq!(refused.status, 502, "{}", refused.text);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "upstream");
    assert_eq!(error["status"], 409);
    assert_eq!(error["body"], json!({"error": "busy"}));

    // A template that needs an argument the command lacks: a clear 400, no request sent.
    let sent = device.commands.lock().unwrap().len();
    let incomplete = server
        .post(
            "/api/commands/railhub/esp32-01",
            &json!({"name": "switch", "args": {"output": 1}}),
        )
        .await;
    assert_eq!(incomplete.status, 400, "{}", incomplete.text);
    assert!(incomplete.text.contains("args.on"), "{}", incomplete.text);
    assert_eq!(device.commands.lock().unwrap().len(), sent);

    let health = server.get("/api/health").await.json();
    let esp32 = &health["sources"]["esp32"];
    assert_eq!(esp32["status"], "online", "{health}");
    assert_eq!(esp32["type"], "http_poll");
    assert_eq!(esp32["error_count"], 0);
    assert_eq!(esp32["interval_ms"], 60000);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("statecast_source_up{source=\"esp32\"} 1"),
        "{metrics}"
    );
    let state = server.get("/api/state/_sources/esp32").await.json();
    assert_eq!(state["state"]["status"], "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_without_a_route_or_with_a_silent_device_fail_clearly() {
    // A device that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            r#"
            [[route]]
            target = "slow/#"
            type = "http"
            url = "http://{silent_addr}/cmd"
            timeout_ms = 300
            "#
        ),
    );
    let server = Server::start(&["--config", &config]);
    let timed_out = server
        .post("/api/commands/slow/dev", &json!({"name": "go"}))
        .await;
    assert_eq!(timed_out.status, 504, "{}", timed_out.text);
    assert_eq!(timed_out.error_code(), "timeout");

    let unrouted = server
        .post("/api/commands/other/dev", &json!({"name": "go"}))
        .await;
    assert_eq!(unrouted.status, 404);
    assert_eq!(unrouted.error_code(), "no_route");

    let mut ws = server.ws().await;
    let result = ws
        .call(json!({"type": "command", "id": 1, "target": "other/dev", "name": "go"}))
        .await;
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["code"], "no_route");
    drop(silent);
}

#[test]
fn a_bad_source_stops_the_start_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        r#"
        [[source]]
        name = "mics"
        type = "http_poll"
        url = "http://127.0.0.1:9/data"
        topic = "micboard/{item.id"
        each = true
        "#,
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--config", &config])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("source \"mics\"") && stderr.contains("unclosed"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sensors_reach_websocket_clients() {
    let prefix = format!("statecast-test-{:08x}", rand::random::<u32>());
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            r#"
            [[source]]
            name = "sensors"
            type = "mqtt"
            broker = "mqtt://127.0.0.1:1883"
            subscribe = ["{prefix}/+/state"]
            topic = "sensors/{{2}}"
            action = "set"
            "#
        ),
    );
    let server = Server::start(&["--config", &config]);
    let mut ws = server.ws().await;
    let online = |m: &Value| m["topic"] == "_sources/sensors" && has_status(m, "online");
    let seen = ws
        .request(
            json!({"type": "subscribe", "id": "s", "patterns": ["sensors/#", "_sources/sensors"]}),
        )
        .await;
    if !seen.iter().any(online) {
        ws.recv_until(online).await;
    }

    let mut options = rumqttc::MqttOptions::new(format!("{prefix}-pub"), "127.0.0.1", 1883);
    options.set_keep_alive(std::time::Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let polling = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    // Retained: the source gets it whether its subscription is in place yet or not.
    let sensor = format!("{prefix}/kitchen/state");
    client
        .publish(
            &sensor,
            rumqttc::QoS::AtLeastOnce,
            true,
            r#"{"temperature": 21.5}"#,
        )
        .await
        .unwrap();
    let seen = ws
        .recv_until(|m| m["topic"] == "sensors/kitchen" && m["type"] == "snapshot")
        .await;
    assert_eq!(seen.last().unwrap()["state"], json!({"temperature": 21.5}));
    // Clearing the retained message removes the topic.
    client
        .publish(&sensor, rumqttc::QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    ws.recv_until(|m| m["topic"] == "sensors/kitchen" && m["type"] == "removed")
        .await;
    polling.abort();
}

/// Whether a snapshot or patch of a health topic sets `status`.
fn has_status(message: &Value, status: &str) -> bool {
    message["state"]["status"] == status || message["patch"]["status"] == status
}

/// Only the hub writes its own topics: `_sources/<name>` says what the source itself
/// reported, whoever asks to write it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_write_the_hubs_own_topics_and_the_hub_still_does() {
    let url = format!("http://{}/status", closed_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, &poll_source("cam", &url, "cams/door", (20, 40, 80)));
    let server = Server::start(&["--config", &config]);
    // The hub's own write: the failed poll is published.
    let published = within("the source's health topic", async {
        loop {
            let resp = server.get("/api/state/_sources/cam").await;
            if resp.status == 200 {
                return resp.json();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(published["state"]["status"], "offline");

    let fake = json!({"type": "http_poll", "status": "online"});
    let refused_over_rest = [
        server.put("/api/state/_sources/cam", &fake).await,
        server.put("/api/state/_sources/fake", &fake).await,
        server.patch("/api/state/_sources/cam", &fake).await,
        server.delete("/api/state/_sources/cam").await,
        server.post("/api/events/_sources/cam", &fake).await,
    ];
    for refused in refused_over_rest {
        assert_eq!(refused.status, 403, "{}", refused.text);
        assert_eq!(refused.error_code(), "forbidden");
        assert!(refused.text.contains("the hub's own"), "{}", refused.text);
    }
    let mut ws = server.ws().await;
    for (i, message) in [
        json!({"type": "set", "topic": "_sources/fake", "state": fake}),
        json!({"type": "patch", "topic": "_sources/cam", "patch": fake}),
        json!({"type": "delete", "topic": "_sources/cam"}),
        json!({"type": "event", "topic": "_sources/cam", "data": fake}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut message = message;
        message["id"] = json!(i);
        let result = ws.call(message.clone()).await;
        assert_eq!(result["error"]["code"], "forbidden", "{message}: {result}");
    }
    // Other topics stay writable, `_sources` itself included (it is no source's).
    let ok = ws
        .call(json!({"type": "set", "id": 9, "topic": "cams/note", "state": 1}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(server.get("/api/state/_sources/fake").await.status, 404);
    let kept = server.get("/api/state/_sources/cam").await.json();
    assert_eq!(kept["state"]["status"], "offline", "{kept}");
}

/// A device on a fixed local port that can go away and come back: each request is answered
/// `Connection: close`, so no pooled connection outlives a stop.
struct Flaky {
    addr: std::net::SocketAddr,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Flaky {
    async fn start() -> Flaky {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut device = Flaky {
            addr,
            serving: None,
        };
        device.serve(listener);
        device
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.serving = Some(tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = tcp.read(&mut request).await;
                let body = r#"{"temp":20}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            }
        }));
    }

    async fn stop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            let _ = serving.await;
        }
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

/// Polls `/api/health` until `done` holds for it.
async fn health_until(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    within(what, async {
        loop {
            let health = server.get("/api/health").await.json();
            if done(&health) {
                return health;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Lines of the log that contain every one of `parts`.
fn log_lines(server: &Server, parts: &[&str]) -> usize {
    server
        .log_text()
        .lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_a_source_is_offline_and_each_transition_is_logged_once() {
    let mut device = Flaky::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/status", device.addr);
    let config = config_file(
        &dir,
        &poll_source("thermo", &url, "room/temp", (20, 40, 80)),
    );
    let server = Server::start(&["--config", &config]);
    let ok = health_until(&server, "the source online", |h| h["status"] == "ok").await;
    assert!(ok["reasons"].is_null(), "{ok}");
    server.wait_log("online").await;

    device.stop().await;
    let degraded = health_until(&server, "two failed polls", |h| {
        h["sources"]["thermo"]["error_count"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(
        degraded["reasons"],
        json!(["source \"thermo\" is offline"]),
        "{degraded}"
    );

    device.restart().await;
    health_until(&server, "the source back", |h| h["status"] == "ok").await;
    server.wait_log("back online after").await;
    assert_eq!(
        log_lines(&server, &["thermo", "offline: "]),
        1,
        "{}",
        server.log_text()
    );
    assert_eq!(log_lines(&server, &["thermo", "back online after"]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_log_names_the_config_the_dashboard_and_each_source_and_route() {
    let closed = closed_addr();
    let dir = tempfile::tempdir().unwrap();
    let source = poll_source(
        "cam",
        &format!("http://{closed}/status?apikey=key-secret"),
        "cams/door",
        (1000, 5000, 30000),
    );
    let config = config_file(
        &dir,
        &format!(
            r#"{source}
            [[route]]
            target = "cams/+"
            type = "http"
            url = "http://{closed}/cmd/{{name}}"
            "#
        ),
    );
    let server = Server::start(&["--config", &config]);
    let health = health_until(&server, "the source offline", |h| h["status"] == "degraded").await;
    assert_eq!(health["reasons"], json!(["source \"cam\" is offline"]));
    server.wait_log("route cams/+").await;
    let log = server.log_text();
    for line in [
        format!("config file: {config}"),
        format!("dashboard: http://{}/", server.addr()),
        format!("source \"cam\" (http_poll): http://{closed}/status?*** -> cams/door"),
        format!("route cams/+ -> http POST http://{closed}/cmd/{{name}}"),
    ] {
        assert!(log.contains(&line), "{line:?} is not in the log:\n{log}");
    }
    assert!(!log.contains("secret"), "{log}");
}

/// After SIGTERM the process exits on its own, within a generous bound, once it has had
/// clients and writes (a WebSocket and an SSE stream still open, a source asleep between
/// polls); "stopped" is the last thing it logs, said once the store is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_the_hub_stops_with_clients_open_and_stopped_is_its_last_word() {
    let (_device, addr) = start_device().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/status");
    let source = poll_source("esp32", &url, "railhub/esp32-01", (60000, 60000, 60000));
    let config = config_file(&dir, &source);
    let mut server = Server::start(&["--config", &config]);
    for i in 0..20 {
        let put = server
            .put(&format!("/api/state/w/{i}"), &json!({"i": i}))
            .await;
        assert_eq!(put.status, 200, "{}", put.text);
    }
    let mut ws = server.ws().await;
    ws.request(json!({"type": "subscribe", "id": 1, "patterns": ["#"]}))
        .await;
    let _sse = Sse::open(&server, &["#"], None).await;
    server.sigterm();
    let status = server.wait_exit().await;
    assert!(status.success(), "{status:?}");
    let log = server.log_text();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("statecast stopped"),
        "the last line: {last}\n{log}"
    );
    server.restart();
    assert_eq!(
        server.get("/api/state/w/19").await.json()["state"],
        json!({"i": 19})
    );
}
