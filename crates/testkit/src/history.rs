//! The history's REST answers, read the same way by the single-hub and the cluster tests:
//! a config file with `[[topics]]` policies, every change of a topic page by page, times
//! as Unix ms, and what a `series` must be, computed independently of the hub.

use crate::http::http_client;
use crate::hub::Server;
use serde_json::{Value, json};

/// A `statecast.toml` in a new directory; returns both.
pub fn config_file(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statecast.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

pub async fn history(server: &Server, query: &str) -> Value {
    let r = server.get(&format!("/api/history/{query}")).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    r.json()
}

/// Every change of a topic, following `next` with pages of `limit`.
pub async fn all_changes(server: &Server, topic: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = String::new();
    loop {
        let page = history(server, &format!("{topic}?limit={limit}{from}")).await;
        out.extend(page["changes"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => from = format!("&from={next}"),
            None => return out,
        }
    }
}

/// Parses an answer's RFC 3339 time into Unix ms.
pub fn unix_ms(time: &Value) -> u64 {
    let t = humantime::parse_rfc3339(time.as_str().expect("a time")).expect("RFC 3339");
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// What a series must be, computed millisecond by millisecond from the recorded changes
/// (`(time, value)`, `None` where the field held no number): independent of the hub's
/// interval arithmetic.
pub fn brute_force_series(
    changes: &[(u64, Option<f64>)],
    from: u64,
    to: u64,
    step: u64,
) -> Vec<Value> {
    let value_at = |t: u64| -> Option<f64> {
        changes
            .iter()
            .rev()
            .find(|(time, _)| *time <= t)
            .and_then(|(_, v)| *v)
    };
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = (start + step).min(to);
        let held: Vec<f64> = (start..end).filter_map(value_at).collect();
        let set: Vec<f64> = changes
            .iter()
            .filter(|(t, _)| (start..end).contains(t))
            .filter_map(|(_, v)| *v)
            .collect();
        let all: Vec<f64> = held.iter().chain(&set).copied().collect();
        if !all.is_empty() {
            let min = all.iter().copied().fold(f64::INFINITY, f64::min);
            let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let avg = if held.is_empty() {
                set.iter().sum::<f64>() / set.len() as f64
            } else {
                held.iter().sum::<f64>() / held.len() as f64
            };
            let last = value_at(end - 1)
                .or(set.last().copied())
                .or(held.last().copied());
            let changes_in = changes
                .iter()
                .filter(|(t, _)| (start..end).contains(t))
                .count();
            out.push(json!({"t": start, "min": min, "max": max, "avg": avg, "last": last, "changes": changes_in}));
        }
        start = end;
    }
    out
}

/// Checks a `series` answer's points against what [`brute_force_series`] computed: the
/// same steps, changes and figures (to 1e-9).
pub fn assert_same_series(got: &[Value], expected: &[Value]) {
    assert_eq!(got.len(), expected.len(), "{got:?}\n{expected:?}");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g["t"], e["t"]);
        assert_eq!(g["changes"], e["changes"], "{g} {e}");
        for k in ["min", "max", "avg", "last"] {
            let (g, e) = (g[k].as_f64().unwrap(), e[k].as_f64().unwrap());
            assert!((g - e).abs() < 1e-9, "{k}: {g} != {e}");
        }
    }
}

/// The `state` of each change of a history answer.
pub fn states(answer: &Value) -> Vec<Value> {
    answer["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["state"].clone())
        .collect()
}

/// Two API keys: `admin` ([`ADMIN_KEY`]) reads and writes everything, `dash`
/// ([`DASH_KEY`]) reads only `public/#`. A config file's text.
pub const TWO_KEYS: &str = r##"
[[auth.keys]]
name = "admin"
key = "admin-key-0123456789"
read = ["#"]
write = ["#"]
[[auth.keys]]
name = "dash"
key = "dash-key-0123456789"
read = ["public/#"]
"##;
pub const ADMIN_KEY: &str = "admin-key-0123456789";
pub const DASH_KEY: &str = "dash-key-0123456789";

/// Writes `secret/x` through `writer` as `admin`, then checks that `dash` gets 403
/// `forbidden` from `reader` for the topic's changes, series and `?at=` (both hubs run
/// with [`TWO_KEYS`]; they may be the same).
pub async fn assert_history_forbidden(writer: &Server, reader: &Server) {
    let put = writer
        .send(
            http_client()
                .put(writer.url("/api/state/secret/x"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"v": 1})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    for path in [
        "/api/history/secret/x",
        "/api/history/secret/x?field=/v&step=1s",
        "/api/state/secret/x?at=-1s",
    ] {
        let r = reader
            .send(http_client().get(reader.url(path)).bearer_auth(DASH_KEY))
            .await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], "forbidden");
    }
}

/// Writes 150 changes of about 230 bytes each to `old/a` through `first`, then as many to
/// `new/b` through `second` (the same hub or two of a cluster).
pub async fn write_old_then_new(first: &Server, second: &Server) {
    let filler = "x".repeat(200);
    for (topic, hub) in [("old/a", first), ("new/b", second)] {
        for i in 0..150 {
            let r = hub
                .put(
                    &format!("/api/state/{topic}"),
                    &json!({"i": i, "filler": format!("{filler}{i}")}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }
}

/// After [`write_old_then_new`] over a bound too small for both: `old/a` lost its oldest
/// changes, never its newest, `new/b` kept all, `statecast_history_bytes` is within
/// `held_at_most`, and a moment before what `old/a` kept is 410. Returns `old/a`'s changes.
pub async fn assert_oldest_went_first(server: &Server, held_at_most: f64) -> Vec<Value> {
    let old = all_changes(server, "old/a", 1000).await;
    let new = all_changes(server, "new/b", 1000).await;
    assert!(
        old.len() < 150,
        "the older topic lost its oldest changes: {}",
        old.len()
    );
    assert_eq!(old.last().unwrap()["rev"], 150, "its newest stays");
    assert_eq!(new.len(), 150, "the newer topic kept all");
    let held = server.metric("statecast_history_bytes").await;
    assert!(
        held > 0.0 && held <= held_at_most,
        "statecast_history_bytes {held}"
    );
    let first_kept = unix_ms(&old[0]["time"]);
    let gone = server
        .get(&format!("/api/state/old/a?at={}", first_kept - 1))
        .await;
    assert_eq!(gone.status, 410, "{}", gone.text);
    old
}

/// Checks that `changes` are revs 1, 2, ... in time order, each with the state in
/// `expected` (the `removed_at`-th a removal instead).
pub fn assert_recorded(changes: &[Value], expected: &[Value], removed_at: Option<usize>) {
    let mut last_time = 0;
    for (i, change) in changes.iter().enumerate() {
        assert_eq!(change["rev"], json!(i + 1), "{change}");
        let time = unix_ms(&change["time"]);
        assert!(time >= last_time, "times in order: {change}");
        last_time = time;
        if Some(i) == removed_at {
            assert_eq!(change["removed"], true, "{change}");
            assert!(change.get("state").is_none(), "{change}");
        } else {
            assert_eq!(change["state"], expected[i], "rev {}", i + 1);
        }
    }
}
