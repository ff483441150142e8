//! The adversarial simulation: N in-process registry servers on loopback, some of them
//! hostile in one of several ways, and many quorum checks against random samples of them.
//! Shared by the `adversarial` test (asserts) and the `adversarial` example (prints the table
//! for docs/SECURITY.md).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use latchkey_proto::chain::{Chain, Op, OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::PublicKey;
use latchkey_quorum::{QuorumClient, QuorumConfig};
use latchkey_testkit::{person, TestDevice, T0};
use rand::SeedableRng;

/// How a node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Honest,
    /// Appends an op that transfers the device to Mallory, signed by Mallory.
    Forger,
    /// Withholds the newest op.
    Stale,
    /// Serves another device's (valid) chain.
    OtherDevice,
    /// Serves a valid branch: the owner signed a different newest op (equivocation).
    Forker,
    /// Answers after the client's time limit.
    Slow,
    /// Refuses connections.
    Down,
}

impl Kind {
    pub const HOSTILE: [Kind; 6] = [
        Kind::Forger,
        Kind::Stale,
        Kind::OtherDevice,
        Kind::Forker,
        Kind::Slow,
        Kind::Down,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Honest => "honest",
            Kind::Forger => "forged ops",
            Kind::Stale => "stale (withholds newest op)",
            Kind::OtherDevice => "another device's chain",
            Kind::Forker => "valid fork",
            Kind::Slow => "slow (past the time limit)",
            Kind::Down => "down",
        }
    }

    /// Whether a sample made only of nodes of this kind leaves the client without the true
    /// newest op (for a forker: holding the other valid branch, with nothing to compare it to).
    pub fn withholds_newest(self) -> bool {
        matches!(
            self,
            Kind::Stale | Kind::OtherDevice | Kind::Slow | Kind::Down | Kind::Forker
        )
    }
}

/// The world the nodes describe: one door whose newest op transfers it from Alice to Bob.
pub struct World {
    pub truth: Vec<Op>,
    pub fork_branch: Vec<Op>,
    pub forged: Vec<Op>,
    pub other_device: Vec<Op>,
    pub mallory: PublicKey,
    pub bob: PublicKey,
    pub carol: PublicKey,
}

impl World {
    pub fn new() -> Self {
        let (alice, bob, carol, mallory) = (person(1), person(2), person(3), person(6));
        let mut dev = TestDevice::new(500, "Front door");
        dev.claim(&[&alice], 1);
        let base = Chain::verify(dev.chain.ops().to_vec()).unwrap();
        let transfer = |to: &PublicKey| {
            OpBody::Transfer(OwnerSet {
                owners: vec![*to],
                threshold: 1,
            })
        };
        dev.apply(transfer(&bob.public_key()), &[&alice, &bob]);
        let truth = dev.chain.ops().to_vec();

        let mut fork = base.clone();
        let mut op = fork.propose(T0 + 1, transfer(&carol.public_key()));
        op.sign(&alice);
        op.sign(&carol);
        fork.append(op).unwrap();

        let mut forged = truth.clone();
        let mut op = dev.chain.propose(T0 + 2, transfer(&mallory.public_key()));
        op.sign(&mallory);
        forged.push(op);

        let mut other = TestDevice::new(501, "Front door");
        other.claim(&[&mallory], 1);

        World {
            truth,
            fork_branch: fork.ops().to_vec(),
            forged,
            other_device: other.chain.ops().to_vec(),
            mallory: mallory.public_key(),
            bob: bob.public_key(),
            carol: carol.public_key(),
        }
    }

