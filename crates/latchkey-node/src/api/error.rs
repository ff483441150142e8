//! Refusals as the API shows them: `{"error":{"code":"…","message":"…"}}`, with a stable
//! snake_case code a client matches on and a message that says what to do.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::registry::Refusal;

/// One refusal.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
    /// The protocol core's name for what was wrong (`BadSignature`, `WrongSequence`…), shown
    /// as `error.proto_error` for a client to match on.
    pub proto_error: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            proto_error: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn unknown_device(device: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_device",
            format!("this node holds no chain for {device}; post its ops from genesis, or ask another node"),
        )
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over this endpoint's limit of {limit} bytes; send less at once"),
        )
    }

    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node failed to do this (see its log); retry later or ask another node",
        )
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let message = r.to_string();
        match r {
            Refusal::Empty => ApiError::malformed(message),
            Refusal::DeviceMismatch { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "device_mismatch", message)
            }
            Refusal::Gap { .. } | Refusal::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_op", message)
            }
            Refusal::Fork { .. } => ApiError::new(StatusCode::CONFLICT, "fork", message),
            Refusal::UnknownAnchor { .. } => {
                ApiError::new(StatusCode::CONFLICT, "unknown_anchor", message)
            }
            Refusal::Storage(e) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.proto_error {
            None => json!({ "error": { "code": self.code, "message": self.message } }),
            Some(name) => json!({ "error": {
                "code": self.code, "message": self.message, "proto_error": name,
            } }),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
