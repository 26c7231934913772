//! The little the cluster scenario asks of Redis, through the `redis` crate: check that it
//! answers, find its process for CPU sampling, and delete one run's keys. Used only before
//! and after measuring, never on the measured path.

use redis::Connection;

pub struct Redis(Connection);

impl Redis {
    /// Connects to `redis://...` and checks that Redis answers `PING`.
    pub fn connect(url: &str) -> Result<Redis, String> {
        let mut connection = redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(2)))
            .map_err(|e| format!("{url}: {e}"))?;
        redis::cmd("PING")
            .query::<String>(&mut connection)
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Redis(connection))
    }

    /// The Redis server's process id, when it runs in this PID namespace (its
    /// `/proc/<pid>/comm` names Redis), for CPU sampling.
    pub fn local_pid(&mut self) -> Option<u32> {
        let info: String = redis::cmd("INFO").arg("server").query(&mut self.0).ok()?;
        let pid: u32 = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))?
            .trim()
            .parse()
            .ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        comm.starts_with("redis").then_some(pid)
    }

    /// The keys `{<prefix>}:*` (statecast's cluster keys for `prefix`).
    pub fn keys_of(&mut self, prefix: &str) -> Result<Vec<String>, String> {
        let mine = format!("{{{prefix}}}:");
        let pattern = format!("{}*", glob_escape(&mine));
        let found: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter::<String>(&mut self.0)
            .map_err(|e| format!("SCAN: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("SCAN: {e}"))?;
        // SCAN's MATCH is a glob; keep only what really has the prefix.
        let mut keys: Vec<String> = found.into_iter().filter(|k| k.starts_with(&mine)).collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Deletes every key `{<prefix>}:*`; returns how many were deleted.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<u64, String> {
        let keys = self.keys_of(prefix)?;
        let mut deleted = 0;
        for chunk in keys.chunks(500) {
            let n: u64 = redis::cmd("DEL")
                .arg(chunk)
                .query(&mut self.0)
                .map_err(|e| format!("DEL: {e}"))?;
            deleted += n;
        }
        Ok(deleted)
    }
}

/// Escapes the characters special in Redis's glob patterns.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(glob_escape("{a*b}:"), "{a\\*b}:");
    }
}
