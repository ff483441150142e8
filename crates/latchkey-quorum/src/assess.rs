//! The pure part of a quorum check: given what each sampled node answered, verify every answer,
//! merge them into the freshest valid view, and say which nodes were fresh, stale, lying or on
//! another branch. No I/O, so every adversarial case is testable without a network.

use latchkey_proto::chain::{Chain, ForkEvidence, Op, OpId};
use latchkey_proto::keys::DeviceId;

/// What one node said (or failed to say).
#[derive(Debug, Clone)]
pub enum Answer {
    /// The ops it holds from the sequence asked for (possibly none).
    Ops(Vec<Op>),
    /// It does not know the device at all.
    UnknownDevice,
    /// The bytes were not a valid op list.
    Malformed(String),
    /// Connection error or an unexpected status.
    Failed(String),
    TimedOut,
}

/// How one node's answer compared with the merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    /// It served the head of the merged view.
    Fresh,
    /// It served a valid prefix of the merged view (withholding or lagging).
    Stale {
        their_seq: Option<u64>,
    },
    /// It knows nothing of the device though others do (or nobody does).
    Unknown,
    /// It served something that does not verify: forged, tampered, or another device's chain.
    Lied(String),
    /// It served a valid op different from the merged view's at the same place.
    Forked,
    Failed(String),
    TimedOut,
}

