//! Reading and publishing a device's consent log (docs/API.md, "Consent logs";
//! docs/PROTOCOL.md §14) on registry nodes, trusting none of them.
//!
//! A node cannot forge an owner's signature, so what it can do is withhold entries (serve a
//! shorter log), serve bytes that do not verify, or serve one branch of an equivocation (two
//! validly signed entries at one seq). The client asks several nodes, verifies every answer
//! against the chain it already verified ([`crate::QuorumClient::check`]), keeps the longest
//! verified log (less any *unsettled* tail too few nodes hold: [`UNSETTLED_SUPPORT`]), and
//! names the rest: a node whose log does not verify is **lying**; one whose
//! verified log is a prefix of the kept one is only **behind** (it may have missed a post; its
//! peers catch it up); one whose verified log differs from the kept one at some seq is
//! **conflicting** (an owner signed two rival entries, or two owners raced).
//!
//! [`assess_consents`] is the pure part (no I/O), so every case is testable without a network.

use futures::future::join_all;
use latchkey_proto::chain::Chain;
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{ConsentEntry, ConsentList, ConsentLog};
use latchkey_proto::keys::DeviceId;

use crate::client::{PublishReport, QuorumClient};
use crate::error::{Error, Result};
use crate::http::{read_capped, SMALL_ANSWER_CAP};

/// The most entries a device's log holds (a `ConsentList`'s cap, and a node's).
pub const MAX_CONSENT_ENTRIES: usize = 10_000;
/// One `GET …/consents` page: a node serves at most 4 MiB of entries per page, plus one entry
/// and the count.
pub const CONSENT_PAGE_CAP: usize = 4 * 1024 * 1024 + 8 * 1024 + 4;
/// The header a node names the next page's first seq in, when the log goes on.
pub const NEXT_SEQ_HEADER: &str = "x-latchkey-next-seq";
/// Pages read from one node at most: a full log of the largest entries fits in 20.
const MAX_PAGES: usize = 32;
/// How many answering nodes must hold an *unsettled* entry — one after the last entry a
/// current owner signed in the current era — before a reader takes it. Such an entry verifies
/// as history (its signer was an owner at its anchor), so a removed owner and one lying node
/// could otherwise plant one (a consent for her own provider) at the head of every reader's
/// log; honest nodes never take it (they admit only current owners' entries and replicate only
/// runs a current owner has built on), so it cannot gather two. A legitimate unsettled tail
/// (its signer was removed after it was posted) was acknowledged by `min_acks` nodes.
pub const UNSETTLED_SUPPORT: usize = 2;

/// What one node served for a device's consent log.
#[derive(Debug, Clone)]
pub enum ConsentAnswer {
    /// The entries it holds from seq 1.
    Entries(Vec<ConsentEntry>),
    /// It holds no chain for the device.
    UnknownDevice,
    /// The bytes were not a consent list, or more than any could be: a lie, not a failure.
    Malformed(String),
    /// Connection error, unexpected status, or no answer in time.
    Failed(String),
}

/// The verified consent log and what each sampled node did.
#[derive(Debug, Clone)]
pub struct ConsentLogReport {
    /// The longest log that verifies against the chain (possibly empty).
    pub log: ConsentLog,
    /// Nodes that served a log that verifies (whether kept, behind or conflicting).
    pub answered: usize,
    /// Nodes that served something that does not verify (forged, tampered, another device's
    /// entries, not a consent list). Never trusted.
    pub lying: Vec<String>,
    /// Nodes whose verified log holds a different entry than the kept log at some seq.
    pub conflicting: Vec<String>,
    /// Nodes whose verified log is a shorter prefix of the kept log (withholding or lagging).
    pub behind: Vec<String>,
    /// Nodes whose log goes on past the kept one with entries no current owner has signed or
    /// built on, which fewer than [`UNSETTLED_SUPPORT`] answering nodes hold (see there).
    pub unsettled: Vec<String>,
    /// Nodes that hold no chain for the device.
    pub unknown: Vec<String>,
    /// Nodes that did not answer, with why.
    pub failed: Vec<(String, String)>,
}

