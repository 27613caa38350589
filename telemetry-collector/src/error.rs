//! The error every handler returns, rendered as the protocol's
//! [`ErrorBody`] with the matching status code.
//!
//! Messages are written by the collector, never copied from the request, so
//! an error answer cannot echo hostile input or secrets back.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use telemetry_protocol::{ErrorBody, ErrorCode, Violation};

/// Most violations a 422 lists.
pub const MAX_VIOLATIONS_LISTED: usize = 100;

/// An error answer: a status, a stable code, a message, and optionally a `Retry-After`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ErrorBody,
    /// Seconds the client should wait before retrying (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code`, its usual status, and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let status = match code {
            ErrorCode::MalformedPayload => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::PolicyViolation => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            body: ErrorBody {
                error: code,
                message: message.into(),
                violations: Vec::new(),
            },
            retry_after: None,
        }
    }

    /// A 422 listing the first [`MAX_VIOLATIONS_LISTED`] violations, so
    /// that one hostile request cannot make a huge answer (each violation is
    /// a few hundred bytes at most, so the body stays under 64 KiB).
    pub fn policy(mut violations: Vec<Violation>) -> ApiError {
        let total = violations.len();
        violations.truncate(MAX_VIOLATIONS_LISTED);
        let mut e = ApiError::new(
            ErrorCode::PolicyViolation,
            format!(
                "the payload breaks the tier policy ({total} problem{}{}); nothing was stored",
                if total == 1 { "" } else { "s" },
                if total > MAX_VIOLATIONS_LISTED {
                    format!(", the first {MAX_VIOLATIONS_LISTED} listed")
                } else {
                    String::new()
                }
            ),
        );
        e.body.violations = violations;
        e
    }

    /// Adds a `Retry-After`, rounded up to whole seconds and at least one.
    pub fn retry_after(mut self, wait: Duration) -> ApiError {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The stable code, for metrics.
    pub fn code(&self) -> &'static str {
        self.body.error.as_str()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
