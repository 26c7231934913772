//! The engine boundary: where committed changes go to become durable.
//!
//! The hub assigns revs and computes diffs in memory; an [`Engine`] makes each batch of
//! changes durable before anyone sees them. The hub calls it from one commit thread, so an
//! engine may block (fsync, network) without stalling async tasks. The embedded store
//! (`statecast-store`) and, later, cluster engines implement it; [`MemoryEngine`] keeps
//! nothing and is what tests and embedders without persistence use.

use std::fmt;

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
}

/// Everything an engine holds, read once at start-up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub topics: Vec<StoredTopic>,
    /// The highest sequence number committed so far.
    pub seq: u64,
    /// Identifies this store's history: an SSE cursor from another store is not trusted.
    pub epoch: String,
}

/// One change to make durable: the topic's new rev and state (or tombstone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub rev: u64,
    pub seq: u64,
    /// Serialized JSON, or `None` when the topic was removed.
    pub state: Option<&'a [u8]>,
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