impl NodeOutcome {
    /// Whether the answer was verifiable data (counts toward the minimum number of answers).
    pub fn is_valid_answer(&self) -> bool {
        matches!(
            self,
            NodeOutcome::Fresh
                | NodeOutcome::Stale { .. }
                | NodeOutcome::Unknown
                | NodeOutcome::Forked
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node: String,
    pub outcome: NodeOutcome,
}

/// The merged result of one round of answers.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The longest valid chain seen (or the known one), `None` if nobody knows the device.
    pub chain: Option<Chain>,
    pub reports: Vec<NodeReport>,
    /// Every unresolved fork seen, with both ops as evidence. Never resolved silently.
    pub forks: Vec<ForkEvidence>,
    /// Forks the door settled against `known`: its endorsed branch replaced the caller's
    /// (`ours` is the op the caller held, `theirs` the endorsed one now in `chain`).
    pub switched: Vec<ForkEvidence>,
    pub valid_answers: usize,
}

/// Verifies and merges `answers` for `device`, starting from `known` (a chain this party
/// verified before) if any.
///
/// `known` is the caller's own branch, and the merge follows the fork-choice rule of
/// docs/PROTOCOL.md §3.3 ([`Chain::merge`]): a branch the device endorsed replaces an
/// unendorsed one (reported in `switched` when it replaces part of `known`); otherwise ours is
/// kept and the fork reported. When two answers extend `known` in conflicting ways that nothing
/// settles, neither is adopted: the result is `known` with the valid side ops (revocations,
/// endorsements) the answers carried. A caller with no chain of its own gets the longest
/// answer and the fork, and must not act on it.
pub fn assess(
    device: &DeviceId,
    known: Option<&Chain>,
    answers: Vec<(String, Answer)>,
) -> Assessment {
    struct Candidate {
        node_index: usize,
        /// `known` (or genesis) merged with the answer.
        chain: Chain,
        /// The answer held a spine op that lost to ours or is in unresolved dispute with it.
        rival: bool,
    }
    let mut reports: Vec<NodeReport> = Vec::with_capacity(answers.len());
    let mut forks: Vec<ForkEvidence> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    // Honest nodes mostly serve identical bytes: verify each distinct answer once.
    let mut verified: Vec<(Vec<Op>, Verified)> = Vec::new();

    for (node, answer) in answers {
        let index = reports.len();
        let outcome = match answer {
            Answer::TimedOut => NodeOutcome::TimedOut,
            Answer::Failed(why) => NodeOutcome::Failed(why),
            Answer::Malformed(why) => NodeOutcome::Lied(format!("malformed answer: {why}")),
            Answer::UnknownDevice => NodeOutcome::Unknown,
            Answer::Ops(ops) if ops.is_empty() => match known {
                Some(_) => NodeOutcome::Stale { their_seq: None },
                None => NodeOutcome::Unknown,
            },
            Answer::Ops(ops) => match cached_verify(&mut verified, device, known, ops) {
                Err(why) => NodeOutcome::Lied(why),
                Ok((chain, report)) => {
                    let rival = report.fork.is_some() || report.outvoted.is_some();
                    if let Some(fork) = report.fork {
                        push_fork(&mut forks, fork);
                    }
                    // Valid ops before a bad one are still good data: signatures cannot be
                    // forged, whoever relays them.
                    candidates.push(Candidate {
                        node_index: index,
                        chain,
                        rival,
                    });
                    match report.invalid {
                        Some(invalid) => NodeOutcome::Lied(invalid.to_string()),
                        None => NodeOutcome::Fresh, // settled below against the merged view
                    }
                }
            },
        };
        reports.push(NodeReport { node, outcome });
    }

    // Merge every candidate into one view, longest spine first (so without a chain of our own
    // the longest answer is the base). Side ops accumulate (revocations are a union); spine
    // forks between candidates are settled by the device's endorsement, whatever the order.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(candidates[i].chain.len()));
    let mut view: Option<Chain> = known.cloned();
    let mut conflict = false;
    for &i in &order {
        let theirs = &candidates[i].chain;
        let Some(v) = view.as_mut() else {
            view = Some(theirs.clone());
            continue;
        };
        let report = v.merge(theirs.ops());
        if let Some(fork) = report.fork {
            // Both ops past our own head: two rival extensions, and nothing settles them.
            conflict |= known.is_some_and(|k| fork.seq > k.state().seq);
            push_fork(&mut forks, fork);
        }
    }
    // A fork settled later (the device endorsed one branch since) is no longer a fork.
    if let Some(v) = &view {
        forks.retain(|f| !settled(v, f));
    }
    if let (true, Some(k)) = (conflict && !forks.is_empty(), known) {
        // Keep our own chain, adopting neither extension, but take every valid side op.
        let mut kept = k.clone();
        for c in &candidates {
            let side: Vec<Op> = c.chain.side_ops().cloned().collect();
            kept.merge(&side);
        }
        view = Some(kept);
    }

    let switched = match (known, &view) {
        (Some(k), Some(v)) => first_difference(k, v).into_iter().collect(),
        _ => Vec::new(),
    };

    if let Some(view) = &view {
        let view_ids: Vec<OpId> = view.spine().map(Op::id).collect();
        for c in &candidates {
            let report = &mut reports[c.node_index];
            let theirs: Vec<OpId> = c.chain.spine().map(Op::id).collect();
            let diverges = theirs.iter().zip(&view_ids).any(|(a, b)| a != b);
            match () {
                _ if matches!(report.outcome, NodeOutcome::Lied(_)) => {}
                _ if c.rival || diverges || theirs.len() > view_ids.len() => {
                    report.outcome = NodeOutcome::Forked
                }
                _ if theirs.len() < view_ids.len() => {
                    report.outcome = NodeOutcome::Stale {
                        their_seq: Some(c.chain.state().seq),
                    }
                }
                _ => report.outcome = NodeOutcome::Fresh,
            }
        }
    }

    let valid_answers = reports
        .iter()
        .filter(|r| r.outcome.is_valid_answer())
        .count();
    Assessment {
        chain: view,
        reports,
        forks,
        switched,
        valid_answers,
    }
}

/// `fork` no longer stands in `view`: the device endorsed the branch `view` holds at that
/// place (one of the two ops is in `view`'s spine, and endorsed from there on).
fn settled(view: &Chain, fork: &ForkEvidence) -> bool {
    let Some(held) = view.spine_op(fork.seq) else {
        return false;
    };
    let id = held.id();
    (id == fork.ours.id() || id == fork.theirs.id())
        && (fork.seq..view.len() as u64).any(|s| view.is_endorsed(s))
}

/// Where `view`'s spine left `known`'s: the op `known` held there and the one `view` holds now
/// (a switch to the branch the device endorsed).
fn first_difference(known: &Chain, view: &Chain) -> Option<ForkEvidence> {
    known
        .spine()
        .zip(view.spine())
        .find(|(a, b)| a.id() != b.id())
        .map(|(ours, theirs)| ForkEvidence {
            seq: ours.seq,
            ours: ours.clone(),
            theirs: theirs.clone(),
        })
}

/// One answer's verification: the chain it leads to and what merging it found, or why it lied.
type Verified = Result<(Chain, latchkey_proto::chain::MergeReport), String>;

fn cached_verify(
    verified: &mut Vec<(Vec<Op>, Verified)>,
    device: &DeviceId,
    known: Option<&Chain>,
    ops: Vec<Op>,
) -> Verified {
    if let Some((_, result)) = verified.iter().find(|(seen, _)| *seen == ops) {
        return result.clone();
    }
    let result = verify_answer(device, known, &ops);
    verified.push((ops, result.clone()));
    result
}

fn verify_answer(
    device: &DeviceId,
    known: Option<&Chain>,
    ops: &[Op],
) -> Result<(Chain, latchkey_proto::chain::MergeReport), String> {
    if let Some(op) = ops.iter().find(|op| op.device != *device) {
        return Err(format!(
            "served an op of another device ({})",
            op.device.short()
        ));
    }
    let mut chain = match known {
        Some(k) => k.clone(),
        None => {
            let genesis = ops[0].clone();
            if genesis.seq != 0 {
                return Err("served a chain that does not start at genesis".into());
            }
            Chain::from_genesis(genesis).map_err(|e| e.to_string())?
        }
    };
    let report = chain.merge(ops);
    Ok((chain, report))
}

fn push_fork(forks: &mut Vec<ForkEvidence>, fork: ForkEvidence) {
    let same = |f: &ForkEvidence| {
        f.seq == fork.seq
            && ((f.ours.id() == fork.ours.id() && f.theirs.id() == fork.theirs.id())
                || (f.ours.id() == fork.theirs.id() && f.theirs.id() == fork.ours.id()))
    };
    if !forks.iter().any(same) {
        forks.push(fork);
    }
}
