//! Durable history: every change of a topic whose policy keeps history, queryable by time
//! until it is older than the policy's `history` (see docs/history.md). This module holds
//! what the queries mean, free of storage: the types an [`Engine`] answers with, the
//! `series` computation over a field's recorded values, and the `fields` projection.
//!
//! Not to be confused with the *resume buffer* (`hub/fanout.rs`): the last few patch
//! messages per topic, in memory, so a reconnecting client gets patches instead of a
//! snapshot. The history is durable and answers questions about the past; the resume buffer
//! only bridges a reconnect.
//!
//! [`Engine`]: crate::engine::Engine

use std::time::Duration;

use serde_json::{Map, Value};

/// How long changes stay queryable for a topic that no policy matches, or whose policy
/// does not say.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Changes in one answer when the query does not say.
pub const DEFAULT_LIMIT: usize = 1000;
/// Changes in one answer at most.
pub const MAX_LIMIT: usize = 100_000;
/// Steps in one series at most: a finer step over a long range is refused, not truncated.
pub const MAX_STEPS: u64 = 100_000;

/// One recorded change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub rev: u64,
    /// When it was made (Unix ms).
    pub time_ms: u64,
    /// The state after it (serialized JSON), `None` for a removal.
    pub state: Option<Vec<u8>>,
}

/// Where a range of changes starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first change at or after this time (Unix ms).
    Time(u64),
    /// This rev and the ones after it: where the previous page stopped.
    Rev(u64),
}

/// A query for a range of changes, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesQuery<'a> {
    pub topic: &'a str,
    /// Changes older than this (Unix ms) are past the topic's retention: never answered.
    pub kept_since_ms: u64,
    pub start: Start,
    /// Changes after this time (Unix ms) are not included.
    pub to_ms: u64,
    pub limit: usize,
}

/// A page of changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub changes: Vec<Change>,
    /// The rev to start the next page from, when there is more.
    pub next_rev: Option<u64>,
}

/// What a topic was at a past moment.
#[derive(Debug, Clone, PartialEq)]
pub enum At {
    /// It did not exist then (before its creation, or removed).
    Absent,
    /// That moment is older than the history kept.
    Gone,
    /// The change in effect then.
    Found(Change),
}

/// A field's value from `time_ms` until the next point: a number, or `None` when the field
/// then held no number (absent, another type, or the topic removed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub time_ms: u64,
    pub value: Option<f64>,
}

/// One step of a series (see [`series`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The step's start (Unix ms).
    pub t: u64,
    pub min: f64,
    pub max: f64,
    /// Weighted by how long each value was held in the step.
    pub avg: f64,
    /// The value at the step's end (the last number held, when the field then held none).
    pub last: f64,
    /// The recorded changes of the field in the step.
    pub changes: u64,
}

/// The series of a field over `[from_ms, to_ms)` in steps of `step_ms`, from its `points`
/// (ordered by time; the first may be at or before `from_ms`, carrying its value in).
///
/// The field is a level, held until it changes: `min`/`max` over the numbers held during
/// a step, `avg` weighted by how long each was held (time after `now_ms` does not count),
/// `last` the number at the step's end, carried forward. A step in which the field held no
/// number (before the topic existed, or only other values) is absent.
pub fn series(points: &[Point], from_ms: u64, to_ms: u64, step_ms: u64, now_ms: u64) -> Vec<Step> {
    let mut out = Vec::new();
    if step_ms == 0 || to_ms <= from_ms {
        return out;
    }
    // The point in effect at the current instant, and the next one to take effect.
    let mut next = points.partition_point(|p| p.time_ms < from_ms);
    let mut held: Option<f64> = next.checked_sub(1).and_then(|i| points[i].value);
    let mut start = from_ms;
    while start < to_ms {
        let end = start.saturating_add(step_ms).min(to_ms);
        let mut acc = StepAcc::new(start);
        // A number counts for min/max when it was set in the step or held in it for some
        // time: one carried in and replaced at the step's first instant does not.
        let mut counted = false;
        let mut at = start;
        while next < points.len() && points[next].time_ms < end {
            let p = points[next];
            acc.held_for(held, &mut counted, at, p.time_ms.min(now_ms));
            acc.changes += 1;
            held = p.value;
            counted = false;
            if let Some(v) = held {
                acc.hold(v);
                counted = true;
            }
            at = p.time_ms;
            next += 1;
        }
        acc.held_for(held, &mut counted, at, end.min(now_ms));
        if let Some(v) = held.filter(|_| counted) {
            acc.last = Some(v);
        }
        if let Some(step) = acc.finish() {
            out.push(step);
        }
        start = end;
    }
    out
}

