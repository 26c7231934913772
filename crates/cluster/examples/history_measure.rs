//! Measures the shared history in Redis (docs/history.md, "Several hubs"): appends
//! 100,000 changes of one topic (a 300-byte device state, its battery and sometimes its RF
//! level changing) with history on and then off, reports what Redis holds per change
//! (`MEMORY USAGE`) against full states stored instead, and times the queries over them.
//!
//! Needs Redis on 127.0.0.1:6379; its keys are under a prefix of its own, deleted at the
//! end. Run with `cargo run -p statecast-cluster --release --example history_measure`.

use std::time::{Duration, Instant};

use serde_json::json;
use statecast_cluster::{ClusterConfig, RedisEngine};
use statecast_core::engine::{Append, SharedLog};
use statecast_core::history::{self, ChangesQuery, Start};
use statecast_testkit::{RedisPrefix, SHARED_REDIS};

const CHANGES: u64 = 100_000;
const BATCH: usize = 500;

struct Change {
    rev: u64,
    state: String,
    message: String,
    time_ms: u64,
}

fn changes(topic: &str, start_ms: u64) -> Vec<Change> {
    let mut state = json!({
        "battery": 100, "rf": {"level": -40, "quality": 5, "antenna": "A"},
        "name": "Lead vocal", "model": "ULXD2", "frequency": "606.125 MHz", "mute": false,
        "transmitter": {"type": "handheld", "offset": 0, "lock": "none"},
        "note": "x".repeat(110)
    });
    (1..=CHANGES)
        .map(|rev| {
            let mut patch = json!({"battery": 100 - rev % 90});
            if rev % 2 == 0 {
                patch["rf"] = json!({"level": -40 - (rev % 13) as i64});
            }
            statecast_core::merge::apply(&mut state, &patch);
            Change {
                rev,
                state: state.to_string(),
                message: format!(
                    r#"{{"type":"patch","topic":"{topic}","rev":{rev},"patch":{patch}}}"#
                ),
                time_ms: start_ms + rev,
            }
        })
        .collect()
}

fn append_all(engine: &RedisEngine, topic: &str, all: &[Change], keep_ms: u64) -> Duration {
    let started = Instant::now();
    for batch in all.chunks(BATCH) {
        let appends: Vec<Append<'_>> = batch
            .iter()
            .map(|c| Append::Change {
                topic,
                rev: c.rev,
                state: Some(c.state.as_bytes()),
                patch: (c.rev > 1).then_some(c.message.as_bytes()),
                time_ms: c.time_ms,
                keep_ms,
            })
            .collect();
        engine.append(&appends).expect("append");
    }
    started.elapsed()
}

/// The median of 5 runs of `f`, in ms.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() {
    let prefix = RedisPrefix::new("measure-history");
    let mut config = ClusterConfig::new(SHARED_REDIS);
    config.prefix = prefix.as_str().to_string();
    config.stream_len = 1000;
    let engine = RedisEngine::open(config).expect("Redis on 127.0.0.1:6379");
    engine.load().expect("load");
    let mut redis = redis::Client::open(SHARED_REDIS)
        .and_then(|c| c.get_connection())
        .expect("Redis");

    let start_ms = 1_000_000;
    let on = changes("m/on", start_ms);
    let off = changes("m/off", start_ms);
    let state_len = on.iter().map(|c| c.state.len()).sum::<usize>() / on.len();
    println!("{CHANGES} changes of a {state_len}-byte state, batches of {BATCH}");
    let t_on = append_all(&engine, "m/on", &on, u64::MAX / 4);
    let t_off = append_all(&engine, "m/off", &off, 0);
    let rate = |t: Duration| CHANGES as f64 / t.as_secs_f64();
    println!(
        "appends: history on {:.0}/s, off {:.0}/s",
        rate(t_on),
        rate(t_off)
    );

    let key = format!("{{{}}}:h:m/on", prefix.as_str());
    let memory = |redis: &mut redis::Connection, key: &str| -> u64 {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(redis)
            .expect("MEMORY USAGE")
    };
    let used = memory(&mut redis, &key);
    let counted = engine.history_bytes();
    let bodies: u64 = redis::cmd("EVAL")
        .arg(
            "local n = 0 for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do \
             n = n + #e[2][2] - 1 end return n",
        )
        .arg(1)
        .arg(&key)
        .query(&mut redis)
        .expect("bodies");
    println!(
        "Redis: {used} bytes for the stream, {:.1} per change ({:.1} of them bodies); \
         counted {counted}, {:.1} per change",
        used as f64 / CHANGES as f64,
        bodies as f64 / CHANGES as f64,
        counted as f64 / CHANGES as f64
    );
    // The alternative: every change's full state.
    let full = format!("{{{}}}:fullstates", prefix.as_str());
    for batch in on.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for c in batch {
            pipe.cmd("XADD")
                .arg(&full)
                .arg(format!("{}-{}", c.time_ms, c.rev))
                .arg("e")
                .arg(format!("f{}", c.state))
                .ignore();
        }
        let _: () = pipe.query(&mut redis).expect("XADD");
    }
    let full_used = memory(&mut redis, &full);
    println!(
        "full states instead: {full_used} bytes, {:.1} per change",
        full_used as f64 / CHANGES as f64
    );

    // What reading the entries alone takes (no parsing): the floor of a series here.
    let ms = median_ms(|| {
        let mut after = "-".to_string();
        loop {
            let chunk: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&after)
                .arg("+")
                .arg("COUNT")
                .arg(8192)
                .query(&mut redis)
                .expect("XRANGE");
            match chunk.last() {
                Some((id, _)) if chunk.len() == 8192 => after = format!("({id}"),
                _ => break,
            }
        }
    });
    println!("reading the {CHANGES} entries alone (XRANGE, 8,192 at a time): {ms:.1} ms");
    let (from, to) = (start_ms, start_ms + CHANGES + 1);
    for steps in [10, 1000, 100_000] {
        let step = (to - from).div_ceil(steps);
        let mut answered = 0;
        let ms = median_ms(|| {
            let points = engine
                .field_points("m/on", "/battery", 0, from, to)
                .expect("points");
            answered = history::series(&points, from, to, step, u64::MAX).len();
        });
        println!(
            "series of /battery over {CHANGES} changes, {steps} steps ({answered} answered): {ms:.1} ms"
        );
    }
    let middle = start_ms + CHANGES / 2;
    let ms = median_ms(|| {
        let page = engine
            .changes(&ChangesQuery {
                topic: "m/on",
                kept_since_ms: 0,
                start: Start::Time(middle),
                to_ms: u64::MAX,
                limit: 10_000,
            })
            .expect("changes");
        assert_eq!(page.changes.len(), 10_000);
    });
    println!("10,000 changes from the middle: {ms:.1} ms");
    let ms = median_ms(|| {
        engine.state_at("m/on", 0, middle).expect("at");
    });
    println!("?at= in the middle: {ms:.2} ms");
}
