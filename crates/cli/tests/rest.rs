//! The REST API of the real binary: state reads and writes with ETags and preconditions,
//! events, listing, health and metrics.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_patch_delete_round_trip_with_exact_bodies() {
    let server = Server::start(&[]);
    let path = "/api/state/micboard/SHURE001/battery";
    let topic = "micboard/SHURE001/battery";

    let put = server.put(path, &json!({"level": 92, "unit": "%"})).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        put.json(),
        json!({"topic": topic, "rev": 1, "changed": true})
    );
    assert_eq!(put.header("etag"), Some("\"1\""));

    let get = server.get(path).await;
    assert_eq!(get.status, 200);
    assert!(
        get.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(get.header("etag"), Some("\"1\""));
    assert_eq!(
        untimed(get.json()),
        json!({"topic": topic, "rev": 1, "state": {"level": 92, "unit": "%"}})
    );

    let patch = server
        .patch(path, &json!({"level": 91, "unit": null}))
        .await;
    assert_eq!(patch.status, 200, "{}", patch.text);
    assert_eq!(
        patch.json(),
        json!({"topic": topic, "rev": 2, "changed": true})
    );
    let get = server.get(path).await;
    assert_eq!(
        untimed(get.json()),
        json!({"topic": topic, "rev": 2, "state": {"level": 91}})
    );
    assert_eq!(get.header("etag"), Some("\"2\""));

    // The merge-patch media type is accepted too.
    let patch = server
        .send(
            http_client()
                .patch(server.url(path))
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"charging":true}"#),
        )
        .await;
    assert_eq!(patch.status, 200, "{}", patch.text);
    assert_eq!(
        patch.json(),
        json!({"topic": topic, "rev": 3, "changed": true})
    );

    // Writing the same state again is not a change.
    let same = server
        .put(path, &json!({"charging": true, "level": 91}))
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(
        same.json(),
        json!({"topic": topic, "rev": 3, "changed": false})
    );

    // PUT replaces the whole state.
    let put = server.put(path, &json!([1, 2])).await;
    assert_eq!(
        put.json(),
        json!({"topic": topic, "rev": 4, "changed": true})
    );
    assert_eq!(
        untimed(server.get(path).await.json()),
        json!({"topic": topic, "rev": 4, "state": [1, 2]})
    );

    let delete = server.delete(path).await;
    assert_eq!(delete.status, 200, "{}", delete.text);
    assert_eq!(delete.json(), json!({"topic": topic, "rev": 5}));
    let gone = server.get(path).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "not_found");

    // Re-creation continues the revs; a PATCH of a missing topic applies to {}.
    let again = server.patch(path, &json!({"level": 50, "x": null})).await;
    assert_eq!(
        again.json(),
        json!({"topic": topic, "rev": 6, "changed": true})
    );
    assert_eq!(
        untimed(server.get(path).await.json()),
        json!({"topic": topic, "rev": 6, "state": {"level": 50}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_with_the_current_etag_gives_304() {
    let server = Server::start(&[]);
    let path = "/api/state/etag/t";
    server.put(path, &json!({"a": 1})).await;
    server.patch(path, &json!({"a": 2})).await;

    let current = server
        .send(
            http_client()
                .get(server.url(path))
                .header("if-none-match", "\"2\""),
        )
        .await;
    assert_eq!(current.status, 304);
    assert!(current.text.is_empty());
    assert_eq!(current.header("etag"), Some("\"2\""));

    let stale = server
        .send(
            http_client()
                .get(server.url(path))
                .header("if-none-match", "\"1\""),
        )
        .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("etag"), Some("\"2\""));
    assert_eq!(
        untimed(stale.json()),
        json!({"topic": "etag/t", "rev": 2, "state": {"a": 2}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_with_another_rev_is_412_conflict_and_changes_nothing() {
    let server = Server::start(&[]);
    let path = "/api/state/cas/t";
    server.put(path, &json!({"v": 1})).await;
    server.put(path, &json!({"v": 2})).await;
    let unchanged = json!({"topic": "cas/t", "rev": 2, "state": {"v": 2}});

    let put = server
        .send(
            http_client()
                .put(server.url(path))
                .header("if-match", "\"1\"")
                .json(&json!({"v": 99})),
        )
        .await;
    assert_eq!(put.status, 412, "{}", put.text);
    assert_eq!(put.error_code(), "conflict");
    assert_eq!(untimed(server.get(path).await.json()), unchanged);

    let patch = server
        .send(
            http_client()
                .patch(server.url(path))
                .header("if-match", "\"3\"")
                .json(&json!({"v": 99})),
        )
        .await;
    assert_eq!(patch.status, 412, "{}", patch.text);
    assert_eq!(patch.error_code(), "conflict");
    assert_eq!(untimed(server.get(path).await.json()), unchanged);

    let delete = server
        .send(
            http_client()
                .delete(server.url(path))
                .header("if-match", "\"1\""),
        )
        .await;
    assert_eq!(delete.status, 412, "{}", delete.text);
    assert_eq!(delete.error_code(), "conflict");
    assert_eq!(untimed(server.get(path).await.json()), unchanged);

    // The current rev passes.
    let put = server
        .send(
            http_client()
                .put(server.url(path))
                .header("if-match", "\"2\"")
                .json(&json!({"v": 3})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        put.json(),
        json!({"topic": "cas/t", "rev": 3, "changed": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_on_a_missing_topic_is_412() {
    let server = Server::start(&[]);
    let path = "/api/state/cas/missing";
    let put = server
        .send(
            http_client()
                .put(server.url(path))
                .header("if-match", "\"1\"")
                .json(&json!({"v": 1})),
        )
        .await;
    assert_eq!(put.status, 412, "{}", put.text);
    assert_eq!(put.error_code(), "conflict");
    let patch = server
        .send(
            http_client()
                .patch(server.url(path))
                .header("if-match", "\"0\"")
                .json(&json!({"v": 1})),
        )
        .await;
    assert_eq!(patch.status, 412, "{}", patch.text);
    assert_eq!(patch.error_code(), "conflict");
    assert_eq!(server.get(path).await.status, 404);
    assert_eq!(server.all_state().await, json!({"topics": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_missing_topic_is_404_not_found() {
    let server = Server::start(&[]);
    let never = server.delete("/api/state/del/never").await;
    assert_eq!(never.status, 404, "{}", never.text);
    assert_eq!(never.error_code(), "not_found");

    server.put("/api/state/del/t", &json!({"x": 1})).await;
    assert_eq!(server.delete("/api/state/del/t").await.status, 200);
    let twice = server.delete("/api/state/del/t").await;
    assert_eq!(twice.status, 404, "{}", twice.text);
    assert_eq!(twice.error_code(), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_event_is_202_and_reaches_a_websocket_subscriber() {
    let server = Server::start(&[]);
    let mut ws = server.ws().await;
    let result = ws
        .call(json!({"type": "subscribe", "id": 1, "patterns": ["mopidy/+"]}))
        .await;
    assert_eq!(result["ok"], true);

    let data = json!({"event": "track_playback_started", "track": {"name": "x"}});
    let post = server.post("/api/events/mopidy/player1", &data).await;
    assert_eq!(post.status, 202, "{}", post.text);
    assert_eq!(post.json(), json!({"topic": "mopidy/player1"}));
    assert_eq!(
        ws.recv_json().await,
        json!({"type": "event", "topic": "mopidy/player1", "data": data})
    );
    // Events are not stored.
    assert_eq!(server.get("/api/state/mopidy/player1").await.status, 404);
    ws.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_state_with_match_lists_the_matching_topics() {
    let server = Server::start(&[]);
    server.put("/api/state/list/b", &json!({"b": 1})).await;
    server.put("/api/state/list/a", &json!({"a": 1})).await;
    server.patch("/api/state/list/a", &json!({"a": 2})).await;
    server.put("/api/state/list/a/deep", &json!(3)).await;
    server.put("/api/state/other/x", &json!("x")).await;
    server.put("/api/state/list/gone", &json!(0)).await;
    server.delete("/api/state/list/gone").await;

    let list = |pattern: &'static str| {
        let server = &server;
        async move {
            let resp = server
                .send(
                    http_client()
                        .get(server.url("/api/state"))
                        .query(&[("match", pattern)]),
                )
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text);
            resp.json()
        }
    };
    let mut topics = untimed(list("list/+").await)["topics"]
        .as_array()
        .unwrap()
        .clone();
    topics.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    assert_eq!(
        topics,
        vec![
            json!({"topic": "list/a", "rev": 2, "state": {"a": 2}}),
            json!({"topic": "list/b", "rev": 1, "state": {"b": 1}}),
        ]
    );
    let all = list("list/#").await;
    assert_eq!(all["topics"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(list("nothing/#").await, json!({"topics": []}));
    // No `match` is `#`.
    let everything = server.all_state().await;
    assert_eq!(
        everything["topics"].as_array().unwrap().len(),
        4,
        "{everything}"
    );
    assert_eq!(list("#").await["topics"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_status_clients_topics_uptime_and_version() {
    let server = Server::start(&[]);
    let health = server.get("/api/health").await;
    assert_eq!(health.status, 200);
    let body = health.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["clients"], 0);
    assert_eq!(body["topics"], 0);
    assert!(body["uptime_s"].is_u64(), "{body}");
    assert_eq!(body["version"], "0.1.0");
    // The hub's identity: its store's epoch, the same after a restart.
    let epoch = body["epoch"].as_str().unwrap_or_default().to_owned();
    assert_eq!(epoch.len(), 16, "{body}");
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "clients",
            "epoch",
            "sources",
            "stale_topics",
            "status",
            "topics",
            "uptime_s",
            "version"
        ]
    );
    assert_eq!(body["sources"], json!({}), "no sources configured");

    server.put("/api/state/h/a", &json!(1)).await;
    server.put("/api/state/h/b", &json!(2)).await;
    server.put("/api/state/h/c", &json!(3)).await;
    server.delete("/api/state/h/c").await;
    let mut ws = server.ws().await;
    ws.ping_pong().await;
    let body = server.get("/api/health").await.json();
    assert_eq!(body["clients"], 1, "{body}");
    assert_eq!(body["topics"], 2, "{body}");

    // SSE streams count as clients too.
    let _sse = Sse::open(&server, &["h/#"], None).await;
    let body = server.get("/api/health").await.json();
    assert_eq!(body["clients"], 2, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_documented_names() {
    let server = Server::start(&[]);
    let mut ws = server.ws().await;
    ws.call(json!({"type": "subscribe", "id": 1, "patterns": ["#"]}))
        .await;
    server.put("/api/state/m/t", &json!({"x": 1})).await;
    ws.recv_json().await;
    ws.ping_pong().await;

    let resp = server.get("/metrics").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text;
    for name in [
        "statecast_ws_connections",
        "statecast_messages_out_total",
        "statecast_bytes_out_total",
        "statecast_queue_conflations_total",
        "statecast_queue_dropped_events_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no TYPE line for {name}:\n{text}"
        );
        assert!(
            metric_value(&text, name).is_some(),
            "no value for {name}:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("statecast_write_latency_seconds_bucket{le=")),
        "no write latency buckets:\n{text}"
    );
    assert!(text.contains("statecast_write_latency_seconds_bucket{le=\"+Inf\"}"));
    assert_eq!(metric_value(&text, "statecast_ws_connections"), Some(1.0));
    assert!(metric_value(&text, "statecast_messages_out_total").unwrap() >= 3.0);
    assert!(metric_value(&text, "statecast_bytes_out_total").unwrap() > 0.0);
    assert!(metric_value(&text, "statecast_write_latency_seconds_count").unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_without_a_handler_is_refused_with_no_route() {
    let server = Server::start(&[]);
    let resp = server
        .post(
            "/api/commands/railhub/esp32-01",
            &json!({"name": "reboot", "args": {"delay": 1}}),
        )
        .await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    assert_eq!(resp.error_code(), "no_route");
    let resp = server
        .post("/api/commands/railhub/esp32-01", &json!({"args": {}}))
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert_eq!(resp.error_code(), "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_escapes_and_numbers_survive_rest_and_websocket() {
    let server = Server::start(&[]);
    let state = json!({
        "name": "Caf\u{e9} \u{2615} \u{1F600}",
        "quote": "a \"quoted\" \\ back\nslash\ttab\u{0}",
        "big": 18446744073709551615u64,
        "neg": -9223372036854775808i64,
        "float": 0.1,
        "exp": 1.5e300,
        "nested": {"empty": {}, "list": [[], {}, "", false]},
    });
    let put = server.put("/api/state/uni/t", &state).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(server.get("/api/state/uni/t").await.json()["state"], state);
    let mut ws = server.ws().await;
    let seen = ws
        .request(json!({"type": "get", "id": 1, "patterns": ["uni/t"]}))
        .await;
    assert_eq!(
        seen[0],
        json!({"type": "snapshot", "topic": "uni/t", "rev": 1, "state": state})
    );
    let mut sse = Sse::open(&server, &["uni/#"], None).await;
    assert_eq!(sse.next().await.json()["state"], state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_has_an_etag_that_changes_only_with_the_state() {
    let server = Server::start(&[]);
    assert_eq!(
        server
            .put("/api/state/etag/a", &json!({"n": 1}))
            .await
            .status,
        200
    );
    let path = "/api/state?match=etag/%23";
    let first = server.get(path).await;
    let etag = first
        .header("etag")
        .expect("an ETag on the listing")
        .to_owned();

    let client = common::http_client();
    let again = server
        .send(client.get(server.url(path)).header("if-none-match", &etag))
        .await;
    assert_eq!(again.status, 304);

    assert_eq!(
        server
            .patch("/api/state/etag/a", &json!({"n": 2}))
            .await
            .status,
        200
    );
    let changed = server
        .send(client.get(server.url(path)).header("if-none-match", &etag))
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["topics"][0]["rev"], 2);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_javascript_client_are_served() {
    let server = Server::start(&[]);
    let page = server.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(
        page.text
            .contains(r#"import { connect } from "/statecast.js""#)
    );
    let client = server.get("/statecast.js").await;
    assert_eq!(client.status, 200);
    assert!(
        client
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/javascript")
    );
    assert!(
        client.text.contains("export function connect"),
        "the module exports connect"
    );
    // The dashboard's charts and their library (uPlot), from the binary.
    for (path, kind, inside) in [
        ("/assets/charts.js", "text/javascript", "export class Chart"),
        ("/assets/uplot.min.js", "text/javascript", "var uPlot="),
        ("/assets/uplot.min.css", "text/css", ".uplot"),
    ] {
        assert!(page.text.contains(path), "the dashboard loads {path}");
        let asset = server.get(path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(
            asset.header("content-type").unwrap_or("").starts_with(kind),
            "{path}"
        );
        assert!(asset.text.contains(inside), "{path}");
    }
}
