//! The running agent: the pipeline plus everything with sockets and timers — the local HTTP
//! server ([`crate::server`]), the mailbox subscribers ([`crate::relay`]), mDNS
//! ([`crate::mdns`]), and the ownership refresher that keeps the view fresh through
//! latchkey-quorum.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_proto::chain::{Chain, Op, OpBody, OpId};
use latchkey_proto::command::RejectCode;
use latchkey_proto::keys::DeviceId;
use latchkey_quorum::{CachedView, Freshness, NodeOutcome, QuorumClient};
use rand::rngs::OsRng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actuator::{ActionRequest, Actuators};
use crate::audit::{Stage, Via};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, QuorumKnobs};
use crate::error::{Error, Result};
use crate::files::{DeviceDir, DirLock};
use crate::pipeline::{Answer, Authorized, Early, Fresh, Pipeline, PipelineConfig, Refused};
use crate::store::Store;
use crate::view::View;

/// The pipeline as the agent runs it: the system clock and the OS's randomness.
pub type DevicePipeline = Pipeline<SystemClock, rand_core::OsRng>;

/// How long relayed envelope hashes are remembered (the longest mailbox TTL is an hour).
const RELAY_SEEN_MS: u64 = 2 * 3600 * 1000;
/// Relayed duplicates remembered in memory.
const RECENT_ENVELOPES: usize = 4096;

/// What became of one envelope.
#[derive(Debug)]
pub enum Handled {
    /// Refused before the sender was authenticated (no sealed answer).
    Refused(Refused),
    /// A signed, sealed answer.
    Answered(Answer),
}

/// A bounded set of recently seen envelope hashes (oldest forgotten first).
#[derive(Debug)]
pub struct RecentSet {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
}

