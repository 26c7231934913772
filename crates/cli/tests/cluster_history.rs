//! The history of hubs that share Redis (`--cluster`): what is written through one hub is
//! answered identically by every other, a hub started after the writes included (changes
//! with paging, `fields`, `series`, `?at=`); retention drops old changes (from Redis too);
//! `history_max_bytes` drops the oldest first; 404 before creation and after removal, 410
//! older than retention, 400 for bad parameters; a reader that may not read a topic gets
//! 403 from any hub.
//!
//! Each test has a key prefix of its own on the shared Redis (127.0.0.1:6379), deleted at
//! the end; times are the hubs' own, read back from the history.

mod common;

use common::*;
use serde_json::{Value, json};

fn node(prefix: &RedisPrefix, id: &str, extra: &[&str]) -> Server {
    let mut args = cluster_args(SHARED_REDIS, prefix, id);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The same GET on every hub: all answer alike; returns the first answer.
async fn same_everywhere(hubs: &[&Server], path: &str) -> (u16, Value) {
    let first = hubs[0].get(path).await;
    for hub in &hubs[1..] {
        let other = hub.get(path).await;
        assert_eq!(
            (other.status, &other.text),
            (first.status, &first.text),
            "{path}"
        );
    }
    (first.status, first.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hub_answers_the_history_written_through_one() {
    let prefix = RedisPrefix::new("test-chist");
    let a = node(&prefix, "a", &[]);
    let b = node(&prefix, "b", &[]);
    let topic = "mics/rx-1";
    let mut expected = vec![json!({"battery": 100, "rf": {"level": -40}, "name": "Lead"})];
    let put = a.put(&format!("/api/state/{topic}"), &expected[0]).await;
    assert_eq!(put.status, 200, "{}", put.text);
    // 150 patches (past two full states, at revs 64 and 128), some a few ms apart so that
    // a series has steps without a change.
    for i in 1..=150u64 {
        let patch = json!({"battery": 100 - i % 60, "rf": {"level": -40 - (i % 7) as i64}});
        let r = a.patch(&format!("/api/state/{topic}"), &patch).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let mut next = expected.last().unwrap().clone();
        merge_apply(&mut next, &patch);
        expected.push(next);
        if i % 25 == 0 {
            // Data with time in it: the pauses make the steps, nothing waits on them.
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        }
    }
    assert_eq!(a.delete(&format!("/api/state/{topic}")).await.status, 200);
    let late = node(&prefix, "c", &[]);
    let hubs = [&a, &b, &late];

    let changes = all_changes(&b, topic, 1000).await;
    assert_eq!(changes.len(), 152);
    assert_recorded(&changes, &expected, Some(151));
    for hub in hubs {
        for limit in [1, 7, 64, 1000] {
            assert_eq!(
                all_changes(hub, topic, limit).await,
                changes,
                "pages of {limit}"
            );
        }
    }
    // A range by time, and a page of it.
    let (from, to) = (
        unix_ms(&changes[40]["time"]),
        unix_ms(&changes[120]["time"]),
    );
    let (status, ranged) = same_everywhere(
        &hubs,
        &format!("/api/history/{topic}?from={from}&to={to}&limit=30"),
    )
    .await;
    assert_eq!(status, 200, "{ranged}");
    let want: Vec<&Value> = changes
        .iter()
        .filter(|c| (from..=to).contains(&unix_ms(&c["time"])))
        .take(30)
        .collect();
    let got: Vec<&Value> = ranged["changes"].as_array().unwrap().iter().collect();
    assert_eq!(got, want);
    assert!(ranged["next"].is_string(), "{ranged}");

    let (_, projected) = same_everywhere(
        &hubs,
        &format!("/api/history/{topic}?fields=/battery,/rf/level&limit=3"),
    )
    .await;
    assert_eq!(
        states(&projected),
        [
            json!({"/battery": 100, "/rf/level": -40}),
            json!({"/battery": 99, "/rf/level": -41}),
            json!({"/battery": 98, "/rf/level": -42}),
        ]
    );

    // The series over the whole range, from before the creation to the removal.
    let recorded: Vec<(u64, Option<f64>)> = changes
        .iter()
        .map(|c| (unix_ms(&c["time"]), c["state"]["battery"].as_f64()))
        .collect();
    let (first, last) = (recorded[0].0, recorded[151].0);
    let (from, to, step) = (first - 30, last, 20);
    let (status, series) = same_everywhere(
        &hubs,
        &format!("/api/history/{topic}?field=/battery&step={step}&from={from}&to={to}"),
    )
    .await;
    assert_eq!(status, 200, "{series}");
    let got = series["points"].as_array().unwrap();
    assert_same_series(got, &brute_force_series(&recorded, from, to, step));
    assert!(
        got.iter().any(|p| p["changes"] == 0),
        "the pauses leave steps with no change, carried forward"
    );

    // The state at past moments: before the creation, between changes, after the removal.
    let at = |t: u64| format!("/api/state/{topic}?at={t}");
    let (status, before) = same_everywhere(&hubs, &at(first - 1)).await;
    assert_eq!(
        (status, &before["error"]["code"]),
        (404, &json!("not_found"))
    );
    for i in [0, 63, 64, 100, 150] {
        let (status, found) = same_everywhere(&hubs, &at(unix_ms(&changes[i]["time"]))).await;
        assert_eq!(status, 200, "{found}");
        // Changes in the same millisecond: the last of them is in effect.
        let rev = found["rev"].as_u64().unwrap() as usize;
        assert!(rev > i, "{found}");
        assert_eq!(found["time"], changes[i]["time"]);
        assert_eq!(found["state"], changes[rev - 1]["state"]);
    }
    let (status, _) = same_everywhere(&hubs, &at(last)).await;
    assert_eq!(status, 404, "after the removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_changes_and_old_moments_are_gone() {
    let prefix = RedisPrefix::new("test-chist-keep");
    let (_dir, config) = config_file(
        r#"
        [[topics]]
        match = "short/+"
        history = "2s"
        [[topics]]
        match = "none/+"
        history = "0"
        "#,
    );
    let a = node(&prefix, "a", &["--config", &config]);
    let b = node(&prefix, "b", &["--config", &config]);
    for v in 0..20 {
        a.put("/api/state/short/a", &json!({"v": v})).await;
    }
    assert_eq!(all_changes(&b, "short/a", 1000).await.len(), 20);
    let old = b.get("/api/state/short/a?at=-3s").await;
    assert_eq!(old.status, 410, "{}", old.text);
    assert_eq!(old.json()["error"]["code"], "gone");
    a.put("/api/state/none/a", &json!({"v": 1})).await;
    let none = b.get("/api/history/none/a").await;
    assert_eq!(none.status, 404, "{}", none.text);
    for query in ["short/a?limit=0", "mics/a?field=/v&step=1ms&from=0"] {
        let bad = b.get(&format!("/api/history/{query}")).await;
        assert_eq!(bad.status, 400, "{query}: {}", bad.text);
    }

    // Past retention, the changes go from the answers, and from Redis: the sweep keeps
    // only the newest change of a topic no longer written (what it is now).
    let mut redis = redis::Client::open(SHARED_REDIS)
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let key = format!("{{{}}}:h:short/a", prefix.as_str());
    within("the old changes to go", async {
        // Writes go on elsewhere meanwhile, as in a live cluster (and pace the looks).
        for i in 0.. {
            a.put("/api/state/short/b", &json!({"v": i})).await;
            let len: u64 = redis::cmd("XLEN")
                .arg(&key)
                .query(&mut redis)
                .expect("XLEN");
            let r = b.get("/api/history/short/a").await.json();
            if len == 1 && r["changes"].as_array().is_some_and(|c| c.is_empty()) {
                break;
            }
        }
    })
    .await;
    assert_eq!(
        b.get("/api/state/short/a").await.json()["state"],
        json!({"v": 19})
    );
    let none: u64 = redis::cmd("EXISTS")
        .arg(format!("{{{}}}:h:none/a", prefix.as_str()))
        .query(&mut redis)
        .expect("EXISTS");
    assert_eq!(none, 0, "a topic that keeps no history records nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_history_max_bytes_the_oldest_changes_go_first_on_the_cluster() {
    let prefix = RedisPrefix::new("test-chist-max");
    let a = node(&prefix, "a", &["--history-max-bytes", "60000"]);
    let b = node(&prefix, "b", &["--history-max-bytes", "60000"]);
    write_old_then_new(&a, &b).await;
    // Dropping runs in the append script that adds: the count never stays over the bound.
    let old = assert_oldest_went_first(&b, 60_000.0).await;
    assert_eq!(
        all_changes(&a, "old/a", 7).await,
        old,
        "hub a answers alike"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_may_not_read_a_topic_may_not_read_its_history_on_any_hub() {
    let prefix = RedisPrefix::new("test-chist-auth");
    let (_dir, config) = config_file(TWO_KEYS);
    let a = node(&prefix, "a", &["--config", &config]);
    let b = node(&prefix, "b", &["--config", &config]);
    assert_history_forbidden(&a, &b).await;
    // The key that may read it reads it from the other hub.
    let admin = b
        .send(
            http_client()
                .get(b.url("/api/history/secret/x"))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text);
    assert_eq!(admin.json()["changes"][0]["state"], json!({"v": 1}));
}
