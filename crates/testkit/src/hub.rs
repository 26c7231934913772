//! The real hub: a `statecast serve` process on `127.0.0.1:0` with a data directory of its
//! own, its address read from the `listening on` line it logs, its stderr kept for the
//! test, and HTTP and WebSocket shortcuts to it.
//!
//! The testkit does not build the binary: the package that does passes its path
//! (`env!("CARGO_BIN_EXE_statecast")`, which only an integration test of that package can
//! name) to [`Server::start_binary`].

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::http::{Resp, http_client};
use crate::local::signal;
use crate::wait::within;
use crate::ws::Ws;

/// How long the binary may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `statecast serve` on `127.0.0.1:0` with its own data directory. Killed (by its
/// own PID) when dropped.
pub struct Server {
    program: OsString,
    child: Option<Child>,
    pid: u32,
    addr: String,
    dir: tempfile::TempDir,
    listen: String,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `program` (the `statecast` binary) with `extra` arguments after
    /// `serve --listen .. --data-dir ..`.
    pub fn start_binary(program: impl Into<OsString>, extra: &[&str]) -> Server {
        Server::start_binary_at(program, "127.0.0.1:0", extra)
    }

    /// [`Server::start_binary`] with `--listen listen` (a client started before the hub
    /// knows where it will be).
    pub fn start_binary_at(program: impl Into<OsString>, listen: &str, extra: &[&str]) -> Server {
        let program = program.into();
        let dir = tempfile::tempdir().expect("temp dir");
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr, log) = launch(&program, listen, dir.path(), &args);
        Server {
            program,
            pid: child.id(),
            child: Some(child),
            addr,
            dir,
            listen: listen.to_string(),
            args,
            log,
        }
    }

    /// Starts the binary again on the same data directory (and arguments), after the
    /// previous process ended (it is killed first if it still runs). The port changes.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (child, addr, log) = launch(&self.program, &self.listen, self.dir.path(), &self.args);
        self.pid = child.id();
        self.child = Some(child);
        self.addr = addr;
        self.log = log;
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The data directory it was started with (`--data-dir`).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The HTTP base URL, `http://127.0.0.1:PORT`.
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http(), path)
    }

    /// What the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until the server has logged a line containing `text`.
    pub async fn wait_log(&self, text: &str) {
        within(&format!("{text:?} in the log"), async {
            while !self.log_text().contains(text) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().expect("SIGKILL the server");
        let status = child.wait().expect("reap the server");
        assert!(
            !status.success(),
            "a SIGKILLed server cannot exit 0: {status:?}"
        );
    }

    /// Sends SIGTERM (the process keeps running until it has shut down).
    pub fn sigterm(&self) {
        signal(self.pid, "TERM");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = self.pid;
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(Duration::from_secs(15), waiting).await {
            Ok(joined) => joined.expect("join").expect("wait for the server"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!(
                    "the server did not exit within 15 s; log:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// The server's resident set size in KiB, from /proc/<pid>/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("VmRSS value")
    }

    // --- HTTP -------------------------------------------------------------------------

    pub async fn get(&self, path: &str) -> Resp {
        Resp::read(http_client().get(self.url(path)).send().await).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        Resp::read(http_client().put(self.url(path)).json(body).send().await).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        Resp::read(http_client().patch(self.url(path)).json(body).send().await).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        Resp::read(http_client().delete(self.url(path)).send().await).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        Resp::read(http_client().post(self.url(path)).json(body).send().await).await
    }

    /// Sends a request built on [`http_client`].
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        Resp::read(request.send().await).await
    }

    /// `GET /api/state?match=#` as a JSON value: the whole published state, each topic's
    /// `time` checked and left out (see [`crate::untimed`]).
    pub async fn all_state(&self) -> Value {
        let resp = self.get("/api/state").await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        crate::untimed(resp.json())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self.get("/metrics").await;
        assert_eq!(resp.status, 200);
        resp.text
    }

    /// The value of an unlabelled metric.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, name).unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
    }

    /// Opens a WebSocket and reads its `welcome`.
    pub async fn ws(&self) -> Ws {
        Ws::connect(&self.addr).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!("--- statecast stderr (last {} lines) ---", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// Spawns the binary, waits for its `listening on http://ADDR` line and keeps draining its
/// stderr in a background thread.
fn launch(
    program: &OsString,
    listen: &str,
    dir: &Path,
    args: &[String],
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STATECAST_") {
            command.env_remove(key);
        }
    }
    command
        .env("STATECAST_LOG", "info")
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn the statecast binary");
    let stderr = child.stderr.take().expect("stderr pipe");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let thread_log = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let rest = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1));
            let addr: Option<String> =
                rest.map(|rest| rest.chars().take_while(|c| !c.is_whitespace()).collect());
            // Logged before the address is handed over: a test that has the address sees
            // the line that announced it.
            thread_log.lock().unwrap().push(line);
            if let Some(addr) = addr
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => (child, addr, log),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "statecast did not report `listening on` within {START_TIMEOUT:?}; stderr:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    }
}

/// The value of an unlabelled metric line `name value`.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(name))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}