impl RecentSet {
    pub fn new(capacity: usize) -> Self {
        RecentSet {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// `true` if `hash` was not in the set (it is now).
    pub fn insert(&mut self, hash: [u8; 32]) -> bool {
        if !self.set.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// How often the agent looks for a refusal summary whose interval is over.
const SUMMARY_CHECK: Duration = Duration::from_secs(5);

/// The shortest time between two refreshes started by nudges.
pub const NUDGE_INTERVAL_MS: u64 = 500;

#[derive(Debug)]
pub struct Agent {
    pub pipeline: Arc<DevicePipeline>,
    pub actuators: Actuators,
    pub quorum: QuorumClient,
    pub knobs: QuorumKnobs,
    pub http: reqwest::Client,
    /// The nodes whose mailbox for this device is long-polled.
    pub relay_nodes: Vec<String>,
    pub(crate) recent: Mutex<RecentSet>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// When a nudge last started a refresh (monotonic ms), so nudges cannot flood the nodes.
    last_nudge_ms: std::sync::atomic::AtomicU64,
    /// The device directory (the agent holds its lock while it runs).
    dir: DeviceDir,
    /// Whether a setup secret may still be on disk (key file or claim files); cleared once a
    /// claim in the verified chain has spent it. The lock also keeps two erasures apart.
    setup_on_disk: Mutex<bool>,
    /// The event poster's end of the pipeline's note channel, taken when the agent starts.
    event_notes: Mutex<Option<crate::events::NoteReceiver>>,
}

impl Agent {
    pub fn device_id(&self) -> DeviceId {
        self.pipeline.device_id()
    }

    pub fn store(&self) -> &Arc<Store> {
        self.pipeline.store()
    }

    /// Runs one envelope through the whole pipeline, its action included.
    pub async fn handle(&self, envelope: Vec<u8>, via: Via) -> Handled {
        // The command's own steps (cryptography, an SQLite commit to the WAL) run right here
        // on the task (`at_once`): a trip to the blocking pool, or `block_in_place` handing
        // this worker's queue to another thread, costs cross-thread wake-ups that together
        // took longer than the steps (0.1 to 0.2 ms each; docs/BENCHMARKS.md, run 5). Only a
        // view due for its check with the nodes splits opening from judging.
        let p = &self.pipeline;
        let opened = at_once(|| {
            let fresh = p.open(&envelope, via)?;
            let stale = p.view().needs_refresh(
                p.clock().ticks_ms(),
                p.config().max_view_age_ms,
                self.retry_ms(),
            );
            Ok(if stale {
                Judged::AfterCheck(fresh)
            } else {
                Judged::Now(p.authorize(fresh))
            })
        });
        let decided = match opened {
            Ok(Ok(Judged::Now(decided))) => decided,
            Ok(Ok(Judged::AfterCheck(fresh))) => {
                self.refresh().await;
                match at_once(|| p.authorize(fresh)) {
                    Ok(decided) => decided,
                    Err(r) => return Handled::Refused(r),
                }
            }
            Ok(Err(Early::Refused(r))) => return Handled::Refused(r),
            Ok(Err(Early::Answered(a))) => return Handled::Answered(a),
            Err(r) => return Handled::Refused(r),
        };
        let auth = match decided {
            Ok(auth) => auth,
            Err(answer) => return Handled::Answered(answer),
        };
        if auth.is_consent() {
            // Judged, recorded (and a key rotated) durably before the answer is sealed.
            return match in_place(|| p.consent(auth)) {
                Ok(answer) => Handled::Answered(answer),
                Err(r) => Handled::Refused(r),
            };
        }
        let result = if auth.redeemed().is_some() {
            // Bound with the nonce in `authorize`; a redemption runs no actuator.
            Ok(Vec::new())
        } else if auth.is_audit() {
            in_place(|| p.audit_page(auth.args())).unwrap_or_else(|r| Err(r.message))
        } else if auth.is_subscribe() {
            in_place(|| p.subscribe(&auth.sender(), auth.args())).unwrap_or_else(|r| Err(r.message))
        } else {
            // The "about to run" entry is committed (by `authorize`: `kill -9` cannot erase
            // it); its fsync runs on the blocking pool while the actuator runs here, polled
            // all along (an HTTP or MQTT actuator needs polling to make progress), so the
            // actuator starts without waiting for the disk and the answer waits for whichever
            // is slower.
            let request = ActionRequest {
                action: auth.action().to_owned(),
                args: auth.args().to_vec(),
                sender: auth.sender(),
                device: self.device_id(),
            };
            let durable = self.pipeline.clone();
            let ticket = auth.ticket();
            let (synced, ran) = tokio::join!(
                blocking(move || durable.make_durable(ticket)),
                self.actuators.run(&request)
            );
            if let Ok(Err(e)) = synced {
                // `complete` tries again and refuses to acknowledge if it still fails.
                tracing::warn!(error = %e, "syncing the audit log failed");
            }
            ran.map_err(|e| format!("{}: {e}", request.action))
        };
        match at_once(|| p.complete(auth, result)) {
            Ok(answer) => Handled::Answered(answer),
            Err(r) => Handled::Refused(r),
        }
    }

    /// Once the verified chain holds a claim the setup secret is spent: erases it from the key
    /// file and deletes the claim QR, wherever the claim came from (nodes, a LAN push). Runs
    /// after every change of the view and at start; does nothing once done.
    pub fn spend_setup_if_claimed(&self) {
        let mut on_disk = self.setup_on_disk.lock().unwrap_or_else(|p| p.into_inner());
        if !*on_disk || !self.pipeline.view().chain.state().is_owned() {
            return;
        }
        match crate::lifecycle::spend_setup(&self.dir, &self.device_id()) {
            Ok(()) => *on_disk = false,
            // Tried again after the next check of the nodes.
            Err(e) => tracing::error!(error = %e, "erasing the spent setup secret failed"),
        }
    }

    fn retry_ms(&self) -> u64 {
        (self.knobs.timeout_ms * 3).max(5_000)
    }

    /// Asks the nodes for the device's chain, merges what verifies, records how fresh the view
    /// is, and republishes the chain to nodes that lack it.
    pub async fn refresh(&self) {
        let _one_at_a_time = self.refresh_lock.lock().await;
        let now = self.pipeline.clock().now_ms();
        let cached = {
            let view = self.pipeline.view();
            CachedView {
                chain: view.chain.clone(),
                verified_at_ms: view.checks.last_quorum_ms.unwrap_or(0),
            }
        };
        let device = self.device_id();
        let result = self
            .quorum
            .check(&device, Some(&cached), now.unwrap_or(0), &mut OsRng)
            .await;
        // Ticks after the answers came in: the quorum vouches for the chain as of now.
        let ticks = self.pipeline.clock().ticks_ms();
        let boot = self.pipeline.boot_id().to_owned();
        let quorum_min = self.quorum.config().min_answers;
        let all_nodes = self.quorum.nodes().to_vec();
        let updated = self.pipeline.update_view(|view| -> crate::Result<Vec<String>> {
            view.checks.last_check_ms = Some(ticks);
            let mut behind: Vec<String> = Vec::new();
            match result {
                Ok(checked) => {
                    // Merged into the view as it is now, not the snapshot the check started
                    // from: ops an owner pushed meanwhile stay.
                    let merged = view.chain.merge(checked.chain.ops());
                    if merged.added > 0 {
                        let state = view.chain.state();
                        tracing::info!(
                            seq = state.seq,
                            owners = state.owners.len(),
                            "ownership chain extended"
                        );
                    }
                    // Rivals the endorsement settled count too: someone signed another history
                    // (a leaked claim code, owners signing twice), and the owners must hear it.
                    let mut forks = checked.forks.len() + checked.settled.len();
                    if let Some(fork) = &merged.fork {
                        forks += 1;
                        tracing::error!(seq = fork.seq, "the nodes' chain forks from the one pushed to this device");
                    }
                    if let Some(fork) = &merged.switched {
                        forks += 1;
                        tracing::error!(seq = fork.seq, "a branch this device did not endorse was replaced by the one it did");
                    }
                    match checked.freshness {
                        Freshness::Quorum { answers } => {
                            view.checks.record_quorum(&boot, ticks);
                            view.checks.last_answers = answers;
                            view.checks.last_needed = quorum_min;
                            view.checks.last_problem = None;
                        }
                        Freshness::Degraded {
                            answers, needed, ..
                        } => {
                            view.checks.last_answers = answers;
                            view.checks.last_needed = needed;
                            view.checks.last_problem = Some(format!(
                                "only {answers} of the {needed} nodes needed gave valid answers; using the cached view"
                            ));
                            tracing::warn!(answers, needed, "ownership check degraded");
                        }
                    }
                    if forks > 0 {
                        view.checks.forks = view.checks.forks.max(forks);
                        tracing::error!(
                            forks,
                            "fork in this device's ownership chain: two valid histories exist"
                        );
                    }
                    behind = checked
                        .reports
                        .iter()
                        .filter(|r| {
                            matches!(r.outcome, NodeOutcome::Stale { .. } | NodeOutcome::Unknown)
                        })
                        .map(|r| r.node.clone())
                        .collect();
                }
                Err(latchkey_quorum::Error::UnknownDevice { .. }) => {
                    view.checks.last_problem = Some("no node knows this device yet".into());
                    behind = all_nodes;
                }
                Err(e) => {
                    view.checks.last_problem = Some(e.to_string());
                    tracing::warn!(error = %e, "ownership check failed");
                }
            }
            Ok(behind)
        });
        self.spend_setup_if_claimed();
        self.endorse();
        match updated {
            Ok(behind) if !behind.is_empty() => {
                let _ = self.publish_to(&behind).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "saving the ownership view failed"),
        }
        self.publish_pending().await;
    }

    /// The device's countersignature (docs/PROTOCOL.md §3.3): every claim, amend-owners or
    /// transfer of its verified chain that it has not endorsed gets an endorse op signed by the
    /// identity key, appended to the device's own chain — durably, before any node is told —
    /// and marked for publishing. Every verifier prefers the branch the device endorsed, so a
    /// rival claim signed with a leaked setup key cannot fork the device away from its owners,
    /// and the device, having endorsed a branch, never leaves it. Returns how many it made.
    pub fn endorse(&self) -> usize {
        if unendorsed(&self.pipeline.view().chain).is_empty() {
            return 0;
        }
        // Issue time only informs people; an unset clock falls back to its high-water mark.
        let now = self
            .pipeline
            .clock()
            .now_ms()
            .unwrap_or_else(|| self.store().clock_mark().unwrap_or(0));
        let identity = &self.pipeline.keys().identity;
        let made = self.pipeline.update_view(|view| -> Result<Vec<u64>> {
            let mut made = Vec::new();
            for seq in unendorsed(&view.chain) {
                let Some(mut op) = view.chain.endorsement(seq, now) else {
                    continue;
                };
                op.sign(identity);
                view.chain.append(op)?;
                made.push(seq);
            }
            if !made.is_empty() {
                view.checks.unpublished = view.checks.unpublished.wrapping_add(1);
            }
            Ok(made)
        });
        match made {
            Ok(seqs) => {
                if !seqs.is_empty() {
                    tracing::info!(?seqs, "endorsed the ownership changes this device accepted");
                }
                seqs.len()
            }
            Err(e) => {
                tracing::error!(error = %e, "endorsing the ownership change failed; retried at the next check");
                0
            }
        }
    }

    /// Publishes the chain to every node while it holds ops of the device's own that no node
    /// has stored yet (an endorsement); called after every check, so it is retried until one
    /// node takes them (nodes replicate to each other from there).
    pub async fn publish_pending(&self) {
        let pending = self.pipeline.view().checks.unpublished;
        if pending == 0 {
            return;
        }
        let nodes = self.quorum.nodes().to_vec();
        if self.publish_to(&nodes).await == 0 {
            return;
        }
        let cleared = self.pipeline.update_view(|view| -> Result<()> {
            // Something made meanwhile is published by the next round.
            if view.checks.unpublished == pending {
                view.checks.unpublished = 0;
            }
            Ok(())
        });
        if let Err(e) = cleared {
            tracing::error!(error = %e, "saving the ownership view failed");
        }
    }

    /// Ops an owner hands the device directly (`POST /v1/ops`): verified as an extension of
    /// the device's own verified chain — the sender is not trusted, only signatures are — and
    /// stored; ops it holds already are skipped. All or nothing: an op that does not verify,
    /// or a fork, changes nothing. A push is not a quorum (it proves the ops exist, not that
    /// none newer does), so it never makes a stale view fresh; it can only bring news the
    /// nodes could not deliver, such as a revocation while the uplink is cut. New ops are
    /// republished to the nodes in the background.
    pub fn push_ops(self: &Arc<Self>, ops: Vec<Op>) -> Result<Pushed, PushRefused> {
        // A fork is refused but remembered (the view is saved with the alarm, chain unchanged).
        let pushed = self
            .pipeline
            .update_view(|view| -> Result<Result<Pushed, PushRefused>, PushRefused> {
                let mut chain = view.chain.clone();
                let report = chain.merge(&ops);
                if let Some(fork) = report.fork {
                    view.checks.forks = view.checks.forks.saturating_add(1);
                    tracing::error!(seq = fork.seq, "ops pushed to the device fork its chain");
                    return Ok(Err(PushRefused::Conflict(format!(
                        "op {} differs from the one this device holds at that position (a fork: two valid histories); \
                         the device keeps its own and reports the fork to its owners",
                        fork.seq
                    ))));
                }
                if let Some(rival) = report.outvoted {
                    // A valid rival history (a claim signed with a leaked setup key, or owners
                    // who signed two changes): it lost to the branch this device endorsed, but
                    // its owners must hear that it exists.
                    view.checks.forks = view.checks.forks.saturating_add(1);
                    tracing::error!(seq = rival.seq, "ops pushed to the device are a rival history it did not endorse");
                    return Ok(Err(PushRefused::Conflict(format!(
                        "op {} is a rival to the one this device endorsed at that position; \
                         the device keeps the branch it endorsed and reports the rival to its owners",
                        rival.seq
                    ))));
                }
                if let Some(e) = report.invalid {
                    return Err(PushRefused::BadOps(format!(
                        "the ops do not extend this device's verified chain: {e}"
                    )));
                }
                // A side op the merge could not anchor (on another branch, or past the head) is
                // refused with the rest: all or nothing. One anchored on this spine but not kept
                // (an ended era's revocation, a second endorsement) is valid and skipped.
                let held: HashSet<OpId> = chain.ops().iter().map(Op::id).collect();
                let anchored_here = |op: &Op| {
                    op.body.is_side()
                        && op.seq.checked_sub(1).and_then(|s| chain.spine_op(s)).map(Op::id)
                            == Some(op.prev)
                };
                let unplaced = |op: &&Op| !held.contains(&op.id()) && !anchored_here(op);
                if let Some(op) = ops.iter().find(unplaced) {
                    return Err(PushRefused::BadOps(format!(
                        "op {} ({}) does not extend this device's verified chain: its anchor is not on the device's branch or is past its head; fetch GET /v1/chain and build on it",
                        op.seq,
                        op.body.kind()
                    )));
                }
                if let Some(fork) = &report.switched {
                    // Only towards the branch this device endorsed: its own choice, but still
                    // evidence that someone signed a rival history.
                    view.checks.forks = view.checks.forks.saturating_add(1);
                    tracing::error!(seq = fork.seq, "ops pushed to the device bring back the branch it endorsed");
                }
                view.chain = chain;
                let state = view.chain.state();
                Ok(Ok(Pushed {
                    seq: state.seq,
                    head: state.head,
                    added: report.added,
                }))
            })
            .inspect_err(|e| {
                if let PushRefused::Store(e) = e {
                    tracing::error!(error = %e, "saving pushed ops failed");
                }
            })??;
        if pushed.added > 0 {
            self.spend_setup_if_claimed();
            self.endorse();
            tracing::info!(
                seq = pushed.seq,
                added = pushed.added,
                "ops pushed by an owner on the LAN"
            );
            let agent = self.clone();
            tokio::spawn(async move {
                let nodes = agent.quorum.nodes().to_vec();
                let _ = agent.publish_to(&nodes).await;
                agent.publish_pending().await;
            });
        }
        Ok(pushed)
    }

    /// Someone on the network says the device's chain moved (an owner who just claimed it,
    /// revoked a grant or changed owners): check the nodes now instead of at the next interval.
    /// The nudge carries nothing to trust — the device asks its quorum as always — and at most
    /// one per [`NUDGE_INTERVAL_MS`] is honoured. Returns the chain's sequence afterwards, or
    /// `None` when the nudge came too soon.
    pub async fn nudge(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = self.pipeline.clock().ticks_ms().max(1);
        let last = self.last_nudge_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < NUDGE_INTERVAL_MS {
            return None;
        }
        if self
            .last_nudge_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        self.refresh().await;
        Some(self.pipeline.view().chain.state().seq)
    }

    /// Publishes the device's whole chain (genesis and any local ops, e.g. a factory reset or
    /// an endorsement) to `nodes`; a node that holds it already answers with nothing new.
    /// Returns how many nodes stored it.
    pub async fn publish_to(&self, nodes: &[String]) -> usize {
        let (ops, seq) = {
            let view = self.pipeline.view();
            (view.chain.ops().to_vec(), view.chain.state().seq)
        };
        match self.quorum.publish_to(&self.device_id(), &ops, nodes).await {
            Ok(report) => {
                tracing::info!(
                    acked = report.acked.len(),
                    failed = report.failed.len(),
                    seq,
                    "published the ownership chain"
                );
                report.acked.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing the ownership chain failed");
                match e {
                    latchkey_quorum::Error::NotEnoughAcks { acks, .. } => acks,
                    _ => 0,
                }
            }
        }
    }

    /// The housekeeping a timer runs: raise the clock mark, prune the strike register, the
    /// audit log and relay duplicates.
    fn housekeeping(&self, audit_keep: u64) {
        self.pipeline.housekeeping();
        let store = self.store();
        match self.pipeline.prune_audit(audit_keep) {
            Ok(Some(report)) => tracing::info!(
                first = report.marker.first,
                last = report.marker.last,
                unfetched = report.marker.unfetched,
                "pruned the oldest audit entries"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
        }
        let horizon = crate::clock::wall_ms().saturating_sub(RELAY_SEEN_MS);
        if let Err(e) = store.forget_relay_seen_before(horizon) {
            tracing::warn!(error = %e, "pruning relay duplicates failed");
        }
    }
}

/// The claims, amend-owners and transfers at the end of the spine that the device has not
/// endorsed, newest first. The walk back stops at the first op already endorsed or signed by
/// the identity key itself (genesis, rotate-keys, factory-reset): everything before it was
/// settled then, so each op is endorsed once.
fn unendorsed(chain: &Chain) -> Vec<u64> {
    chain
        .spine()
        .rev()
        .take_while(|op| {
            matches!(
                op.body,
                OpBody::Claim(_) | OpBody::AmendOwners(_) | OpBody::Transfer(_)
            ) && !chain.is_endorsed(op.seq)
        })
        .map(|op| op.seq)
        .collect()
}

/// What `POST /v1/ops` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub seq: u64,
    pub head: OpId,
    pub added: usize,
}

/// Why `POST /v1/ops` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum PushRefused {
    #[error("{0}")]
    BadOps(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the device could not store the ops: {0}")]
    Store(#[from] Error),
}

/// An opened command, judged at once or after the view's check with the nodes. Moved once;
/// boxing either side would only add an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Judged {
    Now(Result<Authorized, Answer>),
    AfterCheck(Fresh),
}

/// Runs a pipeline step that may read many pages or wait for the disk (a consent's durable
/// commit, an audit page) on the calling task's thread. `block_in_place` tells a
/// multi-thread runtime this worker is busy, so its other tasks move to another thread; a
/// current-thread runtime (some tests) simply runs it.
fn in_place<T>(step: impl FnOnce() -> T) -> Result<T, Refused> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| at_once(step))
        }
        _ => at_once(step),
    }
}

