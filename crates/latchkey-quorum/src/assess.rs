//! The pure part of a quorum check: given what each sampled node answered, verify every answer,
//! merge them into the freshest valid view, and say which nodes were fresh, stale, lying or on
//! another branch. No I/O, so every adversarial case is testable without a network.

use latchkey_proto::chain::{Chain, ForkEvidence, Op};
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
    /// Every unresolved fork seen (the device endorsed neither branch), with both ops as
    /// evidence. Never resolved silently: the view keeps the branch it had.
    pub forks: Vec<ForkEvidence>,
    /// Rival branches the device's endorsement settled (e.g. a second claim made with a leaked
    /// setup key): `ours` is the endorsed op the view holds, `theirs` the one that lost.
    pub settled: Vec<ForkEvidence>,
    /// Where the device's endorsed branch replaced part of `known`: `ours` is the op `known`
    /// held, `theirs` the endorsed one `chain` holds now. The caller tells its user.
    pub switched: Vec<ForkEvidence>,
    pub valid_answers: usize,
}

/// Verifies and merges `answers` for `device`, starting from `known` (a chain this party
/// verified before) if any.
///
/// Two answers that extend `known` in conflicting ways the device's endorsement does not
/// settle are both reported as a fork (past `known`'s head) and the longest is in the view: a
/// device must pick one to endorse, while an owner keeps its own chain instead.
pub fn assess(
    device: &DeviceId,
    known: Option<&Chain>,
    answers: Vec<(String, Answer)>,
) -> Assessment {
    struct Candidate {
        node_index: usize,
        chain: Chain,
    }
    let mut reports: Vec<NodeReport> = Vec::with_capacity(answers.len());
    let mut forks: Vec<ForkEvidence> = Vec::new();
    let mut settled: Vec<ForkEvidence> = Vec::new();
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
                    if let Some(fork) = report.fork {
                        push_fork(&mut forks, fork);
                        NodeOutcome::Forked
                    } else if let Some(lost) = report.outvoted {
                        // It serves a branch the device did not endorse; ours stands.
                        push_fork(&mut settled, lost);
                        NodeOutcome::Forked
                    } else if let Some(invalid) = report.invalid {
                        // Valid ops before the bad one are still good data: signatures cannot
                        // be forged, whoever relays them.
                        if report.added > 0 {
                            candidates.push(Candidate {
                                node_index: index,
                                chain,
                            });
                        }
                        NodeOutcome::Lied(invalid.to_string())
                    } else {
                        candidates.push(Candidate {
                            node_index: index,
                            chain,
                        });
                        NodeOutcome::Fresh // settled below against the best view
                    }
                }
            },
        };
        reports.push(NodeReport { node, outcome });
    }

    // Every valid view is merged into one, longest first: side ops (revocations, endorsements)
    // are a union, so a node that withholds one is outvoted by any node that has it; a fork is
    // settled by the device's endorsement or reported.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(candidates[i].chain.len()), i));
    let mut best: Option<Chain> = order
        .first()
        .map(|&i| candidates[i].chain.clone())
        .or_else(|| known.cloned());
    if let Some(best) = &mut best {
        for &i in order.iter().skip(1) {
            let report = best.merge(candidates[i].chain.ops());
            if let Some(fork) = report.fork {
                push_fork(&mut forks, fork);
            }
            for lost in report.outvoted.into_iter().chain(report.switched) {
                push_fork(&mut settled, lost);
            }
        }
    }
    // A fork one answer showed may be settled by an endorsement another answer carried.
    if let Some(best) = &best {
        let (now_settled, open): (Vec<_>, Vec<_>) =
            forks.into_iter().partition(|f| is_settled(best, f));
        forks = open;
        for f in now_settled {
            push_fork(&mut settled, f);
        }
    }
    let switched: Vec<ForkEvidence> = match (known, &best) {
        (Some(k), Some(b)) => first_difference(k, b).into_iter().collect(),
        _ => Vec::new(),
    };

    if let Some(best) = &best {
        let best_seq = best.state().seq;
        let best_side: Vec<latchkey_proto::chain::OpId> = best.side_ids().collect();
        for c in &candidates {
            // Op ids are remembered by each verified chain: comparing them hashes nothing.
            let diverge = c
                .chain
                .spine_ids()
                .zip(best.spine_ids())
                .position(|(a, b)| a != b);
            let report = &mut reports[c.node_index];
            match diverge {
                Some(at) => {
                    let evidence = ForkEvidence {
                        seq: at as u64,
                        ours: best.spine_op(at as u64).expect("zipped").clone(),
                        theirs: c.chain.spine_op(at as u64).expect("zipped").clone(),
                    };
                    let endorsed = (at..best.len()).any(|seq| best.is_endorsed(seq as u64));
                    if endorsed {
                        push_fork(&mut settled, evidence);
                    } else {
                        push_fork(&mut forks, evidence);
                    }
                    report.outcome = NodeOutcome::Forked;
                }
                None if matches!(report.outcome, NodeOutcome::Lied(_)) => {}
                None if c.chain.state().seq < best_seq => {
                    report.outcome = NodeOutcome::Stale {
                        their_seq: Some(c.chain.state().seq),
                    };
                }
                None => {
                    // Same spine: it is fresh only if it also served every side op the others
                    // did (a node withholding a revocation is stale, not fresh).
                    let theirs: std::collections::HashSet<latchkey_proto::chain::OpId> =
                        c.chain.side_ids().collect();
                    report.outcome = if best_side.iter().all(|id| theirs.contains(id)) {
                        NodeOutcome::Fresh
                    } else {
                        NodeOutcome::Stale {
                            their_seq: Some(c.chain.state().seq),
                        }
                    };
                }
            }
        }
    }

    let valid_answers = reports
        .iter()
        .filter(|r| r.outcome.is_valid_answer())
        .count();
    Assessment {
        chain: best,
        reports,
        forks,
        settled,
        switched,
        valid_answers,
    }
}

/// `fork` no longer stands in `view`: the device endorsed `view`'s branch at the fork's place
/// or after it, so every unendorsed rival there lost (one of the fork's two ops, or both to a
/// third).
fn is_settled(view: &Chain, fork: &ForkEvidence) -> bool {
    view.spine_op(fork.seq).is_some() && (fork.seq..view.len() as u64).any(|s| view.is_endorsed(s))
}

/// Where `view`'s spine left `known`'s: the op `known` held there and the one `view` holds now.
fn first_difference(known: &Chain, view: &Chain) -> Option<ForkEvidence> {
    let at = known
        .spine_ids()
        .zip(view.spine_ids())
        .position(|(a, b)| a != b)? as u64;
    Some(ForkEvidence {
        seq: at,
        ours: known.spine_op(at)?.clone(),
        theirs: view.spine_op(at)?.clone(),
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
