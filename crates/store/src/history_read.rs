//! Reading the durable history (written by `history.rs`, whose module docs give the
//! layout): a range of changes, the state at a moment, a field's points. Each runs in one
//! read transaction, so it sees one commit's view and never blocks writers.

use redb::{ReadOnlyTable, ReadTransaction, TableDefinition, TableError};
use serde_json::Value;
use statecast_core::history::{At, Change, ChangesQuery, Page, Point, Start};
use statecast_core::merge;

use crate::history::{
    ENTRIES, FIELDS, KIND_FULL, KIND_PATCH, KIND_REMOVED, TOPICS, TopicMeta, decode_entry, rebuild,
};

type Entries = ReadOnlyTable<(&'static str, u64), &'static [u8]>;

fn err(what: &'static str) -> impl Fn(redb::StorageError) -> String {
    move |e| format!("{what}: {e}")
}

/// A table, or `None` for a store that never recorded history.
fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, String> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(format!("cannot open a history table: {e}")),
    }
}

fn meta(txn: &ReadTransaction, topic: &str) -> Result<Option<TopicMeta>, String> {
    let Some(topics) = table(txn, TOPICS)? else {
        return Ok(None);
    };
    Ok(topics
        .get(topic)
        .map_err(err("cannot read the history of a topic"))?
        .and_then(|g| TopicMeta::decode(g.value())))
}

/// The first recorded change of `topic` at or after `rev`: its rev and time.
fn at_or_after(
    entries: &Entries,
    topic: &str,
    rev: u64,
    last: u64,
) -> Result<Option<(u64, u64)>, String> {
    if rev > last {
        return Ok(None);
    }
    let row = entries
        .range((topic, rev)..=(topic, last))
        .map_err(err("cannot read history"))?
        .next()
        .transpose()
        .map_err(err("cannot read history"))?;
    Ok(row.map(|(k, v)| {
        (
            k.value().1,
            decode_entry(v.value()).map_or(0, |e| e.time_ms),
        )
    }))
}

/// The first recorded change whose time `after` says is past the moment sought (its rev;
/// `last + 1` when none is): a binary search over revs, each step one B-tree lookup.
fn first_where(
    entries: &Entries,
    topic: &str,
    meta: &TopicMeta,
    after: impl Fn(u64) -> bool,
) -> Result<u64, String> {
    let (mut lo, mut hi) = (meta.first_rev, meta.last_rev + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at_or_after(entries, topic, mid, meta.last_rev)? {
            Some((_, time)) if !after(time) => {
                // Everything up to that entry is before the moment.
                lo = mid + 1;
            }
            _ => hi = mid,
        }
    }
    Ok(at_or_after(entries, topic, lo, meta.last_rev)?.map_or(meta.last_rev + 1, |(rev, _)| rev))
}

pub(crate) fn changes(txn: &ReadTransaction, query: &ChangesQuery<'_>) -> Result<Page, String> {
    let topic = query.topic;
    let (Some(meta), Some(entries)) = (meta(txn, topic)?, table(txn, ENTRIES)?) else {
        return Ok(Page::default());
    };
    let start = match query.start {
        Start::Rev(rev) => rev.max(meta.first_rev),
        Start::Time(_) => meta.first_rev,
    };
    let from_ms = match query.start {
        Start::Time(t) => t.max(query.kept_since_ms),
        Start::Rev(_) => query.kept_since_ms,
    };
    let start = start.max(first_where(&entries, topic, &meta, |t| t >= from_ms)?);
    let mut page = Page::default();
    if start > meta.last_rev {
        return Ok(page);
    }
    let mut state: Option<Value> = match rebuild(&entries, topic, meta.first_rev, start)? {
        Some(bytes) => Some(parse(topic, &bytes)?),
        None => None,
    };
    let mut first = true;
    for row in entries
        .range((topic, start)..=(topic, meta.last_rev))
        .map_err(err("cannot read history"))?
    {
        let (k, v) = row.map_err(err("cannot read history"))?;
        let rev = k.value().1;
        let Some(e) = decode_entry(v.value()) else {
            return Err(format!("a history entry of {topic:?} is damaged"));
        };
        if e.time_ms > query.to_ms {
            break;
        }
        if page.changes.len() >= query.limit {
            page.next_rev = Some(rev);
            break;
        }
        // The first state is already rebuilt; the ones after it apply their entry.
        if !first {
            match e.kind {
                KIND_FULL => state = Some(parse(topic, e.bytes)?),
                KIND_PATCH => {
                    let patch = parse(topic, e.bytes)?;
                    let target = state.get_or_insert(Value::Null);
                    merge::apply(target, &patch);
                }
                KIND_REMOVED => state = None,
                _ => return Err(format!("a history entry of {topic:?} is damaged")),
            }
        }
        first = false;
        let bytes = match &state {
            Some(s) => Some(serde_json::to_vec(s).map_err(|e| format!("cannot serialize: {e}"))?),
            None => None,
        };
        page.changes.push(Change {
            rev,
            time_ms: e.time_ms,
            state: bytes,
        });
    }
    Ok(page)
}

