//! The Redis engine on its own, against the machine's Redis (127.0.0.1:6379) with a key
//! prefix per test: conditional appends, the order every follower sees, trimming, and the
//! epoch check.

use std::time::Duration;

use statecast_cluster::{ClusterConfig, RedisEngine};
use statecast_core::engine::{Append, Appended, EntryKind, Followed, SharedLog};
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
