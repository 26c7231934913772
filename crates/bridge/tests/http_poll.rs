//! The `http_poll` source against a real HTTP device (axum on 127.0.0.1).

mod common;

use common::*;
use serde_json::{Value, json};
use statecast_bridge::Bridge;
use statecast_core::Hub;

/// Health states of `name` seen so far, their `interval_ms`, consecutive repeats removed.
fn intervals(watch: &Watch, name: &str) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for state in watch.history(&health_topic(name)).into_iter().flatten() {
        if let Some(ms) = state["interval_ms"].as_u64()
            && out.last() != Some(&ms)
        {
            out.push(ms);
        }
    }
    out
}

fn poll_config(name: &str, url: &str, topic: &str, intervals: (u64, u64, u64)) -> String {
    let (min, idle, max) = intervals;
    format!(
        r#"
        [[source]]
        name = "{name}"
        type = "http_poll"
        url = "{url}"
        topic = "{topic}"
        timeout_ms = 2000
        min_interval_ms = {min}
        idle_interval_ms = {idle}
        max_interval_ms = {max}
        "#
    )
}

/// Source `name` polling `url` into `topic` (20/40/80 ms), and a watch of `topic` that has
/// seen the first poll's state (one for which `first` holds).
async fn poll_first(
    hub: &Hub,
    name: &str,
    url: &str,
    topic: &str,
    first: impl Fn(&Value) -> bool,
) -> (Bridge, Watch) {
    let bridge = start(hub, &poll_config(name, url, topic, (20, 40, 80)));
    let mut watch = Watch::new(hub, &[topic]);
    watch.state_where(topic, "the first poll", first).await;
    (bridge, watch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_polls_publish_nothing_and_a_change_publishes_one_patch() {
    let hub = hub();
    let device = Device::start(Answer::Json(json!({"power": "on", "level": 1}))).await;
    let (_bridge, mut watch) =
        poll_first(&hub, "lamp", &device.url("/status"), "lamps/desk", |s| {
            s["level"] == 1
        })
        .await;
    let first_rev = rev(&hub, "lamps/desk");

    // Poll n+1 is fully written before request n+2 reaches the device.
    let mark = watch.mark();
    let seen = device.requests();
    device.wait_requests(seen + 3).await;
    watch.pump();
    assert_eq!(
        watch.frames_since(mark, "lamps/desk"),
        Vec::<Value>::new(),
        "unchanged polls published something"
    );
    assert_eq!(rev(&hub, "lamps/desk"), first_rev);

    let changed_at = device.answer(Answer::Json(json!({"power": "on", "level": 2})));
    device.wait_requests(changed_at + 4).await;
    watch.pump();
    let frames = watch.frames_since(mark, "lamps/desk");
    assert_eq!(
        frames,
        vec![
            json!({"type": "patch", "topic": "lamps/desk", "rev": first_rev + 1, "patch": {"level": 2}})
        ],
        "one change, one patch"
    );
    assert_eq!(
        state(&hub, "lamps/desk"),
        Some(json!({"power": "on", "level": 2}))
    );
    assert_eq!(rev(&hub, "lamps/desk"), first_rev + 1);
    let health = state(&hub, &health_topic("lamp")).expect("health is published");
    assert_eq!(health["type"], "http_poll");
    assert_eq!(health["status"], "online");
    assert_eq!(health["error_count"], 0);
    assert!(health["last_ok"].is_string(), "{health}");
    assert!(health["latency_ms"].is_u64(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_adapts_to_changes_idleness_and_outages() {
    let hub = hub();
    let (min, idle, max) = (20, 80, 320);
    let device = Device::start(Answer::Json(json!({"n": 1}))).await;
    let mut watch = Watch::new(&hub, &["_sources/#", "dev/n"]);
    let _bridge = start(
        &hub,
        &poll_config("counter", &device.url("/"), "dev/n", (min, idle, max)),
    );
    let health = health_topic("counter");

    // Created (a change), then idle: doubling from min up to idle, and no further.
    watch
        .until("the interval to reach idle", |w| {
            w.state(&health).is_some_and(|h| h["interval_ms"] == idle)
        })
        .await;
    assert_eq!(intervals(&watch, "counter"), [min, 2 * min, idle]);

    // A change: back to min, then up to idle again.
    device.answer(Answer::Json(json!({"n": 2})));
    watch
        .until("the interval to drop to min after a change", |w| {
            intervals(w, "counter").len() > 3
        })
        .await;
    watch
        .until("the interval to reach idle again", |w| {
            intervals(w, "counter").len() >= 6
        })
        .await;
    assert_eq!(
        intervals(&watch, "counter")[..6],
        [min, 2 * min, idle, min, 2 * min, idle]
    );
    assert_eq!(watch.state("dev/n"), Some(&json!({"n": 2})));

    // Offline: one quick retry at min, then never faster than idle, doubling up to max.
    device.answer(Answer::Status(503, "busy".into()));
    watch
        .until("the interval to reach max while offline", |w| {
            w.state(&health).is_some_and(|h| h["interval_ms"] == max)
        })
        .await;
    assert_eq!(intervals(&watch, "counter")[6..], [min, 2 * idle, max]);
    let h = watch.state(&health).unwrap().clone();
    assert_eq!(h["status"], "offline", "{h}");

    // Stays at max while offline.
    let offline_polls = device.requests();
    device.wait_requests(offline_polls + 2).await;
    watch.pump();
    assert_eq!(intervals(&watch, "counter")[6..], [min, 2 * idle, max]);

    // Back with a change: min again.
    device.answer(Answer::Json(json!({"n": 3})));
    watch
        .state_where("dev/n", "the new state after the outage", |s| s["n"] == 3)
        .await;
    watch
        .until("the interval to drop to min after the outage", |w| {
            w.state(&health).is_some_and(|h| h["interval_ms"] == min)
        })
        .await;
    assert_eq!(watch.state(&health).unwrap()["status"], "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_are_sent_back_and_304_counts_as_unchanged() {
    let device = Device::start(Answer::Json(json!({"volume": 10})))
        .await
        .with_etag();
    validators_are_sent_back(device, "if-none-match", Device::etag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_is_sent_back_and_304_counts_as_unchanged() {
    let device = Device::start(Answer::Json(json!({"volume": 10})))
        .await
        .with_last_modified();
    validators_are_sent_back(device, "if-modified-since", Device::last_modified).await;
}

/// The device's validator (read by `validator`) comes back in `request_header`, its 304s
/// publish nothing, and a new version is taken.
async fn validators_are_sent_back(
    device: Device,
    request_header: &str,
    validator: fn(&Device) -> String,
) {
    let hub = hub();
    let (_bridge, mut watch) = poll_first(&hub, "amp", &device.url("/"), "amp/main", |s| {
        s["volume"] == 10
    })
    .await;
    let first_rev = rev(&hub, "amp/main");
    let etag = validator(&device);
    let mark = watch.mark();

    device.wait_requests(device.requests() + 3).await;
    assert!(
        device.not_modified() >= 2,
        "the device answered 304 only {} times",
        device.not_modified()
    );
    let seen = device.seen();
    assert_eq!(
        seen[0].header(request_header),
        None,
        "the first poll has no validator"
    );
    assert_eq!(
        seen.last().unwrap().header(request_header),
        Some(etag.as_str())
    );
    watch.pump();
    assert_eq!(watch.frames_since(mark, "amp/main"), Vec::<Value>::new());
    assert_eq!(rev(&hub, "amp/main"), first_rev);
    let health = state(&hub, &health_topic("amp")).unwrap();
    assert_eq!(health["status"], "online", "{health}");
    assert_eq!(health["error_count"], 0, "{health}");
    assert_eq!(
        health["interval_ms"], 40,
        "304s are unchanged polls: {health}"
    );

    // A new version: the old validator no longer matches, the state changes.
    device.answer(Answer::Json(json!({"volume": 11})));
    watch
        .state_where("amp/main", "the new version", |s| s["volume"] == 11)
        .await;
    assert_eq!(rev(&hub, "amp/main"), first_rev + 1);
    let new_etag = validator(&device);
    let at = device.requests();
    device.wait_requests(at + 1).await;
    assert_eq!(
        device.seen()[at as usize].header(request_header),
        Some(new_etag.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_goes_away_is_offline_and_comes_back() {
    let hub = hub();
    let mut device = Device::start(Answer::Json(json!({"temp": 20}))).await;
    let mut watch = Watch::new(&hub, &["_sources/#", "room/temp"]);
    let _bridge = start(
        &hub,
        &poll_config("thermo", &device.url("/"), "room/temp", (20, 40, 80)),
    );
    let health = health_topic("thermo");
    watch
        .state_where("room/temp", "the first poll", |s| s["temp"] == 20)
        .await;
    watch
        .state_where(&health, "the source to be online", |h| {
            h["status"] == "online"
        })
        .await;
    let before = hub.get("room/temp").unwrap();

    device.stop().await;
    let h = watch
        .state_where(&health, "the source to go offline", |h| {
            h["status"] == "offline"
        })
        .await;
    assert!(h["error_count"].as_u64().unwrap() >= 1, "{h}");
    assert!(
        h["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{h}"
    );
    assert!(h["last_error_at"].is_string(), "{h}");
    let h = watch
        .state_where(&health, "a second failed poll", |h| {
            h["error_count"].as_u64() >= Some(2)
        })
        .await;
    assert_eq!(h["status"], "offline");
    let kept = hub
        .get("room/temp")
        .expect("the state is kept while offline");
    assert_eq!((kept.rev, &kept.state), (before.rev, &before.state));

    device.answer(Answer::Json(json!({"temp": 21})));
    device.restart().await;
    watch
        .state_where("room/temp", "the state from the device back online", |s| {
            s["temp"] == 21
        })
        .await;
    let h = watch
        .state_where(&health, "the source to be online again", |h| {
            h["status"] == "online"
        })
        .await;
    assert!(
        h["error_count"].as_u64().unwrap() >= 2,
        "errors stay counted: {h}"
    );
    assert!(h["last_error"].is_string(), "the last error is kept: {h}");
    assert_eq!(rev(&hub, "room/temp"), before.rev + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_an_error_and_leaves_the_state_alone() {
    let hub = hub();
    let device = Device::start(Answer::Json(json!({"ok": true}))).await;
    let mut watch = Watch::new(&hub, &["_sources/#", "dev/state"]);
    let _bridge = start(
        &hub,
        &poll_config("flaky", &device.url("/"), "dev/state", (20, 40, 80)),
    );
    let health = health_topic("flaky");
    watch
        .state_where("dev/state", "the first poll", |s| s["ok"] == true)
        .await;
    let before = hub.get("dev/state").unwrap();

    device.answer(Answer::Text("<html>oops</html>".into()));
    let h = watch
        .state_where(&health, "the malformed answer to be reported", |h| {
            h["error_count"].as_u64() >= Some(1)
        })
        .await;
    let error = h["last_error"].as_str().expect("last_error is set");
    assert!(error.contains("not JSON"), "unclear error: {error}");
    assert_eq!(h["status"], "offline");
    let kept = hub.get("dev/state").unwrap();
    assert_eq!((kept.rev, &kept.state), (before.rev, &before.state));

    // The hub still takes writes.
    let other = statecast_core::Topic::new("other/topic").unwrap();
    hub.set(&other, json!({"still": "working"}))
        .await
        .expect("the hub takes writes");
    assert_eq!(
        state(&hub, "other/topic"),
        Some(json!({"still": "working"}))
    );

    // A device answering an error status is reported with that status.
    device.answer(Answer::Status(500, "internal".into()));
    let h = watch
        .state_where(&health, "the 500 to be reported", |h| {
            h["last_error"].as_str().is_some_and(|e| e.contains("500"))
        })
        .await;
    assert_eq!(h["status"], "offline");

    device.answer(Answer::Json(json!({"ok": false})));
    watch
        .state_where("dev/state", "the fixed device's state", |s| {
            s["ok"] == false
        })
        .await;
    watch
        .state_where(&health, "the source to be online again", |h| {
            h["status"] == "online"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_of_a_pointed_list_is_a_topic_and_vanished_items_are_deleted() {
    let hub = hub();
    let device = Device::start(Answer::Json(json!({
        "version": 1,
        "receivers": [
            {"id": "SHURE001", "battery": 80},
            {"id": "SHURE002", "battery": 60},
        ]
    })))
    .await;
    let rooms = Device::start(Answer::Json(json!({
        "kitchen": {"lights": 2},
        "hall": {"lights": 1},
    })))
    .await;
    let mut watch = Watch::new(&hub, &["micboard/#", "rooms/#"]);
    let _bridge = start(
        &hub,
        &format!(
            r#"
            [[source]]
            name = "micboard"
            type = "http_poll"
            url = "{}"
            pointer = "/receivers"
            each = true
            topic = "micboard/{{item.id}}"
            min_interval_ms = 20
            idle_interval_ms = 40
            max_interval_ms = 80

            [[source]]
            name = "rooms"
            type = "http_poll"
            url = "{}"
            each = true
            topic = "rooms/{{key}}"
            min_interval_ms = 20
            idle_interval_ms = 40
            max_interval_ms = 80
            "#,
            device.url("/api/receivers"),
            rooms.url("/rooms"),
        ),
    );
    watch
        .until("both receivers", |w| {
            w.state("micboard/SHURE001").is_some() && w.state("micboard/SHURE002").is_some()
        })
        .await;
    assert_eq!(
        state(&hub, "micboard/SHURE001"),
        Some(json!({"id": "SHURE001", "battery": 80}))
    );
    assert_eq!(
        state(&hub, "micboard/SHURE002"),
        Some(json!({"id": "SHURE002", "battery": 60}))
    );
    watch
        .until("both rooms", |w| {
            w.state("rooms/kitchen") == Some(&json!({"lights": 2}))
                && w.state("rooms/hall") == Some(&json!({"lights": 1}))
        })
        .await;

    let mark = watch.mark();
    device.answer(Answer::Json(json!({
        "version": 2,
        "receivers": [{"id": "SHURE001", "battery": 79}]
    })));
    watch
        .gone("micboard/SHURE002", "the receiver that left to be deleted")
        .await;
    watch
        .state_where(
            "micboard/SHURE001",
            "the remaining receiver's update",
            |s| s["battery"] == 79,
        )
        .await;
    assert!(hub.get("micboard/SHURE002").is_none());
    let removed: Vec<Value> = watch
        .frames_since(mark, "micboard/SHURE002")
        .into_iter()
        .filter(|f| f["type"] == "removed")
        .collect();
    assert_eq!(removed.len(), 1, "{removed:?}");

    rooms.answer(Answer::Json(json!({"hall": {"lights": 1}})));
    watch
        .gone("rooms/kitchen", "the room that left to be deleted")
        .await;
    assert_eq!(state(&hub, "rooms/hall"), Some(json!({"lights": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_in_a_device_url_never_show_in_its_health() {
    let nobody = unreachable_addr();
    let hub = hub();
    let mut watch = Watch::new(&hub, &["_sources/#"]);
    let url = format!("http://admin:pw-secret@{nobody}/status?apikey=key-secret");
    let bridge = start(&hub, &poll_config("cam", &url, "cams/door", (20, 40, 80)));
    let h = watch
        .state_where(&health_topic("cam"), "the failed poll", |h| {
            h["error_count"].as_u64() >= Some(1)
        })
        .await;
    let error = h["last_error"].as_str().expect("the error is kept");
    assert!(
        error.contains(&format!("{nobody}/status?***")),
        "the error still says which device: {h}"
    );
    let (_, health) = bridge.health().pop().expect("the source's health");
    for shown in [h.to_string(), format!("{health:?}")] {
        assert!(!shown.contains("secret"), "a credential leaked: {shown}");
    }
}

#[test]
fn the_start_up_description_names_every_source_and_route_without_credentials() {
    let config = config(
        r#"
        [[source]]
        name = "cam"
        type = "http_poll"
        url = "http://admin:pw-secret@10.0.0.5/status?apikey=key-secret"
        topic = "cams/door"

        [[source]]
        name = "script"
        type = "exec"
        command = ["poll-device", "--token", "tok-secret"]
        topic = "scripts/out"

        [[route]]
        target = "cams/+"
        type = "http"
        url = "http://10.0.0.5/cmd/{name}?apikey=key-secret"
        "#,
    );
    let lines = config.describe();
    assert_eq!(
        lines,
        [
            "source \"cam\" (http_poll): http://***@10.0.0.5/status?*** -> cams/door \
             (health on _sources/cam)",
            "source \"script\" (exec): poll-device -> scripts/out (health on _sources/script)",
            "route cams/+ -> http POST http://10.0.0.5/cmd/{name}?***",
        ]
    );
}

/// A device that answers 304 is alive: its topic stays fresh under `stale_after` (and goes
/// stale once the device stops answering).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_answering_304_keeps_its_topic_fresh() {
    let stale_after = std::time::Duration::from_millis(300);
    let policies = statecast_core::Policies::new(vec![statecast_core::TopicPolicy {
        pattern: statecast_core::Pattern::new("amp/#").expect("pattern"),
        schema: None,
        stale_after: Some(stale_after),
        history: None,
    }]);
    let config = statecast_core::HubConfig {
        policies,
        ..Default::default()
    };
    let hub = statecast_core::Hub::open(statecast_core::MemoryEngine, config).expect("hub");
    let mut device = Device::start(Answer::Json(json!({"volume": 10})))
        .await
        .with_etag();
    let (_bridge, mut watch) = poll_first(&hub, "amp", &device.url("/"), "amp/main", |s| {
        s["volume"] == 10
    })
    .await;
    let mark = watch.mark();
    // Polls answered 304 for three times `stale_after`.
    let since = std::time::Instant::now();
    while since.elapsed() < stale_after * 3 {
        device.wait_requests(device.requests() + 1).await;
    }
    assert!(device.not_modified() >= 3, "{}", device.not_modified());
    watch.pump();
    let topic = hub.get("amp/main").expect("the topic");
    assert!(!topic.stale, "a device answering 304 is not silent");
    assert_eq!(watch.frames_since(mark, "amp/main"), Vec::<Value>::new());
    assert_eq!(topic.rev, 1, "refreshing makes no rev");

    device.stop().await;
    watch
        .until("the topic stale once the device is gone", |w| {
            w.frames_since(mark, "amp/main")
                .iter()
                .any(|f| f["type"] == "stale" && f["stale"] == true)
        })
        .await;
}