/// Verifies every answer against `chain` and keeps the longest verified log (on a tie, the one
/// more nodes served or hold a prefix of; then the lower last-entry hash, so every client picks
/// the same). Needs at least `min_answers` verified answers.
pub fn assess_consents(
    chain: &Chain,
    answers: Vec<(String, ConsentAnswer)>,
    min_answers: usize,
) -> Result<ConsentLogReport> {
    let device = chain.device();
    let mut lying = Vec::new();
    let mut unknown = Vec::new();
    let mut failed = Vec::new();
    let mut served: Vec<(String, Vec<ConsentEntry>)> = Vec::new();
    for (node, answer) in answers {
        match answer {
            ConsentAnswer::Entries(entries) => served.push((node, entries)),
            ConsentAnswer::UnknownDevice => unknown.push(node),
            ConsentAnswer::Malformed(why) => {
                tracing::warn!(%node, %why, "node served a malformed consent log");
                lying.push(node);
            }
            ConsentAnswer::Failed(why) => failed.push((node, why)),
        }
    }
    // Longest first: a shorter answer that is a prefix of a log already verified needs no
    // verification of its own (every prefix of a valid log is valid). Entries are compared
    // whole: an entry's hash leaves its signature out, so a copy with forged signature bytes
    // hashes the same.
    served.sort_by_key(|(_, entries)| std::cmp::Reverse(entries.len()));
    let mut verified: Vec<ConsentLog> = Vec::new();
    let mut good: Vec<(String, Vec<ConsentEntry>)> = Vec::new();
    for (node, entries) in served {
        let known = verified
            .iter()
            .any(|log| log.entries().starts_with(&entries));
        if known {
            good.push((node, entries));
            continue;
        }
        match ConsentLog::verify(chain, entries.clone()) {
            Ok(log) => {
                verified.push(log);
                good.push((node, entries));
            }
            Err(e) => {
                tracing::warn!(%node, %device, error = %e, "node served a consent log that does not verify");
                lying.push(node);
            }
        }
    }
    let answered = good.len();
    if answered == 0 && !lying.is_empty() {
        return Err(Error::ConsentLogUnverified {
            device: device.to_string(),
            lying,
        });
    }
    if answered < min_answers {
        return Err(Error::NotEnoughConsentAnswers {
            device: device.to_string(),
            answered,
            needed: min_answers,
        });
    }
    let support = |log: &ConsentLog| {
        good.iter()
            .filter(|(_, e)| log.entries().starts_with(e))
            .count()
    };
    let best = verified
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            a.len()
                .cmp(&b.len())
                .then(support(a).cmp(&support(b)))
                .then(b.head_hash().cmp(&a.head_hash()))
        })
        .map(|(i, _)| i);
    let Some(best) = best else {
        // Only with `min_answers` 0 and no answer at all: there is no log to keep.
        return Err(Error::NotEnoughConsentAnswers {
            device: device.to_string(),
            answered,
            needed: min_answers.max(1),
        });
    };
    let mut log = verified.swap_remove(best);
    let keep = settled_len(chain, log.entries(), &good);
    if keep < log.len() {
        tracing::warn!(%device, kept = keep, served = log.len(), "consent entries no current owner signed, held by too few nodes, left out");
        // Every prefix of a verified log verifies; a failure here would be a proto bug.
        log = ConsentLog::verify(chain, log.entries()[..keep].to_vec()).map_err(|e| {
            Error::ConsentLogUnverified {
                device: format!("{device} (a prefix of its verified log: {e})"),
                lying: Vec::new(),
            }
        })?;
    }
    let mut conflicting = Vec::new();
    let mut behind = Vec::new();
    let mut unsettled = Vec::new();
    for (node, entries) in good {
        if log.entries().starts_with(&entries) {
            if entries.len() < log.len() {
                behind.push(node);
            }
        } else if entries.starts_with(log.entries()) {
            unsettled.push(node);
        } else {
            conflicting.push(node);
        }
    }
    if !conflicting.is_empty() {
        tracing::error!(%device, nodes = ?conflicting, "rival consent entries: an owner signed two entries at one seq");
    }
    Ok(ConsentLogReport {
        log,
        answered,
        lying,
        conflicting,
        behind,
        unsettled,
        unknown,
        failed,
    })
}

