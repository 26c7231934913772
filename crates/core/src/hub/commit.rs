//! The commit thread of a hub over its own [`Engine`]: it takes every queued write at once,
//! makes the batch durable with one commit (group commit), then publishes it and answers
//! the writers.
//!
//! The rule: nothing is published or acknowledged before the engine says it is durable. A
//! batch the engine refuses is refused with everything queued behind it (diffed against
//! states that never became durable), and the latest states are rolled back to the
//! published ones.
//!
//! While the engine refuses, the hub reports it ([`LocalSide::status`], `Hub::degraded`)
//! and goes on offering it every batch that comes: the engine gets over its failure on its
//! own commit (the embedded store re-opens its file), so the first write after a full disk
//! is freed is the one that succeeds. Nothing retries in between: no thread spins on a dead
//! disk, and attempts are as many as the writes that would have been refused anyway.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Shared;
use super::StoreStatus;
use super::fanout::{DueTouch, publish, write_direct};
use super::write::{Latest, Pending, PendingWhat};
use crate::engine::{Engine, Record, Touch};
use crate::error::{ErrorCode, HubError};
use crate::message;

/// The hub's threads (the commit thread, and over a shared log the follow thread too):
/// stopped, after what is queued, when the hub shuts down or its last clone goes.
pub(super) struct CommitThread {
    pub(super) shared: Arc<Shared>,
    pub(super) handles: Mutex<Vec<JoinHandle<()>>>,
}

