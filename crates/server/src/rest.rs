//! The REST API: state reads and writes, events, commands, health and metrics.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use statecast_bridge::{Command, redact};
use statecast_core::{ErrorCode, HubError, Outcome, Topic, TopicState, Write};

use crate::app::App;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, status_of};
use crate::metrics::Metrics;
use statecast_core::request::{parse_pattern, parse_topic};

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "match")]
    pattern: Option<String>,
    /// `true`: only the stale topics; `false`: only the fresh ones.
    stale: Option<bool>,
}

pub async fn list_state(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Metrics::add(&app.metrics.http_requests, 1);
    let pattern = parse_pattern(query.pattern.as_deref().unwrap_or("#"))?;
    let mut topics = app.hub.get_matching(&pattern);
    topics.retain(|t| {
        caller.grant.allows(Action::Read, t.topic.as_str())
            && query.stale.is_none_or(|stale| t.stale == stale)
    });
    // Revs never go back, so the topics and their revs identify the list: pollers get a 304
    // while nothing changed.
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        for topic in &topics {
            (topic.topic.as_str(), topic.rev, topic.stale).hash(&mut hasher);
        }
        format!("W/\"{:016x}\"", hasher.finish())
    };
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let mut body =
        Vec::with_capacity(64 + topics.iter().map(|t| t.state.len() + 64).sum::<usize>());
    body.extend_from_slice(b"{\"topics\":[");
    for (i, topic) in topics.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_topic(&mut body, topic);
    }
    body.extend_from_slice(b"]}");
    let mut response = json_response(StatusCode::OK, body);
    if let Ok(value) = etag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// Whether `If-None-Match` names `etag` (or `*`); weak and strong forms compare equal.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == "*" || bare(t) == bare(etag))
        })
}

/// `GET /api/schemas`: every policy's schema with its pattern, so clients can generate
/// types. Schemas describe shapes, not data: any caller the hub admits may read them.
pub async fn list_schemas(State(app): State<Arc<App>>, _caller: Caller) -> Response {
    Metrics::add(&app.metrics.http_requests, 1);
    let schemas: Vec<Value> = app
        .hub
        .config()
        .policies
        .iter()
        .filter_map(|p| {
            let schema = p.schema.as_ref()?;
            Some(json!({"match": p.pattern.as_str(), "schema": schema.document()}))
        })
        .collect();
    axum::Json(json!({ "schemas": schemas })).into_response()
}

#[derive(Deserialize)]
pub struct StateQuery {
    /// A past moment: the state then, from the history.
    at: Option<String>,
}

pub async fn get_state(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(topic): Path<String>,
    Query(query): Query<StateQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Metrics::add(&app.metrics.http_requests, 1);
    let topic = parse_topic(&topic)?;
    app.check(&caller, Action::Read, &topic)?;
    // An empty `at=` asks for nothing in the past, like no `at`.
    if let Some(at) = query.at.as_deref().filter(|at| !at.is_empty()) {
        return crate::history::state_at(app, topic, at).await;
    }
    let Some(state) = app.hub.get(&topic) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{topic} does not exist"),
        ));
    };
    let etag = format!("\"{}\"", state.rev);
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let mut body = Vec::with_capacity(state.state.len() + 64);
    write_topic(&mut body, &state);
    let mut response = json_response(StatusCode::OK, body);
    if let Ok(value) = etag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

pub async fn put_state(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let set = |topic, state, if_rev| Write::Set {
        topic,
        state,
        if_rev,
    };
    write_state(&app, &caller, &topic, &headers, body, set).await
}

pub async fn patch_state(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let patch = |topic, patch, if_rev| Write::Patch {
        topic,
        patch,
        if_rev,
    };
    write_state(&app, &caller, &topic, &headers, body, patch).await
}

/// A PUT or PATCH: the checks, the write `make` builds from the body, the answer.
async fn write_state(
    app: &App,
    caller: &Caller,
    topic: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    make: impl FnOnce(Topic, Value, Option<u64>) -> Write,
) -> Result<Response, ApiError> {
    let topic = parse_topic(topic)?;
    app.check(caller, Action::Write, &topic)?;
    let value = json_body(body)?;
    let if_rev = if_match(headers)?;
    let outcome = app
        .hub
        .submit(make(topic.clone(), value, if_rev))?
        .wait()
        .await?;
    Metrics::add(&app.metrics.http_requests, 1);
    Ok(write_response(&topic, outcome))
}

pub async fn delete_state(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(topic): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    app.check(&caller, Action::Write, &topic)?;
    let if_rev = if_match(&headers)?;
    let write = Write::Delete {
        topic: topic.clone(),
        if_rev,
    };
    let outcome = app.hub.submit(write)?.wait().await?;
    Metrics::add(&app.metrics.http_requests, 1);
    Ok(axum::Json(json!({"topic": topic.as_str(), "rev": outcome.rev})).into_response())
}

pub async fn post_event(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    app.check(&caller, Action::Event, &topic)?;
    let data = json_body(body)?;
    app.hub
        .submit(Write::Event {
            topic: topic.clone(),
            data,
        })?
        .wait()
        .await?;
    Metrics::add(&app.metrics.http_requests, 1);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"topic": topic.as_str()})),
    )
        .into_response())
}

