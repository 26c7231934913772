//! The durable history in the store: every recorded change, by topic, and dropped again
//! once it is older than its topic keeps it or the history outgrows `history_max_bytes`.
//! A commit writes its changes to the pending log (`history_pending.rs`), in the same
//! transaction as the states they lead to; they come here from there, many at a time.
//!
//! # Layout
//!
//! * `history`: (topic, rev) → `time: u64 LE | kind: u8 | bytes`: kind 0 a removal (no
//!   bytes), 1 the full state, 2 the RFC 7396 merge patch from the change before. A full
//!   state is written at the topic's first change, after a removal or a gap, when no
//!   patch expresses the change, and at every rev divisible by [`FULL_EVERY`], so rebuilding any state
//!   applies at most that many patches. Patches keep a typical device update (1-2 fields
//!   of a 300-byte state) to a few dozen bytes.
//! * `history_fields`: (topic, pointer, start time, first rev) → blocks of up to
//!   [`BLOCK_POINTS`] points `time: u64 LE | value: f64 LE` (NaN: the field then held no
//!   number). One column per numeric field, written when the field changes: a `series`
//!   reads one field's 16-byte points instead of parsing every state.
//! * `history_topics`: topic → [`TopicMeta`] (its first recorded change and the one after,
//!   how long it keeps), rewritten only when those change; the newest change is read from
//!   `history` itself.
//! * `history_expiry`: (first change's time + keep, topic) and `history_oldest`: (first
//!   change's time, topic): which topic's oldest change expires first, and which is the
//!   oldest overall (dropped first when over the byte budget).
//! * what the history holds in all, as counted by the entries and points written, is kept
//!   in the store's `meta` table (`"history_bytes"`), beside `seq`.
//!
//! Retention runs each time changes come from the log, in the same transaction, a bounded
//! number of deletions at a time (twice the changes moved, at least [`SWEEP_BUDGET`]), so
//! it keeps pace with writes and never pauses them for long. The newest change older than the
//! cut-off is kept: it says what the topic was at the cut-off.
//!
//! Times are the hub's, made monotonic per topic (a clock stepping back is recorded as no
//! time passing), so a topic's changes are ordered by time as by rev.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde_json::Value;
use statecast_core::merge;

use crate::history_pending::PendingChange;

pub(crate) const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
pub(crate) const FIELDS: TableDefinition<(&str, &str, u64, u64), &[u8]> =
    TableDefinition::new("history_fields");
pub(crate) const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("history_topics");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("history_expiry");
const OLDEST: TableDefinition<(u64, &str), ()> = TableDefinition::new("history_oldest");

/// A full state every this many changes (see the module docs).
pub(crate) const FULL_EVERY: u64 = 64;
/// Points per field block: small, as every new point rewrites its block.
pub(crate) const BLOCK_POINTS: usize = 32;
const POINT_LEN: usize = 16;
/// Deletions per sweep at least, for retention.
const SWEEP_BUDGET: usize = 512;
/// What an entry costs beyond its bytes (its key and the B-tree's share), for the budget.
const ENTRY_OVERHEAD: u64 = 24;

pub(crate) const KIND_REMOVED: u8 = 0;
pub(crate) const KIND_FULL: u8 = 1;
pub(crate) const KIND_PATCH: u8 = 2;

/// The default of `history_max_bytes`: what all topics' history may hold.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// What the store knows of one topic's recorded changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TopicMeta {
    pub first_rev: u64,
    pub first_ms: u64,
    /// The time of the change after the first (0: there is none).
    pub second_ms: u64,
    /// The newest change's rev and time: not stored (a change would rewrite this row), read
    /// from the newest entry whenever the row is.
    pub last_rev: u64,
    pub last_ms: u64,
    /// How long it keeps changes (its last change's policy).
    pub keep_ms: u64,
    /// Whether older changes of it were dropped (or it was recorded from after its start).
    pub truncated: bool,
}

impl TopicMeta {
    const LEN: usize = 8 * 4 + 1;

    /// What the row stores.
    fn stored(&self) -> (u64, u64, u64, u64, bool) {
        (
            self.first_rev,
            self.first_ms,
            self.second_ms,
            self.keep_ms,
            self.truncated,
        )
    }

    /// When its oldest change may go: once the one after it is past retention too.
    fn expires(&self) -> u64 {
        match self.second_ms {
            0 => u64::MAX,
            t => t.saturating_add(self.keep_ms),
        }
    }

