//! Command routes: HTTP to a device started in the test, MQTT through the local Mosquitto
//! broker with the test playing the device, handlers, and repoll.

mod common;

use axum::http::Method;
use common::*;
use serde_json::{Value, json};
use statecast_bridge::{Bridge, Command, CommandError, Handlers};
use statecast_core::ErrorCode;

fn http_route(target: &str, url: &str, timeout_ms: u64) -> String {
    format!(
        r#"
        [[route]]
        target = "{target}"
        type = "http"
        method = "PUT"
        url = "{url}"
        timeout_ms = {timeout_ms}
        headers = {{ "X-Device" = "{{2}}", "X-Command" = "{{name}}" }}
        body = {{ level = "{{args.level}}", label = "level {{args.level}} for {{target}}", fixed = true }}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_route_renders_the_request_and_returns_the_answer() {
    let device = Device::start(Answer::Json(json!({"ok": true, "level": 40}))).await;
    let hub = hub();
    let bridge = start(
        &hub,
        &format!(
            "{}\n{}",
            http_route(
                "lights/+",
                &format!(
                    "{}?cmd={{name}}&who={{args.who}}",
                    device.url("/api/{1}/{2}")
                ),
                2000
            ),
            // Never reached: the first matching route wins.
            http_route("lights/#", "http://127.0.0.1:9/never", 2000),
        ),
    );
    let answer = send(
        &bridge,
        "lights/desk:1",
        "dim",
        json!({"level": 40, "who": "a b/c"}),
    )
    .await
    .expect("the command succeeds");
    assert_eq!(
        answer,
        json!({"status": 200, "body": {"ok": true, "level": 40}})
    );

    let seen = device.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, Method::PUT);
    assert_eq!(request.uri, "/api/lights/desk%3A1?cmd=dim&who=a%20b%2Fc");
    assert_eq!(request.header("x-device"), Some("desk:1"));
    assert_eq!(request.header("x-command"), Some("dim"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({"level": 40, "label": "level 40 for lights/desk:1", "fixed": true})
    );

    // A text answer comes back as a string, an empty one as null.
    device.answer(Answer::Text("OK".into()));
    let answer = send(
        &bridge,
        "lights/desk:1",
        "dim",
        json!({"level": 1, "who": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(answer, json!({"status": 200, "body": "OK"}));
    device.answer(Answer::Status(204, String::new()));
    let answer = send(
        &bridge,
        "lights/desk:1",
        "dim",
        json!({"level": 1, "who": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(answer, json!({"status": 204, "body": null}));

    // A template naming an argument the command lacks is the caller's error.
    let error = send(&bridge, "lights/desk:1", "dim", json!({"level": 1}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    assert!(error.message.contains("args.who"), "{error:?}");
    assert_eq!(device.seen().len(), 3, "nothing is sent for a bad command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_body_carries_name_and_args() {
    let device = Device::start(Answer::Json(json!({}))).await;
    let hub = hub();
    let bridge = start(
        &hub,
        &format!(
            r#"
            [[route]]
            target = "relay/#"
            type = "http"
            url = "{}"
            "#,
            device.url("/cmd")
        ),
    );
    send(&bridge, "relay/a/b", "toggle", json!({"channel": 2}))
        .await
        .unwrap();
    let seen = device.seen();
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(
        seen[0].json(),
        json!({"name": "toggle", "args": {"channel": 2}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_errors_are_upstream_errors_with_status_and_body() {
    let device = Device::start(Answer::Status(
        404,
        json!({"error": "no such output"}).to_string(),
    ))
    .await;
    let hub = hub();
    let bridge = start(&hub, &http_route("amp/+", &device.url("/{2}"), 2000));

    let error = send(&bridge, "amp/zone9", "set", json!({"level": 1}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Upstream, "{error:?}");
    assert_eq!(error.status, Some(404));
    assert_eq!(error.body, Some(json!({"error": "no such output"})));
    assert_eq!(
        error.to_json(),
        json!({
            "code": "upstream",
            "message": error.message,
            "status": 404,
            "body": {"error": "no such output"}
        })
    );

    device.answer(Answer::Status(500, "overheated".into()));
    let error = send(&bridge, "amp/zone1", "set", json!({"level": 1}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Upstream);
    assert_eq!(error.status, Some(500));
    assert_eq!(error.body, Some(json!("overheated")));
    assert!(error.message.contains("500"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_times_out_and_an_unreachable_one_is_upstream() {
    let slow = Device::start(Answer::Hang).await;
    let nobody = unreachable_addr();
    let hub = hub();
    let bridge = start(
        &hub,
        &format!(
            "{}\n{}",
            http_route("slow/+", &slow.url("/"), 500),
            http_route(
                "gone/+",
                &format!("http://u:pw-secret@{nobody}/?apikey=k-secret"),
                2000
            ),
        ),
    );

    let error = send(&bridge, "slow/one", "set", json!({"level": 1}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Timeout, "{error:?}");
    assert!(error.message.contains("500 ms"), "{error:?}");
    slow.wait_requests(1).await;

    let error = send(&bridge, "gone/one", "set", json!({"level": 1}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Upstream, "{error:?}");
    assert_eq!(error.status, None);
    assert!(error.message.contains("unreachable"), "{error:?}");
    let answered = error.to_json().to_string();
    assert!(
        answered.contains(&format!("{nobody}/?***")) && !answered.contains("secret"),
        "the caller sees the device, not its credentials: {answered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_a_route_is_no_route() {
    let hub = hub();
    let bridge = Bridge::start(
        &hub,
        config(
            r#"
            [[route]]
            target = "lights/+"
            type = "handler"
            handler = "lights"
            "#,
        ),
        Handlers::new().add("lights", |_| async { Ok(json!("lit")) }),
    )
    .unwrap();
    assert_eq!(
        send(&bridge, "lights/a", "on", json!({})).await.unwrap(),
        json!("lit")
    );
    for target in ["lights/a/b", "lamps/a"] {
        let error = send(&bridge, target, "on", json!({})).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::NoRoute, "{target}: {error:?}");
        assert!(error.message.contains(target), "{error:?}");
    }
    let error = send(&Bridge::empty(), "lights/a", "on", json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NoRoute);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_naming_an_unregistered_handler_is_refused() {
    let hub = hub();
    let error = Bridge::start(
        &hub,
        config(
            r#"
            [[route]]
            target = "lights/+"
            type = "handler"
            handler = "nobody"
            "#,
        ),
        Handlers::new(),
    )
    .err()
    .expect("refused");
    assert!(error.contains("nobody"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_routes_call_the_application() {
    let hub = hub();
    let handlers = Handlers::new()
        .add("echo", |cmd: Command| async move {
            Ok(json!({"target": cmd.target.as_str(), "name": cmd.name, "args": cmd.args}))
        })
        .add("refuse", |cmd: Command| async move {
            Err(CommandError::new(
                ErrorCode::Forbidden,
                format!("{} is locked", cmd.target),
            ))
        })
        .add("stuck", |_| std::future::pending());
    let bridge = start_with(
        &hub,
        r#"
        [[route]]
        target = "app/echo/#"
        type = "handler"
        handler = "echo"

        [[route]]
        target = "app/locked"
        type = "handler"
        handler = "refuse"

        [[route]]
        target = "app/stuck"
        type = "handler"
        handler = "stuck"
        timeout_ms = 100
        "#,
        handlers,
    );
    assert_eq!(
        send(&bridge, "app/echo/x", "ping", json!({"n": 1}))
            .await
            .unwrap(),
        json!({"target": "app/echo/x", "name": "ping", "args": {"n": 1}})
    );
    let error = send(&bridge, "app/locked", "open", json!(null))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden);
    assert_eq!(error.message, "app/locked is locked");
    let error = send(&bridge, "app/stuck", "go", json!(null))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_route_publishes_and_waits_for_the_reply() {
    let prefix = unique("sctest");
    // The test plays a Tasmota-like device: commands on cmnd/<device>/<name>, answers on
    // stat/<device>/RESULT. `Later` commands are answered only after the next other one,
    // so replies can come out of order; `Silent` ones are never answered.
    let mut device = Mqtt::connect("sctest-device").await;
    device.subscribe(&format!("{prefix}/cmnd/#")).await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let device_task = tokio::spawn({
        let prefix = prefix.clone();
        async move {
            let mut held: Vec<(String, Value)> = Vec::new();
            loop {
                let message = device.next_message().await;
                let payload = String::from_utf8_lossy(&message.payload).into_owned();
                let parts: Vec<&str> = message.topic.split('/').collect();
                let (name, command) = (parts[2], parts[3]);
                let reply_topic = format!("{prefix}/stat/{name}/RESULT");
                let reply = json!({"device": name, command: payload});
                let _ = seen_tx.send((message.topic.clone(), payload, message.retain));
                match command {
                    "Silent" => {}
                    "Later" => held.push((reply_topic, reply)),
                    _ => {
                        device.publish(&reply_topic, reply.to_string(), false).await;
                        for (topic, reply) in held.drain(..) {
                            device.publish(&topic, reply.to_string(), false).await;
                        }
                    }
                }
            }
        }
    });

    let hub = hub();
    let bridge = start(
        &hub,
        &format!(
            r#"
            [[route]]
            target = "plug/+"
            type = "mqtt"
            broker = "{BROKER}"
            topic = "{prefix}/cmnd/{{2}}/{{name}}"
            payload = "{{args.state}}"
            reply_topic = "{prefix}/stat/{{2}}/RESULT"
            timeout_ms = 5000

            [[route]]
            target = "quiet/+"
            type = "mqtt"
            broker = "{BROKER}"
            topic = "{prefix}/cmnd/{{2}}/Silent"
            qos = 0

            [[route]]
            target = "deaf/+"
            type = "mqtt"
            broker = "{BROKER}"
            topic = "{prefix}/cmnd/{{2}}/Silent"
            reply_topic = "{prefix}/stat/nobody/RESULT"
            timeout_ms = 500
            "#
        ),
    );

    let answer = send(&bridge, "plug/kitchen", "POWER", json!({"state": "ON"}))
        .await
        .expect("the device answers");
    assert_eq!(
        answer,
        json!({
            "topic": format!("{prefix}/cmnd/kitchen/POWER"),
            "reply": {"device": "kitchen", "POWER": "ON"}
        })
    );
    let (topic, payload, retain) = within("the device to see the command", seen.recv())
        .await
        .unwrap();
    assert_eq!(topic, format!("{prefix}/cmnd/kitchen/POWER"));
    assert_eq!(payload, "ON", "a string payload is sent as is");
    assert!(!retain);

    // A second command on the same connection.
    let answer = send(&bridge, "plug/hall", "POWER", json!({"state": "OFF"}))
        .await
        .unwrap();
    assert_eq!(answer["reply"], json!({"device": "hall", "POWER": "OFF"}));
    within("the second command", seen.recv()).await.unwrap();

    // Two commands at once, answered in the opposite order: each gets its own reply.
    let first = bridge.command(command("plug/garage", "Later", json!({"state": "1"})));
    let second = async {
        // Sent once the device holds the first, so the replies come out of order.
        let (topic, _, _) = within("the held command", seen.recv()).await.unwrap();
        assert!(topic.ends_with("/garage/Later"), "{topic}");
        bridge
            .command(command("plug/shed", "POWER", json!({"state": "2"})))
            .await
    };
    let (first, second) = within("both concurrent commands", async {
        tokio::join!(first, second)
    })
    .await;
    assert_eq!(
        first.expect("the held command is answered")["reply"],
        json!({"device": "garage", "Later": "1"})
    );
    assert_eq!(
        second.expect("the second command is answered")["reply"],
        json!({"device": "shed", "POWER": "2"})
    );
    within("the second concurrent command", seen.recv())
        .await
        .unwrap();

    // Several commands at once to one device, whose replies share one topic: each caller
    // gets the reply to its own command.
    let levels = ["10", "20", "30", "40", "50"];
    let answers = within(
        "concurrent commands to one device",
        futures_util::future::join_all(levels.iter().map(|level| {
            bridge.command(command("plug/lounge", "Dimmer", json!({"state": level})))
        })),
    )
    .await;
    for (level, answer) in levels.iter().zip(answers) {
        let answer = answer.expect("each command is answered");
        assert_eq!(
            answer["reply"],
            json!({"device": "lounge", "Dimmer": level}),
            "the answer to Dimmer {level}"
        );
        within("the device to see the command", seen.recv())
            .await
            .unwrap();
    }

    // Without a reply topic: published, and the args are the payload.
    let answer = send(&bridge, "quiet/porch", "set", json!({"on": true}))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"topic": format!("{prefix}/cmnd/porch/Silent"), "published": true})
    );
    let (topic, payload, _) = within("the quiet command", seen.recv()).await.unwrap();
    assert_eq!(topic, format!("{prefix}/cmnd/porch/Silent"));
    assert_eq!(
        serde_json::from_str::<Value>(&payload).unwrap(),
        json!({"on": true})
    );

    // No reply within the route's timeout.
    let error = send(&bridge, "deaf/attic", "set", json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Timeout, "{error:?}");
    within("the unanswered command", seen.recv()).await.unwrap();
    device_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_route_to_a_broker_nobody_runs_is_upstream() {
    let nobody = unreachable_addr();
    let hub = hub();
    let bridge = start(
        &hub,
        &format!(
            r#"
            [[route]]
            target = "plug/+"
            type = "mqtt"
            broker = "mqtt://{nobody}"
            topic = "cmnd/{{2}}"
            timeout_ms = 1000
            "#
        ),
    );
    // The first attempt may still be waiting for the first connection (bounded by the
    // route's timeout); once the link has failed, commands fail at once as upstream.
    let mut errors = Vec::new();
    loop {
        let error = send(&bridge, "plug/a", "on", json!({})).await.unwrap_err();
        let upstream = error.code == ErrorCode::Upstream;
        errors.push(error);
        if upstream || errors.len() >= 3 {
            break;
        }
    }
    let last = errors.last().unwrap();
    assert_eq!(last.code, ErrorCode::Upstream, "{errors:?}");
    assert!(last.message.contains("not connected"), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repoll_polls_the_source_that_writes_the_target_at_once() {
    let device = Device::start(Answer::Json(json!({"power": "off"}))).await;
    device.answer_on("/cmd", Answer::Json(json!({"ok": true})));
    let other = Device::start(Answer::Json(json!({"power": "off"}))).await;
    let hub = hub();
    let mut watch = Watch::new(&hub, &["relay/#"]);
    let bridge = start(
        &hub,
        &format!(
            r#"
            [[source]]
            name = "relay1"
            type = "http_poll"
            url = "{status}"
            topic = "relay/one"
            min_interval_ms = 60000
            idle_interval_ms = 60000
            max_interval_ms = 60000

            [[source]]
            name = "relay2"
            type = "http_poll"
            url = "{other}"
            topic = "relay/two"
            min_interval_ms = 60000
            idle_interval_ms = 60000
            max_interval_ms = 60000

            [[route]]
            target = "relay/+"
            type = "http"
            url = "{cmd}"
            repoll = true
            "#,
            status = device.url("/status"),
            other = other.url("/status"),
            cmd = device.url("/cmd"),
        ),
    );
    watch
        .until("the first polls", |w| {
            w.state("relay/one").is_some() && w.state("relay/two").is_some()
        })
        .await;
    assert_eq!(device.requests(), 1);

    // The device switches; with 60 s intervals only the repoll can bring the new state in.
    device.answer(Answer::Json(json!({"power": "on"})));
    let answer = send(&bridge, "relay/one", "on", json!({})).await.unwrap();
    assert_eq!(answer["status"], 200);
    watch
        .state_where("relay/one", "the repolled state", |s| s["power"] == "on")
        .await;
    let paths: Vec<String> = device.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(paths, ["/status", "/cmd", "/status"]);
    // Only the source writing the target polled again.
    assert_eq!(other.requests(), 1);
}