/// The figures of one step while its points are walked.
struct StepAcc {
    t: u64,
    min: f64,
    max: f64,
    weighted: f64,
    weight: u64,
    sum: f64,
    held: u64,
    last: Option<f64>,
    changes: u64,
}

impl StepAcc {
    fn new(t: u64) -> StepAcc {
        StepAcc {
            t,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            weighted: 0.0,
            weight: 0,
            sum: 0.0,
            held: 0,
            last: None,
            changes: 0,
        }
    }

    /// A number held at some moment of the step.
    fn hold(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.held += 1;
        self.last = Some(v);
    }

    /// `value` held from `from` to `to`: weighed, and counted once if not yet.
    fn held_for(&mut self, value: Option<f64>, counted: &mut bool, from: u64, to: u64) {
        if let Some(v) = value
            && to > from
        {
            let ms = to - from;
            self.weighted += v * ms as f64;
            self.weight += ms;
            if !*counted {
                self.hold(v);
                *counted = true;
            }
        }
    }

    fn finish(self) -> Option<Step> {
        let last = self.last?;
        let avg = if self.weight > 0 {
            self.weighted / self.weight as f64
        } else {
            // Every number was held for no time (replaced within the millisecond, or the
            // step is still to come): their plain mean.
            self.sum / self.held as f64
        };
        Some(Step {
            t: self.t,
            min: self.min,
            max: self.max,
            avg,
            last,
            changes: self.changes,
        })
    }
}

