//! Two valid histories of one door, in plain words. Forks are settled by the door itself
//! (docs/PROTOCOL.md §3.3: every verifier prefers the branch the device endorsed), so the
//! owner core never stops on one: it keeps working on the chain it verified before, takes the
//! door's branch when the door endorsed it, and keeps an alarm per device for the CLI and the
//! app while the dispute lasts.
//!
//! Two kinds reach people:
//! - **unresolved**: the nodes serve two valid, conflicting changes and the door has endorsed
//!   neither (or, impossibly for an honest door, both). This profile keeps the history it had.
//! - **switched**: the door endorsed the other branch, so this profile moved to it and says
//!   what changed. Kept for [`SWITCH_NOTICE_MS`] so it is seen even if it happened while
//!   nobody looked.

use latchkey_proto::chain::{Chain, ForkEvidence, Op};
use latchkey_proto::keys::{DeviceId, PublicKey};
use latchkey_quorum::{Freshness, OwnershipView};

use crate::error::Result;
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// How long a "switched" notice stays after the last check that saw the switch.
pub const SWITCH_NOTICE_MS: u64 = 7 * 24 * 3600 * 1000;

/// Whether the door settled the fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkKind {
    /// Nobody settled it; this profile keeps its own branch.
    Unresolved,
    /// The door endorsed the other branch; this profile switched to it.
    Switched,
}

impl ForkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForkKind::Unresolved => "unresolved",
            ForkKind::Switched => "switched",
        }
    }

    pub fn parse(text: &str) -> Option<ForkKind> {
        match text {
            "unresolved" => Some(ForkKind::Unresolved),
            "switched" => Some(ForkKind::Switched),
            _ => None,
        }
    }
}

/// A fork alarm as kept in the profile store, one per device (the newest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkAlarm {
    pub device: DeviceId,
    pub kind: ForkKind,
    /// The chain position both ops claim.
    pub seq: u64,
    /// The op this profile holds (for a switch: the one it held before).
    pub ours: Op,
    /// The other branch's op (for a switch: the one the door endorsed, now held).
    pub theirs: Op,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// A fork alarm worded for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkWords {
    /// One line.
    pub title: String,
    /// What happened.
    pub meaning: String,
    /// What to do about it.
    pub what_to_do: String,
}

impl ForkAlarm {
    pub fn from_evidence(
        device: DeviceId,
        kind: ForkKind,
        evidence: &ForkEvidence,
        now_ms: u64,
    ) -> Self {
        ForkAlarm {
            device,
            kind,
            seq: evidence.seq,
            ours: evidence.ours.clone(),
            theirs: evidence.theirs.clone(),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
        }
    }

    /// Same dispute (the same two ops, in either role).
    pub fn same_ops(&self, other: &ForkAlarm) -> bool {
        let (a, b) = (self.ours.id(), self.theirs.id());
        let (c, d) = (other.ours.id(), other.theirs.id());
        (a == c && b == d) || (a == d && b == c)
    }

    /// The alarm in plain words. `me` is this profile's owner key, if it has one; `still_owner`
    /// whether the chain now held makes it an owner.
    pub fn words(&self, device_name: &str, me: Option<&PublicKey>, still_owner: bool) -> ForkWords {
        let ours = describe(&self.ours, me);
        let theirs = describe(&self.theirs, me);
        let step = self.seq;
        match self.kind {
            ForkKind::Unresolved => ForkWords {
                title: format!("Two different histories of {device_name} exist"),
                meaning: format!(
                    "The registry nodes hold two valid but conflicting changes at step {step} of \
                     who owns {device_name}: {ours} and {theirs}. Both carry valid signatures, \
                     so someone holding an owner's key (or the door's old setup code) signed \
                     the one you did not expect. Your door has not confirmed either yet. This \
                     app keeps using the history it had already checked."
                ),
                // The app shows these words too, so they name no command; the CLI adds its own.
                what_to_do: "You can keep opening and inviting as before. If neither you nor a \
                             co-owner made both changes, a co-owner's key is lost or stolen: \
                             transfer ownership to fresh keys. The door confirms the transfer it \
                             accepts, and that ends the dispute. Until then this alarm stays."
                    .to_owned(),
            },
            ForkKind::Switched => ForkWords {
                title: format!("{device_name} confirmed a different history"),
                meaning: format!(
                    "Two conflicting changes were made at step {step} of who owns \
                     {device_name}: {ours}, which this app held, and {theirs}. The door itself \
                     endorsed {theirs_short}, so this app switched to it{owner}.",
                    theirs_short = short_kind(&self.theirs),
                    owner = if still_owner {
                        "; you are still an owner"
                    } else {
                        "; you are no longer an owner"
                    }
                ),
                what_to_do: if still_owner {
                    "If you or a co-owner wanted the change this app held, make it again. If none \
                     of you made the one the door confirmed, a co-owner's key is lost or stolen: \
                     transfer ownership to fresh keys."
                        .into()
                } else {
                    "If you did not agree to this, ask the other owners; if none of them made \
                     it, the door must be factory-reset on the device and claimed again."
                        .into()
                },
            },
        }
    }
}

