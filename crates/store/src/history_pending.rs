//! The history's pending log: what a commit records for the history, written in the
//! commit's own transaction (so nothing acknowledged is missing from the history, nothing
//! refused is in it) as one row per change under an ever-growing key, and moved into the
//! history's tables (`history.rs`) later, many changes at a time.
//!
//! Why: the history's tables are keyed by topic, so recording each change where it belongs
//! dirtied a page per topic and per changed field in every commit: a commit of 64 topics
//! rewrote about 200 pages where its states took 5, and the durable write rate fell to a
//! third. Appended under one growing key, a commit's changes fill the log's last page or
//! two. Moved in bulk, a topic's pages are rewritten once per many of its changes.
//!
//! The rule: every read of the history moves the whole log first, so a reader sees every
//! acknowledged change, and the reading code knows only the history's tables. When else it
//! is moved, and how a move stays exactly-once across a crash: `history_mover.rs` and
//! `history_db.rs`.
//!
//! # Row
//!
//! `history_pending`: key → `rev | time | keep` (u64 LE each) `| topic` (u16 LE length,
//! UTF-8) `| state | patch` (u32 LE length, `u32::MAX` for none, then the bytes) `|`
//! then each changed numeric field: pointer (u16 LE length, UTF-8) and value (f64 LE; NaN:
//! the field holds no number now). The fields are found at commit time, where the state
//! before the change is at hand.

use redb::{ReadableTable, TableDefinition};
use serde_json::Value;
use statecast_core::engine::Record;
use statecast_core::history::numeric_leaves;

pub(crate) const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("history_pending");

const NONE: u32 = u32::MAX;

/// One change as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PendingChange<'a> {
    pub topic: &'a str,
    pub rev: u64,
    pub time_ms: u64,
    pub keep_ms: u64,
    pub state: Option<&'a [u8]>,
    pub patch: Option<&'a [u8]>,
    /// Each numeric field whose value changed, and its value now (NaN: none).
    pub fields: Vec<(&'a str, f64)>,
}

