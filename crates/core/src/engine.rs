//! The storage boundary: where committed changes go to become durable. A hub stores
//! through one of two traits, chosen when it opens, never both.
//!
//! - An [`Engine`] is a hub's own storage ([`Hub::open`]). The hub assigns revs and
//!   computes diffs in memory; the engine makes each batch of changes durable before anyone
//!   sees them. The embedded store (`statecast-store`) implements it; [`MemoryEngine`]
//!   keeps nothing and is what tests and embedders without persistence use.
//! - A [`SharedLog`] is storage several hubs share ([`Hub::open_shared`]; the Redis cluster
//!   engine, `statecast-cluster`). The hub then works the other way round: it appends each
//!   change to the log only if the topic is still at the rev the change was computed from,
//!   and publishes nothing until the change comes back from [`SharedLog::follow`], in the
//!   log's order, like every other hub's changes. So every hub sees one rev sequence per
//!   topic. A log that keeps history records each change in the same append and answers
//!   the same three history queries as an engine, so every hub answers them alike.
//!
//! Either is loaded once, before the hub serves, and then called from the hub's own
//! threads (the commit thread, and for a log the follow thread), so it may block (fsync,
//! network) without stalling async tasks.
//!
//! [`Hub::open`]: crate::Hub::open
//! [`Hub::open_shared`]: crate::Hub::open_shared

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::history::{At, ChangesQuery, Page, Point};

/// One topic as an engine hands it back at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTopic {
    pub topic: String,
    /// The last rev the topic had (also for a tombstone, so revs never go back).
    pub rev: u64,
    /// The hub-wide sequence number of the topic's last change (SSE cursors resume from it).
    pub seq: u64,
    /// The state as serialized JSON, or `None` for a removed topic (a tombstone).
    pub state: Option<Vec<u8>>,
    /// When its last change was made (Unix ms; 0: not known, a store from before times).
    pub changed_ms: u64,
    /// When it was last written, changed or not (Unix ms; 0: not known).
    pub written_ms: u64,
}

/// Everything an engine holds, read once at start-up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub topics: Vec<StoredTopic>,
    /// The highest sequence number committed so far.
    pub seq: u64,
    /// Identifies this store's history: an SSE cursor from another store is not trusted.
    pub epoch: String,
    /// Recent changes, oldest first, for resuming clients (only shared engines keep them).
    pub recent: Vec<Entry>,
}

/// One change to make durable: the topic's new rev and state (or tombstone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub rev: u64,
    pub seq: u64,
    /// Serialized JSON, or `None` when the topic was removed.
    pub state: Option<&'a [u8]>,
    /// When the change was made (Unix ms): also the topic's last write.
    pub time_ms: u64,
    /// The RFC 7396 merge patch from the topic's previous state, when one expresses the
    /// change (serialized JSON); `None` for a creation, a removal or a replacement.
    pub patch: Option<&'a [u8]>,
    /// How long the change stays in the topic's history (ms; 0: not recorded).
    pub keep_ms: u64,
}

/// A write that changed nothing, to a topic whose freshness counts: its time, so that
/// staleness survives a restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Touch<'a> {
    pub topic: &'a str,
    /// When it was written (Unix ms).
    pub written_ms: u64,
}

/// Why an engine could not load or commit.
#[derive(Debug)]
pub struct EngineError(pub String);

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EngineError {}

