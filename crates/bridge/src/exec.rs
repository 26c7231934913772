//! The `exec` source: a long-running local command (`pactl subscribe`, say). Each line it
//! prints becomes a write by its rules; its stderr goes to the log. When it exits, the
//! supervisor starts it again after a backoff. The child is killed when the bridge stops.

use std::process::Stdio;
use std::sync::Arc;

use statecast_core::Hub;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::config::ExecConfig;
use crate::health::Health;
use crate::redact::redact;
use crate::rules::Rules;
use crate::supervise::AbortOnDrop;

/// Longest line taken; longer ones are skipped and reported.
const MAX_LINE_BYTES: usize = 1 << 20;

pub struct ExecSource {
    hub: Hub,
    health: Arc<Health>,
    name: String,
    argv: Vec<String>,
    rules: Rules,
}

impl ExecSource {
    pub fn new(
        hub: Hub,
        health: Arc<Health>,
        name: &str,
        c: ExecConfig,
    ) -> Result<ExecSource, String> {
        let argv = match (c.command, c.shell) {
            (Some(argv), None) if !argv.is_empty() => argv,
            (None, Some(line)) => vec!["sh".into(), "-c".into(), line],
            _ => return Err("give either `command` (program and arguments) or `shell`".into()),
        };
        Ok(ExecSource {
            hub,
            health,
            name: name.to_string(),
            argv,
            rules: Rules::new(&c.topic, &c.rules)?,
        })
    }

    /// One run of the command, until it exits.
    pub async fn run(self: Arc<Self>) -> Result<(), String> {
        let program = &self.argv[0];
        let mut child = Command::new(program)
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so what a shell command starts ends with it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let _group = child.id().map(KillGroup);
        let _stderr = child.stderr.take().map(|stderr| {
            let name = self.name.clone();
            let task = tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(source = %name, "stderr: {}", redact(&line));
                }
            });
            AbortOnDrop(task.abort_handle())
        });
        let Some(stdout) = child.stdout.take() else {
            return Err("no stdout".into());
        };
        self.health.ok(None).await;
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            match read_line(&mut stdout, &mut line).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.health.rejected(&e).await;
                    continue;
                }
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                continue;
            }
            match self.rules.apply_text(text) {
                Ok(Some(output)) => {
                    if let Err(e) = output.write(&self.hub).await {
                        self.health.rejected(&e.to_string()).await;
                    }
                }
                Ok(None) => {}
                Err(e) => self.health.rejected(&e).await,
            }
        }
        let status = child.wait().await.map_err(|e| format!("{program}: {e}"))?;
        Err(format!("{program} exited ({status})"))
    }
}

/// Kills a process group when dropped: when the run ends or the bridge stops.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.0) {
            // SAFETY: kill(2) takes no pointers; a group that is gone yields ESRCH.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Reads one line into `line` (cleared first); false at the end of the stream. A line
/// longer than [`MAX_LINE_BYTES`] is skipped, to its end, and reported.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> Result<bool, String> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await.map_err(|e| e.to_string())?;
        if buf.is_empty() {
            return Ok(!line.is_empty() && !too_long);
        }
        let (taken, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if line.len() + taken > MAX_LINE_BYTES {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&buf[..taken]);
            }
        }
        reader.consume(taken);
        if done {
            if too_long {
                return Err(format!("skipped a line longer than {MAX_LINE_BYTES} bytes"));
            }
            return Ok(true);
        }
    }
}
