//! The OpenAPI document (`GET /api/openapi.json`) against the router, both ways, on the
//! real binary: every route of the route table (`statecast_server::http_routes`, the one
//! definition the router is built from) is described, and every described operation
//! exists, answering something other than 404 or 405. Whether the answers match their
//! descriptions is schemathesis's part (`.ci/run`, tests/openapi/).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

/// The HTTP methods an OpenAPI path item may describe.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(METHOD, path)` of every operation the document describes.
fn described(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"]
        .as_object()
        .expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// A hub with one command route, `dev/#`, whose device is `device`'s `/api/health`: a
/// command then reaches a device and is answered 200.
fn hub_with_a_command_route(dir: &tempfile::TempDir, device: &Server) -> Server {
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\ntarget = \"dev/#\"\ntype = \"http\"\nmethod = \"GET\"\nurl = \"{}\"\n",
            device.url("/api/health")
        ),
    )
    .expect("write the config");
    Server::start(&["--config", &config.to_string_lossy()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route_and_every_described_route_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let device = Server::start(&[]);
    let server = hub_with_a_command_route(&dir, &device);
    let served = server.get("/api/openapi.json").await;
    assert_eq!(served.status, 200, "{}", served.text);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let document = served.json();
    assert_eq!(
        document,
        serde_json::from_str::<Value>(statecast_server::OPENAPI_DOCUMENT).expect("JSON"),
        "the hub serves the committed document"
    );
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));

    let routes: BTreeSet<(String, String)> = statecast_server::http_routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect();
    let operations = described(&document);
    let undescribed: Vec<_> = routes.difference(&operations).collect();
    assert!(
        undescribed.is_empty(),
        "routes the document does not describe: {undescribed:?}"
    );
    let unrouted: Vec<_> = operations.difference(&routes).collect();
    assert!(
        unrouted.is_empty(),
        "described operations no route serves: {unrouted:?}"
    );

    // Every described operation answers, on a topic that exists (DELETE last).
    let put = server.put("/api/state/t/a", &json!({"v": 1})).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let mut operations: Vec<_> = operations.into_iter().collect();
    operations.sort_by_key(|(method, _)| method == "DELETE");
    for (method, path) in operations {
        let concrete = path
            .replace("{topic}", "t/a")
            .replace("{target}", "dev/lamp");
        assert!(!concrete.contains('{'), "a parameter left in {path}");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = http_client().request(method.clone(), server.url(&concrete));
        if matches!(
            method,
            reqwest::Method::PUT | reqwest::Method::PATCH | reqwest::Method::POST
        ) {
            let body = if path.starts_with("/api/commands/") {
                json!({"name": "status"})
            } else {
                json!({"v": 2})
            };
            request = request.json(&body);
        }
        // The SSE stream never ends: its status and headers are its answer.
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let text = if path == "/api/stream" {
            String::new()
        } else {
            response.text().await.expect("a body")
        };
        assert!(
            status != 404 && status != 405,
            "{method} {concrete} ({path}) is described but answers {status}: {text}"
        );
        let expected = document["paths"][&path][method.as_str().to_lowercase()]["responses"]
            .get(status.to_string())
            .is_some();
        assert!(
            expected,
            "{method} {concrete} answered {status}, which the document does not list: {text}"
        );
    }
}

#[test]
fn every_operation_has_an_id_and_every_error_is_the_contracts_error() {
    let document: Value =
        serde_json::from_str(statecast_server::OPENAPI_DOCUMENT).expect("the document is JSON");
    let error_responses = document["components"]["responses"]
        .as_object()
        .expect("shared responses");
    let mut ids = BTreeSet::new();
    for (method, path) in described(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        let responses = operation["responses"].as_object().expect("responses");
        for (status, response) in responses {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            // Every error is a shared response whose body is the `Error` schema.
            let name = response["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/responses/"))
                .unwrap_or_else(|| panic!("{method} {path} {status} is not a shared error"));
            let schema = &error_responses[name]["content"]["application/json"]["schema"];
            assert_eq!(
                schema["$ref"], "#/components/schemas/Error",
                "{method} {path} {status} ({name})"
            );
        }
    }
}