    fn encode(&self) -> [u8; TopicMeta::LEN] {
        let mut out = [0; TopicMeta::LEN];
        for (i, v) in [self.first_rev, self.first_ms, self.second_ms, self.keep_ms]
            .iter()
            .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out[TopicMeta::LEN - 1] = u8::from(self.truncated);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<TopicMeta> {
        if bytes.len() != TopicMeta::LEN {
            return None;
        }
        let n = |i: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        Some(TopicMeta {
            first_rev: n(0),
            first_ms: n(1),
            second_ms: n(2),
            keep_ms: n(3),
            last_rev: 0,
            last_ms: 0,
            truncated: bytes[TopicMeta::LEN - 1] != 0,
        })
    }
}

/// One entry of the `history` table, decoded.
pub(crate) struct Entry<'a> {
    pub time_ms: u64,
    pub kind: u8,
    pub bytes: &'a [u8],
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Option<Entry<'_>> {
    let (time, rest) = bytes.split_first_chunk::<8>()?;
    let (kind, rest) = rest.split_first()?;
    Some(Entry {
        time_ms: u64::from_le_bytes(*time),
        kind: *kind,
        bytes: rest,
    })
}

fn encode_entry(time_ms: u64, kind: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(bytes);
}

/// A point held back until the move writes its field: time, rev, value.
type HeldPoint = (u64, u64, f64);

/// The history's tables in one write transaction, while a commit records its changes.
pub(crate) struct Recorder<'t> {
    entries: Table<'t, (&'static str, u64), &'static [u8]>,
    fields: Table<'t, (&'static str, &'static str, u64, u64), &'static [u8]>,
    topics: Table<'t, &'static str, &'static [u8]>,
    expiry: Table<'t, (u64, &'static str), ()>,
    oldest: Table<'t, (u64, &'static str), ()>,
    /// Bytes the whole history holds, as counted for `history_max_bytes` (kept by the caller
    /// in the store's `meta` table).
    total: u64,
    buf: Vec<u8>,
    /// Each topic's meta as this move has left it (its newest change included), so that
    /// of a topic's changes in one move only the first reads its meta. Not used once the
    /// sweep begins, which changes metas behind it.
    metas: HashMap<String, Option<TopicMeta>>,
    /// Points recorded but not written yet, by (topic, pointer), oldest first: written
    /// once per move, a block at a time, where writing each one rewrote its block.
    points: BTreeMap<(String, String), Vec<HeldPoint>>,
    sweeping: bool,
}

type StoreResult<T> = Result<T, String>;

