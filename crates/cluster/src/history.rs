//! The shared history in Redis: every change of a topic whose policy keeps history,
//! recorded by the append script itself (so nothing refused is recorded and nothing
//! appended is missing), answered alike by every hub (see docs/history.md, "Several hubs").
//!
//! # Layout
//! * `{prefix}:h:<topic>`: a stream per topic. Entry id `<time ms>-<rev>`, so a range by
//!   time is one `XRANGE`; the time is made monotonic per topic (a clock stepping back, or
//!   another hub's clock behind, is recorded as no time passing). One field, `e`: the kind
//!   (`f` the full state, `p` the RFC 7396 merge patch from the change before, `d` a
//!   removal) then the state or patch, in one value (two fields made reading 100,000
//!   entries a third slower and each entry 2 bytes larger). A full state is written at a topic's first recorded change,
//!   after a gap (a change not recorded), when no patch expresses the change and at every
//!   rev divisible by [`FULL_EVERY`]: rebuilding any state applies fewer than that many
//!   patches, and a *base* (a full state or a removal) is never more than that many
//!   entries back.
//! * `{prefix}:hfirst`: sorted set, topic → time of its oldest entry (oldest first, for the
//!   byte bound); `{prefix}:hexp`: topic → time its newest entry passes retention (for the
//!   sweep of topics no longer written); `{prefix}:hsize`: hash, topic → bytes counted for
//!   its stream; `{prefix}:htotal`: bytes counted for all.
//!
//! # Retention and the bound
//! Retention is trimmed by `XTRIM MINID`, exactly, to a base: each time a topic writes a
//! base the script keeps its newest change at or before `time - keep` (what the topic was
//! at the cut-off) with the base it builds on, and drops what is older; a topic no longer
//! written is cut to its newest change alone, rewritten as a full state from the state
//! the topic holds, by [`SWEEP_SCRIPT`] once that change is past retention (every hub
//! runs it from its follow thread, at most every [`SWEEP_EVERY`]).
//! So up to [`FULL_EVERY`] changes past retention may stay a while; the queries never
//! answer them (the hub asks from `now - keep` on).
//!
//! `history_max_bytes` bounds the bytes counted: each entry counts its body plus
//! [`ENTRY_OVERHEAD`] (measured: what Redis takes per stream entry beyond it, see
//! docs/history.md); a trim subtracts the topic's average per entry. Whenever the count is
//! over the bound after an append (or a sweep), the topic with the oldest entry loses its
//! oldest chain (a base and the patches on it); a topic with one chain left keeps only
//! its newest change, rewritten as a full state from the topic's state. At most 64 cuts
//! per script, so the bound holds approximately: within what one batch adds.

use std::time::Duration;

use redis::{Connection, Value as RedisValue};
use serde_json::Value;
use statecast_core::engine::EngineError;
use statecast_core::history::{At, Change, ChangesQuery, Page, Point, Start, number_at};
use statecast_core::merge;

use crate::{RedisEngine, stream_items};

/// A full state every this many revs (see the module docs).
pub(crate) const FULL_EVERY: u64 = 64;
/// What one stream entry costs beyond its body, for `history_max_bytes`: measured with
/// `MEMORY USAGE` on streams of 100,000 patches (docs/history.md).
pub(crate) const ENTRY_OVERHEAD: u64 = 19;
/// How often a hub sweeps topics no longer written.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Entries one read takes at most.
const CHUNK: usize = 8192;

/// The Lua both scripts share: recording, trimming and the bound. KEYS[1] rev, KEYS[2]
/// state (hashes by topic), KEYS[8] `hfirst`, KEYS[9] `hexp`, KEYS[10] `hsize`, KEYS[11]
/// `htotal`; ARGV[3] the prefix of the topic streams, ARGV[4] `history_max_bytes`.
const HISTORY_LUA: &str = r"
local HPREFIX, HMAX = ARGV[3], tonumber(ARGV[4])
local function n(x) return string.format('%d', x) end
local function split_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function is_base(e) local k = string.sub(e[2][2], 1, 1) return k == 'f' or k == 'd' end
-- Counts and expiries are gathered in the script and written once per topic (`flush`),
-- and each topic's newest entry is remembered: fewer commands per change.
local sizes, expiries, total, newest = {}, {}, 0, {}
local function account(topic, delta)
  sizes[topic] = (sizes[topic] or 0) + delta
  total = total + delta
