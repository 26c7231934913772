//! docs/deployment.md's reverse-proxy configurations (packaging/proxy/: nginx.conf,
//! apache.conf, Caddyfile) in front of the real hub, each run by the real server from
//! Debian's packages (.ci/run installs them) as a child of the test on an ephemeral
//! 127.0.0.1 port with its own prefix. Through each: a WebSocket subscribes (with the
//! Origin of a page served through the proxy) and gets a patch, and an SSE stream gets a
//! snapshot and a patch as they happen. Each proxy is stopped by its PID.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A proxy server as a child in the foreground; stopped (by its own PID) when dropped.
struct Proxy {
    child: Child,
    addr: String,
    prefix: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
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

impl Proxy {
    /// Runs `program args` in a new prefix (written by `write_config`, given the prefix and
    /// the address to listen on) and waits (bounded) until it accepts connections.
    fn start(program: &str, write_config: impl FnOnce(&Path, &str) -> Vec<String>) -> Proxy {
        let program = ["/usr/sbin", "/usr/bin"]
            .iter()
            .map(|dir| PathBuf::from(dir).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{program} is not installed (.ci/run installs it)"));
        let prefix = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let args = write_config(prefix.path(), &addr);
        let child = Command::new(&program)
            .args(&args)
            .env("HOME", prefix.path())
            .env("XDG_DATA_HOME", prefix.path())
            .env("XDG_CONFIG_HOME", prefix.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("start the proxy");
        let mut proxy = Proxy {
            child,
            addr,
            prefix,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&proxy.addr).is_err() {
            let exited = proxy.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let p = proxy.prefix.path();
                let log = ["stderr", "error.log"]
                    .map(|f| std::fs::read_to_string(p.join(f)).unwrap_or_default())
                    .join("\n");
                panic!("{} did not listen ({exited:?}): {log}", program.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }
}

/// The shipped file `packaging/proxy/<name>` with each `(from, to, times)` of `replace`
/// done: `from` must occur `times` times (else the test no longer tests the file).
fn shipped_config(name: &str, replace: &[(&str, String, usize)]) -> String {
    let mut text = std::fs::read_to_string(repo_root().join("packaging/proxy").join(name))
        .unwrap_or_else(|e| panic!("read packaging/proxy/{name}: {e}"));
    for (from, to, times) in replace {
        assert_eq!(text.matches(from).count(), *times, "{name}: {from}");
        text = text.replace(from, to);
    }
    text
}

fn start_nginx(hub: &str) -> Proxy {
    Proxy::start("nginx", |p, addr| {
        let site = shipped_config(
            "nginx.conf",
            &[
                ("listen 80;", format!("listen {addr};"), 1),
                ("http://127.0.0.1:8080;", format!("http://{hub};"), 1),
            ],
        );
        std::fs::write(p.join("site.conf"), site).expect("write site");
        let p = p.display();
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  \
             uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  include {p}/site.conf;\n}}\n"
        );
        std::fs::write(format!("{p}/nginx.conf"), main).expect("write nginx.conf");
        [
            "-p".into(),
            p.to_string(),
            "-e".into(),
            format!("{p}/error.log"),
            "-c".into(),
            format!("{p}/nginx.conf"),
        ]
        .into()
    })
}

fn start_apache(hub: &str) -> Proxy {
    Proxy::start("apache2", |p, addr| {
        let port = addr.rsplit(':').next().unwrap_or_default();
        let site = shipped_config(
            "apache.conf",
            &[
                ("<VirtualHost *:80>", format!("<VirtualHost *:{port}>"), 1),
                (
                    "\"http://127.0.0.1:8080/\"",
                    format!("\"http://{hub}/\""),
                    2,
                ),
            ],
        );
        std::fs::write(p.join("site.conf"), site).expect("write site");
        let modules = "/usr/lib/apache2/modules";
        let p = p.display();
        let main = format!(
            "ServerRoot {p}\nServerName 127.0.0.1\nListen {addr}\nPidFile {p}/httpd.pid\n\
             ErrorLog {p}/error.log\nLogLevel warn\nMutex file:{p}\nDefaultRuntimeDir {p}\n\
             User nobody\nGroup nogroup\n\
             LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
             LoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule proxy_module {modules}/mod_proxy.so\n\
             LoadModule proxy_http_module {modules}/mod_proxy_http.so\n\
             Include {p}/site.conf\n"
        );
        std::fs::write(format!("{p}/httpd.conf"), main).expect("write httpd.conf");
        ["-X".into(), "-f".into(), format!("{p}/httpd.conf")].into()
    })
}

fn start_caddy(hub: &str) -> Proxy {
    Proxy::start("caddy", |p, addr| {
        let site = shipped_config(
            "Caddyfile",
            &[
                ("\nhub.example {", format!("\nhttp://{addr} {{"), 1),
                (
                    "reverse_proxy 127.0.0.1:8080 {",
                    format!("reverse_proxy {hub} {{"),
                    1,
                ),
            ],
        );
        // The test's own global options: no admin endpoint, no certificates.
        let file = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
        std::fs::write(p.join("Caddyfile"), file).expect("write Caddyfile");
        let p = p.display();
        [
            "run".into(),
            "--config".into(),
            format!("{p}/Caddyfile"),
            "--adapter".into(),
            "caddyfile".into(),
        ]
        .into()
    })
}

/// Through the proxy at `proxy`: a WebSocket subscribe that gets the snapshot and then a
/// patch, and an SSE stream that gets the same, for a write made through the proxy too.
async fn websocket_and_sse_through(hub: &Server, proxy: &str) {
    let proxied = format!("http://{proxy}");
    let topic = format!("deploy/{}", free_port());
    let path = format!("/api/state/{topic}");
    assert_eq!(hub.put(&path, &json!({"n": 1})).await.status, 200);

    // A page served through the proxy: its Origin is the proxy's, which the hub must take
    // as its own (Host passed on with the port).
    let origin = proxied.clone();
    let mut ws = Ws::connect_with(proxy, "/ws", &[("Origin", origin.as_str())])
        .await
        .expect("the WebSocket upgrade through the proxy");
    let mut seen = ws
        .request(json!({"type": "subscribe", "id": 1, "patterns": [topic]}))
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

    let response = within(
        "the SSE response through the proxy",
        streaming_client()
            .get(format!("{proxied}/api/stream"))
            .query(&[("match", topic.as_str())])
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("the SSE request through the proxy");
    let mut sse = Sse::from_response(response, None);
    let first = sse.next().await;
    assert_eq!(first.event, "snapshot", "{first:?}");
    assert_eq!(first.json()["state"], json!({"n": 1}));

    let write = Resp::read(
        http_client()
            .patch(format!("{proxied}{path}"))
            .header("content-type", "application/json")
            .header("origin", origin.as_str())
            .body(r#"{"n": 2}"#)
            .send()
            .await,
    )
    .await;
    assert_eq!(write.status, 200, "{}", write.text);
    let patches = ws.recv_until(|m| m["type"] == "patch").await;
    let patch = patches.last().expect("a patch");
    assert_eq!(patch["topic"], topic.as_str());
    assert_eq!(patch["patch"], json!({"n": 2}));
    assert_eq!(patch["rev"], 2);
    let event = sse.next().await;
    assert_eq!(event.event, "patch", "{event:?}");
    assert_eq!(event.json()["patch"], json!({"n": 2}));
}

/// A client without an overall timeout: the stream stays open, each read is bounded.
fn streaming_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A hub, the proxy `start` gives in front of it, and the checks through it.
async fn check_proxy(start: fn(&str) -> Proxy) {
    let hub = Server::start(&[]);
    let proxy = start(hub.addr());
    websocket_and_sse_through(&hub, &proxy.addr).await;
    // The hub first: its end closes the proxy's upstream connections, so the proxy (Apache,
    // Caddy) stops at once rather than waiting for them.
    drop(hub);
}

#[tokio::test]
async fn websocket_and_sse_work_through_the_nginx_config() {
    check_proxy(start_nginx).await;
}

#[tokio::test]
async fn websocket_and_sse_work_through_the_apache_config() {
    check_proxy(start_apache).await;
}

#[tokio::test]
async fn websocket_and_sse_work_through_the_caddyfile() {
    check_proxy(start_caddy).await;
}

#[test]
fn the_documented_timeouts_outlast_the_heartbeats() {
    // The default heartbeat_ms is 25 000; a connection is silent at most 2.5 of them.
    let limit_s = 25 * 5 / 2;
    let read = |name: &str| {
        std::fs::read_to_string(repo_root().join("packaging/proxy").join(name)).expect("read")
    };
    let seconds_after = |text: &str, key: &str| -> u64 {
        let at = text.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect("a number of seconds")
    };
    let nginx = read("nginx.conf");
    assert!(seconds_after(&nginx, "proxy_read_timeout ") > limit_s);
    assert!(nginx.contains("proxy_buffering off;"));
    let apache = read("apache.conf");
    assert!(seconds_after(&apache, "timeout=") > limit_s);
    assert!(apache.contains("flushpackets=on"));
    assert!(read("Caddyfile").contains("flush_interval -1"));
}