fn parse(topic: &str, bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("a history entry of {topic:?} is damaged: {e}"))
}

pub(crate) fn state_at(
    txn: &ReadTransaction,
    topic: &str,
    kept_since_ms: u64,
    at_ms: u64,
) -> Result<At, String> {
    let (Some(meta), Some(entries)) = (meta(txn, topic)?, table(txn, ENTRIES)?) else {
        return Ok(At::Absent);
    };
    let after = first_where(&entries, topic, &meta, |t| t > at_ms)?;
    let in_effect = entries
        .range((topic, meta.first_rev)..(topic, after))
        .map_err(err("cannot read history"))?
        .next_back()
        .transpose()
        .map_err(err("cannot read history"))?
        .map(|(k, v)| {
            (
                k.value().1,
                decode_entry(v.value()).map(|e| (e.time_ms, e.kind)),
            )
        });
    let Some((rev, Some((time_ms, kind)))) = in_effect else {
        // Before the first change kept: before the topic existed, unless older ones were
        // dropped or never recorded.
        let gone = meta.truncated || at_ms < kept_since_ms;
        return Ok(if gone { At::Gone } else { At::Absent });
    };
    if kind == KIND_REMOVED {
        return Ok(At::Absent);
    }
    let state = rebuild(&entries, topic, meta.first_rev, rev)?;
    Ok(match state {
        Some(state) => At::Found(Change {
            rev,
            time_ms,
            state: Some(state),
        }),
        None => At::Absent,
    })
}

pub(crate) fn field_points(
    txn: &ReadTransaction,
    topic: &str,
    pointer: &str,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<Point>, String> {
    let Some(fields) = table(txn, FIELDS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    // The block holding the value at `from_ms`, then every block starting before `to_ms`.
    let carried = fields
        .range((topic, pointer, 0, 0)..=(topic, pointer, from_ms, u64::MAX))
        .map_err(err("cannot read a field"))?
        .next_back()
        .transpose()
        .map_err(err("cannot read a field"))?;
    let mut start_key = (from_ms, u64::MAX);
    if let Some((k, v)) = carried {
        let (_, _, start, rev) = k.value();
        start_key = (start, rev);
        push_points(v.value(), &mut out);
    }
    // Only the last point before `from_ms` matters of those: it carries the value in.
    let before = out.partition_point(|p| p.time_ms < from_ms);
    if before > 1 {
        out.drain(..before - 1);
    }
    for row in fields
        .range(
            (topic, pointer, start_key.0, start_key.1.saturating_add(1))
                ..=(topic, pointer, to_ms, u64::MAX),
        )
        .map_err(err("cannot read a field"))?
    {
        let (_, v) = row.map_err(err("cannot read a field"))?;
        push_points(v.value(), &mut out);
    }
    Ok(out)
}

fn push_points(block: &[u8], out: &mut Vec<Point>) {
    for chunk in block.chunks_exact(16) {
        let (t, v) = chunk.split_at(8);
        let mut tb = [0; 8];
        tb.copy_from_slice(t);
        let mut vb = [0; 8];
        vb.copy_from_slice(v);
        let value = f64::from_le_bytes(vb);
        out.push(Point {
            time_ms: u64::from_le_bytes(tb),
            value: (!value.is_nan()).then_some(value),
        });
    }
}
