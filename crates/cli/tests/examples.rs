//! The example configurations in `examples/` keep working: each starts the real binary,
//! whose `/api/health` must list exactly the example's sources, and the commands its
//! README shows must find their route and render its templates. The devices need not
//! run: in a copy of each file, every `127.0.0.1:PORT` points at a closed port, so the test
//! never polls or commands anything that happens to listen on this machine.

mod common;

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
        &[("mopidy", "websocket"), ("pulse", "exec")],
    ),
    ("mqtt-sensors", &[("home-mqtt", "mqtt")]),
    ("homeassistant", &[("home", "homeassistant")]),
    // The board writes its state itself (board.py): no sources.
    ("led-board", &[]),
];

/// Every `127.0.0.1:PORT` of `text` with `port` instead.
fn redirect_ports(text: &str, port: u16) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        let (before, after) = rest.split_at(at + HOST.len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push_str(&port.to_string());
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
    let root = repo_root();
    let path = root.join("examples").join(name).join("statecast.toml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text = redirect_ports(&text, free_port())
        .replace(" examples/", &format!(" {}/examples/", root.display()));
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("statecast.toml");
    std::fs::write(&copy, text).expect("write the copy");
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
            9
        ),
        "a = \"http://127.0.0.1:9/x\"\nb = \"127.0.0.1:9\" 127.0.0.1:"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_controller() {
    let (server, _dir) = start_example("output-controller");
    assert_sources(&server, "output-controller").await;
    assert_routed(
        &server,
        "railhub/esp32-01",
        json!({"name": "switch", "args": {"output": 2, "on": true}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microphones() {
    let (server, _dir) = start_example("microphones");
    assert_sources(&server, "microphones").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_server() {
    let (server, _dir) = start_example("audio-server");
    assert_sources(&server, "audio-server").await;
    assert_routed(
        &server,
        "audio/player",
        json!({"name": "mixer.set_volume", "args": {"volume": 30}}),
    )
    .await;
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