/// Runs a short pipeline step on the task itself: the command's cryptography and commits to
/// the WAL, a tenth of a millisecond or two. The worker is busy for that long, which a
/// second worker covers by stealing its queue; the one wait for the disk on this path, the
/// entry's fsync, goes to the blocking pool beside the actuator. A panic becomes an
/// `Internal` refusal, as from the pool.
fn at_once<T>(step: impl FnOnce() -> T) -> Result<T, Refused> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|_| {
        tracing::error!("a pipeline step panicked");
        Refused {
            stage: Stage::Action,
            code: RejectCode::Internal,
            message: "internal error; see the device log".into(),
        }
    })
}

/// Runs a pipeline step on the blocking pool (SQLite waits for the disk).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refused> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "a pipeline step panicked");
        Refused {
            stage: Stage::Action,
            code: RejectCode::Internal,
            message: "internal error; see the device log".into(),
        }
    })
}

/// Builds the agent for a device directory: keys, config, state, actuators.
pub fn load(dir: &DeviceDir) -> Result<(Agent, Config)> {
    let config = Config::load(&dir.config_path())?;
    let keys = dir.read_keys()?;
    let setup_on_disk = keys.setup.is_some() || !dir.claim_files().is_empty();
    let store = Arc::new(Store::open(&dir.db_path())?);
    let clock = SystemClock {
        trusted: config.window.trust_clock,
    };
    let mut view = match View::load(&store)? {
        Some(view) => view,
        None => {
            // Only a device never claimed can rebuild its genesis: it needs the setup key.
            let full = keys.to_device_keys().ok_or_else(|| {
                Error::NoChain(format!(
                    "{} holds no ownership chain and the device's setup key is spent; restore state.db from a backup, or run `latchkeyd reset --dir {}` (it fetches the chain from the nodes)",
                    dir.db_path().display(),
                    dir.root().display()
                ))
            })?;
            let genesis = full.genesis(&config.name, clock.now_ms().unwrap_or(0))?;
            let view = View::new(latchkey_proto::chain::Chain::from_genesis(genesis)?);
            view.save(&store)?;
            view
        }
    };
    // Ticks saved by an earlier boot mean nothing now; the up-time after the last save is
    // unknown, so a refresh interval is added to what owners carry over.
    view.adopt_boot(
        &clock.boot_id(),
        clock.ticks_ms(),
        config.quorum.refresh_secs.saturating_mul(1000),
    );
    if view.chain.device() != keys.device_id() {
        return Err(Error::CorruptChain(latchkey_proto::Error::DeviceIdMismatch));
    }
    let drivers = config.drivers().map_err(|why| Error::Config {
        path: dir.config_path(),
        why,
    })?;
    let actuators = Actuators::from_config(&config).map_err(Error::Internal)?;
    let pipeline = Pipeline::new(
        keys,
        clock,
        rand_core::OsRng,
        store,
        view,
        PipelineConfig {
            window: config.window.replay_window(),
            max_view_age_ms: config.quorum.max_view_age_secs.saturating_mul(1000),
            max_guest_staleness_ms: config.quorum.max_guest_staleness_secs.saturating_mul(1000),
            max_owner_staleness_ms: config.quorum.max_owner_staleness_secs.saturating_mul(1000),
            actions: drivers.into_keys().collect::<BTreeSet<_>>(),
            // Longer than the timer's period, which pushes it, so no command waits for it.
            lease_ms: crate::pipeline::DEFAULT_LEASE_MS.max(
                config
                    .quorum
                    .refresh_secs
                    .saturating_mul(1000)
                    .saturating_add(30_000),
            ),
        },
    );
    let quorum = QuorumClient::new(config.nodes.clone(), config.quorum.quorum_config())?;
    let mut relay_nodes = quorum.sample(config.quorum.relay_nodes.max(1), &mut OsRng);
    relay_nodes.sort();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.quorum.timeout_ms.max(1)))
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
    let (note_tx, note_rx) = crate::events::channel();
    pipeline.set_event_sink(note_tx);
    if !config.streams.is_empty() {
        let streams = crate::stream::keys::StreamKeys::open(
            pipeline.store().clone(),
            pipeline.device_id(),
            config.streams.keys().cloned(),
            crate::clock::wall_ms(),
            &mut OsRng,
        )?;
        pipeline.set_streams(Arc::new(streams));
    }
    let agent = Agent {
        event_notes: Mutex::new(Some(note_rx)),
        pipeline: Arc::new(pipeline),
        actuators,
        quorum,
        knobs: config.quorum.clone(),
        http,
        relay_nodes,
        recent: Mutex::new(RecentSet::new(RECENT_ENVELOPES)),
        refresh_lock: tokio::sync::Mutex::new(()),
        last_nudge_ms: std::sync::atomic::AtomicU64::new(0),
        dir: dir.clone(),
        setup_on_disk: Mutex::new(setup_on_disk),
    };
    Ok((agent, config))
}

