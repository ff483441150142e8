//! The reserved owner-only action `latchkey.consent` (docs/PROTOCOL.md §14): its argument is
//! one consent log entry, which the device judges against its own view of the ownership
//! chain and the entries it already holds, then records (rotating a stream key when an active
//! consent ends) before it answers.
//!
//! **The device's log may have gaps.** An owner sends each entry to the device when it is
//! appended on the nodes; a device that was offline then never sees it. So:
//! - the next entry after a gap-free prefix is checked as the nodes check it
//!   ([`ConsentLog::check_next`]: seq, prev hash, signer a current owner at a current-era
//!   anchor, the action's rules);
//! - an entry further ahead (the device missed some) is accepted **on its own verification**:
//!   for this device, signed by a current owner over a current-era anchor, its hash links
//!   checked against whichever neighbours the device holds, and the action's rules checked
//!   against what the device knows. A revoke or expiry of a consent the device never saw given
//!   is then recorded with no other effect (the provider never got a key from this device),
//!   and if the missing `Given` arrives later it is recorded as already ended — so an offline
//!   device still learns a later revoke and never hands out a key for a withdrawn consent.
//!   Without a gap, an end of an unknown consent is refused.
//! - An entry at a sequence number already held is **accepted and changes nothing** when it
//!   is byte for byte the entry held (an owner resending after a lost answer, or a replay:
//!   either way the device already acted on it), and refused when it differs (a fork of the
//!   log: the first one seen stays). Answering the resend "accepted" lets any owner app treat
//!   it as delivered without reading the device's words.

use std::collections::BTreeMap;

use latchkey_proto::chain::Chain;
use latchkey_proto::command::RejectCode;
use latchkey_proto::consent::{ConsentAction, ConsentEntry, ConsentId, ConsentLog};

use crate::stream::keys::{Effect, EndKind, HeldConsent, StreamKeys};

/// What the device does with an entry it does not refuse.
#[derive(Debug)]
pub enum Verdict {
    /// This very entry is already held: answer accepted, record nothing, rotate nothing.
    AlreadyHeld,
    /// A new entry: record it with this effect.
    Record(Effect),
}

/// Why an entry is refused: the code (23 `UnknownStream`, 24 `ConsentRefused`, 17
/// `Internal`) and the words the owner sees.
pub type Refusal = (RejectCode, String);

fn refused(why: impl Into<String>) -> Refusal {
    (RejectCode::ConsentRefused, why.into())
}

/// Judges `entry` for this device at `now_ms` (its trusted clock, if any): whether it is
/// already held, what recording it changes, or why it is refused. Writes nothing.
pub fn judge(
    keys: &StreamKeys,
    chain: &Chain,
    entry: &ConsentEntry,
    now_ms: Option<u64>,
) -> Result<Verdict, Refusal> {
    if entry.device != chain.device() {
        return Err(refused(format!(
            "the consent entry is for device {}, not this one ({})",
            entry.device,
            chain.device()
        )));
    }
    let held = keys.held_entries().map_err(internal)?;
    if let Some(h) = held.get(&entry.seq) {
        // The whole entry, signature included (`hash()` leaves the signature out): only the
        // very bytes the device acted on count as "already held".
        if h == entry {
            return Ok(Verdict::AlreadyHeld);
        }
        return Err(refused(format!(
            "another consent entry {} is already recorded here (two entries at one sequence number: a fork of the consent log); the first one stays",
            entry.seq
        )));
    }
    judge_new(keys, chain, entry, now_ms, &held).map(Verdict::Record)
}

fn internal(e: crate::Error) -> Refusal {
    tracing::error!(error = %e, "reading the consent state failed");
    (
        RejectCode::Internal,
        "the device could not read its consent state; see the device log".to_owned(),
    )
}