fn err(what: &str) -> impl Fn(redb::StorageError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl<'t> Recorder<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction, total: u64) -> StoreResult<Recorder<'t>> {
        let open = |e: redb::TableError| format!("cannot open a history table: {e}");
        Ok(Recorder {
            entries: txn.open_table(ENTRIES).map_err(open)?,
            fields: txn.open_table(FIELDS).map_err(open)?,
            topics: txn.open_table(TOPICS).map_err(open)?,
            expiry: txn.open_table(EXPIRY).map_err(open)?,
            oldest: txn.open_table(OLDEST).map_err(open)?,
            total,
            buf: Vec::new(),
            metas: HashMap::new(),
            points: BTreeMap::new(),
            sweeping: false,
        })
    }

    /// What the history holds now (see [`Recorder::total`]'s field).
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Records one change, moved from the pending log (`history_pending.rs`).
    pub(crate) fn record(&mut self, change: &PendingChange<'_>) -> StoreResult<()> {
        let topic = change.topic;
        let stored = self.meta(topic)?;
        // Recorded already (a move redone after a crash took it again): revs only grow.
        if stored.is_some_and(|m| change.rev <= m.last_rev) {
            return Ok(());
        }
        let time_ms = stored.map_or(change.time_ms, |m| change.time_ms.max(m.last_ms));
        let mut meta = stored.unwrap_or(TopicMeta {
            first_rev: change.rev,
            first_ms: time_ms,
            // Recorded from after the topic's creation: what came before is not known.
            truncated: change.rev != 1,
            ..TopicMeta::default()
        });
        let (kind, bytes) = match (change.state, change.patch) {
            (None, _) => (KIND_REMOVED, &[][..]),
            (Some(_), Some(patch))
                if stored.is_some()
                    && meta.last_rev + 1 == change.rev
                    && !change.rev.is_multiple_of(FULL_EVERY) =>
            {
                (KIND_PATCH, patch)
            }
            (Some(state), _) => (KIND_FULL, state),
        };
        let mut buf = std::mem::take(&mut self.buf);
        encode_entry(time_ms, kind, bytes, &mut buf);
        self.entries
            .insert((topic, change.rev), buf.as_slice())
            .map_err(err("cannot write a history entry"))?;
        self.total += buf.len() as u64 + ENTRY_OVERHEAD;
        self.buf = buf;
        for &(pointer, value) in &change.fields {
            self.total += self.append_point(topic, pointer, change.rev, time_ms, value)?;
        }

        let before = stored;
        if meta.first_rev != change.rev && meta.second_ms == 0 {
            meta.second_ms = time_ms;
        }
        meta.keep_ms = change.keep_ms;
        // The row changes only when its bounds or retention do, not with every change.
        if before.is_none_or(|b| b.stored() != meta.stored()) {
            self.reindex(topic, before.as_ref(), &meta)?;
            self.put_meta(topic, &meta)?;
        }
        meta.last_rev = change.rev;
        meta.last_ms = time_ms;
        self.metas.insert(topic.to_owned(), Some(meta));
        Ok(())
    }

    fn append_point(
        &mut self,
        topic: &str,
        pointer: &str,
        rev: u64,
        time_ms: u64,
        value: f64,
    ) -> StoreResult<u64> {
        self.points
            .entry((topic.to_owned(), pointer.to_owned()))
            .or_default()
            .push((time_ms, rev, value));
        Ok(POINT_LEN as u64)
    }

    /// Writes the points recorded so far: each field's last block once, filled up, then
    /// new blocks of [`BLOCK_POINTS`].
    fn write_points(&mut self) -> StoreResult<()> {
        const FULL: usize = BLOCK_POINTS * POINT_LEN;
        for ((topic, pointer), points) in std::mem::take(&mut self.points) {
            let (topic, pointer) = (topic.as_str(), pointer.as_str());
            let mut block = self
                .fields
                .range((topic, pointer, 0, 0)..=(topic, pointer, u64::MAX, u64::MAX))
                .map_err(err("cannot read a field block"))?
                .next_back()
                .transpose()
                .map_err(err("cannot read a field block"))?
                .map(|(k, v)| (k.value().2, k.value().3, v.value().to_vec()))
                .filter(|(_, _, bytes)| bytes.len() < FULL);
            for (time_ms, rev, value) in points {
                let mut point = [0; POINT_LEN];
                point[..8].copy_from_slice(&time_ms.to_le_bytes());
                point[8..].copy_from_slice(&value.to_le_bytes());
                match &mut block {
                    Some((_, _, bytes)) if bytes.len() < FULL => bytes.extend_from_slice(&point),
                    _ => {
                        if let Some((start, first_rev, bytes)) = block.take() {
                            self.fields
                                .insert((topic, pointer, start, first_rev), bytes.as_slice())
                                .map_err(err("cannot write a field block"))?;
                        }
                        block = Some((time_ms, rev, point.to_vec()));
                    }
                }
            }
            if let Some((start, first_rev, bytes)) = block {
                self.fields
                    .insert((topic, pointer, start, first_rev), bytes.as_slice())
                    .map_err(err("cannot write a field block"))?;
            }
        }
        Ok(())
    }

    /// Drops changes past retention and, over `max_bytes`, the oldest ones: at most
    /// `budget` deletions, and at least [`SWEEP_BUDGET`].
    pub(crate) fn sweep(&mut self, now_ms: u64, max_bytes: u64, budget: usize) -> StoreResult<()> {
        self.finish()?;
        self.sweeping = true;
        self.metas.clear();
        let mut budget = budget.max(SWEEP_BUDGET);
        while budget > 0 {
            let due = self
                .expiry
                .first()
                .map_err(err("cannot read the history's expiry"))?
                .map(|(k, _)| (k.value().0, k.value().1.to_string()));
            let Some((at, topic)) = due.filter(|(at, _)| *at <= now_ms) else {
                break;
            };
            let Some(meta) = self.meta(&topic)? else {
                self.expiry
                    .remove((at, topic.as_str()))
                    .map_err(err("cannot update the history's expiry"))?;
                continue;
            };
            let cutoff = now_ms.saturating_sub(meta.keep_ms);
            if !self.drop_oldest(&topic, meta, Cut::Age { cutoff }, &mut budget)? {
                break;
            }
        }
        let mut skipped = 0;
        while budget > 0 && self.total > max_bytes && skipped < 16 {
            let oldest: Vec<String> = self
                .oldest
                .iter()
                .map_err(err("cannot read the history's order"))?
                .skip(skipped)
                .take(1)
                .map(|r| r.map(|(k, _)| k.value().1.to_string()))
                .collect::<Result<_, _>>()
                .map_err(err("cannot read the history's order"))?;
            let Some(topic) = oldest.into_iter().next() else {
                break;
            };
            let Some(meta) = self.meta(&topic)? else {
                skipped += 1;
                continue;
            };
            let over = self.total - max_bytes;
            if !self.drop_oldest(&topic, meta, Cut::Bytes { over }, &mut budget)? {
                // Its one change left is what it is now: the next oldest topic then.
                skipped += 1;
            }
        }
        Ok(())
    }

    /// Deletes the topic's oldest changes as `cut` says, never the newest (what the topic
    /// is now), and the points of its fields from before what is left; the change after
    /// the last one deleted becomes a full state. Returns whether it deleted anything.
    fn drop_oldest(
        &mut self,
        topic: &str,
        mut meta: TopicMeta,
        cut: Cut,
        budget: &mut usize,
    ) -> StoreResult<bool> {
        let rows: Vec<(u64, u64, u64)> = self
            .entries
            .range((topic, meta.first_rev)..=(topic, meta.last_rev))
            .map_err(err("cannot read history"))?
            .take(*budget + 2)
            .map(|r| {
                r.map(|(k, v)| {
                    let time = decode_entry(v.value()).map_or(0, |e| e.time_ms);
                    (k.value().1, time, v.value().len() as u64 + ENTRY_OVERHEAD)
                })
            })
            .collect::<Result<_, _>>()
            .map_err(err("cannot read history"))?;
        let mut deleted = 0;
        let mut freed = 0;
        for pair in rows.windows(2) {
            let (rev, _, size) = pair[0];
            let go = match cut {
                // The newest change before the cut-off stays: it is the state then.
                Cut::Age { cutoff } => pair[1].1 < cutoff,
                Cut::Bytes { over } => freed < over,
            };
            if *budget == 0 || !go {
                break;
            }
            self.entries
                .remove((topic, rev))
                .map_err(err("cannot delete history"))?;
            freed += size;
            deleted += 1;
            *budget -= 1;
        }
        if deleted == 0 {
            return Ok(false);
        }
        let before = meta;
        let (first_rev, first_ms, _) = rows[deleted];
        self.make_full(topic, meta.first_rev, first_rev)?;
        meta.first_rev = first_rev;
        meta.first_ms = first_ms;
        meta.second_ms = rows.get(deleted + 1).map_or(0, |r| r.1);
        if meta.second_ms == 0 && first_rev < meta.last_rev {
            meta.second_ms = self
                .entries
                .range((topic, first_rev + 1)..=(topic, meta.last_rev))
                .map_err(err("cannot read history"))?
                .next()
                .transpose()
                .map_err(err("cannot read history"))?
                .and_then(|(_, v)| decode_entry(v.value()).map(|e| e.time_ms))
                .unwrap_or(0);
        }
        meta.truncated = true;
        let cutoff = match cut {
            Cut::Age { cutoff } => cutoff.min(first_ms),
            Cut::Bytes { .. } => first_ms,
        };
        freed += self.drop_fields_before(topic, cutoff, budget)?;
        self.total = self.total.saturating_sub(freed);
        self.reindex(topic, Some(&before), &meta)?;
        self.put_meta(topic, &meta)?;
        Ok(true)
    }

    /// Deletes every field block of `topic` that ends before `cutoff`.
    fn drop_fields_before(
        &mut self,
        topic: &str,
        cutoff: u64,
        budget: &mut usize,
    ) -> StoreResult<u64> {
        let mut freed = 0;
        let mut from = String::new();
        loop {
            let next = self
                .fields
                .range((topic, from.as_str(), 0, 0)..)
                .map_err(err("cannot read a field block"))?
                .next()
                .transpose()
                .map_err(err("cannot read a field block"))?
                .map(|(k, _)| (k.value().0.to_string(), k.value().1.to_string()));
            let next = next.and_then(|(t, p)| (t == topic).then_some(p));
            let Some(pointer) = next else { break };
            if *budget == 0 {
                break;
            }
            freed += self.drop_field_blocks(topic, &pointer, cutoff, budget)?;
            // The next pointer sorts after this one and every block of it.
            from = format!("{pointer}\u{0}");
        }
        Ok(freed)
    }

    /// Deletes a field's blocks that end before `cutoff` (whose next block starts at or
    /// before it), keeping the one holding the value at the cut-off.
    fn drop_field_blocks(
        &mut self,
        topic: &str,
        pointer: &str,
        cutoff: u64,
        budget: &mut usize,
    ) -> StoreResult<u64> {
        let starts: Vec<(u64, u64, u64)> = self
            .fields
            .range((topic, pointer, 0, 0)..=(topic, pointer, cutoff, u64::MAX))
            .map_err(err("cannot read a field block"))?
            .take(*budget + 1)
            .map(|r| r.map(|(k, v)| (k.value().2, k.value().3, v.value().len() as u64)))
            .collect::<Result<_, _>>()
            .map_err(err("cannot read a field block"))?;
        let mut freed = 0;
        for &(start, rev, len) in starts.iter().take(starts.len().saturating_sub(1)) {
            self.fields
                .remove((topic, pointer, start, rev))
                .map_err(err("cannot delete a field block"))?;
            freed += len;
            *budget = budget.saturating_sub(1);
        }
        Ok(freed)
    }

    /// Moves the topic's keys in the expiry and age indexes from `before` to `after`.
    fn reindex(
        &mut self,
        topic: &str,
        before: Option<&TopicMeta>,
        after: &TopicMeta,
    ) -> StoreResult<()> {
        let e = |e: redb::StorageError| format!("cannot update the history's indexes: {e}");
        if before.map(TopicMeta::expires) != Some(after.expires()) {
            if let Some(b) = before {
                self.expiry.remove((b.expires(), topic)).map_err(e)?;
            }
            self.expiry
                .insert((after.expires(), topic), ())
                .map_err(e)?;
        }
        if before.map(|b| b.first_ms) != Some(after.first_ms) {
            if let Some(b) = before {
                self.oldest.remove((b.first_ms, topic)).map_err(e)?;
            }
            self.oldest.insert((after.first_ms, topic), ()).map_err(e)?;
        }
        Ok(())
    }

    /// Rewrites the entry at `rev` as a full state (or leaves a full one or a removal).
    fn make_full(&mut self, topic: &str, first_rev: u64, rev: u64) -> StoreResult<()> {
        let state = {
            let rebuilt = rebuild(&self.entries, topic, first_rev, rev)?;
            let entry = self
                .entries
                .get((topic, rev))
                .map_err(err("cannot read history"))?;
            let Some(entry) = entry else { return Ok(()) };
            let value = entry.value();
            let Some(e) = decode_entry(value) else {
                return Ok(());
            };
            if e.kind != KIND_PATCH {
                return Ok(());
            }
            let Some(state) = rebuilt else { return Ok(()) };
            let mut buf = Vec::new();
            encode_entry(e.time_ms, KIND_FULL, &state, &mut buf);
            buf
        };
        self.entries
            .insert((topic, rev), state.as_slice())
            .map_err(err("cannot write a history entry"))?;
        Ok(())
    }

    /// Writes what is held back (the points): before anything reads the tables.
    pub(crate) fn finish(&mut self) -> StoreResult<()> {
        self.write_points()
    }

    fn meta(&mut self, topic: &str) -> StoreResult<Option<TopicMeta>> {
        if let Some(meta) = self.metas.get(topic) {
            return Ok(*meta);
        }
        let meta = self
            .topics
            .get(topic)
            .map_err(err("cannot read the history of a topic"))?
            .and_then(|g| TopicMeta::decode(g.value()));
        let meta = with_last(&self.entries, topic, meta)?;
        if !self.sweeping {
            self.metas.insert(topic.to_owned(), meta);
        }
        Ok(meta)
    }

    fn put_meta(&mut self, topic: &str, meta: &TopicMeta) -> StoreResult<()> {
        self.topics
            .insert(topic, meta.encode().as_slice())
            .map_err(err("cannot write the history of a topic"))?;
        Ok(())
    }
}

