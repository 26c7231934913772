//! The Redis engine on its own, against the machine's Redis (127.0.0.1:6379) with a key
//! prefix per test: conditional appends, the order every follower sees, trimming, the
//! epoch check, and the history the append records.

use std::time::Duration;

use serde_json::{Value, json};
use statecast_cluster::{ClusterConfig, RedisEngine};
use statecast_core::engine::{Append, Appended, EntryKind, Followed, SharedLog};
use statecast_core::history::{At, Change, ChangesQuery, Point, Start};
use statecast_testkit::{RedisPrefix, SHARED_REDIS};

/// A cluster config with a key prefix of its own, deleted when dropped.
struct Scratch {
    config: ClusterConfig,
    _keys: RedisPrefix,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let keys = RedisPrefix::new(&format!("engine-{test}"));
        let mut config = ClusterConfig::new(SHARED_REDIS);
        config.prefix = keys.as_str().to_owned();
        Scratch {
            config,
            _keys: keys,
        }
    }

    fn engine(&self, node: &str) -> RedisEngine {
        let mut config = self.config.clone();
        config.node = node.into();
        let engine = RedisEngine::open(config).expect("Redis on 127.0.0.1:6379");
        engine.load().expect("load");
        engine
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(self.config.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("Redis")
    }
}

fn set<'a>(topic: &'a str, rev: u64, state: &'a str) -> Append<'a> {
    Append::Change {
        topic,
        rev,
        state: Some(state.as_bytes()),
        patch: None,
        time_ms: 1_000,
        keep_ms: 0,
    }
}

fn entries(engine: &RedisEngine) -> Vec<(u64, String, u64)> {
    match engine
        .follow(Duration::from_millis(100), 0)
        .expect("follow")
    {
        Followed::Entries(entries) => entries
            .into_iter()
            .map(|e| match e.kind {
                EntryKind::Change { rev, .. } => (e.seq, e.topic, rev),
                EntryKind::Event { .. } => (e.seq, e.topic, 0),
            })
            .collect(),
        Followed::Resync(_) => panic!("unexpected resync"),
    }
}

