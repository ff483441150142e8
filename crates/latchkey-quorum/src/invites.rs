//! Storing and fetching the sealed invitations behind short links on registry nodes
//! (`PUT`/`GET /v1/invites/{id}`, docs/API.md "Invitations"; the blob itself is
//! [`latchkey_proto::shortlink::SealedInvitation`]). A node cannot read a blob (it never sees
//! the link's secret), and the guest's app opens what it fetches with the link's key, so a node
//! can only withhold; reads are capped all the same, like every answer from a peer.

use futures::future::join_all;
use latchkey_proto::shortlink::MAX_SEALED_INVITATION;

use crate::client::QuorumClient;
use crate::error::{Error, Result};
use crate::http::{read_capped, SMALL_ANSWER_CAP};

/// The largest blob read back: the largest sealed invitation.
pub const INVITE_BLOB_CAP: usize = MAX_SEALED_INVITATION;

/// The header naming a blob's expiry (ms since the Unix epoch).
pub const EXPIRES_HEADER: &str = "x-latchkey-expires-ms";

/// What one node did with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Stored now (201).
    Stored,
    /// The same bytes were there already (200): a retry.
    AlreadyStored,
}

fn url(node: &str, id: &[u8; 32]) -> String {
    format!(
        "{}/v1/invites/{}",
        node.trim().trim_end_matches('/'),
        hex_lower(id)
    )
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The node's error message, from its `{"error":{"code","message"}}` body (or the status).
async fn refusal(node: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = read_capped(resp, SMALL_ANSWER_CAP)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
    if status == reqwest::StatusCode::CONFLICT {
        return Error::InviteExists {
            node: node.to_owned(),
        };
    }
    Error::NodeRefused {
        node: node.to_owned(),
        why: format!("HTTP {status}: {text}"),
    }
}

/// Stores `blob` under `id` on `node` until `expires_ms` (at most 400 days ahead, the node's
/// rule). Storing the same bytes again is fine ([`Put::AlreadyStored`]); other bytes under the
/// id are [`Error::InviteExists`].
pub async fn put_invite(
    http: &reqwest::Client,
    node: &str,
    id: &[u8; 32],
    blob: &[u8],
    expires_ms: u64,
) -> Result<Put> {
    let resp = http
        .put(url(node, id))
        .header(EXPIRES_HEADER, expires_ms)
        .header("content-type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
        .map_err(|e| Error::Read(e.without_url().to_string()))?;
    match resp.status() {
        reqwest::StatusCode::CREATED => Ok(Put::Stored),
        reqwest::StatusCode::OK => Ok(Put::AlreadyStored),
        _ => Err(refusal(node, resp).await),
    }
}

/// The blob under `id` on `node`, `None` if the node holds none (404). The body is read with a
/// cap of [`INVITE_BLOB_CAP`].
pub async fn get_invite(
    http: &reqwest::Client,
    node: &str,
    id: &[u8; 32],
) -> Result<Option<Vec<u8>>> {
    let resp = http
        .get(url(node, id))
        .send()
        .await
        .map_err(|e| Error::Read(e.without_url().to_string()))?;
    match resp.status() {
        reqwest::StatusCode::OK => Ok(Some(read_capped(resp, INVITE_BLOB_CAP).await?)),
        reqwest::StatusCode::NOT_FOUND => Ok(None),
        _ => Err(refusal(node, resp).await),
    }
}

/// Where a blob went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvitePublishReport {
    /// Nodes that hold the blob now (stored, or already held the same bytes).
    pub stored: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl QuorumClient {
    /// Stores a blob on each of `nodes` in parallel, each within the configured timeout.
    /// Succeeds if at least one node holds it; otherwise the first refusal (an
    /// [`Error::InviteExists`] before others) or [`Error::NotEnoughAcks`].
    pub async fn publish_invite(
        &self,
        nodes: &[String],
        id: &[u8; 32],
        blob: &[u8],
        expires_ms: u64,
    ) -> Result<InvitePublishReport> {
        let timeout = self.config().timeout;
        let results = join_all(nodes.iter().map(|node| async move {
            let put =
                tokio::time::timeout(timeout, put_invite(self.http(), node, id, blob, expires_ms))
                    .await
                    .unwrap_or_else(|_| Err(Error::Read("timed out".into())));
            (node.clone(), put)
        }))
        .await;
        let mut report = InvitePublishReport::default();
        let mut exists = None;
        for (node, result) in results {
            match result {
                Ok(_) => report.stored.push(node),
                Err(e) => {
                    if matches!(e, Error::InviteExists { .. }) {
                        exists.get_or_insert(node.clone());
                    }
                    report.failed.push((node, e.to_string()));
                }
            }
        }
        if !report.stored.is_empty() {
            return Ok(report);
        }
        if let Some(node) = exists {
            return Err(Error::InviteExists { node });
        }
        Err(Error::NotEnoughAcks { acks: 0, needed: 1 })
    }

    /// The blob under `id` from the first of `nodes` (in order) that has it. `Ok(None)` when
    /// every node answered and none holds it; a node that fails is skipped, and if none
    /// answered the last failure is returned. Opening it (and so detecting a node's tampering)
    /// is the caller's: [`latchkey_proto::shortlink::SealedInvitation::open`].
    pub async fn fetch_invite(&self, nodes: &[String], id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let mut last_error = None;
        let mut answered = false;
        for node in nodes {
            let got =
                tokio::time::timeout(self.config().timeout, get_invite(self.http(), node, id))
                    .await
                    .unwrap_or_else(|_| Err(Error::Read(format!("{node}: timed out"))));
            match got {
                Ok(Some(blob)) => return Ok(Some(blob)),
                Ok(None) => answered = true,
                Err(e) => last_error = Some(e),
            }
        }
        match (answered, last_error) {
            (false, Some(e)) => Err(e),
            _ => Ok(None),
        }
    }
}
