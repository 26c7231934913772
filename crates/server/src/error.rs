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
