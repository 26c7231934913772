//! What the tests need from this machine: the repository root, a loopback port nothing
//! listens on, and signals to processes a test started.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (this crate sits two levels below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// A loopback port nothing listens on (bound, then freed).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address").port()
}

/// Runs `kill -<signal> <pid>` (only ever for a process a test started).
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
