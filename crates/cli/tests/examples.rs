//! The example configurations in `examples/` keep working: each starts the real binary,
//! whose `/api/health` must list exactly the example's sources, and the commands its
//! README shows must find their route and render its templates. The devices need not
//! run: in a copy of each file, every `127.0.0.1:PORT` points at a closed port, so the test
//! never polls or commands anything that happens to listen on this machine. The examples
//! with a device schema and a `stale_after` have it applied: a bad state refused, a silent
//! topic stale (with `stale_after` shortened in the copy), and their simulated devices run
//! on ports of the test's own and stopped, their topics turning stale.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Every example: its folder, and its sources as `(name, type)`.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("output-controller", &[("esp32-01", "http_poll")]),
    (
        "microphones",
        &[("stage-rx", "http_poll"), ("lectern-rx", "http_poll")],
    ),
    (
        "audio-server",
        &[
            ("mopidy1", "websocket"),
            ("mopidy2", "websocket"),
            ("mopidy3", "websocket"),
            ("mopidy4", "websocket"),
            ("pulse", "exec"),
        ],
    ),
    ("mqtt-sensors", &[("home-mqtt", "mqtt")]),
    ("homeassistant", &[("home", "homeassistant")]),
    // The board writes its state itself (board.py): no sources.
    ("led-board", &[]),
];

/// Every `127.0.0.1:PORT` of `text` with `port(PORT)` instead.
fn redirect_ports(text: &str, port: impl Fn(u16) -> u16) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        let (before, after) = rest.split_at(at + HOST.len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if let Ok(original) = after[..digits].parse() {
            out.push_str(&port(original).to_string());
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Starts statecast on a copy of `examples/<name>/statecast.toml` in a temp dir, with the
/// device ports closed and the paths under `examples/` absolute (the binary runs in the
/// test's directory, not the repository root). `--listen` and `--data-dir` win over the
/// file's.
fn start_example(name: &str) -> (Server, tempfile::TempDir) {
    let closed = free_port();
    start_example_with(name, |_| closed, &[])
}

/// [`start_example`] with each `127.0.0.1:PORT` of the file at `port(PORT)` and each
/// `(from, to)` of `edits` made (each must be in the file). The example's JSON files (its
/// schemas, named relative to the config file) are copied next to the copy.
fn start_example_with(
    name: &str,
    port: impl Fn(u16) -> u16,
    edits: &[(&str, &str)],
) -> (Server, tempfile::TempDir) {
    let root = repo_root();
    let folder = root.join("examples").join(name);
    let path = folder.join("statecast.toml");
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (from, to) in edits {
        assert!(text.contains(from), "examples/{name}: no {from:?} to edit");
        text = text.replace(from, to);
    }
    let text = redirect_ports(&text, port)
        .replace(" examples/", &format!(" {}/examples/", root.display()));
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("statecast.toml");
    std::fs::write(&copy, text).expect("write the copy");
    for entry in std::fs::read_dir(&folder)
        .expect("the example's folder")
        .flatten()
    {
        let file = entry.path();
        if file.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&file, dir.path().join(entry.file_name())).expect("copy a schema");
        }
    }
    let server = Server::start(&["--config", copy.to_str().expect("a UTF-8 path")]);
    (server, dir)
}

