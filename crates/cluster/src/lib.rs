//! statecast's cluster engine: several hubs share one Redis. Each keeps a local cache and
//! fans out to its own clients; Redis holds the state, revs, tombstones, the recent log
//! that resumes clients and the recorded history that answers queries about the past, and
//! orders every change.
//!
//! # Layout
//! - `lib.rs`: [`RedisEngine`], the [`SharedLog`]: loading, the append script, following.
//! - `history.rs`: the recorded history: its Lua (recording, retention, the byte bound)
//!   and the three queries.
//! - `relay.rs`: commands across hubs.
//!
//! # How a change travels
//! A hub appends a batch of changes with one Lua script ([`RedisEngine`]'s
//! [`SharedLog::append`]). For each change the script checks that the topic is still at the
//! rev the change was computed from, then stores the new rev and state, takes the next
//! cluster-wide sequence number and adds the change to a Redis stream, all atomically. A
//! change whose topic moved on is refused with the topic's current state, and the hub
//! computes it again. Every hub, the writer included, reads the stream in order
//! ([`SharedLog::follow`]) and publishes what it reads: one rev sequence per topic,
//! identical everywhere. Unlike PUB/SUB, a stream keeps what a slow or disconnected hub
//! has not read; the sequence numbers, one apart, prove that nothing was missed, and when
//! they cannot (the stream was trimmed past a hub, or Redis restarted), the hub starts over
//! from the stored state.
//!
//! The same script records each change of a topic that keeps history in the topic's own
//! stream, which every hub answers history queries from (`history.rs`).
//!
//! # Keys
//! All keys share the hash tag `{<prefix>}` (one Redis Cluster slot, so the script may
//! touch them all): `:rev`, `:state` and `:seq` are hashes by topic (rev, JSON state,
//! sequence number of the last change); `:counter` is the last sequence number; `:log` is
//! the stream; `:epoch` names this data's history; `:nodes` holds each hub's presence and
//! `:routes` the command targets each hub owns (see [`relay`]); `:writable` is written (and
//! expires) when a hub whose append failed checks that Redis takes writes again; `:h:<topic>`,
//! `:hfirst`, `:hexp`, `:hsize` and `:htotal` are the recorded history (see `history.rs`; the
//! per-topic streams are named by the scripts, not passed as keys, and share the hash tag).

mod history;
pub mod relay;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Client, Connection, Value as RedisValue};
use statecast_core::engine::{
    Append, Appended, EngineError, Entry, EntryKind, Followed, Loaded, Node, SharedLog, StoredTopic,
};
use statecast_core::history::{At, ChangesQuery, Page, Point};
use statecast_core::message;

/// Settings of the cluster engine.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key, so that several clusters can share one Redis.
    pub prefix: String,
    /// This hub's name among the nodes (unique per cluster).
    pub node: String,
    /// Entries the stream keeps (about): how far behind a hub may fall and still catch up
    /// without a resync, and how much history a starting hub finds.
    pub stream_len: u64,
    /// Bytes the recorded history of all topics may hold, about (see `history.rs`).
    pub history_max_bytes: u64,
}

/// The default of [`ClusterConfig::history_max_bytes`], as the embedded store's.
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 1 << 30;

impl ClusterConfig {
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            prefix: "statecast".into(),
            node: format!("node-{:08x}", rand::random::<u32>()),
            stream_len: 10_000,
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
        }
    }
}

/// The Redis engine. See the crate docs.
pub struct RedisEngine {
    client: Client,
    config: ClusterConfig,
    keys: Keys,
    script: redis::Script,
    sweep: redis::Script,
    find_rev: redis::Script,
    /// Connections for history queries, which run on many threads at once.
    readers: Mutex<Vec<Connection>>,
    /// What the history holds, as counted for the bound: from the last append or sweep.
    history_bytes: AtomicU64,
    /// The connection the commit thread appends on.
    appender: Mutex<Option<Connection>>,
    follower: Mutex<Follower>,
    /// The epoch this hub loaded: appends check it, so a Redis that lost its data is not
    /// written over as if nothing happened.
    epoch: Mutex<String>,
    nodes: Mutex<Vec<Node>>,
}

