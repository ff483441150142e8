//! The I/O half: sample nodes, ask them in parallel with time limits, hand the answers to
//! [`crate::assess`].

use std::time::Duration;

use futures::future::join_all;
use latchkey_proto::chain::{Chain, ForkEvidence, Op, OpList};
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::DeviceId;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::assess::{assess, Answer, NodeOutcome, NodeReport};
use crate::config::QuorumConfig;
use crate::error::{Error, Result};
use crate::http::{read_capped, CHAIN_PAGE_CAP, SMALL_ANSWER_CAP};

/// A chain this party verified earlier, and when.
#[derive(Debug, Clone)]
pub struct CachedView {
    pub chain: Chain,
    pub verified_at_ms: u64,
}

/// How much to trust a view's freshness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// At least the configured minimum of sampled nodes answered with verifiable data.
    Quorum { answers: usize },
    /// Too few answered: the view is the cache merged with whatever valid data did arrive.
    Degraded {
        answers: usize,
        needed: usize,
        /// Age of the cached view at the time of the check, if there was one.
        cached_age_ms: Option<u64>,
    },
}

/// The result of an ownership check.
#[derive(Debug, Clone)]
pub struct OwnershipView {
    pub chain: Chain,
    pub freshness: Freshness,
    pub reports: Vec<NodeReport>,
    /// Forks are an alarm: two valid histories exist and the device has endorsed neither.
    /// Never empty by accident, never resolved silently.
    pub forks: Vec<ForkEvidence>,
    /// Rival histories the device's endorsement settled (the view holds the endorsed one):
    /// evidence that someone signed a rival op, e.g. with a leaked setup key. Not an alarm.
    pub settled: Vec<ForkEvidence>,
    /// Where the door's endorsed branch replaced part of the cached chain: `ours` is the op
    /// the cache held, `theirs` the endorsed one the view holds now. The caller tells its user
    /// what changed.
    pub switched: Vec<ForkEvidence>,
    pub checked_at_ms: u64,
}

impl OwnershipView {
    pub fn nodes_with(&self, pred: impl Fn(&NodeOutcome) -> bool) -> usize {
        self.reports.iter().filter(|r| pred(&r.outcome)).count()
    }

    /// The view to cache for next time.
    pub fn to_cache(&self) -> CachedView {
        CachedView {
            chain: self.chain.clone(),
            verified_at_ms: self.checked_at_ms,
        }
    }
}

/// What publishing ops to nodes achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    pub acked: Vec<String>,
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct QuorumClient {
    nodes: Vec<String>,
    config: QuorumConfig,
    http: reqwest::Client,
}