/// Asserts that `/api/health` lists exactly the example's sources, with their types.
async fn assert_sources(server: &Server, name: &str) -> Value {
    let expected = EXAMPLES
        .iter()
        .find(|(example, _)| *example == name)
        .unwrap_or_else(|| panic!("{name} is not in EXAMPLES"))
        .1;
    let health = server.get("/api/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let health = health.json();
    let sources = health["sources"].as_object().expect("a sources object");
    let mut listed: Vec<(&str, &str)> = sources
        .iter()
        .map(|(name, s)| (name.as_str(), s["type"].as_str().unwrap_or("?")))
        .collect();
    listed.sort();
    let mut wanted = expected.to_vec();
    wanted.sort();
    assert_eq!(listed, wanted, "sources of examples/{name}: {health}");
    health
}

/// Sends a command; the route must take it and render its templates, so the only
/// acceptable failure is the closed device port (`upstream`).
async fn assert_routed(server: &Server, target: &str, command: Value) {
    let resp = server
        .post(&format!("/api/commands/{target}"), &command)
        .await;
    assert_eq!(resp.status, 502, "{target} {command}: {}", resp.text);
    assert_eq!(resp.error_code(), "upstream", "{}", resp.text);
    assert!(
        resp.text.contains("device unreachable"),
        "{target}: {}",
        resp.text
    );
}

#[test]
fn every_example_folder_is_tested() {
    let mut folders: Vec<String> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples/")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry
                .path()
                .join("statecast.toml")
                .is_file()
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect();
    folders.sort();
    let mut tested: Vec<&str> = EXAMPLES.iter().map(|(name, _)| *name).collect();
    tested.sort();
    assert_eq!(folders, tested);
}

#[test]
fn redirect_ports_replaces_every_local_port() {
    assert_eq!(
        redirect_ports(
            "a = \"http://127.0.0.1:8081/x\"\nb = \"127.0.0.1:1883\" 127.0.0.1:",
            |port| port + 1
        ),
        "a = \"http://127.0.0.1:8082/x\"\nb = \"127.0.0.1:1884\" 127.0.0.1:"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_controller() {
    let closed = free_port();
    let (server, _dir) = start_example_with(
        "output-controller",
        |_| closed,
        &[(r#"stale_after = "30s""#, r#"stale_after = "300ms""#)],
    );
    assert_sources(&server, "output-controller").await;
    assert_routed(
        &server,
        "railhub/esp32-01",
        json!({"name": "switch", "args": {"output": 2, "on": true}}),
    )
    .await;
    // The README's bad state, refused by the schema; a good one (written by hand, no
    // source writes esp32-02) turns stale once silent.
    let bad = json!({"device": "esp32-02", "outputs": [true, "on"], "uptime_s": -5});
    let good = json!({"device": "esp32-02", "outputs": vec![false; 8], "uptime_s": 1});
    assert_schema_and_stale_after(&server, "railhub/esp32-02", &bad, &good, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microphones() {
    let closed = free_port();
    let (server, _dir) = start_example_with(
        "microphones",
        |_| closed,
        &[(r#"stale_after = "45s""#, r#"stale_after = "300ms""#)],
    );
    assert_sources(&server, "microphones").await;
    let bad = json!({"id": "SHURE009", "channel": 0, "tx": {"status": "standby"}});
    let good = json!({"id": "SHURE009", "channel": 1, "tx": {"status": "off"}});
    assert_schema_and_stale_after(&server, "micboard/SHURE009", &bad, &good, 2).await;
}

/// `bad` is refused with `invalid_state` (`violations` of them) and changes nothing;
/// `good` is taken, and the topic, written by nobody since, turns stale.
async fn assert_schema_and_stale_after(
    server: &Server,
    topic: &str,
    bad: &Value,
    good: &Value,
    violations: usize,
) {
    let mut ws = server.ws().await;
    ws.request(json!({"type": "subscribe", "id": 1, "patterns": [topic]}))
        .await;
    let refused = server.put(&format!("/api/state/{topic}"), bad).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.error_code(), "invalid_state", "{}", refused.text);
    let details = refused.json()["error"]["details"].clone();
    assert_eq!(
        details.as_array().map(Vec::len),
        Some(violations),
        "{details}"
    );
    assert_eq!(server.get(&format!("/api/state/{topic}")).await.status, 404);
    let taken = server.put(&format!("/api/state/{topic}"), good).await;
    assert_eq!(taken.status, 200, "{}", taken.text);
    ws.recv_until(|m| m["type"] == "stale" && m["topic"] == topic && m["stale"] == true)
        .await;
}

/// A simulated device of an example (`python3 examples/<name>/<script> --port PORT`),
/// answering on `port` once this returns; killed (by its PID) when dropped.
struct Device(Child);

impl Device {
    fn start(script: &str, port: u16) -> Device {
        let path = repo_root().join("examples").join(script);
        let child = Command::new("python3")
            .arg(&path)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
        let device = Device(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < TIMEOUT,
                "{script} does not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        device
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Subscribes to `topic`, waits for its state (polled from the running device), stops
/// `device` and waits for the topic to turn stale: its source marks it at once.
async fn assert_stale_once_stopped(server: &Server, device: Device, topic: &str) {
    let mut ws = server.ws().await;
    let got = ws
        .request(json!({"type": "subscribe", "id": 1, "patterns": [topic]}))
        .await;
    if !got.iter().any(|m| m["type"] == "snapshot") {
        ws.recv_until(|m| m["type"] == "snapshot").await;
    }
    drop(device);
    let seen = ws
        .recv_until(|m| m["type"] == "stale" && m["stale"] == true)
        .await;
    assert_eq!(seen.last().expect("a message")["topic"], topic, "{seen:?}");
    let state = server.get(&format!("/api/state/{topic}")).await.json();
    assert_eq!(
        state["stale"], true,
        "the last state stays, marked: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_controller_board_stopped_turns_its_topic_stale() {
    let port = free_port();
    let device = Device::start("output-controller/device.py", port);
    let (server, _dir) = start_example_with("output-controller", |_| port, &[]);
    assert_stale_once_stopped(&server, device, "railhub/esp32-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microphones_receivers_stopped_turn_their_mics_stale() {
    // receivers.py serves the stage receiver on PORT and the lectern one on PORT + 1.
    let port = loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            break port;
        }
    };
    let device = Device::start("microphones/receivers.py", port);
    let (server, _dir) = start_example_with(
        "microphones",
        |original| if original == 8083 { port + 1 } else { port },
        &[],
    );
    assert_stale_once_stopped(&server, device, "micboard/SHURE001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_server() {
    let (server, _dir) = start_example("audio-server");
    assert_sources(&server, "audio-server").await;
    for n in 1..=4 {
        assert_routed(
            &server,
            &format!("audio/player{n}"),
            json!({"name": "mixer.set_volume", "args": {"volume": 30}}),
        )
        .await;
    }
    // Its [[entity]] tables, written at start: the players and the stream sensors.
    for key in [
        "player1",
        "player2",
        "player3",
        "player4",
        "pulse_streams",
        "pulse_volume",
    ] {
        let resp = server.get(&format!("/api/state/_entities/{key}")).await;
        assert_eq!(resp.status, 200, "_entities/{key}: {}", resp.text);
    }
    // The exec source runs fake-pactl.sh, which needs nothing but sh: it comes online.
    let started = Instant::now();
    loop {
        let health = assert_sources(&server, "audio-server").await;
        if health["sources"]["pulse"]["status"] == "online" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the pulse source did not come online: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sensors() {
    // The broker is redirected to a closed port too: the source is offline, and this test
    // does not depend on (or write to) a broker of this machine.
    let (server, _dir) = start_example("mqtt-sensors");
    let health = assert_sources(&server, "mqtt-sensors").await;
    assert_eq!(
        health["sources"]["home-mqtt"]["status"], "offline",
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeassistant() {
    // Home Assistant's port is closed: the source is offline, and a command to a mirrored
    // entity finds the source's route, which answers that it is not connected.
    let (server, _dir) = start_example("homeassistant");
    let health = assert_sources(&server, "homeassistant").await;
    assert_eq!(health["sources"]["home"]["status"], "offline", "{health}");
    let resp = server
        .post(
            "/api/commands/ha/input_boolean.porch_light",
            &json!({"name": "input_boolean.toggle"}),
        )
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text);
    assert_eq!(resp.error_code(), "upstream", "{}", resp.text);
    assert!(resp.text.contains("not connected"), "{}", resp.text);
    // `entities` leaves the power meters out: no route for them.
    let resp = server
        .post(
            "/api/commands/ha/sensor.fridge_power",
            &json!({"name": "homeassistant.update_entity"}),
        )
        .await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    assert_eq!(resp.error_code(), "no_route", "{}", resp.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn led_board() {
    let (server, _dir) = start_example("led-board");
    assert_sources(&server, "led-board").await;
    // What the front end's set_app becomes, through [[socketio.on]] and the route.
    assert_routed(
        &server,
        "ledboard/main",
        json!({"name": "set_app", "args": {"app": "weather"}}),
    )
    .await;
}

#[test]
fn the_examples_readme_counts_its_setups_and_uses_the_readmes_build() {
    let text = std::fs::read_to_string(repo_root().join("examples/README.md")).expect("read");
    let rows = text.lines().filter(|line| line.starts_with("| [")).count();
    assert_eq!(rows, EXAMPLES.len(), "one row per example");
    let count = [
        "no", "one", "two", "three", "four", "five", "six", "seven", "eight",
    ][rows];
    let mut capitalised = count.to_string();
    capitalised[..1].make_ascii_uppercase();
    assert!(
        text.contains(&format!("{capitalised} complete setups")),
        "examples/README.md counts {count}"
    );
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("read");
    assert!(
        readme.contains(&format!("has {count} complete setups")),
        "README.md counts {count}"
    );
    // The README's build is a release build: the examples use it, not a second build.
    assert!(readme.contains("cargo run --release -p statecast"));
    assert!(
        text.contains("target/release") && !text.contains("target/debug"),
        "examples/README.md uses the release build"
    );
}
