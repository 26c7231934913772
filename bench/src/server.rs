//! The server under test: started by the bench (pinned to its own CPU) or already running,
//! and read through `/proc` for CPU time and memory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process the bench measures.
pub struct Server {
    pub pid: u32,
    pub base_url: String,
    child: Option<Child>,
    spawn: Option<Spawn>,
}

/// How to start the server again (for the durability check).
struct Spawn {
    argv: Vec<String>,
    pin: Option<usize>,
    data: PathBuf,
}

/// CPU time and memory of a process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// utime + stime in microseconds.
    pub cpu_us: u64,
    pub rss_kb: u64,
}

impl Server {
    /// Starts `command` (with `{port}` and `{data}` replaced) on a free port, pinned to
    /// `pin` when given, and waits until `health_path` answers.
    pub async fn spawn(
        command: &str,
        health_path: &str,
        pin: Option<usize>,
    ) -> Result<Server, String> {
        let port = free_port()?;
        let data = data_dir(port)?;
        let argv: Vec<String> = shell_words::split(command)
            .map_err(|e| format!("--server-cmd: {e}"))?
            .into_iter()
            .map(|arg| {
                arg.replace("{port}", &port.to_string())
                    .replace("{data}", &data.display().to_string())
            })
            .collect();
        let mut server = Server {
            pid: 0,
            base_url: format!("http://127.0.0.1:{port}"),
            child: None,
            spawn: Some(Spawn { argv, pin, data }),
        };
        server.start(health_path).await?;
        Ok(server)
    }

    /// The data directory the bench made for it (`{data}`), if it started it.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.spawn.as_ref().map(|s| s.data.as_path())
    }

    /// A server that is already running.
    pub fn attach(pid: u32, base_url: String) -> Server {
        Server {
            pid,
            base_url,
            child: None,
            spawn: None,
        }
    }

    pub fn can_restart(&self) -> bool {
        self.spawn.is_some()
    }

    async fn start(&mut self, health_path: &str) -> Result<(), String> {
        let Some(spawn) = &self.spawn else {
            return Err("the bench did not start this server".into());
        };
        let mut command = match (spawn.pin, which("taskset")) {
            (Some(cpu), true) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).args(&spawn.argv);
                c
            }
            _ => {
                let mut c = Command::new(&spawn.argv[0]);
                c.args(&spawn.argv[1..]);
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", spawn.argv))?;
        // taskset execs the command, so the PID is the server's own.
        self.pid = child.id();
        self.child = Some(child);
        wait_healthy(&format!("{}{health_path}", self.base_url)).await
    }

    /// `kill -9` the server and start it again on the same port and data directory.
    pub async fn kill_and_restart(&mut self, health_path: &str) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(|e| format!("kill: {e}"))?;
            let _ = child.wait();
        }
        self.start(health_path).await
    }

    pub fn sample(&self) -> Result<Sample, String> {
        sample(self.pid)
    }

    /// Stops a server the bench started: `SIGTERM` to its PID, `SIGKILL` if it is still
    /// running after `grace`; then removes its data directory. Returns whether it stopped
    /// on `SIGTERM`.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        // SAFETY: kill has no memory preconditions; `pid` is our own child, not yet reaped.
        let mut stopped = pid > 0 && unsafe { libc::kill(pid, libc::SIGTERM) } == 0;
        let deadline = Instant::now() + grace;
        while stopped {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => stopped = false,
            }
        }
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(spawn) = &self.spawn {
            let _ = std::fs::remove_dir_all(&spawn.data);
        }
        stopped
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads utime+stime and RSS of `pid` from `/proc`.
pub fn sample(pid: u32) -> Result<Sample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| "unexpected /proc/<pid>/stat".to_string())
    };
    // `fields[0]` is field 3 (state), so field N is fields[N - 3].
    let cpu_ticks = ticks(11)? + ticks(12)?;
    Ok(Sample {
        cpu_us: cpu_ticks * 1_000_000 / clock_ticks(),
        rss_kb: status_kib(pid, "VmRSS:")?,
    })
}

/// A `/proc/<pid>/status` figure in KiB (`field` with its colon, such as `"VmHWM:"`); 0 when
/// the kernel does not show it.
pub fn status_kib(pid: u32, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn data_dir(port: u16) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("statecast-bench-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

async fn wait_healthy(url: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
