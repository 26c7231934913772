//! History queries through the hub: the topic's policy says how far back its history
//! reaches (`history`, see `policy.rs`), the engine answers from what it recorded
//! (`crate::history` says what the answers mean).
//!
//! These block on the store: call them off the async threads (the REST handlers use
//! `spawn_blocking`). They take no hub lock, so writers never wait for a query.

use super::{Hub, Storage, stale};
use crate::engine::Engine;
use crate::error::{ErrorCode, HubError};
use crate::history::{self, At, ChangesQuery, Page, Start, Step};
use crate::topic::Topic;

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
            .field_points(topic.as_str(), pointer, kept_since_ms, from_ms, to_ms)
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
    /// none is kept, and over a shared log).
    pub fn history_bytes(&self) -> u64 {
        match &self.shared.storage {
            Storage::Local(side) => side.engine.history_bytes(),
            Storage::Shared(_) => 0,
        }
    }

    /// The engine that answers for `topic`'s history, and the oldest time it may answer
    /// about (Unix ms); `not_found` when none is kept.
    fn history_of(&self, topic: &Topic) -> Result<(&dyn Engine, u64), HubError> {
        let keep = self.shared.config.policies.history(topic.as_str());
        let engine: &dyn Engine = match &self.shared.storage {
            Storage::Local(side) if side.engine.keeps_history() => side.engine.as_ref(),
            Storage::Local(_) => return Err(not_kept("this hub's store keeps no history")),
            Storage::Shared(_) => {
                return Err(not_kept("history is not kept yet when hubs share Redis"));
            }
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

fn store_error(e: crate::engine::EngineError) -> HubError {
    HubError::new(
        ErrorCode::Unavailable,
        format!("the store could not answer: {e}"),
    )
}
