//! The routes of the hub: which handler answers which method and path, in one table. The
//! top-level paths are defined once here; the Socket.IO endpoint may take none of them.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::app::App;
use crate::{assets, history, openapi, rest, sse, writes, ws};

/// The REST API, the SSE stream and health, all under one prefix.
const API: &str = "/api";
const WS: &str = "/ws";
const METRICS: &str = "/metrics";
const CLIENT_JS: &str = "/statecast.js";
/// The dashboard's own files (its charts, its entities, the chart library).
const ASSETS: &str = "/assets";

/// Every route is one of these or under one of them (besides the dashboard at `/`).
pub(crate) const TAKEN: [&str; 5] = [API, WS, METRICS, CLIENT_JS, ASSETS];

/// One route of the hub: a method, a path in axum's syntax (`{*topic}` takes the rest of
/// the path, slashes included) and its handler.
struct Route {
    method: Method,
    path: String,
    handler: MethodRouter<Arc<App>>,
    /// Outside the CORS layer: the route answers pages of every origin itself.
    any_origin: bool,
}

fn route<H, T>(method: Method, path: &str, handler: H) -> Route
where
    H: Handler<T, Arc<App>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .unwrap_or_else(|_| panic!("the route table names {method}, which axum cannot route"));
    Route {
        method,
        path: path.to_owned(),
        handler: on(filter, handler),
        any_origin: false,
    }
}

/// Every route the hub serves, in one table: [`router`] serves exactly these and
/// [`http_routes`] lists them for the test that holds them against the OpenAPI document
/// (`openapi.json`), so the two cannot drift apart.
fn table() -> Vec<Route> {
    let state = format!("{API}/state/{{*topic}}");
    vec![
        route(Method::GET, "/", assets::dashboard),
        route(Method::GET, CLIENT_JS, assets::client_js),
        route(
            Method::GET,
            &format!("{ASSETS}/charts.js"),
            assets::charts_js,
        ),
        route(
            Method::GET,
            &format!("{ASSETS}/entities.js"),
            assets::entities_js,
        ),
        route(
            Method::GET,
            &format!("{ASSETS}/uplot.min.js"),
            assets::uplot_js,
        ),
        route(
            Method::GET,
            &format!("{ASSETS}/uplot.min.css"),
            assets::uplot_css,
        ),
        route(Method::GET, WS, ws::upgrade),
        route(Method::GET, &format!("{API}/state"), rest::list_state),
        route(Method::GET, &state, rest::get_state),
        route(Method::PUT, &state, rest::put_state),
        route(Method::PATCH, &state, rest::patch_state),
        route(Method::DELETE, &state, rest::delete_state),
        route(
            Method::POST,
            &format!("{API}/events/{{*topic}}"),
            rest::post_event,
        ),
        route(
            Method::POST,
            &format!("{API}/commands/{{*target}}"),
            rest::post_command,
        ),
        route(
            Method::GET,
            &format!("{API}/history/{{*topic}}"),
            history::get_history,
        ),
        route(Method::GET, &format!("{API}/stream"), sse::stream),
        route(Method::GET, &format!("{API}/schemas"), rest::list_schemas),
        route(Method::GET, &format!("{API}/health"), rest::health),
        route(
            Method::GET,
            &format!("{API}/openapi.json"),
            openapi::document,
        ),
        route(Method::GET, METRICS, rest::metrics),
        Route {
            any_origin: true,
            ..route(Method::GET, &format!("{API}/origin"), rest::origin)
        },
    ]
}

/// The method and path of every route the hub serves, paths as OpenAPI writes them
/// (`/api/state/{topic}`, where the parameter may hold slashes). The dashboard's `/` is
/// one of them; the Socket.IO endpoint (`/socket.io/`, a layer in front of the routes when
/// enabled) is not.
pub fn http_routes() -> Vec<(Method, String)> {
    table()
        .into_iter()
        .map(|r| (r.method, r.path.replace("{*", "{")))
        .collect()
}

/// The routes of the hub; `socketio` serves the Socket.IO endpoint in front of them.
pub(crate) fn router(
    app: Arc<App>,
    socketio: Option<socketioxide::layer::SocketIoLayer>,
) -> Router {
    let body_limit = app.hub.config().max_state_bytes + 64 * 1024;
    let (any_origin, with_cors): (Vec<Route>, Vec<Route>) =
        table().into_iter().partition(|r| r.any_origin);
    // Routes of one path with several methods merge into one.
    let routes = with_cors
        .into_iter()
        .fold(Router::new(), |router, r| router.route(&r.path, r.handler))
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
    let routes = routes
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors(&app.config.allowed_origins));
    // Outside the CORS layer: they answer pages of every origin themselves. Their errors
    // (a wrong method) are the contract's JSON error too.
    any_origin
        .into_iter()
        .fold(routes, |router, r| {
            let handler = r
                .handler
                .layer(axum::middleware::from_fn(crate::error::json_errors));
            router.route(&r.path, handler)
        })
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
