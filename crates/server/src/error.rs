//! HTTP error responses: the contract's JSON error body with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use statecast_core::{ErrorCode, HubError};

/// A refused HTTP request.
#[derive(Debug)]
pub struct ApiError(pub HubError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(HubError::new(code, message))
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        ApiError(e)
    }
}

/// The HTTP status for an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::UnknownType
        | ErrorCode::InvalidTopic
        | ErrorCode::InvalidPattern => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound | ErrorCode::NoRoute => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::PRECONDITION_FAILED,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Upstream => StatusCode::BAD_GATEWAY,
        ErrorCode::InvalidState => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Gone => StatusCode::GONE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(status_of(self.0.code), &self.0)
    }
}

/// The contract's JSON error with a status the code alone does not say (405, 408, 415).
pub fn error_response(status: StatusCode, e: &HubError) -> Response {
    let body = serde_json::json!({"error": e.to_json()});
    (status, axum::Json(body)).into_response()
}

/// The one place that keeps every HTTP error in the contract's shape: an error answer that
/// is not JSON (axum's rejections of a path, a query or a body are plain text) becomes the
/// JSON error of its status, its text kept as the message.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_owned(),
        text => text.to_owned(),
    };
    let mut json = error_response(status, &HubError::new(code_of(status), message));
    // Keep what the refusal said besides its body (`Allow`, `Connection: close`).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// The error code that fits an HTTP status (the inverse of [`status_of`], where one fits).
fn code_of(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ErrorCode::Timeout,
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => ErrorCode::Conflict,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        StatusCode::BAD_GATEWAY => ErrorCode::Upstream,
        // Not 422: axum answers it for a JSON body of the wrong shape, a `bad_request`.
        StatusCode::GONE => ErrorCode::Gone,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}
