//! `GET /api/openapi.json`: the OpenAPI 3.1 description of every HTTP route the hub serves.
//!
//! The document is written by hand (`openapi.json` beside this file) rather than derived
//! from the handlers: most answers are built from stored bytes, not from typed structs a
//! derive could describe, and a JSON file reads and diffs as the contract it is. It cannot
//! drift from the router unnoticed: `crates/cli/tests/openapi.rs` holds it against the route
//! table (`routes::http_routes`) both ways, and CI runs schemathesis against a real hub with
//! it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, embedded in the binary.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCUMENT,
    )
        .into_response()
}
