//! The hub's counters, read by `/metrics` and `/api/health`. Plain atomics: updating them
//! costs a relaxed add on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::outbox::Pushed;

/// Upper bounds (in microseconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket of [`LATENCY_BUCKETS_US`], plus one for larger values.
    pub buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub sum_us: AtomicU64,
    pub count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of everything the hub does.
#[derive(Debug, Default)]
pub struct Stats {
    /// State changes published.
    pub changes: AtomicU64,
    /// Events published.
    pub events: AtomicU64,
    /// Messages queued for clients by fan-out.
    pub queued: AtomicU64,
    /// Times a client's pending patches of a topic were replaced by a snapshot.
    pub conflations: AtomicU64,
    /// Events dropped for clients whose queue was full.
    pub dropped_events: AtomicU64,
    /// Group commits that the store refused.
    pub store_failures: AtomicU64,
    /// Batches of a shared log with writes that another hub's write overtook (computed
    /// again and retried).
    pub conflicts: AtomicU64,
    /// Times a shared log could not prove continuity and the hub started over from it.
    pub resyncs: AtomicU64,
    /// Records made durable (a batch the store refused counts none).
    pub records_committed: AtomicU64,
    /// Time per group commit.
    pub commit_latency: Histogram,
    /// Time from a write being accepted to it being durable and fanned out.
    pub write_latency: Histogram,
}

impl Stats {
    pub(crate) fn count(&self, pushed: Pushed) {
        let counter = match pushed {
            Pushed::Queued => &self.queued,
            Pushed::Skipped => return,
            Pushed::Conflated => &self.conflations,
            Pushed::DroppedEvent => &self.dropped_events,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One group commit that took `d` and made `records` durable (0 when refused).
    pub(crate) fn observe_commit(&self, d: Duration, records: usize) {
        self.commit_latency.observe(d);
        self.records_committed
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn observe_write(&self, d: Duration) {
        self.write_latency.observe(d);
    }
}