/// How much of `entries` (a verified log) a reader takes: everything up to the last entry a
/// current owner signed in the current era, then each further entry only while at least
/// [`UNSETTLED_SUPPORT`] answering nodes hold the log up to it.
fn settled_len(
    chain: &Chain,
    entries: &[ConsentEntry],
    good: &[(String, Vec<ConsentEntry>)],
) -> usize {
    let state = chain.state();
    let settled = entries
        .iter()
        .rposition(|e| {
            state.is_owner(&e.signer)
                && chain
                    .spine_anchor(&e.anchor)
                    .is_some_and(|(_, _, era)| era == state.epoch)
        })
        .map_or(0, |i| i + 1);
    let mut keep = settled;
    for i in settled..entries.len() {
        let holders = good
            .iter()
            .filter(|(_, e)| e.len() > i && e[..=i] == entries[..=i])
            .count();
        if holders < UNSETTLED_SUPPORT {
            break;
        }
        keep = i + 1;
    }
    keep
}

enum Posted {
    Stored,
    Conflict(String),
    Rejected(String),
    Failed(String),
}

impl QuorumClient {
    /// Asks `sample` random nodes for the consent log of `chain`'s device, verifies every
    /// answer against `chain` (which the caller verified, e.g. with [`Self::check`]), and
    /// keeps the longest verified log. Errors when fewer than `min_answers` nodes (or all the
    /// sampled ones, if fewer) served a log that verifies.
    pub async fn consent_log(&self, chain: &Chain) -> Result<ConsentLogReport> {
        let chosen = self.sample(self.config().sample, &mut rand::thread_rng());
        self.consent_log_from(chain, &chosen).await
    }

    /// [`Self::consent_log`] against a given set of nodes.
    pub async fn consent_log_from(
        &self,
        chain: &Chain,
        nodes: &[String],
    ) -> Result<ConsentLogReport> {
        let device = chain.device();
        let answers =
            join_all(nodes.iter().map(|node| async move {
                (node.clone(), self.fetch_consents(node, &device).await)
            }))
            .await;
        let needed = self.config().min_answers.min(nodes.len().max(1));
        assess_consents(chain, answers, needed)
    }

    /// One node's whole consent log for `device`, page by page, every page read with a cap
    /// and within the configured timeout.
    pub async fn fetch_consents(&self, node: &str, device: &DeviceId) -> ConsentAnswer {
        let mut entries: Vec<ConsentEntry> = Vec::new();
        let mut from = 1u64;
        for _ in 0..MAX_PAGES {
            let url = format!("{node}/v1/devices/{device}/consents?from={from}");
            let page =
                match tokio::time::timeout(self.config().timeout, self.fetch_page(&url)).await {
                    Err(_) => return ConsentAnswer::Failed("timed out".into()),
                    Ok(Err(answer)) => {
                        return match answer {
                            // A node that knew the device on page 1 cannot forget it on page 2.
                            ConsentAnswer::UnknownDevice if !entries.is_empty() => {
                                ConsentAnswer::Malformed("the device vanished between pages".into())
                            }
                            other => other,
                        };
                    }
                    Ok(Ok(page)) => page,
                };
            let (list, next) = page;
            let got = list.len() as u64;
            entries.extend(list);
            if entries.len() > MAX_CONSENT_ENTRIES {
                return ConsentAnswer::Malformed(format!(
                    "served more than the {MAX_CONSENT_ENTRIES} entries a log holds"
                ));
            }
            // Only a page that moved on may be followed by another: a node naming the same
            // page again would keep the client asking.
            match next {
                Some(next) if got > 0 && next == from + got => from = next,
                _ => return ConsentAnswer::Entries(entries),
            }
        }
        ConsentAnswer::Entries(entries)
    }

