//! Redis for the tests of the cluster engine and of `--cluster`: a key prefix of its own
//! on the machine's Redis ([`SHARED_REDIS`]), for tests that run side by side on one Redis
//! (unique per test and process, its keys deleted when it is dropped); or, for a test that
//! stops, cuts off or starves Redis, a `redis-server` of its own ([`OwnRedis`]).

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The arguments that make a hub node `id` of the cluster on `url` under `prefix`.
pub fn cluster_args<'a>(url: &'a str, prefix: &'a RedisPrefix, id: &'a str) -> Vec<&'a str> {
    vec![
        "--cluster",
        url,
        "--cluster-prefix",
        prefix.as_str(),
        "--node-id",
        id,
    ]
}

/// How an [`OwnRedis`] is run.
#[derive(Debug, Clone)]
pub struct RedisSetup {
    /// The addresses it listens on (`--bind`), space-separated; the first is the one
    /// [`OwnRedis::url`] names.
    pub bind: String,
    /// `always` (every write on disk before Redis answers) or `everysec`.
    pub appendfsync: &'static str,
    /// Its data directory; `None`: a temporary directory of its own.
    pub dir: Option<PathBuf>,
}

impl Default for RedisSetup {
    fn default() -> RedisSetup {
        RedisSetup {
            bind: "127.0.0.1".into(),
            appendfsync: "always",
            dir: None,
        }
    }
}

/// A `redis-server` of the test's own on a free port, with the append-only file on (no
/// snapshots); killed (SIGKILL, by its PID) when dropped. It runs in the network namespace
/// of the thread that starts it.
pub struct OwnRedis {
    child: Option<Child>,
    port: u16,
    setup: RedisSetup,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl OwnRedis {
    /// Every write fsynced (appendfsync always), on 127.0.0.1.
    pub fn start() -> OwnRedis {
        OwnRedis::start_with(RedisSetup::default())
    }

    pub fn start_with(setup: RedisSetup) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let (dir, temp) = match &setup.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::tempdir().expect("temp dir");
                (temp.path().to_owned(), Some(temp))
            }
        };
        let mut redis = OwnRedis {
            child: None,
            port,
            setup,
            dir,
            _temp: temp,
        };
        redis.launch();
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://<first bind address>:PORT`.
    pub fn url(&self) -> String {
        self.url_at(self.first_address())
    }

    /// `redis://<address>:PORT`, for one of its other bind addresses.
    pub fn url_at(&self, address: &str) -> String {
        format!("redis://{address}:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn first_address(&self) -> &str {
        self.setup
            .bind
            .split_whitespace()
            .next()
            .unwrap_or("127.0.0.1")
    }

    /// Starts the server (again, on the same port and data).
    pub fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind"]);
        command.args(self.setup.bind.split_whitespace());
        let child = command
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", self.setup.appendfsync])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install Debian's redis-server)");
        self.child = Some(child);
        // Up once it answers PING: while it loads its files it answers LOADING instead.
        let client = ::redis::Client::open(self.url()).expect("a Redis URL");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = client
                .get_connection_with_timeout(Duration::from_secs(1))
                .and_then(|mut con| ::redis::cmd("PING").query::<String>(&mut con));
            if ping.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start: {ping:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, by PID: Redis gets no chance to write anything more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command on a fresh connection (`CLIENT LIST`, `DBSIZE`...).
    pub fn query<T: ::redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = ::redis::Client::open(self.url()).expect("a Redis URL");
        let mut con = client
            .get_connection()
            .expect("connect to the test's Redis");
        let mut cmd = ::redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut con)
            .unwrap_or_else(|e| panic!("{args:?} on the test's Redis: {e}"))
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
