//! Mailboxes: post a message (admitted by [`crate::admission`], counted against its sender),
//! long-poll for messages.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{query, AppState, ClientAddress};
use crate::admission::{self, Admitted, Refused, SEALED_COMMAND_SIZES, SEALED_RESPONSE_SIZES};
use crate::mailbox::MailboxId;
use crate::metrics::NotAdmitted;
use crate::store::{MailboxRefusal, PostQuota};

/// The header a sender names a message's lifetime in (seconds).
pub const TTL_HEADER: &str = "x-latchkey-ttl-secs";

fn parse_mailbox(text: &str) -> Result<MailboxId, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_mailbox",
            "a mailbox is 64 hex characters (32 bytes); a device's mailbox is its device id's bytes in hex",
        )
    };
    if text.len() != 64 {
        return Err(bad());
    }
    let bytes = hex::decode(text).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

fn address_bytes(address: std::net::IpAddr) -> Vec<u8> {
    match address {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn sizes(list: &[usize]) -> String {
    let text: Vec<String> = list.iter().map(|n| n.to_string()).collect();
    text.join(", ")
}

fn not_admitted(st: &AppState, refused: Refused) -> ApiError {
    let (why, status, message) = match refused {
        Refused::NotAnEnvelope { size } => (
            NotAdmitted::NotAnEnvelope,
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "a device's mailbox takes only sealed commands of {} bytes (docs/PROTOCOL.md \
                 §5.4); this body is {size} bytes",
                sizes(&SEALED_COMMAND_SIZES)
            ),
        ),
        Refused::NotAnOwnerMessage(why) => (
            NotAdmitted::NotAnOwnerMessage,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        ),
        Refused::UnknownMailbox { size } => (
            NotAdmitted::UnknownMailbox,
            StatusCode::NOT_FOUND,
            format!(
                "this node holds no device with this mailbox and knows no owner with it, and a \
                 {size}-byte body is not a sealed response ({} bytes, the only thing a reply \
                 mailbox takes); publish the device's chain to this node first, or check the id",
                sizes(&SEALED_RESPONSE_SIZES)
            ),
        ),
    };
    st.metrics.refuse_mailbox_post(why);
    ApiError::new(status, why.label(), message)
}

pub async fn post_message(
    State(st): State<AppState>,
    Path(mailbox): Path<String>,
    Extension(ClientAddress(address)): Extension<ClientAddress>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mailbox = parse_mailbox(&mailbox)?;
    let limits = &st.limits;
    let ttl = match headers.get(TTL_HEADER) {
        None => limits.mailbox_default_ttl,
        Some(value) => {
            let max = limits.mailbox_max_ttl.as_secs();
            let secs = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|s| (1..=max).contains(s))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_ttl",
                        format!("{TTL_HEADER} must be a whole number of seconds from 1 to {max}"),
                    )
                })?;
            Duration::from_secs(secs)
        }
    };
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limits.max_mailbox_body)
        } else {
            ApiError::malformed(format!("the body could not be read: {r}"))
        }
    })?;
    if body.len() > limits.max_mailbox_body {
        return Err(ApiError::too_large(limits.max_mailbox_body));
    }
    let admitted = admission::admit(&st.registry, &st.owner_index, &mailbox, &body)
        .await?
        .map_err(|refused| not_admitted(&st, refused))?;
    let address = address_bytes(address);
    let (sender, per_sender) = match admitted {
        Admitted::Device => (address.clone(), limits.mailbox_per_sender),
        // An owner's share is per signer and address: a stranger replaying ops an owner
        // signed (they are public) fills only its own address's share.
        Admitted::Owner { signer } => (
            [&signer.to_bytes()[..], &address].concat(),
            limits.mailbox_per_sender,
        ),
        // A device's events count against the device and the address that posted them, so
        // a stranger re-posting a device's (public) messages fills only its own share.
        Admitted::Event { device_key } => (
            [&device_key.to_bytes()[..], &address].concat(),
            limits.mailbox_per_sender,
        ),
        Admitted::Reply => (address.clone(), limits.reply_mailbox_per_sender),
    };
    let quota = PostQuota {
        sender,
        address,
        per_sender,
        per_address: limits.mailbox_per_address,
    };
    match st
        .mailboxes
        .post(mailbox, body.to_vec(), ttl, quota)
        .await?
    {
        Ok(id) => Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response()),
        Err(MailboxRefusal::MailboxFull) => Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "mailbox_full",
            format!(
                "you hold your maximum of {per_sender} live messages in this mailbox (each \
                 sender has its own share); retry once some expire"
            ),
        )
        .retry_after(30)),
        Err(MailboxRefusal::AddressFull) => Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "address_full",
            format!(
                "your address holds its maximum of {} live messages across this node's \
                 mailboxes; retry once some expire",
                limits.mailbox_per_address
            ),
        )
        .retry_after(30)),
        Err(MailboxRefusal::NodeFull) => Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "this node holds its maximum of mailbox messages; retry later or use another node",
        )
        .retry_after(60)),
    }
}

#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    after: Option<u64>,
    wait_secs: Option<u64>,
    limit: Option<usize>,
}

pub async fn get_messages(
    State(st): State<AppState>,
    Path(mailbox): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mailbox = parse_mailbox(&mailbox)?;
    let q = query(q)?;
    let limits = &st.limits;
    let max_wait = limits.mailbox_max_wait.as_secs();
    let wait = q.wait_secs.unwrap_or(0);
    if wait > max_wait {
        return Err(ApiError::invalid_query(format!(
            "wait_secs must be at most {max_wait}"
        )));
    }
    let max_read = limits.mailbox_max_read;
    let limit = q.limit.unwrap_or(max_read);
    if limit == 0 || limit > max_read {
        return Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {max_read}"
        )));
    }
    let after = q.after.unwrap_or(0);
    let messages = st
        .mailboxes
        .read(
            mailbox,
            after,
            limit,
            Duration::from_secs(wait),
            st.shutdown.clone(),
        )
        .await?;
    let next = messages.last().map_or(after, |m| m.id);
    let messages: Vec<_> = messages
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "body": data_encoding::BASE64.encode(&m.body),
                "expires_ms": m.expires_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "messages": messages, "next": next })).into_response())
}