    /// One page: its entries and the next page's first seq, or the answer to give up with.
    async fn fetch_page(
        &self,
        url: &str,
    ) -> core::result::Result<(Vec<ConsentEntry>, Option<u64>), ConsentAnswer> {
        let resp = self
            .http()
            .get(url)
            .send()
            .await
            .map_err(|e| ConsentAnswer::Failed(e.without_url().to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ConsentAnswer::UnknownDevice);
        }
        if !status.is_success() {
            let body = read_capped(resp, SMALL_ANSWER_CAP)
                .await
                .unwrap_or_default();
            return Err(ConsentAnswer::Failed(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        let next = resp
            .headers()
            .get(NEXT_SEQ_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = read_capped(resp, CONSENT_PAGE_CAP)
            .await
            .map_err(|e| match e {
                // More than any page: the node is lying, not failing.
                Error::TooLarge { .. } => ConsentAnswer::Malformed(e.to_string()),
                e => ConsentAnswer::Failed(e.to_string()),
            })?;
        let list =
            ConsentList::from_bytes(&body).map_err(|e| ConsentAnswer::Malformed(e.to_string()))?;
        Ok((list.0, next))
    }

    /// Posts one consent entry to `publish_to` random nodes in parallel; succeeds once
    /// `min_acks` hold it durably (`201` stored, or `200` already held).
    pub async fn post_consent(&self, entry: &ConsentEntry) -> Result<PublishReport> {
        let chosen = self.sample(self.config().publish_to, &mut rand::thread_rng());
        self.post_consent_to(entry, &chosen).await
    }

    /// [`Self::post_consent`] to a given set of nodes.
    pub async fn post_consent_to(
        &self,
        entry: &ConsentEntry,
        nodes: &[String],
    ) -> Result<PublishReport> {
        let body = entry.to_bytes();
        let device = entry.device;
        let results = join_all(nodes.iter().map(|node| {
            let body = body.clone();
            async move { (node.clone(), self.post_one(node, &device, body).await) }
        }))
        .await;
        let mut report = PublishReport {
            acked: Vec::new(),
            failed: Vec::new(),
        };
        let mut conflict = Vec::new();
        let mut rejected = None;
        for (node, result) in results {
            match result {
                Posted::Stored => report.acked.push(node),
                Posted::Conflict(why) => {
                    conflict.push(node.clone());
                    report.failed.push((node, why));
                }
                Posted::Rejected(why) => {
                    rejected.get_or_insert(why.clone());
                    report.failed.push((node, why));
                }
                Posted::Failed(why) => report.failed.push((node, why)),
            }
        }
        let needed = self.config().min_acks.min(nodes.len());
        if report.acked.len() >= needed {
            return Ok(report);
        }
        if !conflict.is_empty() {
            return Err(Error::ConsentConflict {
                device: device.to_string(),
                seq: entry.seq,
                nodes: conflict,
            });
        }
        if let Some(why) = rejected {
            return Err(Error::ConsentRejected(why));
        }
        Err(Error::NotEnoughAcks {
            acks: report.acked.len(),
            needed,
        })
    }

    async fn post_one(&self, node: &str, device: &DeviceId, body: Vec<u8>) -> Posted {
        let url = format!("{node}/v1/devices/{device}/consents");
        let request = async {
            let resp = self
                .http()
                .post(&url)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let text = match read_capped(resp, SMALL_ANSWER_CAP).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(e) => e.to_string(),
            };
            Ok::<_, reqwest::Error>((status, text))
        };
        match tokio::time::timeout(self.config().timeout, request).await {
            Err(_) => Posted::Failed("timed out".into()),
            Ok(Err(e)) => Posted::Failed(e.without_url().to_string()),
            Ok(Ok((status, _))) if status.is_success() => Posted::Stored,
            Ok(Ok((status, text))) if status == reqwest::StatusCode::CONFLICT => {
                Posted::Conflict(text)
            }
            Ok(Ok((status, text))) if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY => {
                Posted::Rejected(text)
            }
            Ok(Ok((status, text))) => Posted::Failed(format!("HTTP {status}: {text}")),
        }
    }
}