/// The chain to keep after a check: the view, unless it adopted one of two rival extensions
/// of `known` that the door has not settled (both ops past `known`'s head). Then `known` stays,
/// taking only the valid side ops (revocations, endorsements) the nodes served: the owner
/// waits for the door to choose instead of following whichever rival a node served first.
pub(crate) fn own_branch(known: &Chain, view: &OwnershipView) -> Chain {
    let head = known.state().seq;
    if !view.forks.iter().any(|f| f.seq > head) {
        return view.chain.clone();
    }
    let mut kept = known.clone();
    let side: Vec<Op> = view.chain.side_ops().cloned().collect();
    kept.merge(&side);
    kept
}

impl Profile {
    /// The device's fork alarm, if one stands (a "switched" notice expires after
    /// [`SWITCH_NOTICE_MS`]).
    pub fn fork_alarm(&self, device: &DeviceId) -> Result<Option<ForkAlarm>> {
        Ok(self.store.fork_alarm(device)?.filter(|a| {
            a.kind == ForkKind::Unresolved
                || self.now_ms().saturating_sub(a.last_seen_ms) <= SWITCH_NOTICE_MS
        }))
    }

    /// Keeps what an ownership check found about forks: a switch to the door's endorsed branch
    /// or an unresolved fork becomes the device's alarm (its first sighting kept while the same
    /// two ops are in dispute); a check that had a quorum and saw neither clears an unresolved
    /// alarm, since the nodes asked no longer serve the other branch past what this profile
    /// holds.
    pub(crate) fn note_forks(&self, device: &DeviceRecord, view: &OwnershipView) -> Result<()> {
        let now = self.now_ms();
        let found = view
            .switched
            .first()
            .map(|e| (ForkKind::Switched, e))
            .or_else(|| view.forks.first().map(|e| (ForkKind::Unresolved, e)));
        let standing = self.store.fork_alarm(&device.id)?;
        match found {
            Some((kind, evidence)) => {
                let mut alarm = ForkAlarm::from_evidence(device.id, kind, evidence, now);
                if let Some(old) = standing.filter(|old| old.same_ops(&alarm)) {
                    alarm.first_seen_ms = old.first_seen_ms;
                }
                tracing::warn!(device = %device.id, seq = alarm.seq, kind = kind.as_str(), "fork in the ownership chain");
                self.store.put_fork_alarm(&alarm)
            }
            None => match standing {
                Some(old)
                    if old.kind == ForkKind::Unresolved
                        && matches!(view.freshness, Freshness::Quorum { .. }) =>
                {
                    self.store.delete_fork_alarm(&device.id)
                }
                Some(old)
                    if old.kind == ForkKind::Switched
                        && now.saturating_sub(old.last_seen_ms) > SWITCH_NOTICE_MS =>
                {
                    self.store.delete_fork_alarm(&device.id)
                }
                _ => Ok(()),
            },
        }
    }
}

fn short_kind(op: &Op) -> &'static str {
    match op.body.kind() {
        "claim" => "the other claim",
        "amend-owners" => "the other change of owners",
        "transfer" => "the other transfer",
        "rotate-keys" => "the other key rotation",
        "factory-reset" => "the other factory reset",
        _ => "the other change",
    }
}

