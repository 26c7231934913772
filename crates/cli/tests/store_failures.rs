//! The embedded store when the disk or the file fails, with the real binary: a full disk
//! (on a small tmpfs) is reported and got over without a restart, and a store file that is
//! empty or not a store is refused unless `--reset-broken-store` sets it aside.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use common::{Server, Start, TIMEOUT, Tmpfs, fill_disk, is_root};
use serde_json::{Value, json};

/// The data directory a server logs at start-up (`..., store <dir>`).
fn data_dir(server: &Server) -> PathBuf {
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("listening on"))
        .expect("the start-up line");
    PathBuf::from(
        line.rsplit(", store ")
            .next()
            .expect("the store's path")
            .trim(),
    )
}

/// Runs `statecast serve` on `dir` until it exits (it must, within [`TIMEOUT`]: a server
/// that starts instead fails the test, after being killed).
fn serve_until_exit(dir: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_statecast"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STATECAST_") {
            command.env_remove(key);
        }
    }
    let child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the statecast binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("wait for the binary"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("statecast started on {} instead of refusing", dir.display());
        }
    }
}

/// Asserts that `output` is a refusal to start over `file`, saying what to do.
fn assert_refused(output: &Output, file: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("is not a statecast store"), "{stderr}");
    assert!(stderr.contains("--reset-broken-store"), "{stderr}");
}

/// A server holding `n` topics, stopped: its data directory is left as it was.
async fn stopped_server_with_topics(extra: &[&str], n: usize) -> Server {
    let mut server = Server::start(extra);
    for i in 0..n {
        let put = server
            .put(&format!("/api/state/t/{i}"), &json!({"i": i}))
            .await;
        assert_eq!(put.status, 200, "{}", put.text);
    }
    server.kill9();
    server
}

#[tokio::test]
async fn an_emptied_store_file_is_refused_with_what_to_do() {
    let server = stopped_server_with_topics(&[], 50).await;
    let file = data_dir(&server).join("statecast.redb");
    std::fs::write(&file, b"").expect("truncate the store file");
    assert_refused(&serve_until_exit(&data_dir(&server), &[]), &file);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "left alone");
}

#[tokio::test]
async fn a_store_file_of_garbage_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("statecast.redb");
    std::fs::write(&file, vec![0xAB; 8192]).unwrap();
    assert_refused(&serve_until_exit(dir.path(), &[]), &file);
}

#[tokio::test]
async fn reset_broken_store_sets_an_emptied_file_aside_and_starts_empty() {
    // On a good store the option changes nothing.
    let mut server = stopped_server_with_topics(&["--reset-broken-store"], 3).await;
    server.restart();
    assert_eq!(server.get("/api/health").await.json()["topics"], 3);
    server.kill9();

    let dir = data_dir(&server);
    std::fs::write(dir.join("statecast.redb"), b"").unwrap();
    server.restart();
    server.wait_log("moved it aside").await;
    assert_eq!(server.get("/api/health").await.json()["topics"], 0);
    let put = server.put("/api/state/after", &json!(1)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("statecast.redb.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::metadata(dir.join(&aside[0])).unwrap().len(), 0);
}

// ---------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn after_a_full_disk_is_freed_writes_succeed_again_without_a_restart() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mut server = Server::start(&[]);
    let dir = data_dir(&server);
    server.kill9();
    let _tmpfs = match Tmpfs::mount(&dir, "4m") {
        Ok(tmpfs) => tmpfs,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs on {}: {e}", dir.display());
            return;
        }
    };
    server.restart();
    let mut acknowledged: Vec<(String, Value)> = Vec::new();
    for i in 0..5 {
        let (topic, state) = (format!("/api/state/small/{i}"), json!({"i": i}));
        assert_eq!(server.put(&topic, &state).await.status, 200);
        acknowledged.push((topic, state));
    }

    fill_disk(&dir.join("filler"));
    // The store may still have free pages of its own: write until it has none.
    let mut refused = None;
    for i in 0..64 {
        let (topic, state) = (format!("/api/state/big/{i}"), json!("x".repeat(60_000)));
        let put = server.put(&topic, &state).await;
        match put.status {
            200 => acknowledged.push((topic, state)),
            503 => {
                assert_eq!(put.error_code(), "unavailable", "{}", put.text);
                refused = Some(topic);
                break;
            }
            other => panic!("PUT {topic}: {other} {}", put.text),
        }
    }
    let refused = refused.expect("a write refused on a full disk");
    let health = server.get("/api/health").await.json();
    assert_eq!(health["status"], "degraded", "{health}");
    let why = health["degraded"].as_str().unwrap_or_default();
    assert!(why.contains("No space left on device"), "{health}");
    server.wait_log("writes are refused").await;
    // Only what became durable is counted.
    let committed = server.metric("statecast_records_committed_total").await;
    assert_eq!(committed, acknowledged.len() as f64);

    std::fs::remove_file(dir.join("filler")).expect("free the space");
    let (topic, state) = ("/api/state/after".to_owned(), json!({"back": true}));
    let put = server.put(&topic, &state).await;
    assert_eq!(put.status, 200, "{}", put.text);
    acknowledged.push((topic, state));
    assert_eq!(server.get("/api/health").await.json()["status"], "ok");
    server.wait_log("the store takes writes again").await;
    let committed = server.metric("statecast_records_committed_total").await;
    assert_eq!(committed, acknowledged.len() as f64);

    server.kill9();
    server.restart();
    for (topic, state) in &acknowledged {
        let get = server.get(topic).await;
        assert_eq!(get.status, 200, "{topic}: {}", get.text);
        assert_eq!(&get.json()["state"], state, "{topic}");
    }
    assert_eq!(
        server.get(&refused).await.status,
        404,
        "{refused} was refused"
    );
}
