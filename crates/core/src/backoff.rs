//! Waits between attempts at something that keeps failing: exponential, capped, jittered.
//!
//! The rule: the first wait is `min`, each next one twice the last, never more than
//! `max`; each is scaled by a random factor in 0.8..1.2 so that the many clients, sources
//! or hubs that failed together (a broker restarting) do not all try again at the same
//! instant. [`Backoff::reset`] starts over at `min` once an attempt succeeds.
//!
//! It does no I/O and keeps no clock: the caller sleeps (a thread, a tokio timer) and says
//! when an attempt succeeded. The randomness is std's per-instance hash keys, so the core
//! needs no random-number crate for a few waits a second at most.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// The shortest wait: a zero `min` would retry in a busy loop.
const FLOOR: Duration = Duration::from_millis(1);

/// Exponential backoff between `min` and `max` with ±20% jitter (see the module docs).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    retrying: bool,
}

impl Backoff {
    /// `min` is raised to 1 ms, and `max` to `min`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(FLOOR);
        Backoff {
            min,
            max: max.max(min),
            next: min,
            retrying: false,
        }
    }

    /// The wait before the next attempt; each call doubles the one after, up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.retrying = true;
        jitter(base)
    }

    /// After a success: the next wait is `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
        self.retrying = false;
    }

    /// Whether a wait was handed out since the last success (or since the start): the
    /// thing is failing.
    pub fn retrying(&self) -> bool {
        self.retrying
    }
}

/// `wait` scaled by a random factor in 0.8..1.2, so that periodic work started together
/// drifts apart.
pub fn jitter(wait: Duration) -> Duration {
    // Each `RandomState` has fresh keys: hashing nothing with them gives a random u64.
    let random = RandomState::new().hash_one(());
    // The top 53 bits as a fraction in 0..1, exactly representable in an f64.
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    let scaled = wait.as_secs_f64() * (0.8 + 0.4 * unit);
    Duration::try_from_secs_f64(scaled).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Whether `wait` is `base` within the jitter.
    fn near(wait: Duration, base: Duration) -> bool {
        wait >= base.mul_f64(0.8) && wait <= base.mul_f64(1.2)
    }

    #[test]
    fn waits_double_from_min_and_stop_at_max() {
        let mut backoff = Backoff::new(100 * MS, 350 * MS);
        let waits: Vec<Duration> = (0..5).map(|_| backoff.next_wait()).collect();
        for (wait, base) in waits.iter().zip([100, 200, 350, 350, 350]) {
            assert!(near(*wait, base * MS), "{waits:?}");
        }
    }

    #[test]
    fn reset_starts_over_at_min() {
        let mut backoff = Backoff::new(100 * MS, 10_000 * MS);
        for _ in 0..6 {
            backoff.next_wait();
        }
        backoff.reset();
        assert!(near(backoff.next_wait(), 100 * MS));
    }

    #[test]
    fn retrying_is_true_from_the_first_wait_until_a_reset() {
        let mut backoff = Backoff::new(MS, MS);
        assert!(!backoff.retrying());
        backoff.next_wait();
        assert!(backoff.retrying());
        backoff.reset();
        assert!(!backoff.retrying());
    }

    #[test]
    fn a_zero_min_still_waits_and_max_is_never_below_min() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(backoff.next_wait() >= FLOOR.mul_f64(0.8));
        let mut backoff = Backoff::new(50 * MS, 10 * MS);
        for _ in 0..3 {
            assert!(near(backoff.next_wait(), 50 * MS));
        }
    }

    #[test]
    fn a_huge_max_does_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        for _ in 0..4 {
            backoff.next_wait();
        }
    }

    #[test]
    fn jitter_spreads_waits_across_the_whole_band() {
        let base = Duration::from_secs(1);
        let waits: Vec<Duration> = (0..200).map(|_| jitter(base)).collect();
        assert!(waits.iter().all(|w| near(*w, base)), "{waits:?}");
        // 200 draws from 0.8..1.2 all fall in one half with probability 2^-199.
        assert!(waits.iter().any(|w| *w < base) && waits.iter().any(|w| *w > base));
    }
}
