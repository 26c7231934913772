//! Staleness: a topic whose policy has `stale_after` and that was not written for that
//! long turns stale; its next write (even one that changes nothing) makes it fresh again.
//! A source that knows its device is gone marks its topics stale at once
//! ([`Hub::mark_stale`]). Subscribers get a `stale` message at each turn, `stale:false`
//! before the change that freshened the topic.
//!
//! The rule: an idle topic costs nothing. There is no periodic scan: each fresh topic under
//! a `stale_after` policy has at most one entry in a deadline queue (a binary heap in
//! `Published`), armed when it is written and it has none. A thread sleeps until the
//! earliest deadline; when it comes, the topic either turns stale (it was not written
//! since) or is re-armed for its latest write's deadline. So a topic written every 500 ms
//! with `stale_after = "90s"` wakes the thread once per 90 s, and a stale topic never.
//!
//! Times are wall-clock Unix milliseconds, as stored. A write that changes nothing refreshes
//! its topic through the commit thread's queue (in order with the changes); its time is
//! made durable at most every eighth of `stale_after` per topic, and at shutdown, so after
//! a crash a silent topic turns stale at most that much early, and after a clean restart
//! exactly on time.

use std::cmp::Reverse;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fanout::{Published, Slot};
use super::{Hub, Shared};
use crate::message;
use crate::topic::Topic;

/// Longest the stale thread sleeps without looking (a wall clock set back is noticed).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The hub's time now, Unix milliseconds.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Wakes the stale thread when a deadline earlier than the one it sleeps for is armed.
#[derive(Default)]
pub(super) struct StaleTimer {
    wake: Mutex<Wake>,
    wanted: Condvar,
}

struct Wake {
    /// The deadline the thread sleeps until (Unix ms).
    next: u64,
    /// A deadline before `next` was armed: look again.
    earlier: bool,
    stopped: bool,
}

impl Default for Wake {
    fn default() -> Self {
        Wake {
            next: u64::MAX,
            earlier: false,
            stopped: false,
        }
    }
}

impl StaleTimer {
    fn lock(&self) -> MutexGuard<'_, Wake> {
        self.wake.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.wanted.notify_all();
    }
}

/// Whether a write to `topic` that changes nothing must still go through the queue: its
/// freshness counts (a `stale_after` policy), or it is stale now.
pub(super) fn refreshes(published: &Published, topic: &Topic) -> bool {
    published.slot_of.get(topic).is_some_and(|&s| {
        let slot = &published.slots[s as usize];
        slot.stale_after_ms > 0 || slot.stale
    })
}

/// Records that the topic in `slot_id` was written at `written_ms`: fresh again if it was
/// stale (its subscribers told, before whatever the write changed, with `rev_before`, the
/// rev they hold until the change arrives: a client resuming from it misses nothing), and
/// its deadline armed.
pub(super) fn written(
    shared: &Shared,
    published: &mut Published,
    slot_id: u32,
    written_ms: u64,
    rev_before: u64,
) {
    let slot = &mut published.slots[slot_id as usize];
    slot.written_ms = slot.written_ms.max(written_ms);
    if slot.stale {
        set(shared, published, slot_id, false, rev_before);
    }
    arm(shared, published, slot_id);
}

/// Marks the topic in `slot_id` stale (a no-op if it is already, or removed).
pub(super) fn mark(shared: &Shared, published: &mut Published, slot_id: u32) {
    let slot = &published.slots[slot_id as usize];
    if !slot.stale && slot.state.is_some() {
        let rev = slot.rev;
        set(shared, published, slot_id, true, rev);
    }
}

/// Turns the topic stale or fresh and tells its subscribers (the message carries `rev`).
fn set(shared: &Shared, published: &mut Published, slot_id: u32, stale: bool, rev: u64) {
    let slot = &mut published.slots[slot_id as usize];
    slot.stale = stale;
    // The cached snapshot says whether the topic is stale.
    slot.snapshot = std::sync::OnceLock::new();
    if stale {
        published.stale_topics += 1;
    } else {
        published.stale_topics -= 1;
    }
    let slot = &published.slots[slot_id as usize];
    let bytes = message::stale(&slot.topic, rev, stale, slot.written_ms);
    let topic = slot.topic.clone();
    published.deliveries += 1;
    let delivery = published.deliveries;
    let clients = &published.clients;
    let stats = &shared.stats;
    published.subscriptions.for_each_match(&topic, |key| {
        if let Some(client) = &clients[key as usize] {
            stats.count(client.outbox.push_state(slot_id, &bytes, delivery, true));
        }
    });
}