impl QuorumClient {
    pub fn new(nodes: Vec<String>, config: QuorumConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::BadUrl {
                url: String::new(),
                why: e.to_string(),
            })?;
        Self::with_http(nodes, config, http)
    }

    /// [`Self::new`] over a caller's HTTP client, so a party that checks often (an owner's
    /// profile) keeps its connections to the nodes alive between checks instead of opening
    /// new ones each time. Every request still carries its own time limit.
    pub fn with_http(
        nodes: Vec<String>,
        config: QuorumConfig,
        http: reqwest::Client,
    ) -> Result<Self> {
        if nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        let nodes = nodes
            .into_iter()
            .map(|n| normalize_url(&n))
            .collect::<Result<Vec<_>>>()?;
        Ok(QuorumClient {
            nodes,
            config,
            http,
        })
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// The HTTP client (for [`crate::invites`]).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `n` distinct nodes chosen uniformly at random.
    pub fn sample(&self, n: usize, rng: &mut (impl Rng + ?Sized)) -> Vec<String> {
        self.nodes
            .choose_multiple(rng, n.min(self.nodes.len()))
            .cloned()
            .collect()
    }

    /// Asks `k` random nodes for `device`'s chain, verifies every answer and merges them with
    /// the cached view.
    pub async fn check(
        &self,
        device: &DeviceId,
        cached: Option<&CachedView>,
        now_ms: u64,
        rng: &mut (impl Rng + ?Sized),
    ) -> Result<OwnershipView> {
        let chosen = self.sample(self.config.sample, rng);
        self.check_nodes(device, cached, now_ms, &chosen).await
    }

    /// [`Self::check`] against a given set of nodes.
    pub async fn check_nodes(
        &self,
        device: &DeviceId,
        cached: Option<&CachedView>,
        now_ms: u64,
        nodes: &[String],
    ) -> Result<OwnershipView> {
        let known = cached.map(|c| &c.chain);
        // Ask from our head (inclusive), so a node must show it holds what we hold.
        let from = known.map(|c| c.state().seq).unwrap_or(0);
        let answers =
            join_all(nodes.iter().map(|node| async move {
                (node.clone(), self.fetch_ops(node, device, from).await)
            }))
            .await;
        let assessment = assess(device, known, answers);
        let chain = assessment.chain.ok_or_else(|| Error::UnknownDevice {
            device: device.to_string(),
        })?;
        let freshness =
            if assessment.valid_answers >= self.config.min_answers.min(nodes.len().max(1)) {
                Freshness::Quorum {
                    answers: assessment.valid_answers,
                }
            } else {
                Freshness::Degraded {
                    answers: assessment.valid_answers,
                    needed: self.config.min_answers,
                    cached_age_ms: cached.map(|c| now_ms.saturating_sub(c.verified_at_ms)),
                }
            };
        for r in &assessment.reports {
            if let NodeOutcome::Lied(why) = &r.outcome {
                tracing::warn!(node = %r.node, %why, "node served invalid data");
            }
        }
        if !assessment.forks.is_empty() {
            tracing::error!(device = %device, forks = assessment.forks.len(), "fork in ownership chain");
        }
        Ok(OwnershipView {
            chain,
            freshness,
            reports: assessment.reports,
            forks: assessment.forks,
            settled: assessment.settled,
            switched: assessment.switched,
            checked_at_ms: now_ms,
        })
    }

    /// One node's ops for `device` from sequence `from`.
    pub async fn fetch_ops(&self, node: &str, device: &DeviceId, from: u64) -> Answer {
        let url = format!("{node}/v1/devices/{device}/ops?from={from}");
        let request = async {
            let resp = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| Fetch::Failed(e.without_url().to_string()))?;
            let status = resp.status();
            let cap = if status.is_success() {
                CHAIN_PAGE_CAP
            } else {
                SMALL_ANSWER_CAP
            };
            let body = read_capped(resp, cap).await.map_err(|e| match e {
                // More than any valid op list: the node is lying, not failing.
                Error::TooLarge { .. } => Fetch::Lied(e.to_string()),
                _ => Fetch::Failed(e.to_string()),
            })?;
            Ok::<_, Fetch>((status, body))
        };
        match tokio::time::timeout(self.config.timeout, request).await {
            Err(_) => Answer::TimedOut,
            Ok(Err(Fetch::Failed(why))) => Answer::Failed(why),
            Ok(Err(Fetch::Lied(why))) => Answer::Malformed(why),
            Ok(Ok((status, _))) if status == reqwest::StatusCode::NOT_FOUND => {
                Answer::UnknownDevice
            }
            Ok(Ok((status, body))) if !status.is_success() => Answer::Failed(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
            Ok(Ok((_, body))) => match OpList::from_bytes(&body) {
                Ok(list) => Answer::Ops(list.0),
                Err(e) => Answer::Malformed(e.to_string()),
            },
        }
    }

    /// Posts `ops` (consecutive, for one device) to `publish_to` random nodes in parallel and
    /// succeeds once `min_acks` have stored them durably.
    pub async fn publish(
        &self,
        device: &DeviceId,
        ops: &[Op],
        rng: &mut (impl Rng + ?Sized),
    ) -> Result<PublishReport> {
        let chosen = self.sample(self.config.publish_to, rng);
        self.publish_to(device, ops, &chosen).await
    }

    pub async fn publish_to(
        &self,
        device: &DeviceId,
        ops: &[Op],
        nodes: &[String],
    ) -> Result<PublishReport> {
        let body = OpList(ops.to_vec()).to_bytes();
        let results = join_all(nodes.iter().map(|node| {
            let body = body.clone();
            async move { (node.clone(), self.post_ops(node, device, body).await) }
        }))
        .await;
        let mut report = PublishReport {
            acked: Vec::new(),
            failed: Vec::new(),
        };
        let mut fork = false;
        let mut rejected = None;
        for (node, result) in results {
            match result {
                PostResult::Stored => report.acked.push(node),
                PostResult::Fork(why) => {
                    fork = true;
                    report.failed.push((node, why));
                }
                PostResult::Rejected(why) => {
                    rejected.get_or_insert(why.clone());
                    report.failed.push((node, why));
                }
                PostResult::Failed(why) => report.failed.push((node, why)),
            }
        }
        let needed = self.config.min_acks.min(nodes.len());
        if report.acked.len() >= needed {
            return Ok(report);
        }
        if fork {
            return Err(Error::Fork {
                device: device.to_string(),
            });
        }
        if let Some(why) = rejected {
            return Err(Error::Rejected(why));
        }
        Err(Error::NotEnoughAcks {
            acks: report.acked.len(),
            needed,
        })
    }

    /// Publishes the ops of `chain` from sequence `from` to `publish_to` random nodes. A node
    /// that lacks the ops before `from` (it refuses the run as not extending what it holds) is
    /// sent the whole chain instead, which every node accepts idempotently.
    pub async fn publish_chain(
        &self,
        chain: &Chain,
        from: u64,
        rng: &mut (impl Rng + ?Sized),
    ) -> Result<PublishReport> {
        let chosen = self.sample(self.config.publish_to, rng);
        self.publish_chain_to(chain, from, &chosen).await
    }

    pub async fn publish_chain_to(
        &self,
        chain: &Chain,
        from: u64,
        nodes: &[String],
    ) -> Result<PublishReport> {
        let device = chain.device();
        // Spine ops from `from` on, with every side op (a node skips what it holds).
        let tail = chain.ops_from(from);
        let first = self.publish_to(&device, &tail, nodes).await;
        let report = match first {
            Ok(report) => report,
            Err(Error::Fork { .. }) => return first,
            Err(_) if from == 0 => return first,
            Err(_) => PublishReport {
                acked: Vec::new(),
                failed: nodes.iter().map(|n| (n.clone(), String::new())).collect(),
            },
        };
        if report.failed.is_empty() || from == 0 {
            return Ok(report);
        }
        // Retry the refusers with the whole chain.
        let retry: Vec<String> = report.failed.iter().map(|(n, _)| n.clone()).collect();
        let body = OpList(chain.ops().to_vec()).to_bytes();
        let mut merged = PublishReport {
            acked: report.acked,
            failed: Vec::new(),
        };
        let results = join_all(retry.iter().map(|node| {
            let body = body.clone();
            async move { (node.clone(), self.post_ops(node, &device, body).await) }
        }))
        .await;
        for (node, result) in results {
            match result {
                PostResult::Stored => merged.acked.push(node),
                PostResult::Fork(why) | PostResult::Rejected(why) | PostResult::Failed(why) => {
                    merged.failed.push((node, why))
                }
            }
        }
        let needed = self.config.min_acks.min(nodes.len());
        if merged.acked.len() >= needed {
            Ok(merged)
        } else {
            Err(Error::NotEnoughAcks {
                acks: merged.acked.len(),
                needed,
            })
        }
    }

    async fn post_ops(&self, node: &str, device: &DeviceId, body: Vec<u8>) -> PostResult {
        let url = format!("{node}/v1/devices/{device}/ops");
        let request = async {
            let resp = self
                .http
                .post(&url)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            // The answer is only read to explain a refusal; a node sending more is cut off.
            let text = match read_capped(resp, SMALL_ANSWER_CAP).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(e) => e.to_string(),
            };
            Ok::<_, reqwest::Error>((status, text))
        };
        match tokio::time::timeout(self.config.timeout, request).await {
            Err(_) => PostResult::Failed("timed out".into()),
            Ok(Err(e)) => PostResult::Failed(e.without_url().to_string()),
            Ok(Ok((status, _))) if status.is_success() => PostResult::Stored,
            Ok(Ok((status, text))) if status == reqwest::StatusCode::CONFLICT => {
                PostResult::Fork(text)
            }
            Ok(Ok((status, text))) if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY => {
                PostResult::Rejected(text)
            }
            Ok(Ok((status, text))) => PostResult::Failed(format!("HTTP {status}: {text}")),
        }
    }
}

enum Fetch {
    Failed(String),
    Lied(String),
}

enum PostResult {
    Stored,
    Fork(String),
    Rejected(String),
    Failed(String),
}

fn normalize_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(Error::BadUrl {
            url: url.to_owned(),
            why: "must start with http:// or https://".into(),
        });
    }
    Ok(trimmed.to_owned())
}
