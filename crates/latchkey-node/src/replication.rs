//! Pulling peers' feeds. **Invariant: a peer is a client like any other** — every op it serves
//! goes through [`Registry::ingest`], so it is verified exactly as a posted op, and a lying peer
//! can only withhold.
//!
//! Each peer has a cursor into its feed, saved in SQLite after every page, so a node that was
//! down resumes where it stopped, and a new node starts from the beginning.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use latchkey_proto::chain::{Op, OpList};
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{ConsentEntry, ConsentList};
use latchkey_proto::keys::DeviceId;
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::Url;
use crate::consents::{ConsentLogs, ConsentRefusal};
use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::registry::{Refusal, Registry};
use crate::store::Store;

/// Feed entries asked for per pull.
const PAGE: usize = 500;
/// Largest feed page accepted from a peer: a full page of the largest ops, in base64, with
/// room for the JSON around each.
const MAX_FEED_BYTES: usize = PAGE * (latchkey_proto::chain::MAX_OP_LEN * 4 / 3 + 256);

#[derive(Debug, Deserialize)]
struct FeedPage {
    entries: Vec<FeedEntry>,
    next: u64,
}

#[derive(Debug, Deserialize)]
struct FeedEntry {
    cursor: u64,
    device: String,
    op: String,
}

/// Consent feed entries asked for per pull.
const CONSENT_PAGE: usize = 200;
/// Largest consent feed page accepted from a peer: a full page of the largest entries, in
/// base64, with room for the JSON around each.
const MAX_CONSENT_FEED_BYTES: usize =
    CONSENT_PAGE * (crate::consents::MAX_ENTRY_BODY * 4 / 3 + 256);
/// Largest `GET …/consents` page accepted from a peer.
const MAX_CONSENT_PAGE_BYTES: usize =
    crate::consents::PAGE_MAX_BYTES + crate::consents::MAX_ENTRY_BODY + 4;

#[derive(Debug, Deserialize)]
struct ConsentFeedPage {
    entries: Vec<ConsentFeedEntry>,
    next: u64,
}

#[derive(Debug, Deserialize)]
struct ConsentFeedEntry {
    cursor: u64,
    device: String,
    entry: String,
}

/// One peer's puller.
#[derive(Debug)]
pub struct Replicator {
    pub peer: Url,
    pub registry: Arc<Registry>,
    /// Kept current as chains grow (owner mailboxes follow the owners).
    pub owner_index: Arc<crate::admission::OwnerIndex>,
    /// Consent entries ride along: pulled from the peer's consent feed after its op feed.
    pub consents: Arc<ConsentLogs>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub client: reqwest::Client,
    pub interval: Duration,
}

fn peer_key(peer: &Url) -> String {
    peer.as_str().trim_end_matches('/').to_owned()
}