pub async fn post_command(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(target): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    Metrics::add(&app.metrics.http_requests, 1);
    let target = parse_topic(&target)?;
    app.check(&caller, Action::Command, &target)?;
    let mut command = json_body(body)?;
    let name = match command.get_mut("name").map(Value::take) {
        Some(Value::String(name)) => name,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the body needs a string `name`",
            ));
        }
    };
    let args = command
        .get_mut("args")
        .map(Value::take)
        .unwrap_or_else(|| json!({}));
    let Ok(_permit) = app.commands_in_flight.try_acquire() else {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many commands in flight",
        ));
    };
    match app.bridge.command(Command { target, name, args }).await {
        Ok(answer) => Ok(axum::Json(answer).into_response()),
        Err(e) => {
            Ok((status_of(e.code), axum::Json(json!({"error": e.to_json()}))).into_response())
        }
    }
}

/// `/api/health`: `ok`, or `degraded` with its `reasons` (a source offline, the store
/// refusing writes, the cluster's store unreachable). Open to all (probes carry no token);
/// the `sources` details (errors, URLs) only to an admin key when authentication is on.
pub async fn health(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let degraded = app.hub.degraded().map(|why| redact(&why).into_owned());
    let sources = app.bridge.health();
    let mut reasons: Vec<String> = sources
        .iter()
        .filter(|(_, health)| !health.is_online())
        .map(|(name, _)| format!("source {name:?} is offline"))
        .collect();
    if let Some(why) = &degraded {
        reasons.insert(0, why.clone());
    }
    let nodes = app.hub.nodes();
    let cluster = (!nodes.is_empty()).then(|| {
        let live: Vec<_> = nodes.iter().filter(|n| n.alive).collect();
        json!({
            "nodes": live.iter().map(|n| json!({"id": n.id, "clients": n.clients})).collect::<Vec<_>>(),
            "clients": live.iter().map(|n| n.clients).sum::<u64>(),
        })
    });
    let mut body = json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "clients": app.hub.client_count(),
        "topics": app.hub.topic_count(),
        "stale_topics": app.hub.stale_count(),
        "uptime_s": app.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "epoch": app.hub.epoch(),
    });
    let admin = matches!(app.config.auth.grant(&headers, None), Ok(Some(grant)) if grant.admin);
    if admin {
        body["sources"] = sources
            .into_iter()
            .map(|(name, health)| (name, json!(health)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if !reasons.is_empty() {
        body["reasons"] = json!(reasons);
    }
    if let Some(why) = degraded {
        body["degraded"] = json!(why);
    }
    if let Some(cluster) = cluster {
        body["cluster"] = cluster;
    }
    axum::Json(body).into_response()
}

pub async fn metrics(State(app): State<Arc<App>>, caller: Caller) -> Response {
    if !caller.grant.admin {
        let e = HubError::new(
            ErrorCode::Forbidden,
            format!(
                "{} may not read /metrics (needs admin)",
                caller.grant.subject
            ),
        );
        app.refused(caller.peer, &e);
        return ApiError(e).into_response();
    }
    let text = app.metrics.render(
        &app.hub,
        &app.bridge.health(),
        app.started.elapsed().as_secs(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such endpoint; see docs/protocol.md",
    )
}

pub async fn method_not_allowed() -> Response {
    let body =
        json!({"error": {"code": "bad_request", "message": "method not allowed on this path"}});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// Parses a JSON request body, refusing empty and oversized ones (its content type was
/// checked in `writes.rs`).
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::TooLarge, "the request body is too large")
        } else {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("could not read the body: {e}"),
            )
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// `If-Match: "<rev>"` as the rev a write expects.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("If-Match {text:?} is not a rev ETag like \"12\""),
            )
        })
}

fn write_response(topic: &str, outcome: Outcome) -> Response {
    let mut response =
        axum::Json(json!({"topic": topic, "rev": outcome.rev, "changed": outcome.changed}))
            .into_response();
    if let Ok(value) = format!("\"{}\"", outcome.rev).parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `{"topic":..,"rev":..,"state":..}` from the stored JSON, without re-encoding it.
fn write_topic(out: &mut Vec<u8>, topic: &TopicState) {
    out.extend_from_slice(b"{\"topic\":\"");
    out.extend_from_slice(topic.topic.as_bytes());
    out.extend_from_slice(b"\",\"rev\":");
    out.extend_from_slice(itoa::Buffer::new().format(topic.rev).as_bytes());
    if topic.changed_ms > 0 {
        out.extend_from_slice(b",\"time\":\"");
        out.extend_from_slice(statecast_core::message::rfc3339(topic.changed_ms).as_bytes());
        out.push(b'"');
    }
    if topic.stale {
        out.extend_from_slice(b",\"stale\":true");
    }
    out.extend_from_slice(b",\"state\":");
    out.extend_from_slice(&topic.state);
    out.push(b'}');
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// `GET /api/origin`: whether the asking page's origin may use the hub, readable by a page
/// of any origin (`Access-Control-Allow-Origin: *`). A browser sees a refused WebSocket
/// upgrade or a CORS-blocked request only as a network failure; a client asks here to tell
/// a refused origin from a hub that is down. It reveals nothing but the verdict on the
/// asker's own origin.
pub async fn origin(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let body = match app.origin_verdict(&headers) {
        None => json!({"origin": null, "allowed": true}),
        Some((origin, true)) => json!({"origin": origin, "allowed": true}),
        Some((origin, false)) => json!({
            "origin": origin,
            "allowed": false,
            "message": format!(
                "the hub refuses pages from {origin}: add \"{origin}\" to allowed_origins \
                 in its config, or open the page from the hub itself"
            ),
        }),
    };
    (
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::Json(body),
    )
        .into_response()
}