/// The follow thread's position and connection.
struct Follower {
    connection: Option<Connection>,
    last_id: String,
    last_seq: u64,
    /// The connection failed since the last read: check what Redis holds before trusting
    /// the stream again.
    broken: bool,
    presence_at: Option<Instant>,
    swept_at: Option<Instant>,
}

struct Keys {
    rev: String,
    state: String,
    seq: String,
    counter: String,
    log: String,
    epoch: String,
    /// Topic → time of its last change (Unix ms).
    time: String,
    nodes: String,
    routes: String,
    writable: String,
    /// The prefix of the topic streams of the history (`{prefix}:h:`).
    history: String,
    hfirst: String,
    hexp: String,
    hsize: String,
    htotal: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        let key = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            rev: key("rev"),
            state: key("state"),
            seq: key("seq"),
            counter: key("counter"),
            log: key("log"),
            epoch: key("epoch"),
            time: key("time"),
            nodes: key("nodes"),
            routes: key("routes"),
            writable: key("writable"),
            history: key("h:"),
            hfirst: key("hfirst"),
            hexp: key("hexp"),
            hsize: key("hsize"),
            htotal: key("htotal"),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command to Redis may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each hub reports its presence.
const PRESENCE_EVERY: Duration = Duration::from_secs(2);
/// A hub that has not reported for this long counts as gone.
const PRESENCE_TTL: Duration = Duration::from_secs(10);
/// Entries one follow call reads at most.
const FOLLOW_COUNT: usize = 1024;

/// Appends a batch; see the crate docs. Runs after the history's Lua (`history.rs`). ARGV: epoch,
/// stream length, the history's stream prefix and bound, then eight per append: kind (`s`
/// set, `d` delete, `e` event), topic, rev, state or event message, patch message, time
/// (Unix ms), how long the history keeps it (ms; 0: not recorded), the merge patch itself.
/// Returns per append `{1, seq}` or `{0, current rev, current state or nil}`, then the
/// bytes the history holds.
const APPEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[6]) ~= ARGV[1] then
  return redis.error_reply('EPOCH this Redis no longer holds the cluster data the hub loaded')