#[test]
fn a_conflicting_topic_takes_none_of_its_later_changes_while_others_go_on() {
    let scratch = Scratch::new("conflict");
    let a = scratch.engine("a");
    let b = scratch.engine("b");
    let stored = a
        .append(&[set("t/1", 1, r#"{"v":1}"#), set("t/1", 2, r#"{"v":2}"#)])
        .expect("append");
    assert_eq!(
        stored,
        [Appended::Stored { seq: 1 }, Appended::Stored { seq: 2 }]
    );
    // Hub b computed rev 2 from an older view: refused with the current state, and so is
    // its rev 3 after it, while another topic in the same batch is stored.
    let answer = b
        .append(&[
            set("t/1", 2, r#"{"v":"b"}"#),
            set("t/1", 3, r#"{"v":"b3"}"#),
            set("t/2", 1, "true"),
        ])
        .expect("append");
    assert_eq!(
        answer,
        [
            Appended::Conflict {
                rev: 2,
                state: Some(br#"{"v":2}"#.to_vec())
            },
            Appended::Conflict {
                rev: 2,
                state: Some(br#"{"v":2}"#.to_vec())
            },
            Appended::Stored { seq: 3 },
        ]
    );
    // Both followers read the same order.
    let want = vec![
        (1, "t/1".to_string(), 1),
        (2, "t/1".to_string(), 2),
        (3, "t/2".to_string(), 1),
    ];
    assert_eq!(entries(&a), want);
    assert_eq!(entries(&b), want);
    // A hub started now loads the states and the history.
    let late = scratch.engine("late");
    let loaded = late.load().expect("load");
    assert_eq!(loaded.seq, 3);
    assert_eq!(loaded.recent.len(), 3);
    let mut topics: Vec<_> = loaded
        .topics
        .iter()
        .map(|t| (t.topic.as_str(), t.rev, t.seq, t.state.clone()))
        .collect();
    topics.sort();
    assert_eq!(
        topics,
        [
            ("t/1", 2, 2, Some(br#"{"v":2}"#.to_vec())),
            ("t/2", 1, 3, Some(b"true".to_vec()))
        ]
    );
}

#[test]
fn a_removal_keeps_the_rev_and_a_follower_past_a_trim_is_told_to_resync() {
    let mut scratch = Scratch::new("trim");
    scratch.config.stream_len = 5;
    let writer = scratch.engine("w");
    let reader = scratch.engine("r");
    writer.append(&[set("x", 1, "1")]).expect("append");
    writer
        .append(&[Append::Change {
            topic: "x",
            rev: 2,
            state: None,
            patch: None,
            time_ms: 2_000,
            keep_ms: 0,
        }])
        .expect("append");
    assert_eq!(
        writer.append(&[set("x", 1, "2")]).expect("append"),
        [Appended::Conflict {
            rev: 2,
            state: None
        }],
        "a removed topic keeps its rev"
    );
    // Far more than the stream keeps (Redis trims whole nodes of 100 entries).
    for rev in 3..=400 {
        writer.append(&[set("x", rev, "3")]).expect("append");
    }
    match reader
        .follow(Duration::from_millis(100), 0)
        .expect("follow")
    {
        Followed::Resync(loaded) => {
            assert_eq!(loaded.seq, 400);
            assert_eq!(loaded.topics[0].rev, 400);
        }
        Followed::Entries(e) => panic!("expected a resync, got {} entries", e.len()),
    }
    // From there on it follows normally.
    writer.append(&[set("x", 401, "4")]).expect("append");
    assert_eq!(entries(&reader), [(401, "x".to_string(), 401)]);
}

#[test]
fn appends_to_a_redis_that_lost_the_data_are_refused() {
    let scratch = Scratch::new("epoch");
    let engine = scratch.engine("a");
    engine.append(&[set("e", 1, "1")]).expect("append");
    let mut con = scratch.redis();
    let _: () = redis::cmd("DEL")
        .arg(format!("{{{}}}:epoch", scratch.config.prefix))
        .query(&mut con)
        .expect("DEL");
    let error = engine.append(&[set("e", 2, "2")]).expect_err("refused");
    assert!(error.0.contains("no longer holds"), "{error}");
}

/// A change kept an hour, with the patch message a hub would append (`patch`: the merge
/// patch, when one expresses the change).
struct Kept {
    topic: &'static str,
    rev: u64,
    state: Option<String>,
    message: Option<String>,
    time_ms: u64,
    keep_ms: u64,
}

fn kept(rev: u64, state: Value, patch: Option<Value>, time_ms: u64) -> Kept {
    Kept {
        topic: "h/1",
        rev,
        state: Some(state.to_string()),
        message: patch
            .map(|p| format!(r#"{{"type":"patch","topic":"h/1","rev":{rev},"patch":{p}}}"#)),
        time_ms,
        keep_ms: 3_600_000,
    }
}

fn append_kept(engine: &RedisEngine, changes: &[Kept]) -> Vec<Appended> {
    let appends: Vec<Append<'_>> = changes
        .iter()
        .map(|c| Append::Change {
            topic: c.topic,
            rev: c.rev,
            state: c.state.as_deref().map(str::as_bytes),
            patch: c.message.as_deref().map(str::as_bytes),
            time_ms: c.time_ms,
            keep_ms: c.keep_ms,
        })
        .collect();
    engine.append(&appends).expect("append")
}

fn query(start: Start, limit: usize) -> ChangesQuery<'static> {
    ChangesQuery {
        topic: "h/1",
        kept_since_ms: 0,
        start,
        to_ms: u64::MAX,
        limit,
    }
}

fn revs_and_times(changes: &[Change]) -> Vec<(u64, u64)> {
    changes.iter().map(|c| (c.rev, c.time_ms)).collect()
}

#[test]
fn the_append_records_history_that_any_engine_reads_back() {
    let scratch = Scratch::new("history");
    let writer = scratch.engine("w");
    let reader = scratch.engine("r");
    append_kept(
        &writer,
        &[
            kept(1, json!({"a": 1, "s": "x"}), None, 1_000),
            // Another hub's clock behind: recorded as no time passing.
            kept(2, json!({"a": 2, "s": "x"}), Some(json!({"a": 2})), 900),
            kept(3, json!({"a": 3, "s": "x"}), Some(json!({"a": 3})), 2_000),
        ],
    );
    // Refused (the topic is at rev 3): not recorded.
    let refused = append_kept(&writer, &[kept(3, json!({"a": 9}), None, 2_500)]);
    assert!(matches!(refused[0], Appended::Conflict { rev: 3, .. }));
    // A change not recorded (its policy keeps none) leaves a gap: the next is a full state.
    let mut off = kept(4, json!({"a": 4}), None, 3_000);
    off.keep_ms = 0;
    append_kept(
        &writer,
        &[off, kept(5, json!({"a": 5}), Some(json!({"a": 5})), 4_000)],
    );

    let page = reader.changes(&query(Start::Time(0), 2)).expect("changes");
    assert_eq!(revs_and_times(&page.changes), [(1, 1_000), (2, 1_000)]);
    assert_eq!(page.next_rev, Some(3));
    let rest = reader.changes(&query(Start::Rev(3), 10)).expect("changes");
    assert_eq!(revs_and_times(&rest.changes), [(3, 2_000), (5, 4_000)]);
    assert_eq!(rest.next_rev, None);
    let states: Vec<Value> = rest
        .changes
        .iter()
        .map(|c| serde_json::from_slice(c.state.as_deref().expect("a state")).expect("JSON"))
        .collect();
    assert_eq!(states, [json!({"a": 3, "s": "x"}), json!({"a": 5})]);

    assert_eq!(reader.state_at("h/1", 0, 999).expect("at"), At::Absent);
    let At::Found(at) = reader.state_at("h/1", 0, 1_500).expect("at") else {
        panic!("a state at 1.5 s");
    };
    assert_eq!(
        (at.rev, at.state.as_deref()),
        (2, Some(&br#"{"a":2,"s":"x"}"#[..]))
    );
    assert_eq!(
        reader
            .field_points("h/1", "/a", 0, 0, u64::MAX)
            .expect("points"),
        [(1_000, 1.0), (1_000, 2.0), (2_000, 3.0), (4_000, 5.0)].map(|(time_ms, v)| Point {
            time_ms,
            value: Some(v)
        })
    );
    // The value held at `from_ms` comes first, at the time it was set.
    assert_eq!(
        reader
            .field_points("h/1", "/a", 0, 2_500, 3_000)
            .expect("points"),
        [Point {
            time_ms: 2_000,
            value: Some(3.0)
        }]
    );
}

#[test]
fn patches_rebuild_every_state_across_the_periodic_full_states() {
    let scratch = Scratch::new("history-full");
    let engine = scratch.engine("w");
    let mut state = json!({"n": 0, "name": "mic"});
    let mut changes = vec![kept(1, state.clone(), None, 10)];
    for rev in 2..=200 {
        state["n"] = json!(rev);
        changes.push(kept(
            rev,
            state.clone(),
            Some(json!({"n": rev})),
            10 + rev / 3,
        ));
    }
    append_kept(&engine, &changes);
    let mut all = Vec::new();
    let mut start = Start::Time(0);
    loop {
        let page = engine.changes(&query(start, 37)).expect("changes");
        all.extend(page.changes);
        match page.next_rev {
            Some(rev) => start = Start::Rev(rev),
            None => break,
        }
    }
    let got: Vec<(u64, Option<String>)> = all
        .into_iter()
        .map(|c| (c.rev, c.state.map(|s| String::from_utf8(s).expect("UTF-8"))))
        .collect();
    let want: Vec<(u64, Option<String>)> =
        changes.iter().map(|c| (c.rev, c.state.clone())).collect();
    assert_eq!(got, want);
    // Full states at the first change and every 64th rev, patches between.
    let mut redis = scratch.redis();
    let kinds: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("{{{}}}:h:h/1", scratch.config.prefix))
        .arg("-")
        .arg("+")
        .query(&mut redis)
        .expect("XRANGE");
    let full: Vec<&str> = kinds
        .iter()
        .filter(|(_, fields)| fields[1].starts_with('f'))
        .map(|(id, _)| id.split('-').nth(1).expect("a rev"))
        .collect();
    assert_eq!(full, ["1", "64", "128", "192"]);
}
