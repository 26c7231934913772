//! The `homeassistant` source against a real Home Assistant (2024.1.6, installed by
//! `tests/homeassistant/setup.sh`; without it these tests fail saying so). Each test starts
//! its own Home Assistant on a free loopback port and drives a real hub and bridge.

mod common;

use common::*;
use serde_json::{Value, json};
use statecast_bridge::{Bridge, BridgeConfig, CommandError, Handlers};
use statecast_core::{ErrorCode, Topic};
use statecast_testkit::HomeAssistant;

/// Three switches: `kitchen` off and `porch` on at every start, and `hidden` (which one
/// test leaves out with `entities`).
const SWITCHES: &str = "input_boolean:
  kitchen:
    name: Kitchen
    initial: false
  porch:
    name: Porch
    initial: true
  hidden:
    name: Hidden
";

/// A `homeassistant` source named `name`, with `extra` settings.
fn source(name: &str, ha: &HomeAssistant, token: &str, extra: &str) -> String {
    format!(
        r#"
        [[source]]
        name = "{name}"
        type = "homeassistant"
        url = "{}"
        token = "{token}"
        {extra}
        "#,
        ha.url()
    )
}

/// Sends `service` to `ha/<entity_id>`, which must succeed, and waits until the mirror
/// shows the entity in `state`.
async fn switch(bridge: &Bridge, watch: &mut Watch, entity_id: &str, service: &str, state: &str) {
    let topic = format!("ha/{entity_id}");
    send(bridge, &topic, service, json!({}))
        .await
        .unwrap_or_else(|e| panic!("{service} on {topic}: {e:?}"));
    watch
        .state_where(&topic, &format!("{entity_id} {state}"), |s| {
            s["state"] == state
        })
        .await;
}

/// Starts a bridge with the source `home` on `ha` (with `extra` settings), watching `ha/#`
/// and `_sources/#`, and waits until the source is online.
async fn mirror(hub: &statecast_core::Hub, ha: &HomeAssistant, extra: &str) -> (Watch, Bridge) {
    let mut watch = Watch::new(hub, &["ha/#", "_sources/#"]);
    let bridge = start(hub, &source("home", ha, ha.token(), extra));
    watch
        .state_where(&health_topic("home"), "the source online", |h| {
            h["status"] == "online"
        })
        .await;
    (watch, bridge)
}

/// The `state` member of an entity's topic (`null` if the topic does not exist).
fn mirrored_state(hub: &statecast_core::Hub, entity_id: &str) -> Value {
    state(hub, &format!("ha/{entity_id}")).map_or(Value::Null, |s| s["state"].clone())
}

/// Sends `input_boolean.toggle` to `target`, which must fail with `code`; returns the error.
async fn toggle_fails(bridge: &Bridge, target: &str, code: ErrorCode) -> CommandError {
    let error = send(bridge, target, "input_boolean.toggle", json!({}))
        .await
        .expect_err("the command fails");
    assert_eq!(error.code, code, "{error:?}");
    error
}

