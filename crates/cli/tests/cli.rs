//! The client subcommands (`get`, `set`, `patch`, `delete`, `event`, `command`, `watch`)
//! run as a user runs them, against the real hub.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use common::{Server, Start, TIMEOUT, free_port, signal, untimed};
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
        untimed(get),
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
    let unreachable = stderr_of_failure(&statecast(&closed, &["get", "cli/x"]));
    assert!(
        unreachable.contains(&format!("cannot reach the hub at {closed}")),
        "{unreachable}"
    );
    // Nothing was written by the refused commands.
    assert_eq!(server.get("/api/state/cli/x").await.status, 404);
}

/// Reads `watch`'s stdout (or stderr) lines on a thread, so each can be awaited with a
/// bound.
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

/// Waits (bounded) for `child` to exit; its status and what it wrote to stderr.
fn exit_of(child: std::process::Child) -> (std::process::ExitStatus, String) {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(output) => {
            let output = output.expect("wait for statecast");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (output.status, stderr)
        }
        Err(_) => {
            signal(pid, "KILL");
            panic!("statecast did not exit within {TIMEOUT:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_watch_and_get_quietly() {
    let server = Server::start(&[]);
    let url = server.http();
    assert_eq!(
        server
            .put("/api/state/cli/p", &json!({"n": 1}))
            .await
            .status,
        200
    );
    // `statecast watch | head -1`: the reader takes one line and goes away; the next
    // change finds the pipe closed.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["watch", "cli/p", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run statecast watch");
    let mut reader = BufReader::new(watch.stdout.take().expect("stdout"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("read the first line");
    assert!(first.contains("snapshot"), "{first}");
    drop(reader);
    assert_eq!(
        server
            .patch("/api/state/cli/p", &json!({"n": 2}))
            .await
            .status,
        200
    );
    let (status, stderr) = exit_of(watch);
    assert_eq!(
        status.code(),
        Some(0),
        "watch: {status:?}, stderr: {stderr}"
    );
    assert_eq!(stderr, "", "watch says nothing when its reader goes away");

    // `statecast get | head -c 10`: the reader is gone before the answer is printed.
    let mut get = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["get", "cli/p", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run statecast get");
    drop(get.stdout.take());
    let (status, stderr) = exit_of(get);
    assert_eq!(status.code(), Some(0), "get: {status:?}, stderr: {stderr}");
    assert_eq!(stderr, "", "get says nothing when its reader goes away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_sent_as_it_is_written_and_wildcards_are_refused() {
    let server = Server::start(&[]);
    let url = server.http();
    // `#` and `?` stay in the topic instead of ending the URL's path: the hub refuses the
    // topic it was given, not a shorter one, and writes nothing.
    let wildcard = stderr_of_failure(&statecast(&url, &["set", "cli/+", "{}"]));
    assert!(wildcard.contains("wildcard '+'"), "{wildcard}");
    for args in [
        &["set", "cli/#", "{}"][..],
        &["patch", "cli/#", "{}"][..],
        &["delete", "cli/#"][..],
        &["event", "cli/#", "{}"][..],
    ] {
        let refused = stderr_of_failure(&statecast(&url, args));
        assert!(
            refused.contains("topic \"cli/#\": segment 2 is the wildcard '#'"),
            "{args:?}: {refused}"
        );
    }
    let question = stderr_of_failure(&statecast(&url, &["set", "cli/a?b", "{}"]));
    assert!(question.contains("cli/a?b"), "{question}");
    assert_eq!(server.get("/api/state/cli/a").await.status, 404);
    assert_eq!(server.all_state().await["topics"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_started_before_the_hub_waits_and_connects_once_it_is_up() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut watch = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["watch", "cli/#", "--json", "--url", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run statecast watch");
    let lines = lines_of(watch.stdout.take().expect("stdout"));
    let errors = lines_of(watch.stderr.take().expect("stderr"));
    let waiting = next_line(&errors, "the first failed attempt");
    assert!(
        waiting.contains(&format!("waiting for the hub at http://{listen}")),
        "{waiting}"
    );

    let server = Server::start_binary_at(env!("CARGO_BIN_EXE_statecast"), &listen, &[]);
    assert_eq!(
        server
            .put("/api/state/cli/late", &json!({"n": 1}))
            .await
            .status,
        200
    );
    let first: Value = serde_json::from_str(&next_line(&lines, "the topic")).expect("JSON");
    assert_eq!(
        (first["topic"].clone(), first["rev"].clone()),
        (json!("cli/late"), json!(1)),
        "{first}"
    );
    watch.kill().expect("stop watch");
    let _ = watch.wait();
    // It said so once, however many attempts it took (the lines end with the process).
    let said: Vec<String> = errors.iter().collect();
    assert!(
        !said.iter().any(|line| line.contains("waiting")),
        "said more than once: {waiting}\n{said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_may_be_the_websocket_url_or_a_bare_address() {
    let server = Server::start(&[]);
    assert_eq!(
        server
            .put("/api/state/cli/u", &json!({"n": 1}))
            .await
            .status,
        200
    );
    let port = server.addr().rsplit(':').next().expect("a port");
    for url in [
        server.http(),
        format!("{}/", server.http()),
        server.ws_url(),
        format!("ws://{}", server.addr()),
        server.addr().to_string(),
        format!("localhost:{port}"),
    ] {
        let got = stdout_json(&statecast(&url, &["get", "cli/u"]));
        assert_eq!(got["rev"], 1, "--url {url}");
    }
    let refused = statecast("ftp://127.0.0.1:1", &["get", "cli/u"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("ftp"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_can_listen_on_a_host_name() {
    let server = Server::start_binary_at(env!("CARGO_BIN_EXE_statecast"), "localhost:0", &[]);
    assert!(server.addr().starts_with("127.0.0.1:"), "{}", server.addr());
    assert_eq!(server.get("/api/health").await.status, 200);
}

fn help_of(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run statecast --help");
    assert!(output.status.success(), "{args:?} --help: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_subcommand_explains_its_arguments_and_shows_an_example() {
    let top = help_of(&[]);
    let listed = &top[top.find("Commands:").expect("a list of commands")..];
    let subcommands: Vec<&str> = listed
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(subcommands.len() >= 9, "{subcommands:?}");
    for subcommand in &subcommands {
        let help = help_of(&[subcommand]);
        assert!(
            help.contains(&format!("statecast {subcommand}")) && help.contains("Example"),
            "`statecast {subcommand} --help` has no example:\n{help}"
        );
    }
    let command = help_of(&["command"]);
    assert!(
        command.contains("<TARGET> <COMMAND> [ARGS]"),
        "value names:\n{command}"
    );
    assert!(
        command.contains("[[route]]"),
        "what a target is:\n{command}"
    );
    let set = help_of(&["set"]);
    assert!(set.contains("<TOPIC> <STATE>"), "value names:\n{set}");
    assert!(set.contains("no wildcards"), "what a topic is:\n{set}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_error_is_printed_with_the_devices_answer() {
    use axum::http::StatusCode;
    let device = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the device");
    let device_addr = device.local_addr().expect("the device's address");
    let app = axum::Router::new().route(
        "/outputs",
        axum::routing::post(|| async {
            (
                StatusCode::CONFLICT,
                axum::Json(json!({"reason": "output 2 is locked"})),
            )
        }),
    );
    tokio::spawn(async move { axum::serve(device, app).await });
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\ntarget = \"dev/+\"\ntype = \"http\"\nurl = \"http://{device_addr}/outputs\"\n"
        ),
    )
    .expect("write the config");
    let server = Server::start(&["--config", config.to_str().expect("a UTF-8 path")]);
    let refused = stderr_of_failure(&statecast(
        &server.http(),
        &["command", "dev/1", "switch", r#"{"output": 2}"#],
    ));
    assert!(
        refused.contains("upstream (502)") && refused.contains("409"),
        "{refused}"
    );
    assert!(
        refused.contains(r#"{"reason":"output 2 is locked"}"#),
        "{refused}"
    );
}

// Staleness, with a `stale_after` of 300 ms: `watch` prints a `stale` line (with the time of
// the last write) when a topic goes silent and a `fresh` line when it is written again;
// `get` says on stderr that a topic is stale and when it last changed, its stdout staying
// the hub's JSON.

/// `statecast watch ARGS --url` the hub, its stdout piped.
fn spawn_watch(server: &Server, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_statecast"))
        .arg("watch")
        .args(args)
        .args(["--url", &server.http()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run statecast watch")
}

/// A hub whose `cli/+` topics turn stale after 300 ms without a write.
fn start_stale_hub() -> (Server, tempfile::TempDir) {
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

/// `PUT`s `state` to `topic`; the hub takes it (200).
async fn put_ok(server: &Server, topic: &str, state: &Value) {
    let status = server
        .put(&format!("/api/state/{topic}"), state)
        .await
        .status;
    assert_eq!(status, 200, "PUT {topic}");
}

/// The words of a `watch` line after its time: kind, topic, `rev`, n, and the rest.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().skip(1).collect()
}

/// `statecast get` against `server`: its stdout as JSON, and its stderr.
fn get_stale(server: &Server, what: &str) -> (Value, String) {
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
    let (server, _dir) = start_stale_hub();
    let state = json!({"outputs": [true, false]});
    put_ok(&server, "cli/esp32", &state).await;
    let written = server.get("/api/state/cli/esp32").await.json();
    let time = written["time"].as_str().expect("a time").to_owned();
    let mut child = spawn_watch(&server, &["cli/#"]);
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
    let (answer, said) = get_stale(&server, "cli/esp32");
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
    let (listed, said) = get_stale(&server, "cli/#");
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
    put_ok(&server, "cli/esp32", &state).await;
    let fresh = next_line(&lines, "the topic turning fresh");
    assert_eq!(words(&fresh), ["fresh", "cli/esp32", "rev", "1"], "{fresh}");
    let again = next_line(&lines, "the topic turning stale again");
    assert_eq!(words(&again)[..2], ["stale", "cli/esp32"], "{again}");
    assert_eq!(
        server
            .patch("/api/state/cli/esp32", &json!({"outputs": [true, true]}))
            .await
            .status,
        200
    );
    // (The hub's `stale:false` before a patch carries the rev before it.)
    let fresh = next_line(&lines, "fresh before the patch");
    assert_eq!(words(&fresh), ["fresh", "cli/esp32", "rev", "1"], "{fresh}");
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
    let (server, _dir) = start_stale_hub();
    let mic = json!({"battery": 80});
    put_ok(&server, "cli/mic", &mic).await;
    let time = server.get("/api/state/cli/mic").await.json()["time"].clone();
    let mut child = spawn_watch(&server, &["cli/+", "--json"]);
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let json_line =
        |what| -> Value { serde_json::from_str(&next_line(&lines, what)).expect("a JSON line") };
    let first = json_line("the snapshot");
    assert_eq!(first["type"], "snapshot", "{first}");
    // The watch came up after the 300 ms: its snapshot says the topic is stale; an
    // unchanged write freshens it (and says when), and the topic goes stale from then.
    let since = if first["stale"] == true {
        put_ok(&server, "cli/mic", &mic).await;
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
