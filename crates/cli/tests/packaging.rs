//! What packaging/ ships for systemd, checked without installing it: the hub tells a
//! service manager it is ready (the unit's `Type=notify`), the default config file is
//! accepted, the unit keeps its hardening. Installing the .deb is packaging/test-deb.sh's
//! job, the Dockerfile is dockerfile.rs's.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// How long the hub may take to say READY=1 or STOPPING=1.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one notification datagram from the socket the hub was given as `NOTIFY_SOCKET`.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Kills the child (by its own PID) if a check fails before it exited.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the hub with `NOTIFY_SOCKET=notify_socket`; the receiver gets its address once
/// it logs `listening on`.
fn start_with_notify_socket(
    dir: &std::path::Path,
    notify_socket: &std::path::Path,
) -> (Reap, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", notify_socket)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the hub");
    let stderr = child.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = addr_tx.send(addr);
            }
        }
    });
    (Reap(child), addr_rx)
}

async fn health_status(addr: &str) -> u16 {
    let url = format!("http://{addr}/api/health");
    Resp::read(http_client().get(url).send().await).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_notifies_ready_once_it_serves_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(NOTIFY_TIMEOUT))
        .expect("read timeout");
    let (hub, addr) = start_with_notify_socket(dir.path(), &socket_path);

    let ready = tokio::task::block_in_place(|| next_notification(&socket));
    assert_eq!(ready.trim(), "READY=1");
    // Ready means serving: the listening line came first and the hub answers at once.
    let addr = addr
        .recv_timeout(Duration::from_secs(5))
        .expect("the listening line before READY=1");
    assert_eq!(health_status(&addr).await, 200);

    signal(hub.0.id(), "TERM");
    let stopping = tokio::task::block_in_place(|| next_notification(&socket));
    assert_eq!(stopping.trim(), "STOPPING=1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notify_socket_nobody_listens_on_does_not_stop_the_hub() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_hub, addr) = start_with_notify_socket(dir.path(), &dir.path().join("nobody"));
    let addr =
        tokio::task::block_in_place(|| addr.recv_timeout(NOTIFY_TIMEOUT)).expect("the hub listens");
    within("the hub to answer", async {
        while health_status(&addr).await != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_default_config_file_is_accepted_with_its_simple_settings_uncommented() {
    let shipped =
        std::fs::read_to_string(repo_root().join("packaging/statecast.toml")).expect("read");
    // Top-level `#key = value` lines (not tables, not their keys after a `#[` line).
    let mut uncommented = String::new();
    for line in shipped.lines() {
        if line.starts_with("#[") {
            break;
        }
        match line.strip_prefix('#') {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => {
                uncommented.push_str(rest);
                uncommented.push('\n');
            }
            _ => {}
        }
    }
    assert!(uncommented.contains("listen = "), "{uncommented}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("statecast.toml");
    // The TLS files it names do not exist here: leave them out, keep every other key.
    let keys: String = uncommented
        .lines()
        .filter(|l| !l.starts_with("tls_") && !l.starts_with("listen"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, keys).expect("write");
    let shipped_path = repo_root().join("packaging/statecast.toml");
    for config in [shipped_path, file] {
        let server = Server::start(&["--config", &config.to_string_lossy()]);
        server.wait_log("config file:").await;
        assert_eq!(server.get("/api/health").await.status, 200);
    }
}

#[test]
fn the_unit_keeps_its_hardening() {
    let unit = std::fs::read_to_string(repo_root().join("packaging/statecast.service"))
        .expect("read the unit");
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for wanted in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=statecast",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecStart=/usr/bin/statecast serve",
        "Environment=STATECAST_DATA_DIR=/var/lib/statecast",
        "Environment=STATECAST_CONFIG=/etc/statecast/statecast.toml",
    ] {
        assert!(directives.contains(&wanted), "the unit lacks {wanted}");
    }
}
