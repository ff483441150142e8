//! Commands relayed through registry-node mailboxes: the agent long-polls its mailbox (the hex
//! of its device id) on each of its relay nodes, runs what arrives through the same pipeline,
//! and posts the sealed answer into the reply mailbox the command names, on its relay nodes.
//! A copy of one envelope arriving through several nodes runs once; the others are dropped
//! silently (they are not attacks, so they are not logged as replays).

use std::sync::Arc;
use std::time::Duration;

use latchkey_proto::command::ReplyTo;
use latchkey_quorum::http::{read_capped, MAILBOX_PAGE_CAP};
use serde::Deserialize;
use tokio::sync::watch;

use crate::agent::{Agent, Handled};
use crate::audit::{envelope_hash, Via};

/// Lifetime of a reply in the sender's mailbox.
const REPLY_TTL_SECS: u32 = 300;

#[derive(Debug, Deserialize)]
struct MailboxPage {
    messages: Vec<MailboxMessage>,
    next: u64,
}

#[derive(Debug, Deserialize)]
struct MailboxMessage {
    id: u64,
    body: String,
}

/// Long-polls one node until shutdown.
pub async fn poll_mailbox(agent: Arc<Agent>, node: String, mut shutdown: watch::Receiver<bool>) {
    let mailbox = hex::encode(agent.device_id().0);
    let mut after = agent.store().relay_cursor(&node).unwrap_or(0);
    let wait = agent.knobs.relay_wait_secs.min(30);
    let mut backoff = Duration::from_millis(500);
    loop {
        let url = format!("{node}/v1/mailboxes/{mailbox}?after={after}&wait_secs={wait}");
        let request = agent
            .http
            .get(&url)
            .timeout(Duration::from_secs(wait + 10))
            .send();
        let page = tokio::select! {
            r = request => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let page = match page {
            Ok(resp) if resp.status().is_success() => read_page(resp).await,
            Ok(resp) => {
                tracing::warn!(%node, status = %resp.status(), "mailbox read refused");
                Err(format!("HTTP {}", resp.status()))
            }
            Err(e) => Err(e.without_url().to_string()),
        };
        match page {
            Ok(page) => {
                backoff = Duration::from_millis(500);
                for message in page.messages {
                    deliver(&agent, &node, &message).await;
                    after = after.max(message.id);
                    if let Err(e) = agent.store().set_relay_cursor(&node, after) {
                        tracing::warn!(error = %e, "saving the mailbox cursor failed");
                    }
                }
                after = after.max(page.next);
            }
            Err(e) => {
                tracing::debug!(%node, error = %e, "mailbox poll failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// One page, read with the mailbox page cap: a node streaming more is cut off and treated as
/// a failed poll (backed off like any other).
async fn read_page(resp: reqwest::Response) -> Result<MailboxPage, String> {
    let body = read_capped(resp, MAILBOX_PAGE_CAP)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("not a mailbox page: {e}"))
}

async fn deliver(agent: &Agent, node: &str, message: &MailboxMessage) {
    let Ok(envelope) = data_encoding::BASE64.decode(message.body.as_bytes()) else {
        tracing::warn!(
            node,
            id = message.id,
            "mailbox message is not base64; skipped"
        );
        return;
    };
    let hash = envelope_hash(&envelope);
    let first = agent
        .recent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(hash);
    // Only a read here: junk nobody authenticated must not cost a write each. The envelope is
    // remembered durably below once the pipeline answered it (a copy arriving through another
    // node after a restart is then still dropped).
    let first = first && !agent.store().relay_seen(&hash).unwrap_or(false);
    if !first {
        tracing::debug!(
            node,
            id = message.id,
            "copy of an envelope already handled; dropped"
        );
        return;
    }
    match agent.handle(envelope, Via::Relay).await {
        Handled::Refused(_) => {}
        Handled::Answered(answer) => {
            if let Err(e) = agent
                .store()
                .relay_first_sight(&hash, crate::clock::wall_ms())
            {
                tracing::warn!(error = %e, "recording a relayed envelope failed");
            }
            match answer.reply_to {
                ReplyTo::Mailbox(reply) => post_reply(agent, &reply, answer.sealed).await,
                ReplyTo::Direct => {
                    tracing::debug!("relayed command asked for a direct reply; nowhere to send it")
                }
            }
        }
    }
}

/// Posts a sealed answer into `reply` on every relay node (the sender reads whichever it
/// used).
async fn post_reply(agent: &Agent, reply: &[u8; 32], sealed: Vec<u8>) {
    let mailbox = hex::encode(reply);
    let posts = agent.relay_nodes.iter().map(|node| {
        let url = format!("{node}/v1/mailboxes/{mailbox}");
        let body = sealed.clone();
        async move {
            let result = agent
                .http
                .post(&url)
                .timeout(Duration::from_millis(agent.knobs.timeout_ms.max(1)))
                .header("x-latchkey-ttl-secs", REPLY_TTL_SECS)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => true,
                Ok(r) => {
                    tracing::warn!(node, status = %r.status(), "posting a reply refused");
                    false
                }
                Err(e) => {
                    tracing::warn!(node, error = %e.without_url(), "posting a reply failed");
                    false
                }
            }
        }
    });
    let delivered = futures::future::join_all(posts)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    if delivered == 0 {
        tracing::warn!("no relay node took the reply; the sender will time out");
    }
}