end
local maxlen = ARGV[2]
local out = {}
local blocked = {}
local recorded = false
for i = 5, #ARGV, 8 do
  local kind, topic, rev, body, patch, time = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  local keep, hpatch = ARGV[i+6], ARGV[i+7]
  if kind == 'e' then
    local seq = redis.call('INCR', KEYS[4])
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'q', seq, 't', topic, 'k', 'e', 'm', body)
    out[#out + 1] = {1, seq}
  else
    local current = tonumber(redis.call('HGET', KEYS[1], topic) or '0')
    if blocked[topic] or current ~= tonumber(rev) - 1 then
      blocked[topic] = true
      out[#out + 1] = {0, current, redis.call('HGET', KEYS[2], topic)}
    else
      local seq = redis.call('INCR', KEYS[4])
      redis.call('HSET', KEYS[1], topic, rev)
      redis.call('HSET', KEYS[3], topic, seq)
      redis.call('HSET', KEYS[7], topic, time)
      if kind == 's' then
        redis.call('HSET', KEYS[2], topic, body)
      else
        redis.call('HDEL', KEYS[2], topic)
      end
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'q', seq, 't', topic, 'k', kind, 'r', rev, 's', body, 'p', patch, 'w', time)
      if keep ~= '0' then
        record(topic, kind, rev, body, hpatch, time, keep)
        recorded = true
      end
      out[#out + 1] = {1, seq}
    end
  end
end
if recorded then bound() end
flush()
out[#out + 1] = tonumber(redis.call('GET', KEYS[11]) or '0')
return out
";

impl RedisEngine {
    /// Checks the settings and that Redis answers.
    pub fn open(config: ClusterConfig) -> Result<RedisEngine, EngineError> {
        if config.prefix.is_empty() || config.prefix.contains(['{', '}']) {
            return Err(EngineError(format!(
                "the cluster prefix {:?} must be non-empty and without braces",
                config.prefix
            )));
        }
        let client = Client::open(config.url.as_str())
            .map_err(|e| EngineError(format!("the cluster URL {:?}: {e}", config.url)))?;
        let engine = RedisEngine {
            keys: Keys::new(&config.prefix),
            script: redis::Script::new(&history::with_history_lua(APPEND_SCRIPT)),
            sweep: redis::Script::new(&history::with_history_lua(history::SWEEP_SCRIPT)),
            find_rev: redis::Script::new(history::FIND_REV_SCRIPT),
            readers: Mutex::new(Vec::new()),
            history_bytes: AtomicU64::new(0),
            client,
            config,
            appender: Mutex::new(None),
            follower: Mutex::new(Follower {
                connection: None,
                last_id: "0-0".into(),
                last_seq: 0,
                broken: false,
                presence_at: None,
                swept_at: None,
            }),
            epoch: Mutex::new(String::new()),
            nodes: Mutex::new(Vec::new()),
        };
        engine.connect()?;
        Ok(engine)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub(crate) fn keys_routes(&self) -> &str {
        &self.keys.routes
    }

    pub(crate) fn keys_nodes(&self) -> &str {
        &self.keys.nodes
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn connect(&self) -> Result<Connection, EngineError> {
        let connection = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| self.error("cannot connect", e))?;
        connection
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| connection.set_write_timeout(Some(COMMAND_TIMEOUT)))
            .map_err(|e| self.error("cannot set timeouts", e))?;
        Ok(connection)
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        EngineError(format!("Redis at {}: {what}: {e}", self.config.url))
    }

    /// Reads everything at once (one MULTI/EXEC): states, the counter and the stream.
    fn read_all(&self, connection: &mut Connection) -> Result<(Loaded, String), EngineError> {
        let fresh_epoch = format!("{:016x}", rand::random::<u64>());
        let _: () = redis::cmd("SET")
            .arg(&self.keys.epoch)
            .arg(&fresh_epoch)
            .arg("NX")
            .query(connection)
            .map_err(|e| self.error("cannot write the epoch", e))?;
        type All = (
            HashMap<String, u64>,
            HashMap<String, Vec<u8>>,
            HashMap<String, u64>,
            HashMap<String, u64>,
            Option<u64>,
            Vec<(String, Vec<Vec<u8>>)>,
            Option<String>,
        );
        let (revs, mut states, seqs, times, counter, log, epoch): All = redis::pipe()
            .atomic()
            .hgetall(&self.keys.rev)
            .hgetall(&self.keys.state)
            .hgetall(&self.keys.seq)
            .hgetall(&self.keys.time)
            .get(&self.keys.counter)
            .xrange_all(&self.keys.log)
            .get(&self.keys.epoch)
            .query(connection)
            .map_err(|e| self.error("cannot load", e))?;
        let epoch = epoch.ok_or_else(|| self.error("cannot load", "the epoch vanished"))?;
        let topics = revs
            .into_iter()
            .map(|(topic, rev)| StoredTopic {
                seq: seqs.get(&topic).copied().unwrap_or(0),
                state: states.remove(&topic),
                changed_ms: times.get(&topic).copied().unwrap_or(0),
                topic,
                rev,
                // Writes that changed nothing are known only to the hub that took them.
                written_ms: 0,
            })
            .collect();
        let mut recent = Vec::with_capacity(log.len());
        let mut last_id = "0-0".to_string();
        for (id, fields) in log {
            let entry = parse_entry(&fields).map_err(|e| self.error("bad stream entry", e))?;
            if matches!(entry.kind, EntryKind::Change { .. }) {
                recent.push(entry);
            }
            last_id = id;
        }
        let loaded = Loaded {
            topics,
            seq: counter.unwrap_or(0),
            epoch,
            recent,
        };
        Ok((loaded, last_id))
    }

    /// Reports this hub's presence and reads everyone's (at most every [`PRESENCE_EVERY`]).
    fn presence(&self, follower: &mut Follower, connection: &mut Connection, clients: u64) {
        if follower
            .presence_at
            .is_some_and(|at| at.elapsed() < PRESENCE_EVERY)
        {
            return;
        }
        follower.presence_at = Some(Instant::now());
        let now = unix_ms();
        let me = serde_json::json!({"clients": clients, "at": now}).to_string();
        let result: redis::RedisResult<HashMap<String, String>> = redis::pipe()
            .hset(&self.keys.nodes, &self.config.node, me)
            .ignore()
            .hgetall(&self.keys.nodes)
            .query(connection)
            .map(|(nodes,): (HashMap<String, String>,)| nodes);
        let Ok(nodes) = result else {
            return;
        };
        let ttl = PRESENCE_TTL.as_millis() as u64;
        let mut seen: Vec<Node> = nodes
            .into_iter()
            .filter_map(|(id, json)| {
                let v: serde_json::Value = serde_json::from_str(&json).ok()?;
                let at = v["at"].as_u64()?;
                Some(Node {
                    id,
                    clients: v["clients"].as_u64().unwrap_or(0),
                    alive: now.saturating_sub(at) < ttl,
                })
            })
            .collect();
        seen.sort_by(|a, b| a.id.cmp(&b.id));
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }

    /// Takes this hub out of the presence figures (on shutdown).
    pub fn leave(&self) {
        if let Ok(mut connection) = self.connect() {
            let _: redis::RedisResult<()> = redis::pipe()
                .hdel(&self.keys.nodes, &self.config.node)
                .hdel(&self.keys.routes, &self.config.node)
                .query(&mut connection);
        }
    }
}

impl SharedLog for RedisEngine {
    fn load(&self) -> Result<Loaded, EngineError> {
        let mut connection = self.connect()?;
        let (loaded, last_id) = self.read_all(&mut connection)?;
        let mut follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        follower.last_id = last_id;
        follower.last_seq = loaded.seq;
        follower.connection = Some(connection);
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = loaded.epoch.clone();
        Ok(loaded)
    }

    fn append(&self, appends: &[Append<'_>]) -> Result<Vec<Appended>, EngineError> {
        let epoch = self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut invocation = self.script.prepare_invoke();
        self.history_keys(&mut invocation);
        invocation
            .arg(epoch)
            .arg(self.config.stream_len)
            .arg(&self.keys.history)
            .arg(self.config.history_max_bytes);
        for append in appends {
            match *append {
                Append::Change {
                    topic,
                    rev,
                    state,
                    patch,
                    time_ms,
                    keep_ms,
                } => invocation
                    .arg(if state.is_some() { "s" } else { "d" })
                    .arg(topic)
                    .arg(rev)
                    .arg(state.unwrap_or_default())
                    .arg(patch.unwrap_or_default())
                    .arg(time_ms)
                    .arg(keep_ms)
                    .arg(
                        patch
                            .filter(|_| keep_ms > 0)
                            .and_then(message::patch_body)
                            .unwrap_or_default(),
                    ),
                Append::Event { topic, message } => invocation
                    .arg("e")
                    .arg(topic)
                    .arg(0)
                    .arg(message)
                    .arg("")
                    .arg(0)
                    .arg(0)
                    .arg(""),
            };
        }
        let mut slot = self.appender.lock().unwrap_or_else(|e| e.into_inner());
        let mut connection = match slot.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        let mut reply: Vec<RedisValue> = invocation
            .invoke(&mut connection)
            .map_err(|e| self.error("the append failed", e))?;
        *slot = Some(connection);
        drop(slot);
        if let Some(RedisValue::Int(bytes)) = reply.pop() {
            self.history_bytes
                .store(u64::try_from(bytes).unwrap_or(0), Ordering::Relaxed);
        }
        reply
            .into_iter()
            .map(|v| parse_appended(v).map_err(|e| self.error("bad append answer", e)))
            .collect()
    }

    fn follow(&self, wait: Duration, clients: u64) -> Result<Followed, EngineError> {
        let mut follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        let follower = &mut *follower;
        let mut connection = match follower.connection.take() {
            Some(c) => c,
            None => {
                follower.broken = true;
                self.connect()?
            }
        };
        connection
            .set_read_timeout(Some(wait + COMMAND_TIMEOUT))
            .map_err(|e| self.error("cannot set timeouts", e))?;
        if follower.broken {
            // Redis may have restarted: only the same data (epoch) may be followed on.
            let epoch: Option<String> = redis::cmd("GET")
                .arg(&self.keys.epoch)
                .query(&mut connection)
                .map_err(|e| self.error("cannot read the epoch", e))?;
            let ours = self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if epoch.as_deref() != Some(ours.as_str()) {
                return Err(self.error(
                    "refusing to follow",
                    "it no longer holds the data this hub loaded (its epoch changed); \
                     restore it or restart the hubs",
                ));
            }
            follower.broken = false;
        }
        self.presence(follower, &mut connection, clients);
        if follower
            .swept_at
            .is_none_or(|at| at.elapsed() >= history::SWEEP_EVERY)
        {
            follower.swept_at = Some(Instant::now());
            match self.history_sweep(&mut connection) {
                Ok(bytes) => self.history_bytes.store(bytes, Ordering::Relaxed),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let reply: RedisValue = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(FOLLOW_COUNT)
            .arg("BLOCK")
            .arg(wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.log)
            .arg(&follower.last_id)
            .query(&mut connection)
            .map_err(|e| self.error("cannot read the stream", e))?;
        let read = parse_xread(reply).map_err(|e| self.error("bad stream entry", e))?;
        let mut entries = Vec::with_capacity(read.len());
        for (id, entry) in read {
            if entry.seq != follower.last_seq + 1 {
                // Entries were trimmed before this hub read them: start over.
                let (loaded, last_id) = self.read_all(&mut connection)?;
                follower.last_id = last_id;
                follower.last_seq = loaded.seq;
                follower.connection = Some(connection);
                return Ok(Followed::Resync(loaded));
            }
            follower.last_seq = entry.seq;
            follower.last_id = id;
            entries.push(entry);
        }
        follower.connection = Some(connection);
        Ok(Followed::Entries(entries))
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One small write, which Redis refuses for the reasons it refuses the append script
    /// (`MISCONF` on a full disk, `OOM` at `maxmemory`). On a connection of its own: the
    /// appends' may be stuck in a command that times out, and the follow thread asks this.
    fn writable(&self) -> Result<(), EngineError> {
        let mut connection = self.connect()?;
        let _: () = redis::cmd("SET")
            .arg(&self.keys.writable)
            .arg(&self.config.node)
            .arg("PX")
            .arg(PRESENCE_TTL.as_millis() as u64)
            .query(&mut connection)
            .map_err(|e| self.error("a write was refused", e))?;
        Ok(())
    }

    fn keeps_history(&self) -> bool {
        true
    }

    fn history_bytes(&self) -> u64 {
        self.history_bytes.load(Ordering::Relaxed)
    }

    fn changes(&self, query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        self.history_changes(query)
    }

    fn state_at(&self, topic: &str, _kept_since_ms: u64, at_ms: u64) -> Result<At, EngineError> {
        self.history_state_at(topic, at_ms)
    }

    fn field_points(
        &self,
        topic: &str,
        pointer: &str,
        _kept_since_ms: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        self.history_field_points(topic, pointer, from_ms, to_ms)
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse_appended(value: RedisValue) -> Result<Appended, String> {
    let RedisValue::Array(items) = value else {
        return Err(format!("expected an array, got {value:?}"));
    };
    let int = |v: Option<&RedisValue>| match v {
        Some(RedisValue::Int(i)) => u64::try_from(*i).map_err(|e| e.to_string()),
        other => Err(format!("expected an integer, got {other:?}")),
    };
    match int(items.first())? {
        1 => Ok(Appended::Stored {
            seq: int(items.get(1))?,
        }),
        _ => Ok(Appended::Conflict {
            rev: int(items.get(1))?,
            state: match items.get(2) {
                Some(RedisValue::BulkString(b)) => Some(b.clone()),
                _ => None,
            },
        }),
    }
}

/// `XREAD`'s answer: `nil` (nothing new) or `[[stream, [[id, [field, value, ...]], ...]]]`.
fn parse_xread(value: RedisValue) -> Result<Vec<(String, Entry)>, String> {
    let streams = match value {
        RedisValue::Nil => return Ok(Vec::new()),
        RedisValue::Array(s) => s,
        RedisValue::Map(m) => m
            .into_iter()
            .map(|(k, v)| RedisValue::Array(vec![k, v]))
            .collect(),
        other => return Err(format!("unexpected XREAD answer {other:?}")),
    };
    let mut out = Vec::new();
    for stream in streams {
        let RedisValue::Array(mut pair) = stream else {
            return Err("a stream is not a pair".into());
        };
        let Some(RedisValue::Array(items)) = pair.pop() else {
            return Err("a stream has no entries".into());
        };
        for (id, fields) in stream_items(items)? {
            out.push((id, parse_entry(&fields)?));
        }
    }
    Ok(out)
}

/// A stream entry's id and its fields and values, in turn.
pub(crate) type Item = (String, Vec<Vec<u8>>);

/// A stream range's entries (`[[id, [field, value, ...]], ...]`) as ids and fields.
pub(crate) fn stream_items(items: Vec<RedisValue>) -> Result<Vec<Item>, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let RedisValue::Array(mut parts) = item else {
            return Err("an entry is not a pair".into());
        };
        let fields = match parts.pop() {
            Some(RedisValue::Array(f)) => f,
            _ => return Err("an entry has no fields".into()),
        };
        let id = match parts.pop() {
            Some(RedisValue::BulkString(b)) => String::from_utf8(b).map_err(|e| e.to_string())?,
            Some(RedisValue::SimpleString(s)) => s,
            _ => return Err("an entry has no id".into()),
        };
        let fields: Vec<Vec<u8>> = fields
            .into_iter()
            .map(|f| match f {
                RedisValue::BulkString(b) => Ok(b),
                RedisValue::SimpleString(s) => Ok(s.into_bytes()),
                other => Err(format!("a field is {other:?}")),
            })
            .collect::<Result<_, _>>()?;
        out.push((id, fields));
    }
    Ok(out)
}

/// One stream entry's fields (`q` seq, `t` topic, `k` kind, `r` rev, `s` state, `p` patch,
/// `w` time, `m` event message) as an [`Entry`].
fn parse_entry(fields: &[Vec<u8>]) -> Result<Entry, String> {
    let mut get = HashMap::new();
    for pair in fields.chunks(2) {
        if let [name, value] = pair {
            get.insert(name.as_slice(), value.as_slice());
        }
    }
    let text = |name: &str| -> Result<&str, String> {
        let bytes = get
            .get(name.as_bytes())
            .ok_or_else(|| format!("no field {name}"))?;
        std::str::from_utf8(bytes).map_err(|e| format!("field {name}: {e}"))
    };
    let number = |name: &str| -> Result<u64, String> {
        text(name)?
            .parse()
            .map_err(|e| format!("field {name}: {e}"))
    };
    let bytes = |name: &str| get.get(name.as_bytes()).map(|b| b.to_vec());
    let kind = match text("k")? {
        "e" => EntryKind::Event {
            message: bytes("m").unwrap_or_default(),
        },
        kind @ ("s" | "d") => EntryKind::Change {
            rev: number("r")?,
            state: if kind == "s" { bytes("s") } else { None },
            patch: bytes("p").filter(|p| !p.is_empty()),
            // Absent in entries from before times.
            time_ms: text("w").ok().and_then(|t| t.parse().ok()).unwrap_or(0),
        },
        other => return Err(format!("unknown kind {other:?}")),
    };
    Ok(Entry {
        seq: number("q")?,
        topic: text("t")?.to_string(),
        kind,
    })
}
