//! Files the hub serves itself: the dashboard at `/`, the JavaScript client at
//! `/statecast.js` and, under `/assets/`, the dashboard's history charts (`charts.js`),
//! its entities (`entities.js`) and the chart library, embedded in the binary so there is nothing to install or build.
//!
//! The charts are uPlot (`assets/uplot/`, MIT, its LICENSE beside it): 50 kB minified with
//! no dependencies, drawn on a canvas so that hundreds of sparklines and a week of points
//! stay cheap, made for time series, and actively maintained. The copies are the npm
//! package's `dist/` files at the version pinned in `tests/browser/package-lock.json`; a
//! browser test (`tests/browser/vendored.test.mjs`) fails when they differ.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const DASHBOARD: &str = include_str!("../assets/dashboard.html");
const CLIENT_JS: &str = include_str!("../../../clients/js/statecast.js");
const CHARTS_JS: &str = include_str!("../assets/charts.js");
const ENTITIES_JS: &str = include_str!("../assets/entities.js");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");

/// An embedded file, revalidated on each load (a new binary may bring another).
fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn dashboard() -> Response {
    file("text/html; charset=utf-8", DASHBOARD)
}

pub async fn client_js() -> Response {
    let mut response = file("text/javascript; charset=utf-8", CLIENT_JS);
    // A public script: pages on any origin may import it as a module.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    response
}

pub async fn charts_js() -> Response {
    file("text/javascript; charset=utf-8", CHARTS_JS)
}

pub async fn entities_js() -> Response {
    file("text/javascript; charset=utf-8", ENTITIES_JS)
}

pub async fn uplot_js() -> Response {
    file("text/javascript; charset=utf-8", UPLOT_JS)
}

pub async fn uplot_css() -> Response {
    file("text/css; charset=utf-8", UPLOT_CSS)
}
