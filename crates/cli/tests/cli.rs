//! The client subcommands (`get`, `set`, `patch`, `delete`, `event`, `command`, `watch`)
//! run as a user runs them, against the real hub.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use common::{Server, Start, TIMEOUT};
use serde_json::{Value, json};

fn statecast(server_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(args)
        .env("STATECAST_URL", server_url)
        .env_remove("STATECAST_LISTEN")
        .output()
        .expect("run statecast")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

fn stderr_of_failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "expected exit code 1");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_patch_get_delete_and_event_round_trip() {
    let server = Server::start(&[]);
    let url = server.http();
    let set = stdout_json(&statecast(
        &url,
        &["set", "cli/a", r#"{"x":1,"y":{"z":2}}"#],
    ));
    assert_eq!(set, json!({"topic": "cli/a", "rev": 1, "changed": true}));
    let patch = stdout_json(&statecast(&url, &["patch", "cli/a", r#"{"x":2}"#]));
    assert_eq!(patch, json!({"topic": "cli/a", "rev": 2, "changed": true}));
    let get = stdout_json(&statecast(&url, &["get", "cli/a"]));
    assert_eq!(
        get,
        json!({"topic": "cli/a", "rev": 2, "state": {"x": 2, "y": {"z": 2}}})
    );
    let listed = stdout_json(&statecast(&url, &["get", "cli/#"]));
    assert_eq!(listed["topics"][0]["topic"], "cli/a");
    let event = stdout_json(&statecast(
        &url,
        &["event", "cli/a", r#"{"button":"mute"}"#],
    ));
    assert_eq!(event, json!({"topic": "cli/a"}));
    let deleted = stdout_json(&statecast(&url, &["delete", "cli/a"]));
    assert_eq!(deleted, json!({"topic": "cli/a", "rev": 3}));
    assert_eq!(server.get("/api/state/cli/a").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_can_come_from_standard_input() {
    let server = Server::start(&[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["set", "cli/stdin", "-", "--url", &server.http()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run statecast");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(br#"{"from":"stdin"}"#)
            .expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait");
    assert_eq!(stdout_json(&output)["rev"], 1);
    let body = server.get("/api/state/cli/stdin").await.json();
    assert_eq!(body["state"], json!({"from": "stdin"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_readable_and_exit_with_1() {
    let server = Server::start(&[]);
    let url = server.http();

    let refused = stderr_of_failure(&statecast(&url, &["delete", "cli/missing"]));
    assert!(
        refused.contains("the hub refused: not_found (404)"),
        "{refused}"
    );

    let bad_topic = stderr_of_failure(&statecast(&url, &["set", "cli//x", "1"]));
    assert!(bad_topic.contains("invalid_topic"), "{bad_topic}");

    let bad_json = stderr_of_failure(&statecast(&url, &["set", "cli/x", "{nope"]));
    assert!(bad_json.contains("not valid JSON"), "{bad_json}");

    let no_route = stderr_of_failure(&statecast(&url, &["command", "dev/1", "reboot"]));
    assert!(no_route.contains("no_route"), "{no_route}");

    // A port where nothing listens.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    for args in [&["get", "cli/x"][..], &["watch", "cli/#"][..]] {
        let unreachable = stderr_of_failure(&statecast(&closed, args));
        assert!(
            unreachable.contains(&format!("cannot reach the hub at {closed}")),
            "{args:?}: {unreachable}"
        );
    }
    // Nothing was written by the refused commands.
    assert_eq!(server.get("/api/state/cli/x").await.status, 404);
}

/// Reads `watch`'s stdout lines on a thread, so each can be awaited with a bound.
fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_change_as_it_happens() {
    let server = Server::start(&[]);
    assert_eq!(
        server
            .put("/api/state/cli/w", &json!({"n": 1, "keep": true}))
            .await
            .status,
        200
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["watch", "cli/#", "--json", "--url", &server.http()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run statecast watch");
    let lines = lines_of(child.stdout.take().expect("stdout"));

    let snapshot: Value = serde_json::from_str(&next_line(&lines, "the snapshot")).expect("JSON");
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["rev"], 1);
    assert!(
        snapshot["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{snapshot}"
    );

    // Each change is printed once it happens, not before.
    assert_eq!(
        server
            .patch("/api/state/cli/w", &json!({"n": 2}))
            .await
            .status,
        200
    );
    let patch: Value = serde_json::from_str(&next_line(&lines, "the patch")).expect("JSON");
    assert_eq!(
        (
            patch["type"].clone(),
            patch["rev"].clone(),
            patch["patch"].clone()
        ),
        (json!("patch"), json!(2), json!({"n": 2}))
    );
    assert_eq!(
        server
            .post("/api/events/cli/w", &json!("ding"))
            .await
            .status,
        202
    );
    let event: Value = serde_json::from_str(&next_line(&lines, "the event")).expect("JSON");
    assert_eq!(
        (event["type"].clone(), event["data"].clone()),
        (json!("event"), json!("ding"))
    );
    assert_eq!(server.delete("/api/state/cli/w").await.status, 200);
    let removed: Value = serde_json::from_str(&next_line(&lines, "the removal")).expect("JSON");
    assert_eq!(
        (removed["type"].clone(), removed["rev"].clone()),
        (json!("removed"), json!(3))
    );

    child.kill().expect("stop watch");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_json_prints_a_readable_line_per_change() {
    let server = Server::start(&[]);
    assert_eq!(
        server
            .put("/api/state/cli/r", &json!({"battery": 80}))
            .await
            .status,
        200
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["watch", "cli/r", "--url", &server.http()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run statecast watch");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let first = next_line(&lines, "the snapshot");
    assert!(
        first.contains("snapshot") && first.contains("cli/r rev 1 {\"battery\":80}"),
        "{first}"
    );
    assert!(
        !first.contains('\u{1b}'),
        "no colors when stdout is not a terminal: {first:?}"
    );
    assert_eq!(
        server
            .patch("/api/state/cli/r", &json!({"battery": 79}))
            .await
            .status,
        200
    );
    let second = next_line(&lines, "the patch");
    assert!(
        second.contains("patch") && second.contains("cli/r rev 2 {\"battery\":79}"),
        "{second}"
    );
    child.kill().expect("stop watch");
    let _ = child.wait();
}