/// Gives a fresh, live topic under a `stale_after` policy its deadline, unless it has one.
pub(super) fn arm(shared: &Shared, published: &mut Published, slot_id: u32) {
    let slot = &mut published.slots[slot_id as usize];
    if slot.armed || slot.stale || slot.stale_after_ms == 0 || slot.state.is_none() {
        return;
    }
    slot.armed = true;
    let deadline = slot.written_ms.saturating_add(slot.stale_after_ms);
    published.deadlines.push(Reverse((deadline, slot_id)));
    let mut wake = shared.stale_timer.lock();
    if deadline < wake.next {
        wake.next = deadline;
        wake.earlier = true;
        shared.stale_timer.wanted.notify_one();
    }
}

/// Turns stale every topic whose deadline has come and that was not written since;
/// re-arms the others for their latest write.
fn expire(shared: &Shared, published: &mut Published, now: u64) {
    while let Some(&Reverse((deadline, slot_id))) = published.deadlines.peek() {
        if deadline > now {
            return;
        }
        published.deadlines.pop();
        let slot = &mut published.slots[slot_id as usize];
        slot.armed = false;
        if slot.stale || slot.state.is_none() {
            continue;
        }
        if slot.written_ms.saturating_add(slot.stale_after_ms) <= now {
            let rev = slot.rev;
            set(shared, published, slot_id, true, rev);
        } else {
            arm(shared, published, slot_id);
        }
    }
}

/// The stale thread, until the hub stops: see the module docs.
pub(super) fn stale_loop(shared: &Shared) {
    loop {
        let mut guard = shared.published_mut();
        let published = &mut *guard;
        expire(shared, published, now_ms());
        let next = published
            .deadlines
            .peek()
            .map_or(u64::MAX, |Reverse((deadline, _))| *deadline);
        // Taken before the published lock is released, so no deadline armed meanwhile
        // is missed (`arm` takes this lock after the published one, as here).
        let mut wake = shared.stale_timer.lock();
        wake.next = next;
        wake.earlier = false;
        drop(guard);
        loop {
            if wake.stopped {
                return;
            }
            let now = now_ms();
            if wake.earlier || now >= wake.next {
                break;
            }
            let sleep = Duration::from_millis(wake.next - now).min(MAX_SLEEP);
            let (woken, waited) = shared
                .stale_timer
                .wanted
                .wait_timeout(wake, sleep)
                .unwrap_or_else(|e| e.into_inner());
            wake = woken;
            // Look again after each full sleep: cheap, and a clock set back is noticed.
            if waited.timed_out() {
                break;
            }
        }
    }
}

/// Whether the written time of `slot` is due to be made durable: it moved on by an eighth
/// of its `stale_after` since it last was (see the module docs).
pub(super) fn touch_due(slot: &Slot) -> bool {
    slot.stale_after_ms > 0
        && slot.written_ms
            >= slot
                .stored_written_ms
                .saturating_add(slot.stale_after_ms / 8)
}

impl Hub {
    /// Marks `topic` stale now, until its next write: for a source that knows its device
    /// is gone. Nothing happens to a topic that does not exist or is stale already.
    pub fn mark_stale(&self, topic: &Topic) {
        let mut guard = self.published_mut();
        let published = &mut *guard;
        if let Some(&slot_id) = published.slot_of.get(topic) {
            mark(&self.shared, published, slot_id);
        }
    }

    /// Number of live topics that are stale now.
    pub fn stale_count(&self) -> usize {
        self.published().stale_topics
    }
}

/// The `stale_after` of `topic`'s policy in ms, 0 for none: kept in its slot.
pub(super) fn stale_after_ms(config: &super::HubConfig, topic: &str) -> u64 {
    config
        .policies
        .find(topic)
        .and_then(|p| p.stale_after)
        .map_or(0, |d| d.as_millis() as u64)
}
