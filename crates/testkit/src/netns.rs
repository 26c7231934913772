//! A network namespace of the test's own (`ip netns add`), so that a test can cut links
//! with iptables without touching the machine's network: its loopback is its own, its
//! rules vanish with it, and it is deleted when dropped, a failing test included.
//!
//! A thread joins it with [`Netns::enter`] (`setns`); the sockets that thread opens and the
//! processes and threads it starts from then on are in the namespace, so a test runs its
//! servers and clients from such a thread and reaches them on the namespace's 127.0.0.0/8.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

/// A named network namespace with its loopback up; deleted when dropped.
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// `ip netns add statecast-<label>-<pid>`, then `lo` up. Fails (with the reason) where
    /// namespaces cannot be made, e.g. without root.
    pub fn create(label: &str) -> Result<Netns, String> {
        let name = format!("statecast-{label}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(file) => file,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                return Err(format!("cannot open /run/netns/{name}: {e}"));
            }
        };
        let netns = Netns { name, file };
        netns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into the namespace (only that thread).
    pub fn enter(&self) -> Result<(), String> {
        // SAFETY: setns takes a file descriptor we own, open for the call's duration, and
        // changes only the calling thread's network namespace.
        let done = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        match done {
            0 => Ok(()),
            _ => Err(format!(
                "setns into {}: {}",
                self.name,
                std::io::Error::last_os_error()
            )),
        }
    }

    /// Runs `args` inside the namespace (`ip netns exec`); an error says what failed.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Whatever still runs in it keeps it alive, unnamed, until it ends; the name (and
        // with it every rule made through `exec`) goes now.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(command: &mut Command) -> Result<String, String> {
    let output: Output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
