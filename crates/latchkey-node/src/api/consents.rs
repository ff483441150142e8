//! Consent logs: read a device's log, post one entry, read conflict evidence, and the consent
//! feed peers replicate from (docs/API.md, "Consent logs"; the rules are in
//! [`crate::consents`]).

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::ConsentEntry;
use serde::Deserialize;
use serde_json::json;

use super::chain::{forks_json, parse_device, FeedQuery};
use super::error::ApiError;
use super::{query, AppState};
use crate::consents::{ConsentRefusal, Posted};
use crate::metrics::{self, ConsentRejection};

/// Set on a `GET …/consents` answer when the log goes on past it: the seq to ask from next.
pub const NEXT_SEQ_HEADER: &str = "x-latchkey-next-seq";

/// The protocol core's name for an error: its variant (`BadSignature`, `WrongSequence`…).
pub fn proto_error_name(e: &latchkey_proto::Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[derive(Debug, Deserialize)]
pub struct ConsentsQuery {
    from: Option<u64>,
}

pub async fn get_consents(
    State(st): State<AppState>,
    Path(device): Path<String>,
    q: Result<Query<ConsentsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    let from = query(q)?.from.unwrap_or(1);
    metrics::inc(&st.metrics.consent_reads);
    let (body, next) = st
        .consents
        .page(device, from)
        .await?
        .ok_or_else(|| ApiError::unknown_device(&device.to_string()))?;
    let mut resp = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Bytes::from(body),
    )
        .into_response();
    if let Some(next) = next {
        resp.headers_mut()
            .insert(NEXT_SEQ_HEADER, HeaderValue::from(next));
    }
    Ok(resp)
}

pub async fn post_consent(
    State(st): State<AppState>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    let result = post_inner(&st, device, headers, body).await;
    if let Err(e) = &result {
        let why = match e.code {
            "invalid_consent" => Some(ConsentRejection::InvalidConsent),
            "consent_conflict" => Some(ConsentRejection::ConsentConflict),
            "malformed" => Some(ConsentRejection::Malformed),
            "too_large" => Some(ConsentRejection::TooLarge),
            "consent_log_full" => Some(ConsentRejection::LogFull),
            _ => None,
        };
        if let Some(why) = why {
            st.metrics.reject_consent(why);
        }
    }
    result
}

async fn post_inner(
    st: &AppState,
    device: latchkey_proto::keys::DeviceId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = st.limits.max_consent_body;
    // A declared length over the cap is refused before a byte of the body is read; an
    // undeclared one is read only up to the cap.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::too_large(limit)
        } else {
            ApiError::malformed(format!("the body could not be read: {e}"))
        }
    })?;
    let entry = ConsentEntry::from_bytes(&bytes).map_err(|e| {
        ApiError::malformed(format!(
            "{e}; the body must be one ConsentEntry (docs/PROTOCOL.md §14)"
        ))
    })?;
    let answer = |status: StatusCode, seq: u64, hash: [u8; 32]| {
        (
            status,
            Json(json!({ "seq": seq, "hash": hex::encode(hash) })),
        )
            .into_response()
    };
    match st.consents.post(device, entry).await {
        Ok(Posted::Stored { seq, hash }) => Ok(answer(StatusCode::CREATED, seq, hash)),
        Ok(Posted::AlreadyHeld { seq, hash }) => Ok(answer(StatusCode::OK, seq, hash)),
        Err(refusal) => Err(refusal_to_api(device, refusal)),
    }
}

fn refusal_to_api(device: latchkey_proto::keys::DeviceId, r: ConsentRefusal) -> ApiError {
    let message = r.to_string();
    match r {
        ConsentRefusal::UnknownDevice(_) => ApiError::unknown_device(&device.to_string()),
        ConsentRefusal::Invalid(e) => {
            tracing::info!(%device, error = %e, "refused an invalid consent entry");
            let mut err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_consent",
                format!("{message}; nothing was stored"),
            );
            err.proto_error = Some(proto_error_name(&e));
            err
        }
        ConsentRefusal::Gap { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent", message)
        }
        ConsentRefusal::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "consent_conflict", message)
        }
        ConsentRefusal::Full { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "consent_log_full",
            format!("{message}; nothing was stored"),
        ),
        ConsentRefusal::Stale => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "try_again", message)
        }
        ConsentRefusal::Storage(e) => ApiError::internal(e),
    }
}

pub async fn get_consent_forks(
    State(st): State<AppState>,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    metrics::inc(&st.metrics.consent_reads);
    let forks = st
        .consents
        .forks(device)
        .await?
        .ok_or_else(|| ApiError::unknown_device(&device.to_string()))?;
    Ok(forks_json(&forks))
}

pub async fn get_consent_feed(
    State(st): State<AppState>,
    q: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (after, limit) = query(q)?.page(st.limits.feed_max_limit)?;
    metrics::inc(&st.metrics.consent_reads);
    let rows = st.store.consent_feed(after, limit).await?;
    let next = rows.last().map_or(after, |r| r.cursor);
    let entries: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "cursor": r.cursor,
                "device": r.device.to_string(),
                "entry": data_encoding::BASE64.encode(&r.bytes),
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "next": next })).into_response())
}