    fn served(&self, kind: Kind) -> &[Op] {
        match kind {
            Kind::Honest | Kind::Slow | Kind::Down => &self.truth,
            Kind::Forger => &self.forged,
            Kind::Stale => &self.truth[..self.truth.len() - 1],
            Kind::OtherDevice => &self.other_device,
            Kind::Forker => &self.fork_branch,
        }
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

struct NodeState {
    kind: Kind,
    ops: Vec<Op>,
}

#[derive(serde::Deserialize)]
struct From {
    from: Option<u64>,
}

async fn ops(
    State(node): State<Arc<NodeState>>,
    Path(_device): Path<String>,
    Query(q): Query<From>,
) -> Response {
    if node.kind == Kind::Slow {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let from = q.from.unwrap_or(0) as usize;
    let list: Vec<Op> = node.ops.iter().skip(from).cloned().collect();
    (StatusCode::OK, OpList(list).to_bytes()).into_response()
}

/// Starts `kinds.len()` servers on loopback; returns their URLs (a down node's URL points at a
/// closed port).
pub async fn start_nodes(world: &World, kinds: &[Kind]) -> Vec<String> {
    let mut urls = Vec::new();
    for &kind in kinds {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        if kind == Kind::Down {
            drop(listener);
        } else {
            let state = Arc::new(NodeState {
                kind,
                ops: world.served(kind).to_vec(),
            });
            let app = Router::new()
                .route("/v1/devices/{device}/ops", get(ops))
                .with_state(state);
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        urls.push(format!("http://{addr}"));
    }
    urls
}

/// Tallies over many checks of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub checks: usize,
    pub forged_accepted: usize,
    pub stale_accepted: usize,
    pub forks_reported: usize,
    pub degraded: usize,
    pub lies_detected: usize,
    /// Checks where no sampled node gave any verifiable view (the client keeps its cache).
    pub no_view: usize,
}

/// Runs `checks` quorum checks with sample size `k` against `urls`.
pub async fn run_checks(
    world: &World,
    urls: &[String],
    k: usize,
    checks: usize,
    seed: u64,
) -> Tally {
    let config = QuorumConfig {
        sample: k,
        min_answers: k.div_ceil(2),
        timeout: Duration::from_millis(1000),
        ..QuorumConfig::default()
    };
    let client = Arc::new(QuorumClient::new(urls.to_vec(), config).unwrap());
    let device = world.truth[0].device;
    let truth_head = world.truth.last().unwrap().id();
    let mut sampler = rand::rngs::StdRng::seed_from_u64(seed);
    let samples: Vec<Vec<String>> = (0..checks)
        .map(|_| client.sample(k, &mut sampler))
        .collect();
    let mut tally = Tally {
        checks,
        ..Tally::default()
    };
    // Checks run 16 at a time, as many phones and devices would.
    for batch in samples.chunks(16) {
        let results = futures::future::join_all(batch.iter().map(|nodes| {
            let client = client.clone();
            async move { client.check_nodes(&device, None, T0, nodes).await }
        }))
        .await;
        for view in results {
            let Ok(view) = view else {
                tally.no_view += 1;
                continue;
            };
            let owners = &view.chain.state().owners;
            if owners.contains(&world.mallory) {
                tally.forged_accepted += 1;
            }
            if !view.forks.is_empty() {
                tally.forks_reported += 1;
            }
            if view.chain.head() != truth_head && view.forks.is_empty() {
                tally.stale_accepted += 1;
            }
            if matches!(view.freshness, latchkey_quorum::Freshness::Degraded { .. }) {
                tally.degraded += 1;
            }
            tally.lies_detected +=
                view.nodes_with(|o| matches!(o, latchkey_quorum::NodeOutcome::Lied(_)));
        }
    }
    tally
}

/// C(n, k) as a float.
pub fn choose(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The chance that all `k` sampled nodes are among the `f` that withhold: C(f,k)/C(N,k).
pub fn p_all_withholding(n: usize, f: usize, k: usize) -> f64 {
    choose(f, k) / choose(n, k)
}

/// The node kinds for `hostile` nodes of `kind` among `n`, shuffled deterministically.
pub fn population(n: usize, kind: Kind, hostile: usize, seed: u64) -> Vec<Kind> {
    use rand::seq::SliceRandom;
    let mut kinds: Vec<Kind> = (0..n)
        .map(|i| if i < hostile { kind } else { Kind::Honest })
        .collect();
    kinds.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    kinds
}