/// Durable storage for topic state. See the module docs.
pub trait Engine: Send + Sync + 'static {
    /// Reads everything stored. Called once, before the hub serves.
    fn load(&self) -> Result<Loaded, EngineError>;

    /// Makes `records` durable (all or nothing) and records `seq` as the highest sequence
    /// number committed. Returns only when the data would survive the process being killed.
    fn commit(&self, records: &[Record<'_>], seq: u64) -> Result<(), EngineError>;

    /// Makes the times of writes that changed nothing durable. The hub calls it seldom
    /// (see `hub/stale.rs`); an engine that keeps no times ignores it.
    fn touch(&self, _touches: &[Touch<'_>]) -> Result<(), EngineError> {
        Ok(())
    }

    /// Whether this engine records history ([`Record::keep_ms`]) and answers the queries
    /// below; one that does not answers them with an error.
    fn keeps_history(&self) -> bool {
        false
    }

    /// Bytes the recorded history holds, as counted against its bound (0: none kept).
    fn history_bytes(&self) -> u64 {
        0
    }

    /// A range of recorded changes, oldest first, each with the state after it.
    fn changes(&self, _query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        Err(no_history())
    }

    /// What `topic` was at `at_ms`, from its recorded changes at or after `kept_since_ms`.
    fn state_at(&self, _topic: &str, _kept_since_ms: u64, _at_ms: u64) -> Result<At, EngineError> {
        Err(no_history())
    }

    /// The recorded values of one numeric field (a JSON pointer) of `topic` from `from_ms`
    /// to `to_ms`, oldest first, the first one carrying in the value held at `from_ms`;
    /// nothing before `kept_since_ms`.
    fn field_points(
        &self,
        _topic: &str,
        _pointer: &str,
        _kept_since_ms: u64,
        _from_ms: u64,
        _to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        Err(no_history())
    }
}

fn no_history() -> EngineError {
    EngineError("this store keeps no history".to_string())
}

/// An engine shared with its owner.
impl<E: Engine> Engine for Arc<E> {
    fn load(&self) -> Result<Loaded, EngineError> {
        (**self).load()
    }

    fn commit(&self, records: &[Record<'_>], seq: u64) -> Result<(), EngineError> {
        (**self).commit(records, seq)
    }

    fn touch(&self, touches: &[Touch<'_>]) -> Result<(), EngineError> {
        (**self).touch(touches)
    }

    fn keeps_history(&self) -> bool {
        (**self).keeps_history()
    }

    fn history_bytes(&self) -> u64 {
        (**self).history_bytes()
    }

    fn changes(&self, query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        (**self).changes(query)
    }

    fn state_at(&self, topic: &str, kept_since_ms: u64, at_ms: u64) -> Result<At, EngineError> {
        (**self).state_at(topic, kept_since_ms, at_ms)
    }

    fn field_points(
        &self,
        topic: &str,
        pointer: &str,
        kept_since_ms: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        (**self).field_points(topic, pointer, kept_since_ms, from_ms, to_ms)
    }
}

/// The ordered log that several hubs share. See the module docs.
pub trait SharedLog: Send + Sync + 'static {
    /// Reads everything the log holds: the stored topics and the recent history. Called
    /// once, before the hub serves; [`SharedLog::follow`] goes on from there.
    fn load(&self) -> Result<Loaded, EngineError>;

    /// Appends in order; each change only if its topic is still at `rev - 1` (after the
    /// appends before it). A topic that conflicts takes none of the batch's later changes.
    /// Returns one result per append, or an error when nothing could be appended.
    fn append(&self, appends: &[Append<'_>]) -> Result<Vec<Appended>, EngineError>;

    /// Waits up to `wait` for what was appended (by any hub) after what this hub has
    /// followed so far. Called from one thread; `clients` is this hub's client count, for
    /// the cluster's presence figures.
    fn follow(&self, wait: Duration, clients: u64) -> Result<Followed, EngineError>;

    /// The hubs sharing the log, as last seen.
    fn nodes(&self) -> Vec<Node> {
        Vec::new()
    }

    /// Whether the log takes writes now, asked without appending anything: a hub whose
    /// append failed asks this (from the follow thread) before it reports healthy again.
    fn writable(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Whether the log records history ([`Append::Change`]'s `keep_ms`, in the append
    /// itself) and answers the queries below, as [`Engine::keeps_history`].
    fn keeps_history(&self) -> bool {
        false
    }

    /// Bytes the recorded history holds, as counted against its bound, as last seen
    /// (answered without I/O: metrics ask it on async threads).
    fn history_bytes(&self) -> u64 {
        0
    }

    /// As [`Engine::changes`], from what any hub appended.
    fn changes(&self, _query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        Err(no_history())
    }

    /// As [`Engine::state_at`].
    fn state_at(&self, _topic: &str, _kept_since_ms: u64, _at_ms: u64) -> Result<At, EngineError> {
        Err(no_history())
    }

    /// As [`Engine::field_points`].
    fn field_points(
        &self,
        _topic: &str,
        _pointer: &str,
        _kept_since_ms: u64,
        _from_ms: u64,
        _to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        Err(no_history())
    }
}

/// A log shared with its owner (who may, say, also take it out of the cluster on exit).
impl<L: SharedLog> SharedLog for Arc<L> {
    fn load(&self) -> Result<Loaded, EngineError> {
        (**self).load()
    }

    fn append(&self, appends: &[Append<'_>]) -> Result<Vec<Appended>, EngineError> {
        (**self).append(appends)
    }

    fn follow(&self, wait: Duration, clients: u64) -> Result<Followed, EngineError> {
        (**self).follow(wait, clients)
    }

    fn nodes(&self) -> Vec<Node> {
        (**self).nodes()
    }

    fn writable(&self) -> Result<(), EngineError> {
        (**self).writable()
    }

    fn keeps_history(&self) -> bool {
        (**self).keeps_history()
    }

    fn history_bytes(&self) -> u64 {
        (**self).history_bytes()
    }

    fn changes(&self, query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        (**self).changes(query)
    }

    fn state_at(&self, topic: &str, kept_since_ms: u64, at_ms: u64) -> Result<At, EngineError> {
        (**self).state_at(topic, kept_since_ms, at_ms)
    }

    fn field_points(
        &self,
        topic: &str,
        pointer: &str,
        kept_since_ms: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        (**self).field_points(topic, pointer, kept_since_ms, from_ms, to_ms)
    }
}

/// One append to a [`SharedLog`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Append<'a> {
    /// A topic's new rev and state (`None`: removed); `patch` is the patch message when a
    /// merge patch expresses the change.
    Change {
        topic: &'a str,
        rev: u64,
        state: Option<&'a [u8]>,
        patch: Option<&'a [u8]>,
        /// When it was made (Unix ms), so every hub shows the same time.
        time_ms: u64,
        /// How long the change stays in the topic's history (ms; 0: not recorded), as
        /// [`Record::keep_ms`].
        keep_ms: u64,
    },
    /// An event message for the topic's subscribers on every hub.
    Event { topic: &'a str, message: &'a [u8] },
}

/// What became of one [`Append`].
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Appended as sequence number `seq`.
    Stored { seq: u64 },
    /// Not appended: the topic is at `rev` with `state` (`None`: removed or never held).
    Conflict { rev: u64, state: Option<Vec<u8>> },
}

/// What [`SharedLog::follow`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// The next entries, in order (possibly none).
    Entries(Vec<Entry>),
    /// The log cannot prove nothing was missed (it was trimmed, or the connection was lost
    /// meanwhile): everything it holds now, to start over from.
    Resync(Loaded),
}

/// One entry of a [`SharedLog`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The log-wide sequence number: one more than the entry before.
    pub seq: u64,
    pub topic: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    Change {
        rev: u64,
        state: Option<Vec<u8>>,
        patch: Option<Vec<u8>>,
        /// When it was made (Unix ms; 0: an entry from before times).
        time_ms: u64,
    },
    Event {
        message: Vec<u8>,
    },
}

/// A hub sharing the log, for presence figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub clients: u64,
    /// Whether it reported recently.
    pub alive: bool,
}

/// An engine that keeps nothing: state lives as long as the process.
#[derive(Debug, Default)]
pub struct MemoryEngine;

impl Engine for MemoryEngine {
    fn load(&self) -> Result<Loaded, EngineError> {
        Ok(Loaded::default())
    }

    fn commit(&self, _records: &[Record<'_>], _seq: u64) -> Result<(), EngineError> {
        Ok(())
    }
}
