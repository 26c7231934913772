//! When the pending log is moved into the history's file (`history_db.rs`): by a thread of
//! the store's own, as soon as [`MOVE_BATCH`] changes wait or the oldest has waited
//! [`LINGER`], and by every history read first, so a reader sees every acknowledged change.
//! One move runs at a time, whoever starts it.
//!
//! Why a thread: a move is a few milliseconds of work and an fsync of the history's file;
//! on the commit thread it would hold back the next batch of writes. On a thread of its own
//! it overlaps with the commit thread's fsyncs.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Inner;

/// Changes moved at once as soon as this many wait: enough that a topic's pages are
/// rewritten once per dozens of its changes, few enough that a move takes milliseconds.
pub(crate) const MOVE_BATCH: u64 = 2048;
/// How long a change waits at most while fewer than [`MOVE_BATCH`] do (and how long the
/// thread waits before it tries again after a move failed).
pub(crate) const LINGER: Duration = Duration::from_millis(500);
/// How often at most a move syncs the history's file: the others are not synced, so the
/// history's fsyncs do not crowd the disk that the commits sync on (see `history_db.rs`
/// for why no change is lost).
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(2);

/// Where the log stands, shared by the commit thread, the mover and readers.
pub(crate) struct Mover {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Held through a move, so that one runs at a time.
    moving: Mutex<()>,
}

#[derive(Debug)]
struct Queue {
    /// The key the next logged change gets.
    end: u64,
    /// The first key not yet moved.
    moved: u64,
    /// The first key not yet moved as far as the history's file has synced: the log keeps
    /// every row from there on.
    synced: u64,
    /// When the history's file was last synced.
    synced_at: Instant,
    /// Since when the oldest change not moved has waited.
    since: Option<Instant>,
    /// After a failed move: not before then.
    retry_at: Option<Instant>,
    stop: bool,
}

impl Queue {
    fn waiting(&self) -> u64 {
        self.end.saturating_sub(self.moved)
    }
}