/// How [`Recorder::drop_oldest`] cuts.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Changes that a newer one older than `cutoff` (Unix ms) has replaced.
    Age { cutoff: u64 },
    /// The oldest changes, until `over` bytes are freed.
    Bytes { over: u64 },
}

/// `meta` with its newest change's rev and time, read from the newest entry.
pub(crate) fn with_last(
    entries: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    topic: &str,
    meta: Option<TopicMeta>,
) -> StoreResult<Option<TopicMeta>> {
    let Some(mut meta) = meta else {
        return Ok(None);
    };
    let last = entries
        .range((topic, meta.first_rev)..=(topic, u64::MAX))
        .map_err(err("cannot read history"))?
        .next_back()
        .transpose()
        .map_err(err("cannot read history"))?;
    let Some((k, v)) = last else {
        return Ok(None);
    };
    meta.last_rev = k.value().1;
    meta.last_ms = decode_entry(v.value()).map_or(0, |e| e.time_ms);
    Ok(Some(meta))
}

/// The state at `rev` (serialized), rebuilt from the last full state at or before it:
/// `None` when the topic was removed then or nothing is recorded.
pub(crate) fn rebuild(
    entries: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    topic: &str,
    first_rev: u64,
    rev: u64,
) -> StoreResult<Option<Vec<u8>>> {
    let mut patches: Vec<Vec<u8>> = Vec::new();
    let mut base: Option<Vec<u8>> = None;
    for row in entries
        .range((topic, first_rev)..=(topic, rev))
        .map_err(err("cannot read history"))?
        .rev()
    {
        let (_, v) = row.map_err(err("cannot read history"))?;
        let Some(e) = decode_entry(v.value()) else {
            return Err(format!("a history entry of {topic:?} is damaged"));
        };
        match e.kind {
            KIND_PATCH => patches.push(e.bytes.to_vec()),
            KIND_FULL => {
                base = Some(e.bytes.to_vec());
                break;
            }
            _ => break,
        }
    }
    let Some(base) = base else {
        return Ok(None);
    };
    if patches.is_empty() {
        return Ok(Some(base));
    }
    let mut state: Value = serde_json::from_slice(&base)
        .map_err(|e| format!("a history entry of {topic:?} is damaged: {e}"))?;
    for patch in patches.iter().rev() {
        let patch: Value = serde_json::from_slice(patch)
            .map_err(|e| format!("a history entry of {topic:?} is damaged: {e}"))?;
        merge::apply(&mut state, &patch);
    }
    serde_json::to_vec(&state)
        .map(Some)
        .map_err(|e| format!("cannot serialize a state: {e}"))
}

