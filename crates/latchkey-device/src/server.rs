//! The local HTTP server: `POST /v1/command` (sealed envelope in, sealed response out),
//! `GET /v1/chain` (the device's verified ops, so an owner app can fetch the genesis and its KEM
//! keys directly), `POST /v1/refresh` (a nudge: re-check the nodes now), `POST /v1/ops` (ops an
//! owner hands the device on the LAN, verified against its own chain), `GET /healthz`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use latchkey_proto::chain::OpList;
use latchkey_proto::codec::Codec;
use latchkey_proto::envelope::MAX_SEALED_COMMAND;

use crate::agent::{Agent, Handled, PushRefused};
use crate::audit::Via;

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/command", post(command))
        .route("/v1/chain", get(chain))
        .route("/v1/refresh", post(refresh))
        .route("/v1/ops", post(push_ops))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/PROTOCOL.md",
            )
        })
        // The command handler reads with its own limit (and audits what it refuses).
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .with_state(agent)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Why a request body was not read.
enum BodyError {
    /// Over the cap: declared so (with the declared length), or found so while streaming.
    TooLarge(Option<usize>),
    Unreadable(Response),
}

/// Reads a request body of at most `cap` bytes: a declared `Content-Length` over it is refused
/// unread, and the stream is cut as soon as it passes it.
async fn read_body(headers: &HeaderMap, body: Body, cap: usize) -> Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(BodyError::TooLarge(declared));
    }
    match axum::body::to_bytes(body, cap).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) if e.to_string().contains("length limit") => Err(BodyError::TooLarge(declared)),
        Err(e) => Err(BodyError::Unreadable(error(
            StatusCode::BAD_REQUEST,
            "unreadable",
            &format!("the body could not be read: {e}"),
        ))),
    }
}

async fn command(State(agent): State<Arc<Agent>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_body(&headers, body, MAX_SEALED_COMMAND).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(declared)) => {
            let refused = agent.pipeline.refuse_oversize(declared, Via::Local);
            return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", &refused.message);
        }
        Err(BodyError::Unreadable(response)) => return response,
    };
    match agent.handle(bytes, Via::Local).await {
        Handled::Refused(r) => error(StatusCode::BAD_REQUEST, r.stage.name(), &r.message),
        Handled::Answered(a) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            a.sealed,
        )
            .into_response(),
    }
}

async fn chain(State(agent): State<Arc<Agent>>) -> Response {
    let bytes = OpList(agent.pipeline.view().chain.ops().to_vec()).to_bytes();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response()
}

/// A nudge from the network: re-check the nodes now. Answers with the chain's sequence after the
/// check, or 429 when nudged again within the minimum interval.
async fn refresh(State(agent): State<Arc<Agent>>) -> Response {
    match agent.nudge().await {
        Some(seq) => axum::Json(serde_json::json!({ "seq": seq })).into_response(),
        None => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_soon",
            "the device re-checked its owners a moment ago; retry in a second",
        ),
    }
}

/// The largest body `POST /v1/ops` reads (docs/PROTOCOL.md §8.1).
pub const MAX_PUSHED_OPS: usize = 256 * 1024;

/// Ops an owner hands the device directly: decoded, verified as an extension of the device's
/// own chain, stored. The body is cut while streaming at [`MAX_PUSHED_OPS`].
async fn push_ops(State(agent): State<Arc<Agent>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_body(&headers, body, MAX_PUSHED_OPS).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("an op list is at most {MAX_PUSHED_OPS} bytes here; send only the ops the device lacks"),
            )
        }
        Err(BodyError::Unreadable(response)) => return response,
    };
    let ops = match OpList::from_bytes(&bytes) {
        Ok(list) => list.0,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_ops",
                &format!("the body is not an op list (docs/PROTOCOL.md §3): {e}"),
            )
        }
    };
    let pushed = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || agent.push_ops(ops)).await
    };
    match pushed {
        Ok(Ok(p)) => axum::Json(serde_json::json!({
            "seq": p.seq,
            "head": p.head.to_string(),
            "added": p.added,
        }))
        .into_response(),
        Ok(Err(PushRefused::BadOps(m))) => error(StatusCode::BAD_REQUEST, "bad_ops", &m),
        Ok(Err(PushRefused::Conflict(m))) => error(StatusCode::CONFLICT, "conflict", &m),
        Ok(Err(e @ PushRefused::Store(_))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "verifying pushed ops panicked");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the device log",
            )
        }
    }
}