impl Mover {
    pub(crate) fn new(moved: u64, end: u64) -> Mover {
        Mover {
            queue: Mutex::new(Queue {
                end,
                moved,
                synced: moved,
                synced_at: Instant::now(),
                since: (end > moved).then(Instant::now),
                retry_at: None,
                stop: false,
            }),
            wake: Condvar::new(),
            moving: Mutex::new(()),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken through a move.
    pub(crate) fn moving(&self) -> MutexGuard<'_, ()> {
        self.moving.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first key not yet moved.
    pub(crate) fn moved(&self) -> u64 {
        self.queue().moved
    }

    /// Changes waiting to be moved.
    #[cfg(test)]
    fn waiting(&self) -> u64 {
        self.queue().waiting()
    }

    /// A commit logged changes up to (not including) key `end`.
    pub(crate) fn logged(&self, end: u64) {
        let mut queue = self.queue();
        let was = queue.waiting();
        queue.end = end;
        queue.since.get_or_insert_with(Instant::now);
        // Woken when its wait changes: from none to a timed one, or to due at once.
        if was == 0 || (was < MOVE_BATCH && queue.waiting() >= MOVE_BATCH) {
            self.wake.notify_one();
        }
    }

    /// The log's end as read again from the file (after the state's file was opened again).
    pub(crate) fn reset_end(&self, end: u64) {
        let mut queue = self.queue();
        queue.end = end.max(queue.moved);
        if queue.waiting() == 0 {
            queue.since = None;
        }
    }

    /// Whether the next move should sync the history's file.
    pub(crate) fn sync_due(&self) -> bool {
        self.queue().synced_at.elapsed() >= SYNC_EVERY
    }

    /// The first key not yet moved as far as the history's file has synced.
    pub(crate) fn synced(&self) -> u64 {
        self.queue().synced
    }

    /// A move went up to (not including) key `moved`, synced or not.
    pub(crate) fn did_move(&self, moved: u64, synced: bool) {
        let mut queue = self.queue();
        queue.moved = moved.max(queue.moved);
        if synced {
            queue.synced = queue.moved;
            queue.synced_at = Instant::now();
        }
        queue.retry_at = None;
        queue.since = (queue.waiting() > 0).then(Instant::now);
    }

    /// A move failed: the history's file is opened again at its last sync, so what was
    /// moved since is moved again.
    pub(crate) fn rewind(&self) {
        let mut queue = self.queue();
        queue.moved = queue.synced;
        queue.since.get_or_insert_with(Instant::now);
    }

    fn failed(&self) {
        self.queue().retry_at = Some(Instant::now() + LINGER);
    }

    /// Stops the thread (it ends after the move it may be in).
    pub(crate) fn stop(&self) {
        self.queue().stop = true;
        self.wake.notify_all();
    }

    /// Waits until a move is due; `false` once stopped.
    fn wait_due(&self) -> bool {
        let mut queue = self.queue();
        loop {
            if queue.stop {
                return false;
            }
            let now = Instant::now();
            let sync_at = (queue.moved > queue.synced).then(|| queue.synced_at + SYNC_EVERY);
            let wait = match queue.since {
                // Nothing waits, but moves are not synced yet: a sync is due then.
                None => match sync_at {
                    Some(at) if at <= now => return true,
                    Some(at) => Some(at - now),
                    None => None,
                },
                Some(since) => {
                    let full = queue.waiting() >= MOVE_BATCH;
                    let due = if full { now } else { since + LINGER };
                    let due = queue.retry_at.map_or(due, |retry| due.max(retry));
                    if due <= now {
                        return true;
                    }
                    Some(due - now)
                }
            };
            queue = match wait {
                None => self.wake.wait(queue).unwrap_or_else(|e| e.into_inner()),
                Some(wait) => {
                    self.wake
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// Starts the store's mover thread, which ends once [`Mover::stop`] is called.
pub(crate) fn spawn(inner: Arc<Inner>) -> Result<JoinHandle<()>, std::io::Error> {
    std::thread::Builder::new()
        .name("statecast-history".into())
        .spawn(move || {
            while inner.mover.wait_due() {
                // A failure is tried again later; a read meanwhile reports it.
                if inner.move_history(MOVE_BATCH).is_err() {
                    inner.mover.failed();
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_is_due_at_once_with_a_full_batch_and_after_the_linger_with_less() {
        let mover = Mover::new(0, 0);
        assert_eq!(mover.waiting(), 0);
        mover.logged(MOVE_BATCH);
        let start = Instant::now();
        assert!(mover.wait_due());
        assert!(start.elapsed() < LINGER, "a full batch waits for nothing");
        mover.did_move(MOVE_BATCH, true);
        assert_eq!(mover.waiting(), 0);
        mover.logged(MOVE_BATCH + 1);
        let start = Instant::now();
        assert!(mover.wait_due());
        assert!(start.elapsed() >= LINGER, "one change waits for the linger");
    }

    #[test]
    fn an_unsynced_move_is_followed_by_a_sync_and_a_failure_rewinds_to_the_last_sync() {
        let mover = Mover::new(0, 10);
        mover.did_move(10, false);
        assert_eq!((mover.moved(), mover.synced(), mover.waiting()), (10, 0, 0));
        // Nothing waits, yet a sync is due within SYNC_EVERY.
        assert!(mover.wait_due());
        mover.logged(20);
        mover.rewind();
        assert_eq!((mover.moved(), mover.waiting()), (0, 20));
        mover.did_move(20, true);
        assert_eq!((mover.moved(), mover.synced()), (20, 20));
    }

    #[test]
    fn a_stopped_mover_is_never_due_again() {
        let mover = Arc::new(Mover::new(0, 0));
        let waiter = {
            let mover = mover.clone();
            std::thread::spawn(move || mover.wait_due())
        };
        mover.stop();
        assert!(!waiter.join().expect("joins"));
        mover.logged(MOVE_BATCH);
        assert!(!mover.wait_due());
    }

    #[test]
    fn the_end_read_again_never_falls_below_what_was_moved() {
        let mover = Mover::new(10, 20);
        assert_eq!(mover.waiting(), 10);
        mover.did_move(20, true);
        // The state's file lost the rows below 20 with its log's last key: keys go on at 20.
        mover.reset_end(0);
        assert_eq!((mover.moved(), mover.waiting()), (20, 0));
    }
}
