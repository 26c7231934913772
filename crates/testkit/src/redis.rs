//! A key prefix of its own on the machine's Redis ([`SHARED_REDIS`]), for tests of the
//! cluster engine and of `--cluster` that run side by side on one Redis: unique per test
//! and process, and its keys deleted when it is dropped.

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

/// The Redis the tests share.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// A unique key prefix on [`SHARED_REDIS`]; its keys (`{prefix}:*`) are deleted when
/// dropped.
pub struct RedisPrefix(String);

impl RedisPrefix {
    /// `<label>-<pid>-<random>`.
    pub fn new(label: &str) -> RedisPrefix {
        let random = RandomState::new().hash_one(Instant::now()) as u32;
        RedisPrefix(format!("{label}-{}-{random:08x}", std::process::id()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // A Redis that is gone (a test stopped its own, say) leaves nothing to delete.
        let Ok(client) = redis::Client::open(SHARED_REDIS) else {
            return;
        };
        let Ok(mut con) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}:*", self.0))
            .query(&mut con)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
    }
}
