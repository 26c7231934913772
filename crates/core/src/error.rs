//! Errors the hub answers with; each carries one of the contract's error codes.

use std::fmt;

/// The error codes of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    UnknownType,
    InvalidTopic,
    InvalidPattern,
    NotFound,
    TooLarge,
    Unauthorized,
    Forbidden,
    RateLimited,
    Conflict,
    NoRoute,
    Timeout,
    /// A device or upstream service refused a command or could not be reached.
    Upstream,
    /// The state a write would leave does not match its topic's schema (HTTP 422).
    InvalidState,
    /// What was asked for is older than what the hub keeps (HTTP 410).
    Gone,
    Unavailable,
    Internal,
}

impl ErrorCode {
    const ALL: [ErrorCode; 17] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::InvalidTopic,
        ErrorCode::InvalidPattern,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Conflict,
        ErrorCode::NoRoute,
        ErrorCode::Timeout,
        ErrorCode::Upstream,
        ErrorCode::InvalidState,
        ErrorCode::Gone,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code named `name` on the wire (`"not_found"`), if there is one.
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::InvalidPattern => "invalid_pattern",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Upstream => "upstream",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Gone => "gone",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: a code from the contract, a message for people and, where a
/// program can use them, details (an `invalid_state`'s violations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl HubError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> HubError {
        HubError {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same error with `details`.
    pub fn with_details(mut self, details: serde_json::Value) -> HubError {
        self.details = Some(details);
        self
    }

    /// The error as the `error` object of the wire contract.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(details) = &self.details {
            json["details"] = details.clone();
        }
        json
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HubError {}