/// Copies every history table that `from` has into `to` (a store from before the history
/// had a file of its own: see `history_db.rs`).
pub(crate) fn copy_tables(from: &redb::ReadTransaction, to: &WriteTransaction) -> StoreResult<()> {
    copy(from, to, ENTRIES)?;
    copy(from, to, FIELDS)?;
    copy(from, to, TOPICS)?;
    copy(from, to, EXPIRY)?;
    copy(from, to, OLDEST)
}

/// Deletes every history table from `txn`'s database.
pub(crate) fn delete_tables(txn: &WriteTransaction) -> StoreResult<()> {
    let delete = |name: &str, r: Result<bool, redb::TableError>| {
        r.map(|_| ())
            .map_err(|e| format!("cannot delete {name}: {e}"))
    };
    delete("history", txn.delete_table(ENTRIES))?;
    delete("history_fields", txn.delete_table(FIELDS))?;
    delete("history_topics", txn.delete_table(TOPICS))?;
    delete("history_expiry", txn.delete_table(EXPIRY))?;
    delete("history_oldest", txn.delete_table(OLDEST))
}

fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> StoreResult<()> {
    let source = match from.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(format!("cannot open a history table: {e}")),
    };
    let mut target = to
        .open_table(def)
        .map_err(|e| format!("cannot open a history table: {e}"))?;
    for row in source.iter().map_err(err("cannot read a history table"))? {
        let (k, v) = row.map_err(err("cannot read a history table"))?;
        target
            .insert(k.value(), v.value())
            .map_err(err("cannot write a history table"))?;
    }
    Ok(())
}