/// Judges an entry at a sequence number the device does not hold yet.
fn judge_new(
    keys: &StreamKeys,
    chain: &Chain,
    entry: &ConsentEntry,
    now_ms: Option<u64>,
    held: &BTreeMap<u64, ConsentEntry>,
) -> Result<Effect, Refusal> {
    let prefix = gap_free_prefix(held);
    let contiguous = entry.seq == prefix + 1 && held.range(entry.seq..).next().is_none();
    let mut checked = false;
    if contiguous {
        let entries: Vec<ConsentEntry> = held.values().cloned().collect();
        // A prefix that no longer verifies as a whole (its signers' era ended) is judged
        // entry by entry, as after a gap.
        if let Ok(log) = ConsentLog::verify(chain, entries) {
            log.check_next(chain, entry)
                .map_err(|e| refused(format!("the consent entry does not verify: {e}")))?;
            checked = true;
        }
    }
    if !checked {
        verify_alone(chain, entry, held)?;
    }
    let consents = keys.consents().map_err(internal)?;
    let known = |id: &ConsentId| consents.iter().find(|c| c.id == *id);
    let gap_below = prefix + 1 < entry.seq;
    match &entry.action {
        ConsentAction::Given(signed) => {
            let request = signed.request();
            if !checked {
                signed
                    .verify()
                    .map_err(|e| refused(format!("the provider's request does not verify: {e}")))?;
                if request.device != chain.device() {
                    return Err(refused("the consent request names another device"));
                }
            }
            if !keys.publishes(&request.stream) {
                return Err((
                    RejectCode::UnknownStream,
                    format!(
                        "this device publishes no stream \"{}\" (it publishes: {})",
                        request.stream,
                        keys.streams()
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            let id = signed.id();
            if known(&id).is_some() {
                return Err(refused(format!("consent {id} was already given")));
            }
            let time = now_ms.unwrap_or(entry.time_ms).max(entry.time_ms);
            // A later entry the device holds may already end it (it arrived first).
            let ended = held
                .range(entry.seq + 1..)
                .find_map(|(_, e)| match &e.action {
                    ConsentAction::Revoked(x) if *x == id => Some((EndKind::Revoked, e.time_ms)),
                    ConsentAction::Expired(x) if *x == id => Some((EndKind::Expired, e.time_ms)),
                    _ => None,
                });
            if ended.is_none() {
                if let Some(until) = request.until_ms {
                    if until <= time {
                        return Err(refused(format!(
                            "the consent's period ended at {} (ms), before the device's clock ({time})",
                            until
                        )));
                    }
                }
            }
            Ok(Effect::Given {
                request: Box::new(signed.clone()),
                ended,
            })
        }
        ConsentAction::Revoked(id) | ConsentAction::Expired(id) => {
            let kind = match entry.action {
                ConsentAction::Revoked(_) => EndKind::Revoked,
                _ => EndKind::Expired,
            };
            match known(id) {
                // The device's clock ended it first; the owners' entry saying so (or a revoke
                // they made before hearing of it) is recorded, with nothing left to rotate.
                Some(HeldConsent {
                    ended: Some((EndKind::Lapsed, _)),
                    ..
                }) => Ok(Effect::Nothing),
                Some(HeldConsent { ended: Some(_), .. }) => {
                    Err(refused(format!("consent {id} has already ended")))
                }
                Some(c) => {
                    if kind == EndKind::Expired
                        && c.until_ms.is_none_or(|until| entry.time_ms < until)
                    {
                        return Err(refused(format!(
                            "consent {id} cannot expire at {}: its period has not ended",
                            entry.time_ms
                        )));
                    }
                    Ok(Effect::Ended {
                        id: *id,
                        kind,
                        time_ms: entry.time_ms,
                    })
                }
                None if gap_below => Ok(Effect::Nothing),
                None => Err(refused(format!(
                    "consent {id} was never given on this device"
                ))),
            }
        }
    }
}

/// What an owner signs (docs/PROTOCOL.md §14): the label, then the entry's content.
const ENTRY_LABEL: &[u8] = b"latchkey/v1/consent-entry\0";

/// The highest `n` such that entries `1..=n` are all held.
fn gap_free_prefix(held: &BTreeMap<u64, ConsentEntry>) -> u64 {
    let mut n = 0;
    for seq in held.keys() {
        if *seq != n + 1 {
            break;
        }
        n = *seq;
    }
    n
}

/// An entry judged on its own (the device lacks some before it): signed by a current owner
/// over a current-era anchor, and linked to whichever neighbours the device holds.
fn verify_alone(
    chain: &Chain,
    entry: &ConsentEntry,
    held: &BTreeMap<u64, ConsentEntry>,
) -> Result<(), Refusal> {
    if entry.seq == 0 {
        return Err(refused("consent entries are numbered from 1"));
    }
    let Some((_, owners, era)) = chain.spine_anchor(&entry.anchor) else {
        return Err(refused(
            "its anchor is not an op of this device's ownership chain",
        ));
    };
    let state = chain.state();
    if !owners.contains(&entry.signer) || !state.is_owner(&entry.signer) {
        return Err(refused("its signer is not an owner of this device"));
    }
    if era != state.epoch {
        return Err(refused(
            "its anchor is in an earlier era (the device changed hands since)",
        ));
    }
    let message = [ENTRY_LABEL, &entry.content_bytes()[..]].concat();
    if !entry.signer.verify(&entry.signature, &message) {
        return Err(refused("the owner's signature does not verify"));
    }
    if let Some(before) = held.get(&(entry.seq - 1)) {
        if entry.prev != before.hash() {
            return Err(refused(format!(
                "the consent entry does not link to entry {} held here",
                entry.seq - 1
            )));
        }
    } else if entry.seq == 1 && entry.prev != [0; 32] {
        return Err(refused("the first consent entry must link to zeros"));
    }
    if let Some(after) = held.get(&(entry.seq + 1)) {
        if after.prev != entry.hash() {
            return Err(refused(format!(
                "entry {} held here does not link to this one",
                entry.seq + 1
            )));
        }
    }
    Ok(())
}
