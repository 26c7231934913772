//! The routes of the hub: which handler answers which path. The top-level paths are
//! defined once here; the Socket.IO endpoint may take none of them.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::app::App;
use crate::{assets, rest, sse, writes, ws};

/// The REST API, the SSE stream and health, all under one prefix.
const API: &str = "/api";
const WS: &str = "/ws";
const METRICS: &str = "/metrics";
const CLIENT_JS: &str = "/statecast.js";

/// Every route is one of these or under one of them (besides the dashboard at `/`).
pub(crate) const TAKEN: [&str; 4] = [API, WS, METRICS, CLIENT_JS];

/// The routes of the hub; `socketio` serves the Socket.IO endpoint in front of them.
pub(crate) fn router(
    app: Arc<App>,
    socketio: Option<socketioxide::layer::SocketIoLayer>,
) -> Router {
    let body_limit = app.hub.config().max_state_bytes + 64 * 1024;
    let routes = Router::new()
        .route("/", get(assets::dashboard))
        .route(CLIENT_JS, get(assets::client_js))
        .route(WS, get(ws::upgrade))
        .route(&format!("{API}/state"), get(rest::list_state))
        .route(
            &format!("{API}/state/{{*topic}}"),
            get(rest::get_state)
                .put(rest::put_state)
                .patch(rest::patch_state)
                .delete(rest::delete_state),
        )
        .route(&format!("{API}/events/{{*topic}}"), post(rest::post_event))
        .route(
            &format!("{API}/commands/{{*target}}"),
            post(rest::post_command),
        )
        .route(&format!("{API}/stream"), get(sse::stream))
        .route(&format!("{API}/schemas"), get(rest::list_schemas))
        .route(&format!("{API}/health"), get(rest::health))
        .route(METRICS, get(rest::metrics))
        // Every route that writes passes this one gate (reads go straight through).
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            writes::guard,
        ))
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        // Every error the routes give, rejections included, in the contract's JSON shape.
        .layer(axum::middleware::from_fn(crate::error::json_errors));
    // Inside the CORS layer: pages from `allowed_origins` may poll it too.
    let routes = match socketio {
        Some(socketio) => routes.layer(socketio),
        None => routes,
    };
    routes
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors(&app.config.allowed_origins))
        // Outside the CORS layer: it answers pages of every origin itself.
        .route(&format!("{API}/origin"), get(rest::origin))
        .with_state(app)
}

/// CORS for pages from `allowed_origins` calling the REST API (none listed: no CORS
/// headers, so browsers keep other sites' pages out).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::POST,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::ETAG])
}
