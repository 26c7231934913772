//! History queries through the hub: the topic's policy says how far back its history
//! reaches (`history`, see `policy.rs`), the storage answers from what it recorded
//! (`crate::history` says what the answers mean). The storage is the hub's own engine or
//! the log it shares with other hubs ([`Reader`]): the rules here (retention, 404, 410,
//! 400, the series maths) are the same for both, so every hub of a cluster answers alike.
//!
//! These block on the store: call them off the async threads (the REST handlers use
//! `spawn_blocking`). They take no hub lock, so writers never wait for a query.

use super::{Hub, Storage, stale};
use crate::engine::{Engine, EngineError, SharedLog};
use crate::error::{ErrorCode, HubError};
use crate::history::{self, At, ChangesQuery, Page, Point, Start, Step};
use crate::topic::Topic;

/// What answers a hub's history queries: its own engine or the shared log.
#[derive(Clone, Copy)]
enum Reader<'a> {
    Local(&'a dyn Engine),
    Shared(&'a dyn SharedLog),
}

impl Reader<'_> {
    fn changes(self, query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        match self {
            Reader::Local(e) => e.changes(query),
            Reader::Shared(l) => l.changes(query),
        }
    }

    fn state_at(self, topic: &str, kept_since_ms: u64, at_ms: u64) -> Result<At, EngineError> {
        match self {
            Reader::Local(e) => e.state_at(topic, kept_since_ms, at_ms),
            Reader::Shared(l) => l.state_at(topic, kept_since_ms, at_ms),
        }
    }

    fn field_points(
        self,
        topic: &str,
        pointer: &str,
        kept_since_ms: u64,
        (from_ms, to_ms): (u64, u64),
    ) -> Result<Vec<Point>, EngineError> {
        match self {
            Reader::Local(e) => e.field_points(topic, pointer, kept_since_ms, from_ms, to_ms),
            Reader::Shared(l) => l.field_points(topic, pointer, kept_since_ms, from_ms, to_ms),
        }
    }
}

impl Hub {
    /// The topic's recorded changes from `start` up to `to_ms`, at most `limit` of them.
    pub fn history_changes(
        &self,
        topic: &Topic,
        start: Start,
        to_ms: u64,
        limit: usize,
    ) -> Result<Page, HubError> {
        let (engine, kept_since_ms) = self.history_of(topic)?;
        let query = ChangesQuery {
            topic: topic.as_str(),
            kept_since_ms,
            start,
            to_ms,
            limit: limit.clamp(1, history::MAX_LIMIT),
        };
        engine.changes(&query).map_err(store_error)
    }

    /// What the topic was at `at_ms`.
    pub fn history_at(&self, topic: &Topic, at_ms: u64) -> Result<At, HubError> {
        let (engine, kept_since_ms) = self.history_of(topic)?;
        if at_ms < kept_since_ms {
            return Ok(At::Gone);
        }
        engine
            .state_at(topic.as_str(), kept_since_ms, at_ms)
            .map_err(store_error)
    }

    /// The series of a numeric field (a JSON pointer) from `from_ms` to `to_ms` in steps of
    /// `step_ms` (see [`history::series`]).
    pub fn history_series(
        &self,
        topic: &Topic,
        pointer: &str,
        from_ms: u64,
        to_ms: u64,
        step_ms: u64,
    ) -> Result<Vec<Step>, HubError> {
        if step_ms == 0 {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                "step must be positive",
            ));
        }
        let (engine, kept_since_ms) = self.history_of(topic)?;
        // Steps begin at the oldest change kept, at the earliest.
        let from_ms = from_ms.max(kept_since_ms);
        let steps = to_ms.saturating_sub(from_ms).div_ceil(step_ms);
        if steps > history::MAX_STEPS {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                format!(
                    "{steps} steps asked for, at most {} per series: a longer step or a shorter range",
                    history::MAX_STEPS
                ),
            ));
        }
        let points = engine
            .field_points(topic.as_str(), pointer, kept_since_ms, (from_ms, to_ms))
            .map_err(store_error)?;
        Ok(history::series(
            &points,
            from_ms,
            to_ms,
            step_ms,
            stale::now_ms(),
        ))
    }

    /// Bytes the durable history holds, as counted against `history_max_bytes` (0 when
    /// none is kept; over a shared log, as last seen).
    pub fn history_bytes(&self) -> u64 {
        match &self.shared.storage {
            Storage::Local(side) => side.engine.history_bytes(),
            Storage::Shared(side) => side.log().history_bytes(),
        }
    }

    /// What answers for `topic`'s history, and the oldest time it may answer about (Unix
    /// ms); `not_found` when none is kept.
    fn history_of(&self, topic: &Topic) -> Result<(Reader<'_>, u64), HubError> {
        let keep = self.shared.config.policies.history(topic.as_str());
        let engine = match &self.shared.storage {
            Storage::Local(side) if side.engine.keeps_history() => {
                Reader::Local(side.engine.as_ref())
            }
            Storage::Local(_) => return Err(not_kept("this hub's store keeps no history")),
            Storage::Shared(side) if side.log().keeps_history() => Reader::Shared(side.log()),
            Storage::Shared(_) => return Err(not_kept("the shared log keeps no history")),
        };
        if keep.is_zero() {
            return Err(not_kept(&format!(
                "no history is kept for {topic} (its policy's history is 0)"
            )));
        }
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        Ok((engine, stale::now_ms().saturating_sub(keep_ms)))
    }
}

fn not_kept(message: &str) -> HubError {
    HubError::new(ErrorCode::NotFound, message)
}

fn store_error(e: EngineError) -> HubError {
    HubError::new(
        ErrorCode::Unavailable,
        format!("the store could not answer: {e}"),
    )
}