end
local function flush()
  for topic, delta in pairs(sizes) do redis.call('HINCRBY', KEYS[10], topic, delta) end
  if total ~= 0 then redis.call('INCRBY', KEYS[11], total) end
  for topic, at in pairs(expiries) do redis.call('ZADD', KEYS[9], at, topic) end
  sizes, expiries, total = {}, {}, 0
end
-- Drops the entries before `id` (an entry); they count the topic's average each.
local function drop_before(topic, key, id)
  flush()
  local len = redis.call('XLEN', key)
  local gone = redis.call('XTRIM', key, 'MINID', id)
  if gone > 0 then
    local size = tonumber(redis.call('HGET', KEYS[10], topic) or '0')
    account(topic, -math.floor(size * gone / len))
    local first = split_id(id)
    redis.call('ZADD', KEYS[8], first, topic)
  end
end
-- Keeps the newest change at or before `cutoff`, the base it builds on, and all after.
local function trim_age(topic, key, cutoff)
  if cutoff < 0 then return end
  local older = redis.call('XREVRANGE', key, n(cutoff), '-', 'COUNT', FULL_EVERY + 1)
  for _, e in ipairs(older) do
    if is_base(e) then drop_before(topic, key, e[1]) return end
  end
end
local function forget(topic, key)
  flush()
  newest[topic] = nil
  local size = tonumber(redis.call('HGET', KEYS[10], topic) or '0')
  redis.call('INCRBY', KEYS[11], -size)
  redis.call('HDEL', KEYS[10], topic)
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[8], topic)
end
-- Keeps of the topic's history only its newest change, as a full state (from the state it
-- holds, when that is still the newest change's); nothing if that is not known.
local function compact(topic, key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  if not last then return forget(topic, key) end
  local t, rev = split_id(last[1])
  local state = redis.call('HGET', KEYS[2], topic)
  local current = tonumber(redis.call('HGET', KEYS[1], topic) or '0')
  forget(topic, key)
  if current == rev then
    local body = state or ''
    redis.call('XADD', key, last[1], 'e', (state and 'f' or 'd') .. body)
    redis.call('ZADD', KEYS[8], t, topic)
    account(topic, #body + OVERHEAD)
  end
end
-- Over the bound: the oldest topic's oldest chain goes; one with a single chain keeps its
-- newest change only, as a full state.
local function bound()
  local skip = 0
  for _ = 1, 64 do
    flush()
    if tonumber(redis.call('GET', KEYS[11]) or '0') <= HMAX then return end
    local topic = redis.call('ZRANGE', KEYS[8], skip, skip)[1]
    if not topic then return end
    local key = HPREFIX .. topic
    local head = redis.call('XRANGE', key, '-', '+', 'COUNT', FULL_EVERY + 2)
    local cut
    for j = 2, #head do
      if is_base(head[j]) then cut = head[j][1] break end
    end
    if cut then
      drop_before(topic, key, cut)
    elseif #head == 0 then
      forget(topic, key)
    elseif #head == 1 then
      skip = skip + 1
    else
      compact(topic, key)
    end
  end
end
-- Records one change (kind `s` set or `d` removed) for `keep` ms.
local function record(topic, kind, rev, body, patch, time, keep)
  local key = HPREFIX .. topic
  rev, time, keep = tonumber(rev), tonumber(time), tonumber(keep)
  local last = newest[topic]
  if not last then
    local e = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
    if e then last = {split_id(e[1])} end
  end
  local gap = true
  if last then
    local lt, lr = last[1], last[2]
    if time < lt then time = lt end
    if time == lt and rev <= lr then time = lt + 1 end
    gap = lr ~= rev - 1
  end
  local k, b = 'p', patch
  if kind == 'd' then
    k, b = 'd', ''
  elseif gap or patch == '' or rev % FULL_EVERY == 0 then
    k, b = 'f', body
  end
  redis.call('XADD', key, n(time) .. '-' .. n(rev), 'e', k .. b)
  newest[topic] = {time, rev}
  if not last then redis.call('ZADD', KEYS[8], time, topic) end
  account(topic, #b + OVERHEAD)
  expiries[topic] = time + keep
  if k ~= 'p' then trim_age(topic, key, time - keep) end
end
";

/// `script` after [`HISTORY_LUA`] and the constants it uses.
pub(crate) fn with_history_lua(script: &str) -> String {
    format!("local FULL_EVERY, OVERHEAD = {FULL_EVERY}, {ENTRY_OVERHEAD}\n{HISTORY_LUA}{script}")
}

/// Compacts the topics whose newest change is past retention to that change alone (a full
/// state), then holds the bound. ARGV[1] now (Unix ms); keys and ARGV[3..4] as [`HISTORY_LUA`].
/// Returns the bytes counted.
pub(crate) const SWEEP_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', n(now), 'LIMIT', 0, 64)
for _, topic in ipairs(due) do
  local key = HPREFIX .. topic
  if redis.call('XLEN', key) > 1 then compact(topic, key) end
  redis.call('ZREM', KEYS[9], topic)
end
bound()
flush()
return tonumber(redis.call('GET', KEYS[11]) or '0')
";

/// The id of a topic stream's first entry whose rev is at least ARGV[1] (`false`: none): a
/// binary search over time, as time and rev grow together.
pub(crate) const FIND_REV_SCRIPT: &str = r"
local rev = tonumber(ARGV[1])
local function split_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not last then return false end
local lo = split_id(first[1])
local hi, last_rev = split_id(last[1])
if last_rev < rev then return false end
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local e = redis.call('XREVRANGE', KEYS[1], string.format('%d', mid), '-', 'COUNT', 1)[1]
  local _, r = split_id(e[1])
  if r >= rev then hi = mid else lo = mid + 1 end
end
return redis.call('XRANGE', KEYS[1], string.format('%d-%d', lo, rev), '+', 'COUNT', 1)[1][1]
";

/// One entry of a topic stream.
struct Raw {
    time_ms: u64,
    rev: u64,
    /// The kind, then the body (never empty).
    entry: Vec<u8>,
}

impl Raw {
    fn kind(&self) -> u8 {
        self.entry[0]
    }

    fn body(&self) -> &[u8] {
        &self.entry[1..]
    }

    fn is_base(&self) -> bool {
        matches!(self.kind(), b'f' | b'd')
    }

    fn id(&self) -> String {
        format!("{}-{}", self.time_ms, self.rev)
    }
}

/// An `XRANGE`/`XREVRANGE` answer as entries.
fn raws(value: RedisValue) -> Result<Vec<Raw>, String> {
    let items = match value {
        RedisValue::Array(items) => items,
        RedisValue::Nil => Vec::new(),
        other => return Err(format!("unexpected range answer {other:?}")),
    };
    stream_items(items)?
        .into_iter()
        .map(|(id, fields)| {
            let (time, rev) = id.split_once('-').ok_or("an entry id without '-'")?;
            let number = |s: &str| s.parse::<u64>().map_err(|e| format!("entry id {id}: {e}"));
            let entry = match fields.into_iter().nth(1) {
                Some(e) if !e.is_empty() => e,
                _ => return Err(format!("entry {id} is empty")),
            };
            Ok(Raw {
                time_ms: number(time)?,
                rev: number(rev)?,
                entry,
            })
        })
        .collect()
}

/// A state rebuilt entry by entry (oldest first), from a base on.
#[derive(Default)]
struct Walk {
    /// `None` until a base is applied.
    state: Option<Option<Value>>,
    rev: u64,
}

impl Walk {
    /// From the newest base of `older` (oldest first) on: what the topic was after them.
    fn from(older: &[Raw]) -> Result<Walk, String> {
        let mut walk = Walk::default();
        if let Some(base) = older.iter().rposition(Raw::is_base) {
            for raw in &older[base..] {
                walk.apply(raw)?;
            }
        }
        Ok(walk)
    }

    fn apply(&mut self, raw: &Raw) -> Result<(), String> {
        let parse = |b: &[u8]| {
            serde_json::from_slice::<Value>(b).map_err(|e| format!("a damaged entry: {e}"))
        };
        match raw.kind() {
            b'f' => self.state = Some(Some(parse(raw.body())?)),
            b'd' => self.state = Some(None),
            b'p' => {
                let Some(state) = self.state.as_mut().filter(|_| raw.rev == self.rev + 1) else {
                    return Err("the history changed while it was read; ask again".into());
                };
                merge::apply(state.get_or_insert(Value::Null), &parse(raw.body())?);
            }
            other => return Err(format!("an entry of unknown kind {other}")),
        }
        self.rev = raw.rev;
        Ok(())
    }

    /// The state now (`None`: removed).
    fn state(&self) -> Option<&Value> {
        self.state.as_ref().and_then(Option::as_ref)
    }

    fn serialized(&self) -> Result<Option<Vec<u8>>, String> {
        self.state()
            .map(|s| serde_json::to_vec(s).map_err(|e| format!("cannot serialize: {e}")))
            .transpose()
    }
}

/// One field's value entry by entry (oldest first), from a base on, without rebuilding
/// the states: a patch sets the field, removes it or leaves it (most patches do not name
/// it, and are not even parsed), and only full states are read whole.
struct FieldWalk<'p> {
    pointer: &'p str,
    /// The pointer's keys, unescaped (RFC 6901).
    keys: Vec<String>,
    /// The first key as the hub writes it in JSON: a patch without these bytes leaves the
    /// field as it was.
    first: Option<Vec<u8>>,
    /// `None` until a base is applied.
    value: Option<Option<f64>>,
    rev: u64,
}

impl<'p> FieldWalk<'p> {
    fn new(pointer: &'p str) -> FieldWalk<'p> {
        let keys: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|k| k.replace("~1", "/").replace("~0", "~"))
            .collect();
        let first = keys.first().and_then(|k| serde_json::to_vec(k).ok());
        FieldWalk {
            pointer,
            keys,
            first,
            value: None,
            rev: 0,
        }
    }

    /// The field's number after `raw`.
    fn apply(&mut self, raw: &Raw) -> Result<Option<f64>, String> {
        let parse = |b: &[u8]| {
            serde_json::from_slice::<Value>(b).map_err(|e| format!("a damaged entry: {e}"))
        };
        let value = match raw.kind() {
            b'f' => number_at(&parse(raw.body())?, self.pointer),
            b'd' => None,
            b'p' => {
                let Some(current) = self.value.filter(|_| raw.rev == self.rev + 1) else {
                    return Err("the history changed while it was read; ask again".into());
                };
                // A patch that is not an object replaces the whole state.
                let named = raw.body().first() != Some(&b'{')
                    || self
                        .first
                        .as_ref()
                        .is_none_or(|k| raw.body().windows(k.len()).any(|w| w == k.as_slice()));
                if named {
                    patched(current, &parse(raw.body())?, &self.keys)
                } else {
                    current
                }
            }
            other => return Err(format!("an entry of unknown kind {other}")),
        };
        self.value = Some(value);
        self.rev = raw.rev;
        Ok(value)
    }
}

/// The number at `keys` after merging `patch` (RFC 7396) into a state where it was
/// `current`: as [`number_at`] reads the merged state.
fn patched(current: Option<f64>, patch: &Value, keys: &[String]) -> Option<f64> {
    let mut at = patch;
    for key in keys {
        match at {
            Value::Object(map) => match map.get(key) {
                Some(v) => at = v,
                None => return current,
            },
            // Anything but an object replaces what was there, the field with it.
            _ => return None,
        }
    }
    // What the field is set to (an object merged there is no number either).
    at.as_f64().filter(|v| v.is_finite())
}

/// A time as a stream id's start (`ms-0`) or end (`ms`: up to `ms-max`).
fn ms(t: u64) -> String {
    t.to_string()
}

impl RedisEngine {
    fn history_key(&self, topic: &str) -> String {
        format!("{}{topic}", self.keys.history)
    }

    /// Runs `f` on a connection of the readers' pool.
    fn reading<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, String>,
    ) -> Result<T, EngineError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut connection = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let result = f(&mut connection).map_err(|e| self.error("the history query failed", e))?;
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(connection);
        Ok(result)
    }

    /// Entries after `after` (an id, exclusive) up to `to_ms`, at most `count`, oldest first.
    fn range_after(
        connection: &mut Connection,
        key: &str,
        after: &Raw,
        to_ms: u64,
        count: usize,
    ) -> Result<Vec<Raw>, String> {
        let value: RedisValue = redis::cmd("XRANGE")
            .arg(key)
            .arg(format!("({}", after.id()))
            .arg(ms(to_ms))
            .arg("COUNT")
            .arg(count)
            .query(connection)
            .map_err(|e| e.to_string())?;
        raws(value)
    }

    pub(crate) fn history_changes(&self, query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        let key = self.history_key(query.topic);
        self.reading(|connection| {
            let from_ms = match query.start {
                Start::Time(t) => t.max(query.kept_since_ms),
                Start::Rev(_) => query.kept_since_ms,
            };
            let mut start = format!("{from_ms}-0");
            if let Start::Rev(rev) = query.start {
                let found: Option<String> = self
                    .find_rev
                    .key(&key)
                    .arg(rev)
                    .invoke(connection)
                    .map_err(|e| e.to_string())?;
                match found {
                    Some(id) if later(&id, &start) => start = id,
                    Some(_) => {}
                    None => return Ok(Page::default()),
                }
            }
            let want = query.limit.saturating_add(1);
            // The entries before the start (none before `0-0`), for the state there.
            let mut pipe = redis::pipe();
            pipe.atomic();
            if start != "0-0" {
                pipe.cmd("XREVRANGE")
                    .arg(&key)
                    .arg(format!("({start}"))
                    .arg("-")
                    .arg("COUNT")
                    .arg(FULL_EVERY);
            }
            pipe.cmd("XRANGE")
                .arg(&key)
                .arg(&start)
                .arg(ms(query.to_ms))
                .arg("COUNT")
                .arg(want.min(CHUNK));
            let mut answers: Vec<RedisValue> = pipe.query(connection).map_err(|e| e.to_string())?;
            let first = answers.pop().unwrap_or(RedisValue::Nil);
            let mut older = raws(answers.pop().unwrap_or(RedisValue::Nil))?;
            older.reverse();
            let mut walk = Walk::from(&older)?;
            let mut page = Page::default();
            let mut chunk = raws(first)?;
            let mut read = chunk.len();
            loop {
                let full = chunk.len() == want.min(CHUNK);
                for raw in &chunk {
                    if page.changes.len() >= query.limit {
                        page.next_rev = Some(raw.rev);
                        return Ok(page);
                    }
                    walk.apply(raw)?;
                    page.changes.push(Change {
                        rev: raw.rev,
                        time_ms: raw.time_ms,
                        state: walk.serialized()?,
                    });
                }
                let Some(last) = chunk.last().filter(|_| full && read < want) else {
                    return Ok(page);
                };
                chunk = Self::range_after(connection, &key, last, query.to_ms, CHUNK)?;
                read += chunk.len();
            }
        })
    }

    pub(crate) fn history_state_at(&self, topic: &str, at_ms: u64) -> Result<At, EngineError> {
        let key = self.history_key(topic);
        self.reading(|connection| {
            let (older, first, rev): (RedisValue, RedisValue, Option<u64>) = redis::pipe()
                .atomic()
                .cmd("XREVRANGE")
                .arg(&key)
                .arg(ms(at_ms))
                .arg("-")
                .arg("COUNT")
                .arg(FULL_EVERY + 1)
                .cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .hget(&self.keys.rev, topic)
                .query(connection)
                .map_err(|e| e.to_string())?;
            let mut older = raws(older)?;
            older.reverse();
            let Some(in_effect) = older.last() else {
                // Before the first change kept: before the topic existed, unless older
                // ones were dropped or never recorded.
                let gone = match raws(first)?.first() {
                    Some(first) => first.rev > 1,
                    None => rev.is_some(),
                };
                return Ok(if gone { At::Gone } else { At::Absent });
            };
            let (rev, time_ms) = (in_effect.rev, in_effect.time_ms);
            let walk = Walk::from(&older)?;
            if walk.state.is_none() || walk.rev != rev {
                return Err("a damaged history: no full state in reach".into());
            }
            Ok(match walk.serialized()? {
                Some(state) => At::Found(Change {
                    rev,
                    time_ms,
                    state: Some(state),
                }),
                None => At::Absent,
            })
        })
    }

    pub(crate) fn history_field_points(
        &self,
        topic: &str,
        pointer: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        let key = self.history_key(topic);
        self.reading(|connection| {
            // Two chains back: the newest base's own value is then known to change or not.
            let (older, first): (RedisValue, RedisValue) = redis::pipe()
                .atomic()
                .cmd("XREVRANGE")
                .arg(&key)
                .arg(ms(from_ms))
                .arg("-")
                .arg("COUNT")
                .arg(2 * FULL_EVERY + 1)
                .cmd("XRANGE")
                .arg(&key)
                .arg(format!("{}-0", from_ms.saturating_add(1)))
                .arg(ms(to_ms))
                .arg("COUNT")
                .arg(CHUNK)
                .query(connection)
                .map_err(|e| e.to_string())?;
            let mut older = raws(older)?;
            older.reverse();
            let newest_base = older.iter().rposition(Raw::is_base);
            let start = newest_base
                .and_then(|b| older[..b].iter().rposition(Raw::is_base))
                .or(newest_base);
            let mut out = Vec::new();
            let mut walk = FieldWalk::new(pointer);
            // The value held and since when (the last change of it before `from_ms`).
            let mut held: Option<(u64, Option<f64>)> = None;
            for raw in start.map_or(&[][..], |s| &older[s..]) {
                let value = walk.apply(raw)?;
                if held.is_none_or(|(_, v)| !same(v, value)) {
                    held = Some((raw.time_ms, value));
                }
            }
            // A field that holds no number counts only as a change at `from_ms` itself.
            if let Some((time_ms, value)) = held.filter(|(t, v)| v.is_some() || *t >= from_ms) {
                out.push(Point { time_ms, value });
            }
            let mut value = held.and_then(|(_, v)| v);
            let mut chunk = raws(first)?;
            loop {
                for raw in &chunk {
                    let now = walk.apply(raw)?;
                    if !same(value, now) {
                        out.push(Point {
                            time_ms: raw.time_ms,
                            value: now,
                        });
                        value = now;
                    }
                }
                let Some(last) = chunk.last().filter(|_| chunk.len() == CHUNK) else {
                    return Ok(out);
                };
                chunk = Self::range_after(connection, &key, last, to_ms, CHUNK)?;
            }
        })
    }

    /// Trims idle topics and holds the bound ([`SWEEP_SCRIPT`]); returns the bytes counted.
    pub(crate) fn history_sweep(&self, connection: &mut Connection) -> Result<u64, EngineError> {
        let mut invocation = self.sweep.prepare_invoke();
        self.history_keys(&mut invocation);
        invocation
            .arg(crate::unix_ms())
            .arg("")
            .arg(&self.keys.history)
            .arg(self.config.history_max_bytes);
        invocation
            .invoke(connection)
            .map_err(|e| self.error("the history sweep failed", e))
    }

    /// The eleven keys both scripts take (see [`HISTORY_LUA`]).
    pub(crate) fn history_keys(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        let k = &self.keys;
        for key in [
            &k.rev, &k.state, &k.seq, &k.counter, &k.log, &k.epoch, &k.time, &k.hfirst, &k.hexp,
            &k.hsize, &k.htotal,
        ] {
            invocation.key(key);
        }
    }
}

