//! docs/deployment.md's nginx configuration (packaging/proxy/nginx.conf) in front of the
//! real hub, run by a real nginx (Debian's; .ci/run installs it) as a child of the test on
//! an ephemeral 127.0.0.1 port with its own prefix: a WebSocket subscribes through it (with
//! the Origin of a page served through the proxy) and gets a patch, and an SSE stream
//! through it gets a snapshot and a patch as they happen. nginx is stopped by its PID.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// nginx as a non-daemon child; stopped (by its own PID) when dropped.
struct Nginx {
    child: Child,
    addr: String,
    prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: a fast stop of the master and its worker.
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is not installed (.ci/run installs Debian's nginx)")
}

/// The shipped site configuration with its two `# test:` lines pointed at `listen` and
/// the hub; panics if they are not there (the test would no longer test the file).
fn site_config(listen: &str, hub: &str) -> String {
    let shipped = std::fs::read_to_string(repo_root().join("packaging/proxy/nginx.conf"))
        .expect("read packaging/proxy/nginx.conf");
    let mut replaced = 0;
    let site: String = shipped
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("listen 80;") {
                replaced += 1;
                format!("    listen {listen};")
            } else if trimmed.starts_with("proxy_pass http://127.0.0.1:8080;") {
                replaced += 1;
                format!("        proxy_pass http://{hub};")
            } else {
                line.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_eq!(replaced, 2, "the two `# test:` lines changed: {shipped}");
    site
}

fn start_nginx(hub: &str) -> Nginx {
    let prefix = tempfile::tempdir().expect("temp dir");
    let p = prefix.path();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(p.join("statecast.conf"), site_config(&addr, hub)).expect("write site");
    let dir = |name: &str| p.join(name).display().to_string();
    let main = format!(
        "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {log} info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  \
         fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  \
         include {site};\n}}\n",
        pid = dir("nginx.pid"),
        log = dir("error.log"),
        t = dir("tmp"),
        site = dir("statecast.conf"),
    );
    std::fs::create_dir_all(p.join("tmp")).expect("tmp dir");
    std::fs::write(p.join("nginx.conf"), main).expect("write nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(p)
        .arg("-e")
        .arg(p.join("error.log"))
        .arg("-c")
        .arg(p.join("nginx.conf"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx {
        child,
        addr,
        prefix,
    };
    wait_listening(&nginx, nginx.prefix.path());
    nginx
}

/// Bounded wait until nginx accepts connections (or has exited: then its log is shown).
fn wait_listening(nginx: &Nginx, prefix: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&nginx.addr).is_err() {
        let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "nginx did not listen: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn websocket_and_sse_work_through_the_documented_nginx_config() {
    let hub = Server::start(&[]);
    let nginx = start_nginx(hub.addr());
    let proxied = format!("http://{}", nginx.addr);
    assert_eq!(
        hub.put("/api/state/deploy/a", &json!({"n": 1}))
            .await
            .status,
        200
    );

    // A page served through the proxy: its Origin is the proxy's, which the hub must take
    // as its own (Host passed on with the port).
    let origin = proxied.clone();
    let mut ws = Ws::connect_with(&nginx.addr, "/ws", &[("Origin", origin.as_str())])
        .await
        .expect("the WebSocket upgrade through nginx");
    let mut seen = ws
        .request(json!({"type": "subscribe", "id": 1, "patterns": ["deploy/#"]}))
        .await;
    if !seen.iter().any(|m| m["type"] == "snapshot") {
        seen.extend(ws.recv_until(|m| m["type"] == "snapshot").await);
    }
    let snapshot = seen.iter().find(|m| m["type"] == "snapshot");
    assert_eq!(
        snapshot.map(|m| &m["state"]),
        Some(&json!({"n": 1})),
        "{seen:?}"
    );

    // SSE through the proxy.
    let response = within(
        "the SSE response through nginx",
        http_client_streaming()
            .get(format!("{proxied}/api/stream?match=deploy/%23"))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("the SSE request through nginx");
    let mut sse = Sse::from_response(response, None);
    let first = sse.next().await;
    assert_eq!(first.event, "snapshot", "{first:?}");
    assert_eq!(first.json()["state"], json!({"n": 1}));

    // A write (through the proxy too) arrives on both as a patch.
    let write = Resp::read(
        http_client()
            .patch(format!("{proxied}/api/state/deploy/a"))
            .header("content-type", "application/json")
            .header("origin", origin.as_str())
            .body(r#"{"n": 2}"#)
            .send()
            .await,
    )
    .await;
    assert_eq!(write.status, 200, "{}", write.text);
    let patch = ws.recv_until(|m| m["type"] == "patch").await;
    let patch = patch.last().expect("a patch");
    assert_eq!(patch["topic"], "deploy/a");
    assert_eq!(patch["patch"], json!({"n": 2}));
    assert_eq!(patch["rev"], 2);
    let event = sse.next().await;
    assert_eq!(event.event, "patch", "{event:?}");
    assert_eq!(event.json()["patch"], json!({"n": 2}));
}

/// A client without an overall timeout: the stream stays open, each read is bounded.
fn http_client_streaming() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

#[test]
fn the_documented_read_timeout_outlasts_the_heartbeats() {
    let shipped =
        std::fs::read_to_string(repo_root().join("packaging/proxy/nginx.conf")).expect("read");
    let timeout_s: u64 = shipped
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("proxy_read_timeout "))
        .and_then(|v| v.split('s').next())
        .and_then(|v| v.parse().ok())
        .expect("proxy_read_timeout <N>s");
    // The default heartbeat_ms is 25 000; a connection is silent at most 2.5 of them.
    assert!(timeout_s * 1000 > 25_000 * 5 / 2, "{timeout_s} s");
    assert!(shipped.contains("proxy_buffering off;"));
}
