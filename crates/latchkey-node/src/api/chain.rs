//! Ownership chains: read a device's ops and head, post ops, read fork evidence, and the
//! replication feed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey_proto::chain::OpList;
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::DeviceId;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{query, AppState};
use crate::metrics::{self, Rejection};
use crate::registry::Refusal;

pub(super) fn parse_device(text: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_device_id",
            format!("{e}; device ids in paths are the lkdev1… form"),
        )
    })
}

#[derive(Debug, Deserialize)]
pub struct OpsQuery {
    from: Option<u64>,
}

pub async fn get_ops(
    State(st): State<AppState>,
    Path(device): Path<String>,
    q: Result<Query<OpsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    let from = query(q)?.from.unwrap_or(0);
    metrics::inc(&st.metrics.chain_reads);
    let body = st
        .registry
        .ops_from(device, from)
        .await?
        .ok_or_else(|| ApiError::unknown_device(&device.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

pub async fn get_head(
    State(st): State<AppState>,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    metrics::inc(&st.metrics.chain_reads);
    let head = st
        .registry
        .head(device)
        .await?
        .ok_or_else(|| ApiError::unknown_device(&device.to_string()))?;
    Ok(Json(json!({
        "device": device.to_string(),
        "seq": head.seq,
        "head": head.head.to_string(),
        "forks": head.forks,
    }))
    .into_response())
}

pub async fn post_ops(
    State(st): State<AppState>,
    Path(device): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    let result = post_ops_inner(&st, device, body).await;
    if let Err(e) = &result {
        let why = match e.code {
            "invalid_op" => Some(Rejection::InvalidOp),
            "fork" => Some(Rejection::Fork),
            "device_mismatch" => Some(Rejection::DeviceMismatch),
            "malformed" => Some(Rejection::Malformed),
            "too_large" => Some(Rejection::TooLarge),
            _ => None,
        };
        if let Some(why) = why {
            st.metrics.reject(why);
        }
    }
    result
}

async fn post_ops_inner(
    st: &AppState,
    device: DeviceId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.limits.max_ops_body)
        } else {
            ApiError::malformed(format!("the body could not be read: {r}"))
        }
    })?;
    let list = OpList::from_bytes(&bytes).map_err(|e| {
        ApiError::malformed(format!(
            "{e}; the body must be one OpList (docs/PROTOCOL.md §3.1)"
        ))
    })?;
    let result = st.registry.ingest(device, list.0).await;
    if chain_may_have_changed(&result) {
        st.owner_index.refresh(&st.registry, device).await?;
    }
    let accepted = result.map_err(|r: Refusal| {
        if let Refusal::Invalid(e) = &r {
            tracing::info!(%device, error = %e, "refused an invalid op");
        }
        ApiError::from(r)
    })?;
    Ok(Json(json!({
        "accepted": accepted.added,
        "seq": accepted.seq,
        "head": accepted.head.to_string(),
    }))
    .into_response())
}

/// Whether an ingest may have changed who owns the device (ops were added, or a post refused
/// as a fork may still have merged ops before the fork), so the owner mailbox index must look.
pub(crate) fn chain_may_have_changed(result: &Result<crate::registry::Accepted, Refusal>) -> bool {
    match result {
        Ok(accepted) => accepted.added > 0,
        Err(Refusal::Fork { .. }) => true,
        Err(_) => false,
    }
}

pub async fn get_forks(
    State(st): State<AppState>,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    metrics::inc(&st.metrics.chain_reads);
    let forks = st
        .registry
        .forks(device)
        .await?
        .ok_or_else(|| ApiError::unknown_device(&device.to_string()))?;
    Ok(forks_json(&forks))
}

/// Fork evidence as served (ops' and consent entries' alike): `{"forks":[{seq, ours, theirs}]}`.
pub(super) fn forks_json(forks: &[crate::store::ForkRow]) -> Response {
    let b64 = &data_encoding::BASE64;
    let forks: Vec<_> = forks
        .iter()
        .map(|f| json!({ "seq": f.seq, "ours": b64.encode(&f.ours), "theirs": b64.encode(&f.theirs) }))
        .collect();
    Json(json!({ "forks": forks })).into_response()
}

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

impl FeedQuery {
    /// `(after, limit)`: `after` defaults to 0, `limit` to 100 (at most `max`); a limit of 0 or
    /// over `max` is `400 invalid_query`. The op feed and the consent feed page alike.
    pub(super) fn page(&self, max: usize) -> Result<(u64, usize), ApiError> {
        let limit = self.limit.unwrap_or(max.min(100));
        if limit == 0 || limit > max {
            return Err(ApiError::invalid_query(format!(
                "limit must be between 1 and {max}"
            )));
        }
        Ok((self.after.unwrap_or(0), limit))
    }
}

pub async fn get_feed(
    State(st): State<AppState>,
    q: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (after, limit) = query(q)?.page(st.limits.feed_max_limit)?;
    metrics::inc(&st.metrics.feed_reads);
    let rows = st.store.feed(after, limit).await?;
    let next = rows.last().map_or(after, |r| r.cursor);
    let entries: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "cursor": r.cursor,
                "device": r.device.to_string(),
                "op": data_encoding::BASE64.encode(&r.bytes),
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "next": next })).into_response())
}
