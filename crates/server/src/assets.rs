//! Files the hub serves itself: the dashboard at `/` and the JavaScript client at
//! `/statecast.js`, embedded in the binary so there is nothing to install or build.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const DASHBOARD: &str = include_str!("../assets/dashboard.html");
const CLIENT_JS: &str = include_str!("../../../clients/js/statecast.js");

pub async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DASHBOARD,
    )
        .into_response()
}

pub async fn client_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // A public script: pages on any origin may import it as a module.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        CLIENT_JS,
    )
        .into_response()
}
