//! The registry nodes' mailboxes as the owner side uses them (docs/API.md, "Mailboxes"): post
//! one message to a mailbox on every node at once, and read a page of messages after a cursor,
//! waiting up to a long-poll limit. Commands and answers, proposals and notices all travel so.

use std::time::Duration;

use futures::future::join_all;
use latchkey_quorum::http::{read_capped, MAILBOX_PAGE_CAP};
use serde::Deserialize;

/// A page as a node serves it: messages after the cursor, and the cursor to read after next.
pub(crate) struct Page {
    pub messages: Vec<Vec<u8>>,
    pub next: u64,
}

#[derive(Debug, Deserialize)]
struct PageJson {
    messages: Vec<MessageJson>,
    next: u64,
}

#[derive(Debug, Deserialize)]
struct MessageJson {
    body: String,
}

/// Posts `body` to `mailbox` (64 hex characters) on each node in parallel; returns how many
/// stored it.
pub(crate) async fn post_all(
    http: &reqwest::Client,
    nodes: &[String],
    mailbox: &str,
    body: &[u8],
    ttl_secs: u32,
) -> usize {
    let posts = nodes.iter().map(|node| async move {
        http.post(format!("{node}/v1/mailboxes/{mailbox}"))
            .timeout(Duration::from_secs(5))
            .header("x-latchkey-ttl-secs", ttl_secs.to_string())
            .body(body.to_vec())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    });
    join_all(posts).await.into_iter().filter(|ok| *ok).count()
}

/// Reads `mailbox` on `node` after cursor `after`, waiting up to `wait_secs` for a message
/// (0: answer at once). `None` when the node cannot be reached, answers with an error or with
/// more than a page can hold (docs/PROTOCOL.md §8.4);
/// messages that are not valid base64 are skipped.
pub(crate) async fn read(
    http: &reqwest::Client,
    node: &str,
    mailbox: &str,
    after: u64,
    wait_secs: u64,
) -> Option<Page> {
    let url = format!("{node}/v1/mailboxes/{mailbox}?after={after}&wait_secs={wait_secs}");
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(wait_secs + 5))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = match read_capped(resp, MAILBOX_PAGE_CAP).await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(node, error = %e, "mailbox page refused");
            return None;
        }
    };
    let page: PageJson = serde_json::from_slice(&body).ok()?;
    Some(Page {
        messages: page
            .messages
            .iter()
            .filter_map(|m| data_encoding::BASE64.decode(m.body.as_bytes()).ok())
            .collect(),
        next: page.next,
    })
}