/// Whether two values a field held are the same (bit for bit, as the embedded store
/// compares them).
fn same(a: Option<f64>, b: Option<f64>) -> bool {
    a.map(f64::to_bits) == b.map(f64::to_bits)
}

/// Whether stream id `a` comes after `b` (both `ms-seq`).
fn later(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        id.split_once('-')
            .and_then(|(m, s)| Some((m.parse::<u64>().ok()?, s.parse::<u64>().ok()?)))
    };
    parse(a) > parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `patched` reads what merging and then reading the state would.
    #[test]
    fn a_patch_read_at_a_pointer_is_the_merged_state_read_there() {
        let states = [
            json!({"rf": {"level": -40, "q": 1}, "battery": 80}),
            json!({"rf": 5, "battery": "low"}),
            json!({"a/b": {"c~": 1}}),
            json!(7),
        ];
        let patches = [
            json!({"battery": 79}),
            json!({"rf": {"level": -41}}),
            json!({"rf": {"q": 2}}),
            json!({"rf": null}),
            json!({"rf": 3}),
            json!({"rf": {"level": {"x": 1}}}),
            json!({"a/b": {"c~": 2.5}}),
            json!(12),
            serde_json::from_str(r#"{"battery": 1e400}"#).expect("JSON"),
        ];
        for state in &states {
            for patch in &patches {
                for pointer in ["/rf/level", "/battery", "/a~1b/c~0", "", "/rf"] {
                    let mut merged = state.clone();
                    merge::apply(&mut merged, patch);
                    let keys = FieldWalk::new(pointer).keys;
                    assert_eq!(
                        patched(number_at(state, pointer), patch, &keys),
                        number_at(&merged, pointer),
                        "{state} + {patch} at {pointer:?}"
                    );
                }
            }
        }
    }
}