/// Encodes `record` (whose state before was `old`) as a row of the log.
pub(crate) fn encode(record: &Record<'_>, old: Option<&[u8]>, out: &mut Vec<u8>) {
    out.clear();
    for n in [record.rev, record.time_ms, record.keep_ms] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    push_str16(out, record.topic);
    for bytes in [record.state, record.patch] {
        match bytes {
            Some(b) => {
                // A state is bounded by the hub's frame limit, far below 4 GiB.
                out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(NONE - 1).to_le_bytes());
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(&NONE.to_le_bytes()),
        }
    }
    for (pointer, value) in changed_fields(old, record.state) {
        push_str16(out, &pointer);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn push_str16(out: &mut Vec<u8>, s: &str) {
    // Topics and pointers are far shorter than 64 KiB (the hub bounds topic names; a
    // pointer is a path in a state the frame limit bounds); a longer one is cut at a
    // character boundary rather than misread.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// The numeric fields whose value differs between the two states (serialized JSON), with
/// their value after (NaN where a number is gone).
fn changed_fields(old: Option<&[u8]>, new: Option<&[u8]>) -> Vec<(String, f64)> {
    let leaves = |b: Option<&[u8]>| {
        b.and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .map(|v| numeric_leaves(&v))
            .unwrap_or_default()
    };
    let before = leaves(old);
    let after = leaves(new);
    let mut out = Vec::new();
    for (pointer, value) in &after {
        let same = before
            .iter()
            .any(|(p, v)| p == pointer && v.to_bits() == value.to_bits());
        if !same {
            out.push((pointer.clone(), *value));
        }
    }
    for (pointer, _) in &before {
        if !after.iter().any(|(p, _)| p == pointer) {
            out.push((pointer.clone(), f64::NAN));
        }
    }
    out
}

/// Reads a row back; `None` if it is damaged.
pub(crate) fn decode(row: &[u8]) -> Option<PendingChange<'_>> {
    let mut r = Reader(row);
    let (rev, time_ms, keep_ms) = (r.u64()?, r.u64()?, r.u64()?);
    let topic = r.str16()?;
    let state = r.bytes32()?;
    let patch = r.bytes32()?;
    let mut fields = Vec::new();
    while !r.0.is_empty() {
        let pointer = r.str16()?;
        fields.push((pointer, f64::from_le_bytes(r.take::<8>()?)));
    }
    Some(PendingChange {
        topic,
        rev,
        time_ms,
        keep_ms,
        state,
        patch,
        fields,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn slice(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    fn str16(&mut self) -> Option<&'a str> {
        let n = usize::from(u16::from_le_bytes(self.take::<2>()?));
        std::str::from_utf8(self.slice(n)?).ok()
    }

    fn bytes32(&mut self) -> Option<Option<&'a [u8]>> {
        match u32::from_le_bytes(self.take::<4>()?) {
            NONE => Some(None),
            n => self.slice(usize::try_from(n).ok()?).map(Some),
        }
    }
}

/// Where the log stands in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogState {
    /// The key of its first row (0 when empty).
    pub first: u64,
    /// The key after its last row (0 when empty).
    pub end: u64,
}

impl LogState {
    /// Reads it from the log itself (at open, and after a failed write lost what was held
    /// in memory).
    pub(crate) fn read(txn: &redb::ReadTransaction) -> Result<LogState, String> {
        let table = match txn.open_table(PENDING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(LogState::default()),
            Err(e) => return Err(format!("cannot open the history's log: {e}")),
        };
        let e = |e: redb::StorageError| format!("cannot read the history's log: {e}");
        let first = table.first().map_err(e)?.map_or(0, |(k, _)| k.value());
        let end = table.last().map_err(e)?.map_or(0, |(k, _)| k.value() + 1);
        Ok(LogState { first, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(state: Option<&'a [u8]>, patch: Option<&'a [u8]>) -> Record<'a> {
        Record {
            topic: "micboard/SHURE001",
            rev: 7,
            seq: 3,
            state,
            time_ms: 1_700_000_000_123,
            patch,
            keep_ms: 86_400_000,
        }
    }

    #[test]
    fn a_row_reads_back_as_written_with_the_fields_that_changed() {
        let old = br#"{"battery":80,"rf":-40,"name":"a"}"#;
        let new = br#"{"battery":79,"rf":-40,"name":"b"}"#;
        let patch = br#"{"battery":79,"name":"b"}"#;
        let mut row = Vec::new();
        encode(&record(Some(new), Some(patch)), Some(old), &mut row);
        let change = decode(&row).expect("decodes");
        assert_eq!(
            change,
            PendingChange {
                topic: "micboard/SHURE001",
                rev: 7,
                time_ms: 1_700_000_000_123,
                keep_ms: 86_400_000,
                state: Some(new),
                patch: Some(patch),
                fields: vec![("/battery", 79.0)],
            }
        );
    }

    #[test]
    fn a_removal_has_no_state_and_every_number_it_held_goes_to_nan() {
        let mut row = Vec::new();
        encode(
            &record(None, None),
            Some(br#"{"a":{"b":1},"c":2}"#),
            &mut row,
        );
        let change = decode(&row).expect("decodes");
        assert_eq!((change.state, change.patch), (None, None));
        let mut pointers: Vec<&str> = change.fields.iter().map(|f| f.0).collect();
        pointers.sort_unstable();
        assert_eq!(pointers, ["/a/b", "/c"]);
        assert!(change.fields.iter().all(|f| f.1.is_nan()));
    }

    #[test]
    fn a_cut_row_is_damaged_not_misread() {
        let mut row = Vec::new();
        encode(&record(Some(b"{\"x\":1}"), None), None, &mut row);
        // Only the whole row, and the row cut exactly before its one field, read back.
        let field = 2 + "/x".len() + 8;
        let decoded: Vec<usize> = (0..=row.len())
            .filter(|&len| decode(&row[..len]).is_some())
            .collect();
        assert_eq!(decoded, [row.len() - field, row.len()]);
        assert_eq!(decode(&row).map(|c| c.fields), Some(vec![("/x", 1.0)]));
    }

    /// Commits one change of `t` at `rev` (`{"n": rev}`), kept a day.
    fn commit_rev(engine: &crate::RedbEngine, rev: u64) {
        use statecast_core::engine::Engine;
        let state = format!("{{\"n\":{rev}}}");
        let record = Record {
            topic: "t",
            rev,
            seq: rev,
            state: Some(state.as_bytes()),
            time_ms: crate::now_ms() + rev,
            patch: None,
            keep_ms: 86_400_000,
        };
        engine.commit(&[record], rev).expect("commits");
    }

    #[test]
    fn a_read_sees_every_committed_change_and_a_move_no_commit_made_durable_is_redone_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let engine = crate::RedbEngine::open(dir.path()).unwrap();
        for rev in 1..=3 {
            commit_rev(&engine, rev);
        }
        // Still in the log: the read moves them first.
        assert_eq!(crate::tests::history_revs(&engine), [1, 2, 3]);
        commit_rev(&engine, 4);
        // Closed with rev 4 in the log, and maybe the move of 1-3 never made durable.
        drop(engine);
        let engine = crate::RedbEngine::open(dir.path()).unwrap();
        assert_eq!(crate::tests::history_revs(&engine), [1, 2, 3, 4]);
        drop(engine);
        let engine = crate::RedbEngine::open(dir.path()).unwrap();
        assert_eq!(crate::tests::history_revs(&engine), [1, 2, 3, 4]);
    }

    #[test]
    fn a_change_moved_by_the_thread_is_deleted_from_the_log_and_not_moved_twice() {
        use statecast_core::engine::Engine;
        let dir = tempfile::TempDir::new().unwrap();
        let engine = crate::RedbEngine::open(dir.path()).unwrap();
        commit_rev(&engine, 1);
        assert_eq!(crate::tests::history_revs(&engine), [1]);
        assert!(engine.history_bytes() > 0);
        drop(engine);
        // Reopened: the history's `moved` says rev 1 is done, whether or not the state's
        // file still has its row.
        let engine = crate::RedbEngine::open(dir.path()).unwrap();
        commit_rev(&engine, 2);
        assert_eq!(crate::tests::history_revs(&engine), [1, 2]);
    }
}
