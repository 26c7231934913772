//! The README as a newcomer follows it: the Rust it asks for is what the lock file needs,
//! it installs the locked dependencies, and its command lines run as written against
//! `statecast serve --demo`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md")
}

/// The highest `rust-version` of the packages Cargo.lock holds, and the workspace's own.
fn rust_versions() -> (String, String) {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "{output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let members = metadata["workspace_members"].as_array().expect("members");
    let parse = |version: &str| -> Vec<u64> {
        version.split('.').map(|n| n.parse().unwrap_or(0)).collect()
    };
    let mut needed = String::new();
    let mut own = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let Some(version) = package["rust_version"].as_str() else {
            continue;
        };
        if members.contains(&package["id"]) {
            own.push(version.to_string());
        } else if parse(version) > parse(&needed) {
            needed = version.to_string();
        }
    }
    own.dedup();
    assert_eq!(
        own.len(),
        1,
        "every member inherits the workspace's: {own:?}"
    );
    let needed = needed.trim_end_matches(".0").to_string();
    (needed, own.remove(0))
}

#[test]
fn the_rust_it_asks_for_is_what_the_lock_file_needs() {
    let (needed, own) = rust_versions();
    assert_eq!(
        own.trim_end_matches(".0"),
        needed,
        "rust-version in Cargo.toml"
    );
    let packages: usize = std::fs::read_dir(repo_root().join("crates"))
        .expect("crates/")
        .count()
        + 1; // bench
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let declared = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["rust_version"].is_string())
        .count();
    assert_eq!(declared, packages, "every member says its rust-version");
    assert!(
        readme().contains(&format!("You need Rust {needed} or newer")),
        "the README asks for Rust {needed}"
    );
}

#[test]
fn every_install_builds_the_locked_dependencies() {
    for file in ["README.md", "examples/README.md"] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect("read");
        let installs: Vec<&str> = text
            .match_indices("cargo install")
            .map(|(at, _)| &text[at..text[at..].find('`').map_or(text.len(), |end| at + end)])
            .collect();
        assert!(!installs.is_empty() || file != "README.md", "{file}");
        for install in installs {
            assert!(install.contains("--locked"), "{file}: {install}");
        }
    }
}

/// A README command line as the shell splits it (single quotes only, which is all the
/// README uses), without its comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            '#' if !quoted && !in_word => break,
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The `statecast ...` lines of the README's shell blocks under `## {section}`.
fn command_lines(text: &str, section: &str) -> Vec<String> {
    let start = text
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("no section {section}"));
    let body = &text[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |end| end + 3)];
    let mut lines = Vec::new();
    let mut in_shell = false;
    for line in body.lines() {
        if line.starts_with("```") {
            in_shell = line == "```sh";
        } else if in_shell && line.starts_with("statecast ") {
            lines.push(line.to_string());
        }
    }
    lines
}

/// Runs a README line against the hub; `watch` until it has printed one line.
fn run(server: &Server, line: &str) {
    let words = shell_words(line);
    let mut command = Command::new(env!("CARGO_BIN_EXE_statecast"));
    command
        .args(&words[1..])
        .env("STATECAST_URL", server.http());
    if words[1] == "watch" {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run statecast watch");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = BufReader::new(stdout).read_line(&mut first);
            let _ = tx.send(first);
        });
        let first = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        child.kill().expect("stop watch");
        let _ = child.wait();
        assert!(first.contains("demo/"), "{line}: {first:?}");
        return;
    }
    let output = command.output().expect("run statecast");
    assert!(
        output.status.success(),
        "{line}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `statecast command` lines of the README that are about a configuration of its own (the
/// TOML block above them), not the demo: the examples test routes them.
const CONFIGURED_COMMANDS: &[&str] = &[
    r#"statecast command railhub/esp32-01 switch '{"output": 2, "on": true}'"#,
    r#"statecast command ha/light.kitchen light.turn_on '{"brightness_pct": 40}'"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_line_runs_against_serve_demo() {
    let text = readme();
    let server = Server::start(&["--demo"]);
    server.wait_log("demo devices running").await;
    // The command-line section, in order, as written.
    let lines = command_lines(&text, "From the command line");
    assert!(lines.len() >= 7, "{lines:?}");
    for line in &lines {
        run(&server, line);
    }
    // Every other `statecast command` is for the demo or for a configuration of its own.
    let mut demo = 0;
    for line in text.lines().filter(|l| l.starts_with("statecast command ")) {
        let line = line.trim_end();
        let for_demo = shell_words(line)[2].starts_with("demo/");
        demo += usize::from(for_demo);
        if lines.iter().any(|l| l == line) {
            continue; // run above
        }
        match for_demo {
            true => run(&server, line),
            false => assert!(
                CONFIGURED_COMMANDS.contains(&line),
                "not for the demo: {line}"
            ),
        }
    }
    assert!(demo >= 2, "the README shows the demo's commands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_board_switches_outputs_and_reboots() {
    let server = Server::start(&["--demo"]);
    let command = |name: &str, args: Value| {
        let body = json!({"name": name, "args": args});
        let server = &server;
        async move {
            server
                .post("/api/commands/demo/railhub/esp32-01", &body)
                .await
        }
    };
    let switched = command("switch", json!({"output": 2, "on": true})).await;
    assert_eq!(switched.status, 200, "{}", switched.text);
    // The answer comes once the state holds it.
    let state = server.get("/api/state/demo/railhub/esp32-01").await.json();
    assert_eq!(state["state"]["outputs"][2], true, "{state}");
    let off = command("switch", json!({"output": 2, "on": false})).await;
    assert_eq!(off.status, 200, "{}", off.text);
    let state = server.get("/api/state/demo/railhub/esp32-01").await.json();
    assert_eq!(state["state"]["outputs"][2], false, "{state}");

    for bad in [
        json!({"output": 8, "on": true}),
        json!({"output": 1}),
        json!(3),
    ] {
        let refused = command("switch", bad.clone()).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text);
        assert_eq!(refused.error_code(), "bad_request", "{}", refused.text);
    }
    let unknown = command("explode", json!({})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert!(
        unknown.text.contains("switch"),
        "says what it takes: {}",
        unknown.text
    );

    let rebooting = command("reboot", json!({"delay_s": 0})).await;
    assert_eq!(rebooting.status, 200, "{}", rebooting.text);
    within("the board to come back with its uptime from 0", async {
        loop {
            let state = server.get("/api/state/demo/railhub/esp32-01").await.json();
            if state["state"]["boots"] == 2 {
                assert_eq!(state["state"]["outputs"][2], false, "{state}");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}