/// A running agent. [`RunningAgent::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct RunningAgent {
    addr: SocketAddr,
    agent: Arc<Agent>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    tasks: Vec<JoinHandle<()>>,
    mdns: Option<crate::mdns::Advertiser>,
    _lock: DirLock,
}

impl RunningAgent {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(mdns) = self.mdns.take() {
            mdns.stop();
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // Refusals counted since the last summary are written rather than lost.
        self.agent.pipeline.flush_refusals(true);
        Ok(())
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts the agent for the device in `dir`: publishes its chain, checks ownership, serves
/// HTTP, subscribes to its mailboxes, advertises on mDNS. Returns once it serves requests.
pub async fn start(dir: &Path) -> Result<RunningAgent> {
    let dir = DeviceDir::new(dir);
    if !dir.is_initialised() {
        return Err(Error::NotInitialised(dir.root().to_owned()));
    }
    let lock = dir.lock()?;
    let (agent, config) = load(&dir)?;
    let agent = Arc::new(agent);
    // Claimed while the agent was stopped, or before it could erase the secret or endorse.
    agent.spend_setup_if_claimed();
    agent.endorse();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let app = crate::server::router(agent.clone());
    let mut stop = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });

    let mut tasks = Vec::new();
    // Publish first, so nodes know the device before owners look for it; then check.
    {
        let agent = agent.clone();
        let mut stop = shutdown_rx.clone();
        let every = Duration::from_secs(config.quorum.refresh_secs.max(1));
        let audit_keep = config.audit_keep;
        tasks.push(tokio::spawn(async move {
            let nodes = agent.quorum.sample(agent.knobs.publish_to, &mut OsRng);
            let _ = agent.publish_to(&nodes).await;
            loop {
                agent.refresh().await;
                agent.housekeeping(audit_keep);
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }));
    }
    {
        // Refusal summaries are written when their interval ends, even if no further refusal
        // arrives to close them.
        let agent = agent.clone();
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(SUMMARY_CHECK) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let p = agent.pipeline.clone();
                let _ = blocking(move || p.flush_refusals(false)).await;
            }
        }));
    }
    let notes = agent
        .event_notes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(notes) = notes {
        tasks.push(tokio::spawn(crate::events::run(
            agent.clone(),
            notes,
            shutdown_rx.clone(),
        )));
    }
    if let Some(streams) = agent.pipeline.streams() {
        tasks.extend(crate::stream::publish::start(
            agent.clone(),
            streams,
            &config,
            shutdown_rx.clone(),
        )?);
    }
    for node in agent.relay_nodes.clone() {
        tasks.push(tokio::spawn(crate::relay::poll_mailbox(
            agent.clone(),
            node,
            shutdown_rx.clone(),
        )));
    }
    let mdns = if config.mdns {
        match crate::mdns::advertise(&config.name, &agent.device_id(), addr) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "mDNS advertising failed; owners can still use the QR's addresses and relays");
                None
            }
        }
    } else {
        None
    };
    tracing::info!(%addr, device = %agent.device_id(), relays = agent.relay_nodes.len(), "agent ready");
    Ok(RunningAgent {
        addr,
        agent,
        shutdown: shutdown_tx,
        server: Some(server),
        tasks,
        mdns,
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_set_is_bounded() {
        let mut s = RecentSet::new(2);
        assert!(s.insert([1; 32]));
        assert!(!s.insert([1; 32]));
        assert!(s.insert([2; 32]));
        assert!(s.insert([3; 32]));
        assert!(s.insert([1; 32]), "oldest forgotten");
        assert!(!s.insert([3; 32]));
    }
}
