//! The durable history through the real binary: changes recorded with rev and time, in
//! order, across a restart and `kill -9`; paging; `fields`; `series` against an independent
//! computation; `?at=`; retention by age and by `history_max_bytes`; permissions; bad
//! parameters.
//!
//! Times are the hub's own: the tests read them back from the history and compute what
//! the answers must be from those, never from a clock of their own.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_recorded_with_rev_and_time_in_order_across_a_restart_and_kill_9() {
    let mut server = Server::start(&[]);
    let topic = "mics/rx-1";
    let mut expected: Vec<Value> = Vec::new();
    let put = server
        .put(
            &format!("/api/state/{topic}"),
            &json!({"battery": 100, "rf": {"level": -40}, "name": "Lead"}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    expected.push(server.get(&format!("/api/state/{topic}")).await.json()["state"].clone());
    // Each patch changes the state (the first one too): 150 changes.
    for i in 1..=150 {
        let patch = json!({"battery": 100 - i % 60, "rf": {"level": -40 - i % 7}});
        server.patch(&format!("/api/state/{topic}"), &patch).await;
        expected.push(server.get(&format!("/api/state/{topic}")).await.json()["state"].clone());
    }
    assert_eq!(
        server.delete(&format!("/api/state/{topic}")).await.status,
        200
    );
    let changes = all_changes(&server, topic, 1000).await;
    assert_eq!(changes.len(), 152);
    assert_recorded(&changes, &expected, Some(151));

    server.sigterm();
    server.wait_exit().await;
    server.restart();
    assert_eq!(
        all_changes(&server, topic, 1000).await,
        changes,
        "after a restart"
    );

    // Acknowledged, then killed: every acknowledged change is in the history.
    let put = server
        .put(&format!("/api/state/{topic}"), &json!({"battery": 5}))
        .await;
    assert_eq!(put.json()["rev"], 153);
    server.kill9();
    server.restart();
    let after = all_changes(&server, topic, 1000).await;
    assert_eq!(after.len(), 153);
    assert_eq!(after[..152], changes[..]);
    assert_eq!(after[152]["state"], json!({"battery": 5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_change_exactly_once() {
    let server = Server::start(&[]);
    let topic = "board/leds";
    for i in 0..230 {
        server
            .put(
                &format!("/api/state/{topic}"),
                &json!({"app": i % 5, "i": i}),
            )
            .await;
    }
    let whole = all_changes(&server, topic, 100_000).await;
    assert_eq!(whole.len(), 230);
    for limit in [1, 7, 64, 229, 230] {
        let paged = all_changes(&server, topic, limit).await;
        assert_eq!(paged, whole, "pages of {limit}");
    }
    // A range by time: from the 100th change's time to the 200th's, inclusive.
    let (from, to) = (&whole[99]["time"], &whole[199]["time"]);
    let ranged = history(
        &server,
        &format!("{topic}?from={}&to={}", unix_ms(from), unix_ms(to)),
    )
    .await;
    let revs: Vec<u64> = ranged["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rev"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = whole
        .iter()
        .filter(|c| unix_ms(&c["time"]) >= unix_ms(from) && unix_ms(&c["time"]) <= unix_ms(to))
        .map(|c| c["rev"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, expected);
    assert!(ranged.get("next").is_none(), "{ranged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_reduce_each_state_to_the_pointers_asked_for() {
    let server = Server::start(&[]);
    let topic = "mics/rx-2";
    server
        .put(
            &format!("/api/state/{topic}"),
            &json!({"battery": 80, "rf": {"level": -60, "a/b": 1}, "name": "Lead"}),
        )
        .await;
    server
        .patch(
            &format!("/api/state/{topic}"),
            &json!({"battery": 79, "rf": null}),
        )
        .await;
    let answer = history(
        &server,
        &format!("{topic}?fields=/battery,/rf/level,/rf/a~1b"),
    )
    .await;
    assert_eq!(
        states(&answer),
        [
            json!({"/battery": 80, "/rf/level": -60, "/rf/a~1b": 1}),
            json!({"/battery": 79}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_is_the_level_held_step_by_step() {
    let server = Server::start(&[]);
    let topic = "mics/rx-3";
    // Values with pauses between them, so that some steps hold no change.
    let values = [
        json!(90),
        json!(85.5),
        json!("low"),
        json!(70),
        json!(71),
        json!(60),
    ];
    for (i, v) in values.iter().enumerate() {
        let r = server
            .put(
                &format!("/api/state/{topic}"),
                &json!({"battery": v, "name": "Lead"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        // Data with time in it: the pauses make the steps, nothing waits on them.
        tokio::time::sleep(std::time::Duration::from_millis(if i == 1 {
            130
        } else {
            35
        }))
        .await;
    }
    let recorded: Vec<(u64, Option<f64>)> = all_changes(&server, topic, 1000)
        .await
        .iter()
        .map(|c| (unix_ms(&c["time"]), c["state"]["battery"].as_f64()))
        .collect();
    let first = recorded[0].0;
    let last = recorded.last().unwrap().0;
    // Two steps before the topic existed, and the range ending in the past: the last
    // write was followed by a 35 ms pause, so `to` is behind the hub's clock (time after
    // now would not count, and the test computes as if it did).
    let (from, to, step) = (first - 60, last + 30, 30);
    let answer = history(
        &server,
        &format!("{topic}?field=/battery&step={step}&from={from}&to={to}"),
    )
    .await;
    assert_eq!(
        (answer["field"].clone(), answer["step_ms"].clone()),
        (json!("/battery"), json!(step))
    );
    let got = answer["points"].as_array().unwrap();
    let expected = brute_force_series(&recorded, from, to, step);
    assert_same_series(got, &expected);
    assert!(
        got[0]["t"].as_u64().unwrap() + step > first,
        "no step before creation"
    );
    assert!(
        expected.iter().any(|p| p["changes"] == 0),
        "the pauses leave steps with no change, carried forward"
    );
    // Whole numbers read as integers.
    assert!(got.iter().any(|p| p["last"] == json!(60)), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_at_a_past_moment() {
    let (_dir, config) = config_file(
        r#"
        [[topics]]
        match = "short/+"
        history = "1s"
        [[topics]]
        match = "none/+"
        history = "0"
        "#,
    );
    let server = Server::start(&["--config", &config]);
    let topic = "mics/rx-4";
    for battery in [90, 80, 70] {
        server
            .put(&format!("/api/state/{topic}"), &json!({"battery": battery}))
            .await;
    }
    server.delete(&format!("/api/state/{topic}")).await;
    let changes = all_changes(&server, topic, 1000).await;
    let times: Vec<u64> = changes.iter().map(|c| unix_ms(&c["time"])).collect();
    let at = |t: u64| {
        let path = format!("/api/state/{topic}?at={t}");
        let server = &server;
        async move { server.get(&path).await }
    };
    let before = at(times[0] - 1).await;
    assert_eq!(before.status, 404, "{}", before.text);
    assert_eq!(before.json()["error"]["code"], "not_found");
    let between = at(times[1]).await.json();
    assert_eq!(
        (between["rev"].clone(), between["state"].clone()),
        (json!(2), json!({"battery": 80}))
    );
    assert_eq!(between["time"], changes[1]["time"]);
    let after_deletion = at(times[3]).await;
    assert_eq!(after_deletion.status, 404, "{}", after_deletion.text);

    // Older than the topic's history: 410.
    server.put("/api/state/short/a", &json!({"v": 1})).await;
    let old = server.get("/api/state/short/a?at=-2s").await;
    assert_eq!(old.status, 410, "{}", old.text);
    assert_eq!(old.json()["error"]["code"], "gone");
    // No history kept at all: 404.
    server.put("/api/state/none/a", &json!({"v": 1})).await;
    let none = server.get("/api/history/none/a").await;
    assert_eq!(none.status, 404, "{}", none.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_changes_older_than_the_policy_keeps() {
    let (_dir, config) = config_file(
        r#"
        [[topics]]
        match = "short/+"
        history = "2s"
        "#,
    );
    let server = Server::start(&["--config", &config]);
    for v in 0..20 {
        server.put("/api/state/short/a", &json!({"v": v})).await;
    }
    let first = all_changes(&server, "short/a", 1000).await;
    assert_eq!(first.len(), 20);
    // Writes go on elsewhere (each commit sweeps); the old changes go.
    within("the old changes to go", async {
        for i in 0.. {
            server.put("/api/state/short/b", &json!({"v": i})).await;
            let r = server.get("/api/history/short/a").await.json();
            if r["changes"].as_array().is_some_and(|c| c.is_empty()) {
                break;
            }
        }
    })
    .await;
    // The state is what it was; only its history is past retention.
    assert_eq!(
        server.get("/api/state/short/a").await.json()["state"],
        json!({"v": 19})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_history_max_bytes_the_oldest_changes_go_first() {
    let server = Server::start(&["--history-max-bytes", "60000"]);
    write_old_then_new(&server, &server).await;
    // What the history holds stays at the bound: dropping runs in the same commit as the
    // additions (a block of field points may stay over it until its next block starts).
    assert_oldest_went_first(&server, 60_000.0 + 4096.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_may_not_read_a_topic_may_not_read_its_history() {
    let (_dir, config) = config_file(TWO_KEYS);
    let server = Server::start(&["--config", &config]);
    assert_history_forbidden(&server, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_400_saying_what_is_wrong() {
    let server = Server::start(&[]);
    server.put("/api/state/a/b", &json!({"v": 1})).await;
    for (query, says) in [
        ("a/b?from=yesterday", "from"),
        ("a/b?to=-1y", "to"),
        ("a/b?from=-1s&to=-1h", "after"),
        ("a/b?limit=0", "limit"),
        ("a/b?limit=100001", "limit"),
        ("a/b?fields=v", "JSON pointer"),
        ("a/b?field=/v", "step"),
        ("a/b?step=1s", "field"),
        ("a/b?field=/v&step=0", "step"),
        ("a/b?field=/v&step=1ms&from=0", "steps"),
        ("a/b?from=rev:x", "cursor"),
    ] {
        let r = server.get(&format!("/api/history/{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        let error = r.json()["error"].clone();
        assert_eq!(error["code"], "bad_request", "{query}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{query}: {error}"
        );
    }
    let r = server.get("/api/state/a/b?at=soon").await;
    assert_eq!(r.status, 400, "{}", r.text);
}
