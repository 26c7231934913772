//! The `mqtt` source against the local Mosquitto broker (127.0.0.1:1883). Each test uses
//! its own random topic prefix and clears the retained messages it created.

mod common;

use common::*;
use serde_json::json;

fn source(name: &str, prefix: &str, action: Option<&str>) -> String {
    let action = action
        .map(|a| format!("action = \"{a}\""))
        .unwrap_or_default();
    format!(
        r#"
        [[source]]
        name = "{name}"
        type = "mqtt"
        broker = "{BROKER}"
        subscribe = ["{prefix}/+/status"]
        topic = "things/{{2}}"
        {action}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_the_initial_state_and_live_ones_update_it() {
    let prefix = unique("sctest");
    let mut device = Mqtt::connect("sctest-device").await;
    let lamp = format!("{prefix}/lamp1/status");
    let plug = format!("{prefix}/plug2/status");
    let gone = format!("{prefix}/gone3/status");
    device
        .publish(&lamp, r#"{"power":"on","level":40}"#, true)
        .await;
    device.publish(&plug, "online", true).await;
    device.publish(&gone, r#"{"power":"off"}"#, true).await;
    // Not matched by the subscription: never reaches the hub.
    device
        .publish(&format!("{prefix}/lamp1/other"), "{}", false)
        .await;

    let hub = hub();
    let mut watch = Watch::new(&hub, &["things/#", "_sources/#"]);
    let _bridge = start(&hub, &source("broker", &prefix, Some("set")));

    // Retained: the initial state, JSON as JSON, other payloads as strings; `{2}` is the
    // device's segment of the MQTT topic.
    watch
        .until("the retained messages", |w| {
            w.state("things/lamp1").is_some()
                && w.state("things/plug2").is_some()
                && w.state("things/gone3").is_some()
        })
        .await;
    assert_eq!(
        state(&hub, "things/lamp1"),
        Some(json!({"power": "on", "level": 40}))
    );
    assert_eq!(state(&hub, "things/plug2"), Some(json!("online")));
    let health = watch
        .state_where(&health_topic("broker"), "the source online", |h| {
            h["status"] == "online"
        })
        .await;
    assert_eq!(health["type"], "mqtt");
    assert_eq!(health["error_count"], 0);

    // Live messages update the state.
    device
        .publish(&lamp, r#"{"power":"on","level":41}"#, false)
        .await;
    watch
        .state_where("things/lamp1", "a live update", |s| s["level"] == 41)
        .await;
    device.publish(&plug, "offline", false).await;
    watch
        .state_where("things/plug2", "a live text payload", |s| s == "offline")
        .await;

    // An empty retained message clears the topic, as it clears the broker's copy.
    device.publish(&gone, "", true).await;
    watch
        .gone("things/gone3", "the cleared topic to be deleted")
        .await;
    assert!(hub.get("things/gone3").is_none());
    assert!(hub.get("things/lamp1").is_some());
    assert_eq!(
        hub.get_matching(&statecast_core::Pattern::new("things/#").unwrap())
            .len(),
        2
    );

    for topic in [&lamp, &plug] {
        device.publish(topic, "", true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_and_event_actions() {
    let prefix = unique("sctest");
    let mut device = Mqtt::connect("sctest-device").await;
    let hub = hub();
    let mut watch = Watch::new(&hub, &["things/#", "_sources/#"]);
    let sensor = format!("{prefix}/sensor/status");
    // Retained, so the source's subscription is known to be active once it arrives.
    device
        .publish(&sensor, r#"{"temp":20,"hum":50}"#, true)
        .await;
    let marker = format!("{prefix}-ev/marker/status");
    device.publish(&marker, "ready", true).await;
    let _bridge = start(
        &hub,
        &format!(
            "{}\n{}",
            source("patches", &prefix, Some("patch")),
            source("events", &format!("{prefix}-ev"), Some("event"))
        ),
    );
    watch
        .state_where("things/sensor", "the retained message", |s| s["temp"] == 20)
        .await;
    device.publish(&sensor, r#"{"temp":21}"#, false).await;
    let s = watch
        .state_where("things/sensor", "the patch", |s| s["temp"] == 21)
        .await;
    assert_eq!(
        s,
        json!({"temp": 21, "hum": 50}),
        "a patch keeps other members"
    );

    // The retained marker arrives once the event source's subscription is active.
    let frame = watch
        .frame_after(0, "the retained marker as an event", |f| {
            f["topic"] == "things/marker"
        })
        .await;
    assert_eq!(
        frame,
        json!({"type": "event", "topic": "things/marker", "data": "ready"})
    );
    let button = format!("{prefix}-ev/button/status");
    let mark = watch.mark();
    device.publish(&button, r#"{"pressed":true}"#, false).await;
    let frame = watch
        .frame_after(mark, "the live event", |f| f["topic"] == "things/button")
        .await;
    assert_eq!(
        frame,
        json!({"type": "event", "topic": "things/button", "data": {"pressed": true}})
    );
    assert!(hub.get("things/button").is_none(), "events store nothing");

    device.publish(&sensor, "", true).await;
    device.publish(&marker, "", true).await;
}

/// The configuration documents `set` as the default action of an `mqtt` source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_action_is_set() {
    let prefix = unique("sctest");
    let mut device = Mqtt::connect("sctest-device").await;
    let topic = format!("{prefix}/meter/status");
    device.publish(&topic, r#"{"watts":5}"#, true).await;
    let hub = hub();
    let mut watch = Watch::new(&hub, &["things/#"]);
    let _bridge = start(&hub, &source("default", &prefix, None));
    let arrived = watch
        .try_until(|w| w.state("things/meter") == Some(&json!({"watts": 5})))
        .await;
    device.publish(&topic, "", true).await;
    assert!(arrived, "the retained message did not become state");
}