/// Sends a command Home Assistant must refuse: an `upstream` error naming the service and
/// Home Assistant's code; returns Home Assistant's error.
async fn refused(bridge: &Bridge, entity_id: &str, service: &str, args: Value) -> Value {
    let error = send(bridge, &format!("ha/{entity_id}"), service, args)
        .await
        .expect_err("Home Assistant refuses it");
    assert_eq!(error.code, ErrorCode::Upstream, "{error:?}");
    let body = error.body.clone().unwrap_or_default();
    let code = body["code"].as_str().unwrap_or_default();
    assert!(
        error.message.contains(service) && !code.is_empty() && error.message.contains(code),
        "{error:?}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_are_mirrored_and_commands_become_service_calls() {
    let level = "input_number:\n  level:\n    name: Level\n    min: 0\n    max: 100\n";
    let ha = HomeAssistant::start(&format!("{SWITCHES}{level}")).await;
    let hub = hub();
    // Left from an entity that is gone: the first sync deletes it.
    hub.set(
        &Topic::new("ha/input_boolean.gone").unwrap(),
        json!({"state": "on"}),
    )
    .await
    .unwrap();
    let entities = r#"entities = ["input_*.*", "!input_boolean.hidden"]"#;
    let (mut watch, bridge) = mirror(&hub, &ha, entities).await;
    let h = state(&hub, "_sources/home").expect("the health topic");
    assert_eq!(h["type"], "homeassistant");
    assert_eq!(h["error_count"], 0, "{h}");

    // Online once the states are written: each selected entity, nothing else.
    let kitchen = state(&hub, "ha/input_boolean.kitchen").expect("the kitchen is mirrored");
    assert_eq!(kitchen["state"], "off");
    assert_eq!(
        kitchen["attributes"],
        json!({"editable": false, "friendly_name": "Kitchen"})
    );
    let from_ha = ha.state("input_boolean.kitchen").await.expect("in HA");
    assert_eq!(kitchen["last_changed"], from_ha["last_changed"]);
    assert_eq!(kitchen["last_updated"], from_ha["last_updated"]);
    let members: Vec<&str> = kitchen
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        ["attributes", "last_changed", "last_updated", "state"]
    );
    assert_eq!(mirrored_state(&hub, "input_boolean.porch"), "on");
    assert_eq!(state(&hub, "ha/input_boolean.hidden"), None);
    assert_eq!(
        state(&hub, "ha/input_boolean.gone"),
        None,
        "stale topic kept"
    );
    let mirrored: Vec<String> = hub
        .get_matching(&statecast_core::Pattern::new("ha/#").unwrap())
        .into_iter()
        .map(|t| t.topic.as_str().to_string())
        .collect();
    assert_eq!(
        mirrored,
        [
            "ha/input_boolean.kitchen",
            "ha/input_boolean.porch",
            "ha/input_number.level"
        ]
    );

    // A command is a service call on the entity; its state_changed comes back as a patch.
    let mark = watch.mark();
    let answer = send(
        &bridge,
        "ha/input_boolean.kitchen",
        "input_boolean.toggle",
        Value::Null,
    )
    .await
    .expect("the toggle succeeds");
    assert!(answer["context"]["id"].is_string(), "{answer}");
    watch
        .state_where("ha/input_boolean.kitchen", "the toggle mirrored", |s| {
            s["state"] == "on"
        })
        .await;
    assert_eq!(
        ha.state("input_boolean.kitchen").await.unwrap()["state"],
        "on"
    );
    let patch = watch
        .frame_after(mark, "the patch", |f| f["type"] == "patch")
        .await;
    assert_eq!(patch["topic"], "ha/input_boolean.kitchen");
    assert_eq!(patch["patch"]["state"], "on", "{patch}");

    // Other domains' services work on the entity too.
    switch(
        &bridge,
        &mut watch,
        "input_boolean.porch",
        "homeassistant.turn_off",
        "off",
    )
    .await;

    // The args are the service data.
    send(
        &bridge,
        "ha/input_number.level",
        "input_number.set_value",
        json!({"value": 42}),
    )
    .await
    .expect("input_number.set_value succeeds");
    watch
        .state_where("ha/input_number.level", "the level set", |s| {
            s["state"] == "42.0"
        })
        .await;

    // Home Assistant's refusals come back with its code and message.
    let error = refused(
        &bridge,
        "input_boolean.kitchen",
        "input_boolean.explode",
        json!({}),
    )
    .await;
    assert_eq!(error["code"], "not_found", "{error}");
    assert_eq!(error["message"], "Service input_boolean.explode not found.");
    let error = refused(
        &bridge,
        "input_boolean.kitchen",
        "input_boolean.turn_on",
        json!({"brightness": 3}),
    )
    .await;
    assert_eq!(error["code"], "invalid_format", "{error}");
    assert_eq!(
        error["message"],
        "extra keys not allowed @ data['brightness']"
    );

    // What is not a service call is refused before anything is sent.
    for (target, name, args, code) in [
        (
            "ha/input_boolean.kitchen",
            "toggle",
            json!({}),
            ErrorCode::BadRequest,
        ),
        (
            "ha/input_boolean.kitchen",
            "input_boolean.toggle",
            json!([1]),
            ErrorCode::BadRequest,
        ),
        (
            "ha/input_boolean.hidden",
            "input_boolean.toggle",
            json!({}),
            ErrorCode::NoRoute,
        ),
        (
            "ha/input_boolean.kitchen/x",
            "input_boolean.toggle",
            json!({}),
            ErrorCode::NoRoute,
        ),
    ] {
        let error = send(&bridge, target, name, args).await.unwrap_err();
        assert_eq!(error.code, code, "{target} {name}: {error:?}");
    }
    assert_eq!(
        ha.state("input_boolean.hidden").await.unwrap()["state"],
        "off"
    );

    // Changes made elsewhere are mirrored too.
    ha.call(
        "input_boolean",
        "turn_on",
        json!({"entity_id": "input_boolean.porch"}),
    )
    .await;
    watch
        .state_where("ha/input_boolean.porch", "the porch on again", |s| {
            s["state"] == "on"
        })
        .await;

    // An entity removed from Home Assistant is removed from the hub; a new one appears.
    ha.configure(&format!(
        "input_boolean:\n  kitchen:\n    name: Kitchen\n  cellar:\n    name: Cellar\n    \
         initial: true\n{level}"
    ));
    ha.call("input_boolean", "reload", json!({})).await;
    watch
        .gone("ha/input_boolean.porch", "the porch to be removed")
        .await;
    watch
        .state_where("ha/input_boolean.cellar", "the cellar mirrored", |s| {
            s["state"] == "on"
        })
        .await;
    assert_eq!(
        mirrored_state(&hub, "input_boolean.kitchen"),
        "on",
        "a reload keeps the others"
    );
    let h = bridge.health()[0].1.clone();
    assert_eq!((h.status, h.error_count), ("online", 0), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_shows_in_the_health_and_nothing_else_breaks() {
    let ha = HomeAssistant::start(SWITCHES).await;
    let hub = hub();
    let mut watch = Watch::new(&hub, &["_sources/#", "ha/#", "broken/#"]);
    let bridge = start(
        &hub,
        &format!(
            "{}\n{}",
            source("broken", &ha, "not-a-valid-token", r#"prefix = "broken""#),
            source("home", &ha, ha.token(), "")
        ),
    );
    let h = watch
        .state_where(&health_topic("broken"), "the refused token", |h| {
            h["error_count"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(h["status"], "offline", "{h}");
    let error = h["last_error"].as_str().unwrap();
    assert!(
        error.contains("authentication failed") && error.contains("Invalid access token"),
        "{error}"
    );
    assert!(
        error.contains(&ha.url()),
        "the error names the server: {error}"
    );
    assert!(
        !error.contains("not-a-valid-token"),
        "no token in errors: {error}"
    );

    // The other source, the hub and its writers go on.
    watch
        .state_where(&health_topic("home"), "the good source online", |h| {
            h["status"] == "online"
        })
        .await;
    assert_eq!(mirrored_state(&hub, "input_boolean.kitchen"), "off");
    let rev = hub
        .set(&Topic::new("other/topic").unwrap(), json!({"ok": true}))
        .await
        .expect("the hub takes writes")
        .rev;
    assert_eq!(rev, 1);
    switch(
        &bridge,
        &mut watch,
        "input_boolean.kitchen",
        "input_boolean.turn_on",
        "on",
    )
    .await;

    // The broken one mirrors nothing and answers commands with why it is offline.
    assert!(
        watch
            .frames_since(0, "broken/input_boolean.kitchen")
            .is_empty()
    );
    let error = toggle_fails(&bridge, "broken/input_boolean.kitchen", ErrorCode::Upstream).await;
    assert!(
        error.message.contains("not connected") && error.message.contains("authentication failed"),
        "{error:?}"
    );
    // It keeps trying, with backoff.
    watch
        .state_where(&health_topic("broken"), "a second attempt", |h| {
            h["error_count"].as_u64() >= Some(2)
        })
        .await;
    let states: Vec<_> = bridge
        .health()
        .into_iter()
        .map(|(n, h)| (n, h.status))
        .collect();
    assert_eq!(
        states,
        [
            ("broken".to_string(), "offline"),
            ("home".to_string(), "online")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_entitys_topic_is_stale_until_it_is_available_again() {
    let ha = HomeAssistant::start(SWITCHES).await;
    let hub = hub();
    let (mut watch, _bridge) = mirror(&hub, &ha, "").await;
    let topic = "ha/sensor.receiver_battery";
    let told = |w: &Watch, stale: bool| {
        w.frames
            .iter()
            .any(|f| f["type"] == "stale" && f["topic"] == topic && f["stale"] == stale)
    };
    ha.set_state("sensor.receiver_battery", "80").await;
    watch
        .state_where(topic, "the battery", |s| s["state"] == "80")
        .await;
    ha.set_state("sensor.receiver_battery", "unavailable").await;
    watch.until("the topic stale", |w| told(w, true)).await;
    assert!(hub.get(topic).expect("mirrored").stale);
    assert_eq!(
        mirrored_state(&hub, "sensor.receiver_battery"),
        "unavailable"
    );
    ha.set_state("sensor.receiver_battery", "79").await;
    watch.until("the topic fresh", |w| told(w, false)).await;
    assert!(!hub.get(topic).expect("mirrored").stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_source_reconnects_and_resyncs() {
    let mut ha = HomeAssistant::start(SWITCHES).await;
    let hub = hub();
    let (mut watch, bridge) = mirror(&hub, &ha, "").await;
    let health = health_topic("home");
    assert_eq!(mirrored_state(&hub, "input_boolean.porch"), "on");
    assert_eq!(mirrored_state(&hub, "input_boolean.hidden"), "off");
    // A state set over the REST API has no entity behind it: gone after a restart.
    ha.set_state("sensor.scratch", "12").await;
    watch
        .state_where("ha/sensor.scratch", "the scratch state", |s| {
            s["state"] == "12"
        })
        .await;

    ha.stop().await;
    let h = watch
        .state_where(&health, "the source offline", |h| h["status"] == "offline")
        .await;
    assert!(h["last_error"].as_str().unwrap().contains(&ha.url()), "{h}");
    let error = toggle_fails(&bridge, "ha/input_boolean.kitchen", ErrorCode::Upstream).await;
    assert!(error.message.contains("not connected"), "{error:?}");

    // While it is down: the kitchen starts on now, the porch leaves the configuration, a
    // cellar is new.
    ha.configure(
        "input_boolean:\n  kitchen:\n    name: Kitchen\n    initial: true\n  hidden:\n    \
         name: Hidden\n  cellar:\n    name: Cellar\n",
    );
    ha.start_again().await;
    watch
        .state_where(&health, "the source online again", |h| {
            h["status"] == "online" && h["error_count"].as_u64() >= Some(1)
        })
        .await;
    // Online again once the resync is written.
    assert_eq!(mirrored_state(&hub, "input_boolean.kitchen"), "on");
    assert_eq!(mirrored_state(&hub, "input_boolean.cellar"), "off");
    assert_eq!(mirrored_state(&hub, "input_boolean.hidden"), "off");
    assert_eq!(
        state(&hub, "ha/sensor.scratch"),
        None,
        "the scratch state is gone"
    );
    let scratch: Vec<Value> = watch
        .frames_since(0, "ha/sensor.scratch")
        .iter()
        .map(|f| f["type"].clone())
        .collect();
    assert_eq!(scratch, ["snapshot", "removed"]);
    // Home Assistant keeps an entity that left the configuration in its registry, as
    // unavailable; the mirror shows it as Home Assistant does.
    let porch = state(&hub, "ha/input_boolean.porch").unwrap();
    assert_eq!(porch["state"], "unavailable", "{porch}");
    assert_eq!(porch["attributes"]["restored"], true, "{porch}");
    assert_eq!(
        porch["state"],
        ha.state("input_boolean.porch").await.unwrap()["state"]
    );

    // Commands go over the new connection.
    switch(
        &bridge,
        &mut watch,
        "input_boolean.cellar",
        "input_boolean.toggle",
        "on",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_assistant_that_stops_answering_is_dropped_and_reconnected() {
    let ha = HomeAssistant::start(SWITCHES).await;
    let hub = hub();
    let settings = "ping_interval_ms = 1000\ncommand_timeout_ms = 300";
    let (mut watch, bridge) = mirror(&hub, &ha, settings).await;
    let health = health_topic("home");

    // Frozen: the connection stays open but nothing answers. A command times out (Home
    // Assistant may still carry it out when it wakes: it has the message), and the missing
    // pong drops the connection.
    ha.freeze();
    toggle_fails(&bridge, "ha/input_boolean.kitchen", ErrorCode::Timeout).await;
    let h = watch
        .state_where(&health, "the silent connection dropped", |h| {
            h["status"] == "offline"
        })
        .await;
    assert!(
        h["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer to a ping within 1000 ms"),
        "{h}"
    );

    ha.thaw();
    watch
        .state_where(&health, "the source online again", |h| {
            h["status"] == "online"
        })
        .await;
    switch(
        &bridge,
        &mut watch,
        "input_boolean.porch",
        "input_boolean.toggle",
        "off",
    )
    .await;
    // Whether or not the late toggle ran, the resync shows the kitchen as it is.
    assert_eq!(
        mirrored_state(&hub, "input_boolean.kitchen"),
        ha.state("input_boolean.kitchen").await.unwrap()["state"]
    );
}

/// Settings are checked when the bridge starts, and errors name the source (no Home
/// Assistant needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_at_start() {
    let hub = hub();
    let at = |extra: &str| {
        format!(
            "[[source]]\nname = \"home\"\ntype = \"homeassistant\"\n{}\n",
            extra
        )
    };
    let url = r#"url = "ws://127.0.0.1:9/api/websocket""#;
    for (text, expected) in [
        (
            at(r#"url = "http://127.0.0.1:8123/api/websocket"
                 token = "t""#),
            "the scheme must be ws://",
        ),
        (
            at(r#"url = "wss://127.0.0.1:8123/api/websocket"
                 token = "t""#),
            "wss:// is not supported yet",
        ),
        (at(&format!("{url}\ntoken = \" \"")), "token"),
        (
            at(&format!("{url}\ntoken = \"t\"\nprefix = \"ha/+\"")),
            "prefix",
        ),
        (
            at(&format!("{url}\ntoken = \"t\"\nentities = [\"light/x\"]")),
            "entities",
        ),
        (
            format!(
                "{}\n[[source]]\nname = \"second\"\ntype = \"homeassistant\"\n{url}\ntoken = \"t\"\n",
                at(&format!("{url}\ntoken = \"t\""))
            ),
            "prefix \"ha\" is mirrored by source \"home\" already",
        ),
    ] {
        let parsed: BridgeConfig = config(&text);
        let error = match Bridge::start(&hub, parsed, Handlers::new()) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        assert!(
            error.contains(expected) && error.contains("source \""),
            "{error}\n{text}"
        );
    }
    // An unknown setting is a parse error.
    assert!(
        toml::from_str::<BridgeConfig>(&at(&format!("{url}\ntoken = \"t\"\nentity = []"))).is_err()
    );
}

/// With `commands = false` the source takes no commands: they find no route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_source_routes_no_commands() {
    let hub = hub();
    let bridge = start(
        &hub,
        r#"
        [[source]]
        name = "home"
        type = "homeassistant"
        url = "ws://127.0.0.1:9/api/websocket"
        token = "t"
        commands = false
        "#,
    );
    let error = send(&bridge, "ha/light.kitchen", "light.turn_on", json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NoRoute, "{error:?}");
}

/// A `[[route]]` of the file comes before the source's own route; the rest of the
/// source's topics go to Home Assistant (here not connected: `upstream`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_of_the_file_come_first() {
    let hub = hub();
    let handlers = Handlers::new().add("special", |c: statecast_bridge::Command| async move {
        Ok(json!({"handled": c.name}))
    });
    let bridge = start_with(
        &hub,
        r#"
        [[route]]
        target = "ha/light.special"
        type = "handler"
        handler = "special"

        [[source]]
        name = "home"
        type = "homeassistant"
        url = "ws://127.0.0.1:9/api/websocket"
        token = "t"
        "#,
        handlers,
    );
    let answer = send(&bridge, "ha/light.special", "light.turn_on", json!({}))
        .await
        .expect("the handler answers");
    assert_eq!(answer, json!({"handled": "light.turn_on"}));
    let error = send(&bridge, "ha/light.kitchen", "light.turn_on", json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Upstream, "{error:?}");
    assert!(error.message.contains("not connected"), "{error:?}");
}
