//! The one gate in front of every HTTP route that writes (state, events, commands): a page
//! from another site may not write, and a body must say it is JSON.
//!
//! Why both: a browser lets any page send a "simple request" (`POST` with a `text/plain`
//! body, `mode: "no-cors"`) to any address without asking the server first; CORS only
//! hides the answer. Refusing foreign `Origin`s stops pages that say where they come from,
//! and requiring a JSON content type (which a simple request cannot carry) stops the rest
//! before anything is carried out.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use statecast_core::{ErrorCode, HubError};

use crate::app::App;
use crate::error::{ApiError, error_response};
use crate::listener::Peer;

/// Lets reads through; refuses a write from another site (403 `forbidden`) or with a body
/// that is not JSON (415).
pub(crate) async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method();
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    if let Err(e) = check_site(&app, request.headers(), peer) {
        return ApiError(e).into_response();
    }
    if *method != Method::DELETE
        && let Err(e) = check_content_type(method, request.headers())
    {
        return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e);
    }
    next.run(request).await
}

/// The hub's own pages and `allowed_origins` only (see [`App::check_origin`]); a request
/// without an `Origin` whose browser says it comes from another site is refused too.
fn check_site(
    app: &App,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Result<(), HubError> {
    app.check_origin(headers, peer)?;
    let cross_site = !headers.contains_key(header::ORIGIN)
        && headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        let e = HubError::new(
            ErrorCode::Forbidden,
            "a page from another site may not write here (Sec-Fetch-Site: cross-site)",
        );
        app.refused(peer, &e);
        return Err(e);
    }
    Ok(())
}

/// `application/json` (a `PATCH` also `application/merge-patch+json`), parameters such as
/// `charset` allowed.
fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), HubError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = given.as_deref().map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let accepted = match essence.as_deref() {
        Some("application/json") => true,
        Some("application/merge-patch+json") => *method == Method::PATCH,
        _ => false,
    };
    if accepted {
        return Ok(());
    }
    let wanted = if *method == Method::PATCH {
        "application/json or application/merge-patch+json"
    } else {
        "application/json"
    };
    let message = match essence {
        Some(essence) => format!("Content-Type {essence:?} is not accepted; send {wanted}"),
        None => format!("the request has no Content-Type; send {wanted}"),
    };
    Err(HubError::new(ErrorCode::BadRequest, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(t) = content_type {
            headers.insert(header::CONTENT_TYPE, t.parse().expect("a header value"));
        }
        headers
    }

    #[test]
    fn only_json_bodies_pass_and_merge_patch_only_on_patch() {
        let ok = |m: &Method, t| check_content_type(m, &with_type(t)).is_ok();
        for m in [Method::PUT, Method::POST, Method::PATCH] {
            assert!(ok(&m, Some("application/json")));
            assert!(ok(&m, Some("Application/JSON; charset=utf-8")));
            for refused in [
                None,
                Some("text/plain"),
                Some("multipart/form-data"),
                Some(""),
            ] {
                assert!(!ok(&m, refused), "{m} {refused:?}");
            }
        }
        assert!(ok(&Method::PATCH, Some("application/merge-patch+json")));
        assert!(!ok(&Method::PUT, Some("application/merge-patch+json")));
    }
}