/// `state` reduced to the given JSON pointers: `{"/battery": 80, "/rf": -60}`; a field the
/// state does not have is absent.
pub fn project(state: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    for field in fields {
        if let Some(v) = state.pointer(field) {
            out.insert(field.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The numeric leaves of a state, as (JSON pointer, value), in document order: what the
/// store records per field so that a series reads one field without parsing states.
pub fn numeric_leaves(state: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut path = String::new();
    leaves(state, &mut path, &mut out);
    out
}

/// The number at `pointer` in `state` when it is one of [`numeric_leaves`] (reached through
/// objects only, finite): what a series reads of a state, for a storage that rebuilds
/// states instead of keeping points.
pub fn number_at(state: &Value, pointer: &str) -> Option<f64> {
    let mut at = state;
    if !pointer.is_empty() {
        for segment in pointer.strip_prefix('/')?.split('/') {
            let key = segment.replace("~1", "/").replace("~0", "~");
            at = at.as_object()?.get(&key)?;
        }
    }
    at.as_f64().filter(|v| v.is_finite())
}

fn leaves(value: &Value, path: &mut String, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(n) => {
            if let Some(v) = n.as_f64().filter(|v| v.is_finite()) {
                out.push((path.clone(), v));
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                let len = path.len();
                path.push('/');
                escape_into(key, path);
                leaves(v, path, out);
                path.truncate(len);
            }
        }
        // Arrays are lists, not fields: their elements have no stable identity to plot.
        _ => {}
    }
}

/// A key as a JSON pointer segment (RFC 6901: `~` as `~0`, `/` as `~1`).
fn escape_into(key: &str, path: &mut String) {
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(time_ms: u64, value: f64) -> Point {
        Point {
            time_ms,
            value: Some(value),
        }
    }

    #[test]
    fn a_level_is_averaged_by_how_long_it_was_held() {
        // 10 for 1 s, then 20 for 3 s, in one 4 s step.
        let s = series(&[p(0, 10.0), p(1000, 20.0)], 0, 4000, 4000, u64::MAX);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].min, s[0].max, s[0].last, s[0].changes),
            (10.0, 20.0, 20.0, 2)
        );
        assert!((s[0].avg - 17.5).abs() < 1e-9, "{}", s[0].avg);
    }

    #[test]
    fn empty_steps_carry_the_level_forward() {
        let s = series(&[p(0, 5.0)], 0, 3000, 1000, u64::MAX);
        assert_eq!(s.len(), 3);
        for step in &s[1..] {
            assert_eq!(
                (step.min, step.max, step.avg, step.last),
                (5.0, 5.0, 5.0, 5.0)
            );
            assert_eq!(step.changes, 0);
        }
    }

    #[test]
    fn steps_before_the_first_value_are_absent() {
        let s = series(&[p(2500, 1.0)], 0, 4000, 1000, u64::MAX);
        assert_eq!(s.iter().map(|s| s.t).collect::<Vec<_>>(), [2000, 3000]);
        assert_eq!(s[0].avg, 1.0);
    }

    #[test]
    fn a_value_carried_in_from_before_the_range_counts() {
        let s = series(&[p(0, 7.0), p(5000, 9.0)], 2000, 4000, 1000, u64::MAX);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].last, 7.0);
    }

    #[test]
    fn non_numbers_are_skipped_and_a_step_holding_none_is_absent() {
        let pts = [
            p(0, 1.0),
            Point {
                time_ms: 1000,
                value: None,
            },
            p(3000, 3.0),
        ];
        let s = series(&pts, 0, 4000, 1000, u64::MAX);
        // From 1000 to 3000 the field holds no number: those two steps are absent.
        assert_eq!(s.iter().map(|s| s.t).collect::<Vec<_>>(), [0, 3000]);
    }

    #[test]
    fn time_after_now_does_not_weigh() {
        let s = series(&[p(0, 10.0), p(1000, 20.0)], 0, 10_000, 10_000, 2000);
        assert!((s[0].avg - 15.0).abs() < 1e-9, "{}", s[0].avg);
    }

    #[test]
    fn values_replaced_within_the_millisecond_count_for_min_max_not_avg() {
        let s = series(
            &[p(0, 10.0), p(500, 99.0), p(500, 20.0)],
            0,
            1000,
            1000,
            u64::MAX,
        );
        assert_eq!((s[0].min, s[0].max, s[0].changes), (10.0, 99.0, 3));
        assert!((s[0].avg - 15.0).abs() < 1e-9);
    }

    #[test]
    fn projection_keeps_the_asked_pointers_and_leaves_out_missing_ones() {
        let state = json!({"battery": 80, "rf": {"level": -60}, "name": "a"});
        let fields = [
            "/battery".to_string(),
            "/rf/level".to_string(),
            "/gone".to_string(),
        ];
        assert_eq!(
            project(&state, &fields),
            json!({"/battery": 80, "/rf/level": -60})
        );
    }

    #[test]
    fn number_at_reads_what_numeric_leaves_finds() {
        let state = json!({"a": 1, "b": {"c/d": 2.5, "e~": 3, "s": "x"}, "l": [1, 2]});
        for (pointer, value) in numeric_leaves(&state) {
            assert_eq!(number_at(&state, &pointer), Some(value), "{pointer}");
        }
        for pointer in ["/b/s", "/l/0", "/l", "/gone", "b", "/b"] {
            assert_eq!(number_at(&state, pointer), None, "{pointer}");
        }
    }

    #[test]
    fn numeric_leaves_are_pointers_escaped_as_rfc_6901_says() {
        let state = json!({"a": 1, "b": {"c/d": 2.5, "e~": 3, "s": "x"}, "l": [1, 2]});
        assert_eq!(
            numeric_leaves(&state),
            [
                ("/a".to_string(), 1.0),
                ("/b/c~1d".to_string(), 2.5),
                ("/b/e~0".to_string(), 3.0)
            ]
        );
    }
}