impl CommitThread {
    pub(super) fn stop(&self) {
        self.shared.lock_writes().stopping = true;
        self.shared.commit_wanted.notify_one();
        self.shared.stale_timer.stop();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The hub's side of its own engine: the engine, and whether it refuses writes.
pub(super) struct LocalSide {
    pub(super) engine: Box<dyn Engine>,
    status: Mutex<StoreStatus>,
}

impl LocalSide {
    pub(super) fn new(engine: Box<dyn Engine>) -> LocalSide {
        LocalSide {
            engine,
            status: Mutex::new(StoreStatus::default()),
        }
    }

    pub(super) fn status(&self) -> StoreStatus {
        self.lock_status().clone()
    }

    /// Records what the engine made of a batch: refusing (why) or taking writes (`None`).
    fn set_refusing(&self, why: Option<String>) {
        let mut status = self.lock_status();
        match why {
            Some(why) => {
                if status.refusing.is_none() {
                    status.spells += 1;
                }
                status.refusing = Some(why.clone());
                status.last_refusal = Some(why);
            }
            None => status.refusing = None,
        }
    }

    fn lock_status(&self) -> MutexGuard<'_, StoreStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Most writes one group commit takes.
const MAX_BATCH: usize = 4096;

/// Waits for queued writes and takes up to [`MAX_BATCH`] of them; `None` once the hub stops
/// and nothing is left. Also says whether the hub is quiet: one write, nothing queued
/// behind it.
pub(super) fn take_batch(shared: &Shared) -> Option<(Vec<Pending>, bool)> {
    let mut writes = shared.lock_writes();
    while writes.pending.is_empty() && !writes.stopping {
        writes = shared
            .commit_wanted
            .wait(writes)
            .unwrap_or_else(|e| e.into_inner());
    }
    let quiet = writes.pending.len() == 1;
    let n = writes.pending.len().min(MAX_BATCH);
    (n > 0).then(|| (writes.pending.drain(..n).collect(), quiet))
}

/// How long `topic`'s changes are kept in the history (ms; 0: none).
pub(super) fn keep_ms(shared: &Shared, topic: &str, keeps_history: bool) -> u64 {
    if !keeps_history {
        return 0;
    }
    let keep = shared.config.policies.history(topic);
    u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)
}

/// The commit thread over the hub's own engine, until the hub stops.
pub(super) fn commit_loop(shared: &Shared, side: &LocalSide) {
    let keeps_history = side.engine.keeps_history();
    while let Some((batch, quiet)) = take_batch(shared) {
        let records: Vec<Record<'_>> = batch
            .iter()
            .filter_map(|p| match &p.what {
                PendingWhat::Change {
                    rev,
                    state,
                    patch,
                    time_ms,
                } => Some(Record {
                    topic: &p.topic,
                    rev: *rev,
                    seq: p.seq,
                    state: state.as_deref(),
                    time_ms: *time_ms,
                    patch: patch.as_deref().and_then(message::patch_body),
                    keep_ms: keep_ms(shared, &p.topic, keeps_history),
                }),
                _ => None,
            })
            .collect();
        let result = if records.is_empty() {
            Ok(())
        } else {
            let last_seq = records.last().map_or(0, |r| r.seq);
            let started = Instant::now();
            let result = side.engine.commit(&records, last_seq);
            let durable = if result.is_ok() { records.len() } else { 0 };
            shared.stats.observe_commit(started.elapsed(), durable);
            // Only on a store's answer: a batch of events alone says nothing about it.
            side.set_refusing(
                result
                    .as_ref()
                    .err()
                    .map(|e| format!("the store refused the last write: {e}")),
            );
            result
        };
        drop(records);
        match result {
            Ok(()) => {
                // A lone change goes straight to idle sockets; in a busy hub the tasks
                // batch several messages per write instead.
                let mut direct = quiet.then(Vec::new);
                let touches = publish(shared, &batch, direct.as_mut());
                let now = Instant::now();
                for pending in batch {
                    shared
                        .stats
                        .observe_write(now.duration_since(pending.queued));
                    if let Some(done) = pending.done {
                        let _ = done.send(Ok(pending.outcome));
                    }
                }
                // After the answers, which need not wait for the whole fan-out: a writer
                // that subscribes still sees its own change first, as its reserved socket
                // holds the result back until the change is written.
                write_direct(shared, direct.unwrap_or_default());
                store_touches(side, &touches);
            }
            Err(e) => fail(shared, batch, &e.to_string()),
        }
    }
    // Stopping: every written time not yet stored, so a clean restart knows them all.
    let touches: Vec<DueTouch> = {
        let published = shared.published.read().unwrap_or_else(|e| e.into_inner());
        published
            .slots
            .iter()
            .filter(|s| s.stale_after_ms > 0 && s.written_ms > s.stored_written_ms)
            .map(|s| (s.topic.clone(), s.written_ms))
            .collect()
    };
    store_touches(side, &touches);
}

/// Stores the written times of unchanged writes (see `stale.rs`). Best effort: a store
/// that refuses them costs a topic at most an early turn to stale after a crash.
fn store_touches(side: &LocalSide, touches: &[DueTouch]) {
    if touches.is_empty() {
        return;
    }
    let touches: Vec<Touch<'_>> = touches
        .iter()
        .map(|(topic, written_ms)| Touch {
            topic,
            written_ms: *written_ms,
        })
        .collect();
    if let Err(e) = side.engine.touch(&touches) {
        side.set_refusing(Some(format!("the store refused the last write: {e}")));
    }
}

/// The store refused a batch: refuse it and everything queued after it (it was diffed
/// against states that never became durable) and roll the latest states back.
fn fail(shared: &Shared, batch: Vec<Pending>, why: &str) {
    let error = HubError::new(
        ErrorCode::Unavailable,
        format!("the store could not take the write: {why}"),
    );
    let mut writes = shared.lock_writes();
    let queued: Vec<Pending> = writes.pending.drain(..).collect();
    let published = shared.published.read().unwrap_or_else(|e| e.into_inner());
    let mut touched = HashSet::new();
    for pending in batch.iter().chain(&queued) {
        touched.insert(pending.topic.clone());
    }
    for topic in touched {
        let restored = published.slot_of.get(&topic).map(|&s| {
            let slot = &published.slots[s as usize];
            Latest {
                rev: slot.rev,
                state: slot
                    .state
                    .as_ref()
                    .and_then(|json| serde_json::from_slice(json).ok())
                    .map(Arc::new),
                seq: slot.seq,
            }
        });
        match restored {
            Some(latest) => writes.topics.insert(topic, latest),
            None => writes.topics.remove(&topic),
        };
    }
    drop(published);
    drop(writes);
    shared.stats.store_failures.fetch_add(1, Ordering::Relaxed);
    for pending in batch.into_iter().chain(queued) {
        if let Some(done) = pending.done {
            let _ = done.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use serde_json::json;

    use crate::engine::{EngineError, Loaded};
    use crate::{Hub, HubConfig, Topic};

    use super::*;

    /// An engine whose commits fail while `full` is set.
    struct DiskThatFills {
        full: Arc<AtomicBool>,
    }

    impl Engine for DiskThatFills {
        fn load(&self) -> Result<Loaded, EngineError> {
            Ok(Loaded::default())
        }

        fn commit(&self, _records: &[Record<'_>], _seq: u64) -> Result<(), EngineError> {
            match self.full.load(Ordering::SeqCst) {
                true => Err(EngineError("No space left on device".into())),
                false => Ok(()),
            }
        }
    }

    #[test]
    fn a_refusing_store_is_reported_until_a_write_succeeds_and_only_durable_records_count() {
        let full = Arc::new(AtomicBool::new(false));
        let engine = DiskThatFills {
            full: Arc::clone(&full),
        };
        let hub = Hub::open(engine, HubConfig::default()).unwrap();
        let t = Topic::new("railhub/esp32-01").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let committed = || hub.stats().records_committed.load(Ordering::Relaxed);
        runtime.block_on(async {
            hub.set(&t, json!({"uptime": 1})).await.unwrap();
            assert_eq!((hub.degraded(), committed()), (None, 1));

            full.store(true, Ordering::SeqCst);
            for uptime in [2, 3] {
                hub.set(&t, json!({ "uptime": uptime })).await.unwrap_err();
            }
            let status = hub.store_status();
            let why = status.refusing.clone().expect("degraded while refusing");
            assert!(why.contains("No space left on device"), "{why}");
            assert_eq!((status.spells, committed()), (1, 1));
            // An event does not touch the store: it says nothing about it.
            hub.event(&t, json!("ping")).await.unwrap();
            assert_eq!(hub.degraded(), Some(why.clone()));

            full.store(false, Ordering::SeqCst);
            hub.set(&t, json!({"uptime": 4})).await.unwrap();
            let status = hub.store_status();
            assert_eq!(status.refusing, None);
            assert_eq!(status.last_refusal, Some(why));
            assert_eq!((status.spells, committed()), (1, 2));
        });
    }
}
