//! What the client subcommands say of staleness, run as a user runs them against the real
//! hub with a `stale_after` of 300 ms: `watch` prints a `stale` line (with the time of the
//! last write) when a topic goes silent and a `fresh` line when it is written again, and
//! `get` says on stderr that a topic is stale and when it last changed, its stdout staying
//! the hub's JSON.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{Server, Start, TIMEOUT};
use serde_json::{Value, json};

/// A hub whose `cli/+` topics turn stale after 300 ms without a write.
fn start_hub() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        "[[topics]]\nmatch = \"cli/+\"\nstale_after = \"300ms\"\n",
    )
    .expect("write the config");
    let server = Server::start(&["--config", config.to_str().expect("a UTF-8 path")]);
    (server, dir)
}

/// Reads a child's stdout lines on a thread, so each can be awaited with a bound.
fn lines_of(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("watch printed no line for {what} within {TIMEOUT:?}"))
}

/// The words of a `watch` line after its time: kind, topic, `rev`, n, and the rest.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().skip(1).collect()
}

/// `statecast get` against `server`: its stdout as JSON, and its stderr.
fn get(server: &Server, what: &str) -> (Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["get", what, "--url", &server.http()])
        .output()
        .expect("run statecast get");
    assert!(output.status.success(), "{output:?}");
    let json = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    (json, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_stale_and_fresh_lines_and_get_says_a_topic_is_stale() {
    let (server, _dir) = start_hub();
    let state = json!({"outputs": [true, false]});
    assert_eq!(server.put("/api/state/cli/esp32", &state).await.status, 200);
    let written = server.get("/api/state/cli/esp32").await.json();
    let time = written["time"].as_str().expect("a time").to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["watch", "cli/#", "--url", &server.http()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run statecast watch");
    let lines = lines_of(child.stdout.take().expect("stdout"));

    // The snapshot comes before the 300 ms are up, or says the topic is stale already.
    let first = next_line(&lines, "the snapshot");
    let stale = if first.ends_with("(stale)") {
        first.clone()
    } else {
        assert_eq!(
            words(&first)[..4],
            ["snapshot", "cli/esp32", "rev", "1"],
            "{first}"
        );
        next_line(&lines, "the topic turning stale")
    };
    if stale != first {
        assert_eq!(
            words(&stale),
            ["stale", "cli/esp32", "rev", "1", "since", &time],
            "{stale}"
        );
    }

    // `get` keeps stdout the hub's JSON and says on stderr since when nothing changed.
    let (answer, said) = get(&server, "cli/esp32");
    assert_eq!(
        (answer["stale"].clone(), answer["state"].clone()),
        (json!(true), state.clone())
    );
    assert_eq!(
        said.trim_end(),
        format!(
            "statecast: cli/esp32 is stale (not written within its stale_after, or its device \
             is gone); its state last changed at {time}"
        )
    );
    // A listing names each stale topic; a fresh one is not mentioned.
    assert_eq!(
        server.put("/api/state/cli/other/x", &json!(1)).await.status,
        200
    );
    let (listed, said) = get(&server, "cli/#");
    assert_eq!(
        listed["topics"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("cli/esp32 is stale"), "{said}");
    let other = next_line(&lines, "the other topic");
    assert_eq!(words(&other)[..2], ["snapshot", "cli/other/x"], "{other}");

    // The device repeats its state: fresh again, same rev; then a change prints its patch
    // after the `fresh` line of the write that freshened it.
    assert_eq!(server.put("/api/state/cli/esp32", &state).await.status, 200);
    let fresh = next_line(&lines, "the topic turning fresh");
    assert_eq!(words(&fresh), ["fresh", "cli/esp32", "rev", "1"], "{fresh}");
    let (answer, said) = get(&server, "cli/esp32");
    assert!(
        answer.get("stale").is_none() && said.is_empty(),
        "{answer} {said}"
    );
    let again = next_line(&lines, "the topic turning stale again");
    assert_eq!(words(&again)[..2], ["stale", "cli/esp32"], "{again}");
    assert_eq!(
        server
            .patch("/api/state/cli/esp32", &json!({"outputs": [true, true]}))
            .await
            .status,
        200
    );
    // (The hub's `stale:false` before a patch carries the rev of that patch.)
    let fresh = next_line(&lines, "fresh before the patch");
    assert_eq!(words(&fresh), ["fresh", "cli/esp32", "rev", "2"], "{fresh}");
    let patch = next_line(&lines, "the patch");
    assert_eq!(
        words(&patch)[..4],
        ["patch", "cli/esp32", "rev", "2"],
        "{patch}"
    );

    child.kill().expect("stop watch");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_in_json_mode_prints_the_hubs_stale_messages() {
    let (server, _dir) = start_hub();
    assert_eq!(
        server
            .put("/api/state/cli/mic", &json!({"battery": 80}))
            .await
            .status,
        200
    );
    let time = server.get("/api/state/cli/mic").await.json()["time"].clone();
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["watch", "cli/+", "--json", "--url", &server.http()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run statecast watch");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let json_line =
        |what| -> Value { serde_json::from_str(&next_line(&lines, what)).expect("a JSON line") };
    let first = json_line("the snapshot");
    assert_eq!(first["type"], "snapshot", "{first}");
    // The watch came up after the 300 ms: its snapshot says the topic is stale; an
    // unchanged write freshens it (and says when), and the topic goes stale from then.
    let since = if first["stale"] == true {
        assert_eq!(
            server
                .put("/api/state/cli/mic", &json!({"battery": 80}))
                .await
                .status,
            200
        );
        let fresh = json_line("the fresh message");
        assert_eq!(
            (fresh["type"].clone(), fresh["stale"].clone()),
            (json!("stale"), json!(false)),
            "{fresh}"
        );
        fresh["since"].clone()
    } else {
        time
    };
    let stale = json_line("the stale message");
    assert_eq!(
        (
            stale["type"].clone(),
            stale["topic"].clone(),
            stale["rev"].clone(),
            stale["stale"].clone(),
            stale["since"].clone()
        ),
        (
            json!("stale"),
            json!("cli/mic"),
            json!(1),
            json!(true),
            since
        ),
        "{stale}"
    );
    child.kill().expect("stop watch");
    let _ = child.wait();
}