impl Replicator {
    /// Pulls until caught up, sleeps `interval`, and again, until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let key = peer_key(&self.peer);
        let lookup = key.clone();
        let mut cursor = match self.store.peer_cursor(&lookup).await {
            Ok(cursor) => cursor,
            Err(e) => {
                tracing::error!(peer = %key, error = %e, "cannot read the saved cursor; replication from this peer is off");
                return;
            }
        };
        let consent_key = format!("{key}#consents");
        let lookup = consent_key.clone();
        let mut consent_cursor = match self.store.peer_cursor(&lookup).await {
            Ok(cursor) => cursor,
            Err(e) => {
                tracing::error!(peer = %key, error = %e, "cannot read the saved consent cursor; replication from this peer is off");
                return;
            }
        };
        tracing::info!(peer = %key, cursor, consent_cursor, "replicating");
        loop {
            loop {
                if *shutdown.borrow() {
                    return;
                }
                match self.pull_page(&key, cursor).await {
                    Ok((next, full)) => {
                        cursor = next;
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        metrics::inc(&self.metrics.replication_errors);
                        tracing::warn!(peer = %key, error = %e, "pull failed; will retry");
                        break;
                    }
                }
            }
            // Consents after ops: an entry's anchor is an op the peer held before it.
            loop {
                if *shutdown.borrow() {
                    return;
                }
                match self
                    .pull_consent_page(&key, &consent_key, consent_cursor)
                    .await
                {
                    Ok((next, full)) => {
                        consent_cursor = next;
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        metrics::inc(&self.metrics.replication_errors);
                        tracing::warn!(peer = %key, error = %e, "consent pull failed; will retry");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Pulls one page after `cursor`, stores what verifies, saves the new cursor. Returns the
    /// new cursor and whether the page was full (more may be waiting).
    async fn pull_page(&self, key: &str, cursor: u64) -> Result<(u64, bool)> {
        let url = format!("{key}/v1/feed?after={cursor}&limit={PAGE}");
        let body = self.get(&url, MAX_FEED_BYTES).await?;
        let page: FeedPage = serde_json::from_slice(&body).map_err(|e| self.bad(e))?;
        metrics::inc(&self.metrics.replication_pulls);
        let full = page.entries.len() >= PAGE;

        // Group by device, keeping feed order (each device's ops are consecutive there).
        let rows = page.entries.iter().map(|e| (e.cursor, &*e.device, &*e.op));
        let (last, order, mut groups) = group_by_device(
            rows,
            cursor,
            |op: &Op| op.device,
            |cursor, why| {
                metrics::inc(&self.metrics.replication_errors);
                tracing::warn!(peer = %key, cursor, %why, "skipping a malformed feed entry");
            },
        );
        for device in order {
            let ops = groups.remove(&device).expect("grouped");
            self.take(key, device, ops).await?;
        }

        let next = page.next.max(last);
        if next != cursor {
            self.store.set_peer_cursor(key, next).await?;
        }
        Ok((next, full))
    }

    /// Stores one device's run of ops from the feed, fetching the ops before it when the node
    /// lacks them. Only storage failures are errors (the page is retried); ops that do not
    /// verify are counted, logged and skipped.
    async fn take(&self, key: &str, device: DeviceId, ops: Vec<Op>) -> Result<()> {
        let mut ops = ops;
        for attempt in 0..2 {
            let result = self.registry.ingest(device, ops).await;
            if crate::api::chain_may_have_changed(&result) {
                self.owner_index.refresh(&self.registry, device).await?;
            }
            match result {
                Ok(accepted) => {
                    metrics::add(&self.metrics.replication_ops, accepted.added as u64);
                    return Ok(());
                }
                Err(Refusal::Gap { have, .. }) if attempt == 0 => {
                    let url = format!("{key}/v1/devices/{device}/ops?from={have}");
                    let body = self.get(&url, OpList::MAX_LEN).await?;
                    ops = OpList::from_bytes(&body).map_err(|e| self.bad(e))?.0;
                    if ops.is_empty() {
                        return Ok(());
                    }
                }
                Err(Refusal::Storage(e)) => return Err(e),
                // Another branch: the peer's whole chain may carry the device's endorsement of
                // it (which settles the fork), even when this page did not.
                Err(Refusal::Fork { .. } | Refusal::UnknownAnchor { .. }) if attempt == 0 => {
                    let url = format!("{key}/v1/devices/{device}/ops?from=0");
                    let body = self.get(&url, OpList::MAX_LEN).await?;
                    ops = OpList::from_bytes(&body).map_err(|e| self.bad(e))?.0;
                    if ops.is_empty() {
                        return Ok(());
                    }
                }
                Err(Refusal::Fork { seq, .. } | Refusal::UnknownAnchor { seq }) => {
                    tracing::warn!(peer = %key, %device, seq, "peer holds a fork of this device; evidence kept");
                    return Ok(());
                }
                Err(refusal) => {
                    metrics::inc(&self.metrics.replication_errors);
                    tracing::warn!(peer = %key, %device, %refusal, "peer served ops that were refused");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Pulls one page of the peer's consent feed after `cursor`, takes what verifies, saves
    /// the new cursor. Returns it and whether the page was full.
    async fn pull_consent_page(
        &self,
        key: &str,
        cursor_key: &str,
        cursor: u64,
    ) -> Result<(u64, bool)> {
        let url = format!("{key}/v1/consents/feed?after={cursor}&limit={CONSENT_PAGE}");
        let body = self.get(&url, MAX_CONSENT_FEED_BYTES).await?;
        let page: ConsentFeedPage = serde_json::from_slice(&body).map_err(|e| self.bad(e))?;
        metrics::inc(&self.metrics.replication_pulls);
        let full = page.entries.len() >= CONSENT_PAGE;
        let rows = page
            .entries
            .iter()
            .map(|e| (e.cursor, &*e.device, &*e.entry));
        let (last, order, mut groups) = group_by_device(
            rows,
            cursor,
            |e: &ConsentEntry| e.device,
            |cursor, why| {
                metrics::inc(&self.metrics.replication_errors);
                tracing::warn!(peer = %key, cursor, %why, "skipping a malformed consent feed entry");
            },
        );
        for device in order {
            let mut run = groups.remove(&device).expect("grouped");
            run.sort_by_key(|e| e.seq);
            self.take_consents(key, device, run).await?;
        }
        let next = page.next.max(last);
        if next != cursor {
            self.store.set_peer_cursor(cursor_key, next).await?;
        }
        Ok((next, full))
    }

    /// Takes one device's run of consent entries from the peer. When it starts past what the
    /// node holds, the missing entries are fetched from the peer first; when it does not
    /// verify (or the node lacks the device), the node's chain may be behind the peer's, so
    /// the peer's chain is taken (verified as ever) and the run tried once more. Only storage
    /// failures are errors; entries that still do not verify are counted and skipped.
    async fn take_consents(
        &self,
        key: &str,
        device: DeviceId,
        run: Vec<ConsentEntry>,
    ) -> Result<()> {
        let mut run = run;
        let mut refetched_chain = false;
        let mut refetched_log = false;
        loop {
            match self.consents.ingest_replicated(device, run.clone()).await {
                Ok(added) => {
                    metrics::add(&self.metrics.replication_consents, added as u64);
                    return Ok(());
                }
                Err(ConsentRefusal::Storage(e)) => return Err(e),
                Err(ConsentRefusal::Gap { have, .. }) if !refetched_log => {
                    refetched_log = true;
                    let url = format!("{key}/v1/devices/{device}/consents?from={}", have + 1);
                    let body = self.get(&url, MAX_CONSENT_PAGE_BYTES).await?;
                    run = ConsentList::from_bytes(&body).map_err(|e| self.bad(e))?.0;
                    if run.is_empty() {
                        return Ok(());
                    }
                }
                Err(ConsentRefusal::UnknownDevice(_) | ConsentRefusal::Invalid(_))
                    if !refetched_chain =>
                {
                    refetched_chain = true;
                    let url = format!("{key}/v1/devices/{device}/ops?from=0");
                    let body = self.get(&url, OpList::MAX_LEN).await?;
                    let ops = OpList::from_bytes(&body).map_err(|e| self.bad(e))?.0;
                    if ops.is_empty() {
                        return Ok(());
                    }
                    let result = self.registry.ingest(device, ops).await;
                    if crate::api::chain_may_have_changed(&result) {
                        self.owner_index.refresh(&self.registry, device).await?;
                    }
                    if let Err(Refusal::Storage(e)) = result {
                        return Err(e);
                    }
                }
                Err(refusal) => {
                    metrics::inc(&self.metrics.replication_errors);
                    tracing::warn!(peer = %key, %device, %refusal, "peer served consent entries that were refused");
                    return Ok(());
                }
            }
        }
    }

    async fn get(&self, url: &str, max: usize) -> Result<Vec<u8>> {
        let mut resp = self.client.get(url).send().await.map_err(|e| self.bad(e))?;
        if !resp.status().is_success() {
            return Err(self.bad(format!("GET {url} answered {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.bad(e))? {
            if body.len() + chunk.len() > max {
                return Err(self.bad(format!("GET {url} answered more than {max} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn bad(&self, e: impl std::fmt::Display) -> Error {
        Error::Peer {
            peer: peer_key(&self.peer),
            message: e.to_string(),
        }
    }
}

/// Decodes a feed page's rows (`cursor`, device text, base64 item) and groups the items by
/// device in feed order; a row that does not decode, or whose item names another device than
/// the row, goes to `skip`. Returns the highest cursor seen (at least `cursor`), the devices in
/// order and their items.
fn group_by_device<'a, T: Codec>(
    rows: impl Iterator<Item = (u64, &'a str, &'a str)>,
    cursor: u64,
    device_of: impl Fn(&T) -> DeviceId,
    mut skip: impl FnMut(u64, String),
) -> (u64, Vec<DeviceId>, HashMap<DeviceId, Vec<T>>) {
    let mut order = Vec::new();
    let mut groups: HashMap<DeviceId, Vec<T>> = HashMap::new();
    let mut last = cursor;
    for (row_cursor, device, item) in rows {
        last = last.max(row_cursor);
        let parsed = DeviceId::parse(device)
            .map_err(|e| e.to_string())
            .and_then(|device| {
                let bytes = data_encoding::BASE64
                    .decode(item.as_bytes())
                    .map_err(|e| e.to_string())?;
                let item = T::from_bytes(&bytes).map_err(|e| e.to_string())?;
                if device_of(&item) != device {
                    return Err("the item is for another device than the feed row says".into());
                }
                Ok((device, item))
            });
        match parsed {
            Ok((device, item)) => groups
                .entry(device)
                .or_insert_with(|| {
                    order.push(device);
                    Vec::new()
                })
                .push(item),
            Err(why) => skip(row_cursor, why),
        }
    }
    (last, order, groups)
}