/// An op in a few words, naming who signed it.
fn describe(op: &Op, me: Option<&PublicKey>) -> String {
    let what = match op.body.kind() {
        "claim" => "a claim",
        "amend-owners" => "a change of owners",
        "transfer" => "a transfer to new owners",
        "revoke-grant" => "a revocation",
        "rotate-keys" => "a key rotation",
        "factory-reset" => "a factory reset",
        "endorse" => "the door's endorsement",
        _ => "a change",
    };
    let by_me = me.is_some_and(|k| op.signatures.iter().any(|s| s.signer == *k));
    let signers = op.signatures.len();
    if by_me {
        format!("{what} you signed")
    } else {
        format!("{what} signed by {signers} key(s) other than yours")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_proto::chain::{OpBody, OwnerSet};
    use latchkey_testkit::{person, TestDevice};

    fn fork() -> (TestDevice, ForkEvidence) {
        let (alice, mallory) = (person(1), person(2));
        let mut d = TestDevice::new(1, "Front door");
        d.claim(&[&alice, &mallory], 1);
        let mine = d.op(
            OpBody::AmendOwners(OwnerSet {
                owners: latchkey_testkit::sorted(&[&alice, &mallory]),
                threshold: 2,
            }),
            &[&alice],
        );
        let theirs = d.op(
            OpBody::AmendOwners(OwnerSet {
                owners: vec![mallory.public_key()],
                threshold: 1,
            }),
            &[&mallory],
        );
        let evidence = ForkEvidence {
            seq: mine.seq,
            ours: mine,
            theirs,
        };
        (d, evidence)
    }

    #[test]
    fn an_unresolved_fork_says_work_goes_on_and_what_ends_it() {
        let (d, evidence) = fork();
        let alarm = ForkAlarm::from_evidence(d.chain.device(), ForkKind::Unresolved, &evidence, 5);
        let words = alarm.words("Front door", Some(&person(1).public_key()), true);
        assert!(words
            .title
            .contains("Two different histories of Front door"));
        assert!(
            words.meaning.contains("has not confirmed either"),
            "{}",
            words.meaning
        );
        assert!(words.meaning.contains("a change of owners you signed"));
        assert!(words
            .meaning
            .contains("signed by 1 key(s) other than yours"));
        assert!(words.what_to_do.contains("keep opening"));
        assert!(words
            .what_to_do
            .contains("transfer ownership to fresh keys"));
        // The app shows these words too: no command-line command in them.
        assert!(!words.what_to_do.contains('`'), "{}", words.what_to_do);
        assert!(
            !words.what_to_do.contains("latchkey "),
            "{}",
            words.what_to_do
        );
    }

    #[test]
    fn a_switch_says_whether_you_are_still_an_owner() {
        let (d, evidence) = fork();
        let alarm = ForkAlarm::from_evidence(d.chain.device(), ForkKind::Switched, &evidence, 5);
        let me = person(1).public_key();
        let lost = alarm.words("Front door", Some(&me), false);
        assert!(
            lost.meaning.contains("no longer an owner"),
            "{}",
            lost.meaning
        );
        assert!(lost.what_to_do.contains("factory-reset"));
        let kept = alarm.words("Front door", Some(&me), true);
        assert!(kept.meaning.contains("still an owner"));
        assert!(kept.what_to_do.contains("fresh keys"));
    }

    #[test]
    fn the_same_dispute_is_recognised_either_way_round() {
        let (d, evidence) = fork();
        let a = ForkAlarm::from_evidence(d.chain.device(), ForkKind::Unresolved, &evidence, 1);
        let flipped = ForkEvidence {
            seq: evidence.seq,
            ours: evidence.theirs.clone(),
            theirs: evidence.ours.clone(),
        };
        let b = ForkAlarm::from_evidence(d.chain.device(), ForkKind::Unresolved, &flipped, 2);
        assert!(a.same_ops(&b));
        assert_eq!(
            ForkKind::parse(ForkKind::Switched.as_str()),
            Some(ForkKind::Switched)
        );
        assert_eq!(ForkKind::parse("nonsense"), None);
    }
}
