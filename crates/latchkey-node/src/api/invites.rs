//! Sealed invitations behind short links: `PUT` stores one write-once, `GET` serves it
//! (docs/API.md, "Invitations"; the storage rules are in [`crate::invites`]).

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::{query, AppState, ClientAddress};
use crate::invites::{InviteQuota, InviteRefusal, Stored, MAX_INVITE_LIFETIME_MS};
use crate::metrics;
use crate::store::now_ms;

/// The header an owner names a blob's expiry in (milliseconds since the Unix epoch); the
/// query parameter `expires` does the same.
pub const EXPIRES_HEADER: &str = "x-latchkey-expires-ms";

fn parse_id(text: &str) -> Result<[u8; 32], ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_invite_id",
            "an invitation id is 64 lowercase hex characters (32 bytes): \
             H(\"latchkey/v1/invite-id\", the short link's secret)",
        )
    };
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    hex::decode(text)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())
}

#[derive(Debug, Deserialize)]
pub struct PutQuery {
    expires: Option<u64>,
}

pub async fn put_invite(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Extension(ClientAddress(address)): Extension<ClientAddress>,
    headers: HeaderMap,
    q: Result<Query<PutQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let q = query(q)?;
    let limits = st.limits.clone();
    let now = now_ms();
    let from_header = match headers.get(EXPIRES_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_expiry",
                        format!("{EXPIRES_HEADER} must be milliseconds since the Unix epoch"),
                    )
                })?,
        ),
    };
    let expires = from_header.or(q.expires).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_expiry",
            format!(
                "say when the blob expires: {EXPIRES_HEADER} or ?expires=, in milliseconds \
                 since the Unix epoch (at most 400 days ahead)"
            ),
        )
    })?;
    if expires <= now || expires > now.saturating_add(MAX_INVITE_LIFETIME_MS) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_expiry",
            "the expiry must be in the future and at most 400 days ahead; invitations that \
             last longer are published again",
        ));
    }
    // A declared length over the cap is refused before a byte of the body is read; an
    // undeclared one is read only up to the cap.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_invite_body as u64) {
        return Err(ApiError::too_large(limits.max_invite_body));
    }
    let body = axum::body::to_bytes(body, limits.max_invite_body)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::too_large(limits.max_invite_body)
            } else {
                ApiError::malformed(format!("the body could not be read: {e}"))
            }
        })?;
    if body.is_empty() {
        return Err(ApiError::malformed(
            "the body is empty; send the sealed invitation",
        ));
    }
    let quota = InviteQuota {
        address: match address {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        },
        per_address: limits.invites_per_address,
        capacity: limits.invite_capacity,
    };
    let stored = st
        .store
        .invite_put(id, body.to_vec(), expires, now, quota)
        .await?;
    let refused = |status, code, message: String| {
        metrics::inc(&st.metrics.invites_refused);
        Err(ApiError::new(status, code, message))
    };
    match stored {
        Ok(Stored::Created) => {
            metrics::inc(&st.metrics.invites_stored);
            Ok(StatusCode::CREATED.into_response())
        }
        Ok(Stored::Same) => Ok(StatusCode::OK.into_response()),
        Err(InviteRefusal::Exists) => refused(
            StatusCode::CONFLICT,
            "invite_exists",
            "other bytes are stored under this id, and invitations are write-once; make a new \
             short link (a new secret) instead"
                .into(),
        ),
        Err(InviteRefusal::AddressFull) => refused(
            StatusCode::INSUFFICIENT_STORAGE,
            "address_full",
            format!(
                "your address holds its maximum of {} live invitations on this node; retry once \
                 some expire, or use another node",
                limits.invites_per_address
            ),
        )
        .map_err(|e| e.retry_after(3600)),
        Err(InviteRefusal::NodeFull) => refused(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "this node holds its maximum of invitations; use another node".into(),
        )
        .map_err(|e| e.retry_after(3600)),
    }
}

pub async fn get_invite(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    metrics::inc(&st.metrics.invite_reads);
    let now = now_ms();
    match st.store.invite_get(id, now).await? {
        Some(body) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invite_not_found",
            "this node holds no live invitation with this id: it expired, was never stored \
             here, or the link is mistyped; try the link's other nodes, or ask the host for a \
             new link",
        )),
    }
}
