//! Multisig-style ownership: adding or removing an owner, changing the threshold, or
//! transferring the device is an op that needs `m` of the current owners' signatures **and the
//! signature of every key it adds** (proof that someone holds it, so a typo can never own a
//! device). The proposer signs first; the op travels through the nodes' mailboxes (each key's
//! mailbox id is a hash of the key, docs/PROTOCOL.md §11) to the owners who have not signed and
//! to the keys it adds. Current owners co-sign with [`Profile::approve`], each added key with
//! [`Profile::accept_proposal`], and whoever brings it to `m` owners plus every added key publishes it.
//! Owners of the new set are sent the final op too, so a new owner's profile learns the device
//! without being told.
//!
//! A mailbox is open to anyone, so what arrives is admitted only if every signature verifies,
//! at least one current owner signed it, every signer has a say (a current owner or a key it
//! adds), it names a valid owner set and it extends the device's verified head; anything else
//! is dropped unseen.

use latchkey_proto::chain::{check_proposal, ChainState, Op, OpBody, OpId, OwnerSet, MAX_OWNERS};
use latchkey_proto::codec::Codec;
use latchkey_proto::hash;
use latchkey_proto::keys::{DeviceId, PublicKey};
use rand_core::OsRng;

use crate::door::DoorSync;
use crate::error::{Error, Result};
use crate::mailbox;
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// An owner's mailbox id: `H("latchkey/v1/owner-mailbox", key)`.
pub const OWNER_MAILBOX_LABEL: &str = hash::OWNER_MAILBOX;
/// Proposals wait in the nodes' mailboxes for at most the nodes' longest lifetime.
const PROPOSAL_TTL_SECS: u32 = 3600;

pub fn owner_mailbox(owner: &PublicKey) -> String {
    hex::encode(hash::owner_mailbox(owner))
}

/// A change to a device's owner set.
#[derive(Debug, Clone, Default)]
pub struct OwnerChange {
    pub add: Vec<PublicKey>,
    pub remove: Vec<PublicKey>,
    pub threshold: Option<u8>,
}

/// A device's owners as verified, with the proposals waiting for it.
#[derive(Debug, Clone)]
pub struct OwnersView {
    pub device: DeviceRecord,
    pub owners: Vec<PublicKey>,
    pub threshold: u8,
    pub me: Option<PublicKey>,
    pub proposals: Vec<Proposal>,
}

/// What this profile can still add to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MyPart {
    /// A current owner who has not signed: `approve`.
    Approve,
    /// A key the change adds, not signed yet: `accept`.
    Accept,
    /// Signed already, or no say in it.
    Nothing,
}

/// An owner-change op waiting for (or just given) enough signatures.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub id: OpId,
    pub device: DeviceId,
    pub device_name: String,
    /// `amend-owners` or `transfer`.
    pub kind: &'static str,
    pub owners: Vec<PublicKey>,
    pub threshold: u8,
    pub signed_by: Vec<PublicKey>,
    /// Current owners' signatures needed in all.
    pub needed: u8,
    /// Current owners who signed.
    pub approvals: usize,
    /// The current owner who made it (as far as this profile saw: the first owner signature
    /// it arrived with); `None` only for proposals an older version stored.
    pub proposed_by: Option<PublicKey>,
    pub proposed_by_me: bool,
    /// Keys the change adds: each must accept (sign) before it can take effect.
    pub new_owners: Vec<PublicKey>,
    /// Added keys that have not accepted yet.
    pub awaiting_acceptance: Vec<PublicKey>,
    pub signed_by_me: bool,
    pub my_part: MyPart,
}

impl Proposal {
    /// Everything it needs is there: enough owners approved and every added key accepted.
    pub fn is_complete(&self) -> bool {
        self.approvals >= usize::from(self.needed) && self.awaiting_acceptance.is_empty()
    }
}

/// What proposing, approving or accepting did.
#[derive(Debug, Clone)]
pub struct ProposalReport {
    pub proposal: Proposal,
    /// Enough owners signed and every added key accepted: the op is on the nodes and in effect.
    pub applied: bool,
    pub nodes_stored: usize,
    /// Keys' mailboxes it was posted to (owners yet to approve and keys yet to accept, or
    /// everyone concerned once applied).
    pub sent_to: usize,
    /// Once applied: whether the device itself took the change on the local network.
    pub door: Option<DoorSync>,
}

fn proposal_of(
    op: &Op,
    device: &DeviceRecord,
    me: Option<&PublicKey>,
    proposer: Option<PublicKey>,
) -> Option<Proposal> {
    let (kind, set) = match &op.body {
        OpBody::AmendOwners(set) => ("amend-owners", set),
        OpBody::Transfer(set) => ("transfer", set),
        _ => return None,
    };
    let state = device.chain.state();
    let signed_by: Vec<PublicKey> = op.signatures.iter().map(|s| s.signer).collect();
    let new_owners: Vec<PublicKey> = set
        .owners
        .iter()
        .filter(|k| !state.is_owner(k))
        .copied()
        .collect();
    let signed_by_me = me.is_some_and(|k| signed_by.contains(k));
    let my_part = match me {
        Some(_) if signed_by_me => MyPart::Nothing,
        Some(k) if state.is_owner(k) => MyPart::Approve,
        Some(k) if new_owners.contains(k) => MyPart::Accept,
        _ => MyPart::Nothing,
    };
    Some(Proposal {
        id: op.id(),
        device: device.id,
        device_name: device.name.clone(),
        kind,
        owners: set.owners.clone(),
        threshold: set.threshold,
        approvals: signed_by.iter().filter(|k| state.is_owner(k)).count(),
        proposed_by_me: me.is_some() && proposer.as_ref() == me,
        proposed_by: proposer,
        awaiting_acceptance: new_owners
            .iter()
            .filter(|k| !signed_by.contains(k))
            .copied()
            .collect(),
        new_owners,
        signed_by_me,
        my_part,
        signed_by,
        needed: state.threshold,
    })
}

/// The admission rule for a proposal (docs/PROTOCOL.md §11, latchkey-proto's
/// `check_proposal`); says why not, for the log. The link to the head is `check_next`'s to judge.
fn admit(op: &Op, state: &ChainState) -> std::result::Result<PublicKey, String> {
    check_proposal(op, state).map_err(|e| e.to_string())
}

impl Profile {
    /// A device's owners and threshold, refreshed from the nodes, with proposals waiting.
    pub async fn owners(&self, query: &str) -> Result<OwnersView> {
        self.sync_mailbox().await?;
        let device = self.find_device(query)?;
        let device = self.refresh_device(device).await?;
        let me = self.identity().ok().map(|k| k.public_key());
        let proposals = self
            .proposals()?
            .into_iter()
            .filter(|p| p.device == device.id)
            .collect();
        let state = device.chain.state();
        Ok(OwnersView {
            owners: state.owners.clone(),
            threshold: state.threshold,
            me,
            proposals,
            device,
        })
    }

    /// Proposes adding/removing owners or a new threshold. Each added key must accept.
    pub async fn propose_owners(
        &self,
        query: &str,
        change: &OwnerChange,
    ) -> Result<ProposalReport> {
        let device = self.find_device(query)?;
        let device = self.refresh_device(device).await?;
        let state = device.chain.state();
        let mut owners = state.owners.clone();
        for key in &change.remove {
            if !owners.contains(key) {
                return Err(Error::BadOwners(format!("{key} is not an owner")));
            }
            owners.retain(|o| o != key);
        }
        for key in &change.add {
            if owners.contains(key) {
                return Err(Error::BadOwners(format!("{key} is already an owner")));
            }
            owners.push(*key);
        }
        let threshold = change.threshold.unwrap_or(state.threshold);
        if change.add.is_empty() && change.remove.is_empty() && threshold == state.threshold {
            return Err(Error::BadOwners("nothing would change".into()));
        }
        self.propose(device, OpBody::AmendOwners(owner_set(owners, threshold)?))
            .await
    }

    /// Proposes handing the device to a new owner set (grants of the old ownership end). It
    /// takes effect only once every new key has accepted.
    pub async fn transfer(
        &self,
        query: &str,
        owners: Vec<PublicKey>,
        threshold: u8,
    ) -> Result<ProposalReport> {
        let device = self.find_device(query)?;
        let device = self.refresh_device(device).await?;
        self.propose(device, OpBody::Transfer(owner_set(owners, threshold)?))
            .await
    }

    async fn propose(&self, device: DeviceRecord, body: OpBody) -> Result<ProposalReport> {
        let me = self.identity()?;
        if !device.chain.state().is_owner(&me.public_key()) {
            return Err(Error::NotOwner {
                device: device.id.to_string(),
            });
        }
        let mut op = device.chain.propose(self.now_ms(), body);
        op.sign(&me);
        // A malformed set (threshold above the owner count, too many owners) is refused here,
        // before anyone is asked to sign it.
        admit(&op, device.chain.state()).map_err(Error::BadOwners)?;
        match device.chain.check_next(&op) {
            Ok(_) => {}
            Err(e) if e.awaits_signatures() => {}
            Err(e) => return Err(Error::BadOwners(e.to_string())),
        }
        self.advance(device, op, me.public_key()).await
    }

    /// Adds this owner's signature to a waiting proposal (by id or an id prefix of at least 8
    /// hex characters) and publishes it when it has everything it needs.
    pub async fn approve(&self, query: &str) -> Result<ProposalReport> {
        self.sign_proposal(query, MyPart::Approve).await
    }

    /// Accepts a proposal that adds this profile's key (a transfer to it, or joining the
    /// owners): signs it, proving the key is held, and publishes it when it has everything.
    pub async fn accept_proposal(&self, query: &str) -> Result<ProposalReport> {
        self.sign_proposal(query, MyPart::Accept).await
    }

    async fn sign_proposal(&self, query: &str, step: MyPart) -> Result<ProposalReport> {
        self.sync_mailbox().await?;
        let q = query.trim().to_ascii_lowercase();
        let rows = self.store.proposals()?;
        let mut hits: Vec<_> = rows
            .into_iter()
            .filter(|r| q.len() >= 8 && r.op.id().to_string().starts_with(&q))
            .collect();
        let row = match hits.len() {
            1 => hits.remove(0),
            _ => return Err(Error::UnknownProposal(query.to_owned())),
        };
        let op = row.op;
        let id = op.id().to_string();
        let device = match self.find_device(&op.device.to_string()) {
            Ok(known) => self.refresh_device(known).await?,
            Err(Error::UnknownDevice(_)) => self
                .learn_device(&op.device)
                .await
                .ok_or_else(|| Error::UnknownProposal(query.to_owned()))?,
            Err(e) => return Err(e),
        };
        let state = device.chain.state();
        if op.prev != state.head || op.seq != state.seq + 1 {
            self.store.delete_proposal(&id)?;
            return Err(Error::ProposalStale { id });
        }
        let me = self.identity()?;
        let key = me.public_key();
        let adds_me = match &op.body {
            OpBody::AmendOwners(set) | OpBody::Transfer(set) => {
                set.owners.contains(&key) && !state.is_owner(&key)
            }
            _ => false,
        };
        match step {
            MyPart::Approve if !state.is_owner(&key) => {
                return Err(if adds_me {
                    Error::WrongProposalStep {
                        id,
                        why: "it adds your key, so you accept it (`latchkey owners accept`) rather than approve it",
                    }
                } else {
                    Error::NotOwner {
                        device: device.id.to_string(),
                    }
                });
            }
            MyPart::Accept if !adds_me => {
                return Err(Error::WrongProposalStep {
                    id,
                    why: if state.is_owner(&key) {
                        "you are already an owner, so you approve it (`latchkey owners approve`)"
                    } else {
                        "it does not add your key, so there is nothing for you to accept"
                    },
                });
            }
            _ => {}
        }
        let proposer = match row.proposer {
            Some(p) => p,
            None => first_owner_signer(&op, state).unwrap_or(key),
        };
        let mut op = op;
        op.sign(&me);
        self.advance(device, op, proposer).await
    }

    /// Publishes `op` if it has everything it needs, else keeps it and sends it to the owners
    /// who have not approved and the added keys that have not accepted.
    async fn advance(
        &self,
        device: DeviceRecord,
        op: Op,
        proposer: PublicKey,
    ) -> Result<ProposalReport> {
        let me = self.identity()?.public_key();
        let proposal =
            proposal_of(&op, &device, Some(&me), Some(proposer)).expect("owner-change ops only");
        match device.chain.check_next(&op) {
            Ok(_) => {
                let published = self
                    .quorum()?
                    .publish(&device.id, std::slice::from_ref(&op), &mut OsRng)
                    .await?;
                self.store.delete_proposal(&op.id().to_string())?;
                // Everyone in either set hears of it: co-signers stop waiting, new owners learn
                // the device.
                let mut tell: Vec<PublicKey> = device.chain.state().owners.clone();
                tell.extend(proposal.owners.iter().copied());
                tell.sort();
                tell.dedup();
                tell.retain(|k| *k != me);
                let sent_to = self.post_to_owners(&tell, &op).await;
                let mut chain = device.chain.clone();
                chain.append(op)?;
                // A removed owner (a lost phone) must lose the door now, even if it keeps the
                // device cut off from the nodes.
                let door = self
                    .tell_door(&device.addrs, &chain, chain.state().seq)
                    .await;
                self.store.put_device(&DeviceRecord { chain, ..device })?;
                Ok(ProposalReport {
                    proposal,
                    applied: true,
                    nodes_stored: published.acked.len(),
                    sent_to,
                    door: Some(door),
                })
            }
            Err(e) if e.awaits_signatures() => {
                self.store.put_proposal(&op, &proposer, self.now_ms())?;
                if !device.chain.state().is_owner(&me) {
                    self.store.put_offered_device(&device)?;
                }
                let mut waiting: Vec<PublicKey> = device
                    .chain
                    .state()
                    .owners
                    .iter()
                    .filter(|o| !proposal.signed_by.contains(o))
                    .copied()
                    .collect();
                waiting.extend(proposal.awaiting_acceptance.iter().copied());
                let sent_to = self.post_to_owners(&waiting, &op).await;
                Ok(ProposalReport {
                    proposal,
                    applied: false,
                    nodes_stored: 0,
                    sent_to,
                    door: None,
                })
            }
            Err(e) => Err(Error::BadOwners(e.to_string())),
        }
    }

    /// Posts `op` to each key's mailbox on every node; returns how many keys it reached.
    async fn post_to_owners(&self, owners: &[PublicKey], op: &Op) -> usize {
        let Ok(nodes) = self.nodes() else { return 0 };
        let body = op.to_bytes();
        let mut reached = 0;
        for owner in owners {
            let stored = mailbox::post_all(
                &self.http,
                &nodes,
                &owner_mailbox(owner),
                &body,
                PROPOSAL_TTL_SECS,
            )
            .await;
            if stored > 0 {
                reached += 1;
            }
        }
        reached
    }

    /// Reads this profile's mailbox on every node: admitted proposals are kept (signatures
    /// merged; one that copies have completed is published), ops already in effect teach the
    /// profile about devices it now owns. Returns how many messages were taken in. Anything
    /// not admitted is dropped.
    pub async fn sync_mailbox(&self) -> Result<usize> {
        let Ok(me) = self.identity().map(|k| k.public_key()) else {
            return Ok(0);
        };
        let mailbox = owner_mailbox(&me);
        let nodes = self.nodes()?;
        let cursor_key = |node: &str| format!("mailbox_after:{node}");
        let mut cursors = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let after: u64 = self
                .store
                .setting(&cursor_key(node))?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            cursors.push(after);
        }
        // Every node holds its own copy of each message: read them all at once, keep one op
        // per id (with every signature any copy carries).
        let pages = futures::future::join_all(
            nodes
                .iter()
                .zip(&cursors)
                .map(|(node, after)| mailbox::read(&self.http, node, &mailbox, *after, 0)),
        )
        .await;
        let mut ops: Vec<Op> = Vec::new();
        for message in pages.iter().flatten().flat_map(|p| &p.messages) {
            // Events share this mailbox; src/events.rs reads them with its own cursor.
            if latchkey_proto::event::EventMessage::is_event_message(message) {
                continue;
            }
            let Ok(op) = Op::from_bytes(message) else {
                continue;
            };
            match ops.iter_mut().find(|o| o.id() == op.id()) {
                Some(kept) => {
                    let _ = kept.merge_signatures(&op);
                }
                None => ops.push(op),
            }
        }
        let mut new = 0;
        for op in ops {
            if self.take_mailbox_op(op, &me).await? {
                new += 1;
            }
        }
        // Cursors move only once every message read was taken in.
        for (node, page) in nodes.iter().zip(&pages) {
            if let Some(page) = page {
                self.store
                    .set_setting(&cursor_key(node), &page.next.to_string())?;
            }
        }
        self.prune_proposals()?;
        Ok(new)
    }

    /// Forgets proposals that took effect or whose device moved on since (stale: they can
    /// never apply), by the chains this profile holds.
    fn prune_proposals(&self) -> Result<()> {
        let mut devices = self.devices()?;
        devices.extend(self.store.offered_devices()?);
        for row in self.store.proposals()? {
            let Some(device) = devices.iter().find(|d| d.id == row.op.device) else {
                continue;
            };
            let state = device.chain.state();
            if row.op.prev != state.head || row.op.seq != state.seq + 1 {
                self.store.delete_proposal(&row.op.id().to_string())?;
            }
        }
        Ok(())
    }

    async fn take_mailbox_op(&self, op: Op, me: &PublicKey) -> Result<bool> {
        let (OpBody::AmendOwners(set) | OpBody::Transfer(set)) = &op.body else {
            return Ok(false);
        };
        let concerns_me = set.owners.contains(me);
        let known = self.devices()?.into_iter().find(|d| d.id == op.device);
        let device = match known {
            Some(d) => self.refresh_device(d).await?,
            // A device this profile neither knows nor is offered: nothing to look up.
            None if !concerns_me => return Ok(false),
            None => match self.learn_device(&op.device).await {
                Some(d) => d,
                None => return Ok(false),
            },
        };
        // Already in effect (a notice): learning the device was the point.
        if device.chain.op_ids().contains(&op.id()) {
            return Ok(true);
        }
        let state = device.chain.state();
        if op.seq != state.seq + 1 || op.prev != state.head {
            return Ok(false);
        }
        if !state.is_owner(me) && !concerns_me {
            return Ok(false);
        }
        let first_proposer = match admit(&op, state) {
            Ok(proposer) => proposer,
            Err(why) => {
                tracing::warn!(device = %op.device, why, "dropped a proposal that is not admitted");
                return Ok(false);
            }
        };
        let stored = self
            .store
            .proposals()?
            .into_iter()
            .find(|p| p.op.id() == op.id());
        let mut op = op;
        let mut proposer = None;
        if let Some(stored) = stored {
            op.merge_signatures(&stored.op)?;
            proposer = stored.proposer;
        }
        let proposer = proposer.unwrap_or(first_proposer);
        match device.chain.check_next(&op) {
            // Copies signed by different people completed it here: publish it.
            Ok(_) => {
                if let Err(e) = self.advance(device, op.clone(), proposer).await {
                    tracing::warn!(error = %e, "a completed proposal could not be published yet");
                    self.store.put_proposal(&op, &proposer, self.now_ms())?;
                }
                Ok(true)
            }
            Err(e) if e.awaits_signatures() => {
                self.store.put_proposal(&op, &proposer, self.now_ms())?;
                if !state.is_owner(me) {
                    self.store.put_offered_device(&device)?;
                }
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "dropped a proposal that does not verify");
                Ok(false)
            }
        }
    }

    /// Fetches a device this profile has not seen from a quorum of nodes; keeps it when this
    /// profile is among its owners.
    async fn learn_device(&self, device: &DeviceId) -> Option<DeviceRecord> {
        let quorum = self.quorum().ok()?;
        let view = quorum
            .check(device, None, self.now_ms(), &mut OsRng)
            .await
            .ok()?;
        if !view.forks.is_empty() {
            return None;
        }
        let me = self.identity().ok()?.public_key();
        let genesis_name = view.chain.state().name.clone();
        let record = DeviceRecord {
            id: *device,
            name: genesis_name,
            addrs: Vec::new(),
            chain: view.chain,
            verified_at_ms: view.checked_at_ms,
        };
        if !record.chain.state().is_owner(&me) {
            // A proposal can still concern it (we may be added); the caller keeps it on offer.
            return Some(record);
        }
        self.store.put_device(&record).ok()?;
        Some(record)
    }

    /// Proposals waiting for signatures, for devices this profile owns or is offered.
    pub fn proposals(&self) -> Result<Vec<Proposal>> {
        let mut devices = self.devices()?;
        devices.extend(self.store.offered_devices()?);
        let me = self.identity().ok().map(|k| k.public_key());
        Ok(self
            .store
            .proposals()?
            .into_iter()
            .filter_map(|row| {
                let device = devices.iter().find(|d| d.id == row.op.device)?;
                let proposer = row
                    .proposer
                    .or_else(|| first_owner_signer(&row.op, device.chain.state()));
                proposal_of(&row.op, device, me.as_ref(), proposer)
            })
            .collect())
    }
}

/// The first current owner among an op's signers (signatures are sorted by key).
fn first_owner_signer(op: &Op, state: &ChainState) -> Option<PublicKey> {
    op.signatures
        .iter()
        .map(|s| s.signer)
        .find(|k| state.is_owner(k))
}

fn owner_set(mut owners: Vec<PublicKey>, threshold: u8) -> Result<OwnerSet> {
    owners.sort();
    owners.dedup();
    if owners.is_empty() {
        return Err(Error::BadOwners("a device needs at least one owner".into()));
    }
    if owners.len() > MAX_OWNERS {
        return Err(Error::BadOwners(format!(
            "a device has at most {MAX_OWNERS} owners"
        )));
    }
    if threshold == 0 || usize::from(threshold) > owners.len() {
        return Err(Error::BadOwners(format!(
            "the threshold must be 1 to {} (the number of owners)",
            owners.len()
        )));
    }
    Ok(OwnerSet { owners, threshold })
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::person;

    #[test]
    fn owner_sets_are_sorted_deduplicated_and_their_threshold_checked() {
        let (a, b) = (person(1).public_key(), person(2).public_key());
        let set = owner_set(vec![b, a, b], 2).unwrap();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(set.owners, expected);
        assert!(matches!(owner_set(vec![a, b], 3), Err(Error::BadOwners(_))));
        assert!(matches!(owner_set(vec![a], 0), Err(Error::BadOwners(_))));
        assert!(matches!(owner_set(Vec::new(), 1), Err(Error::BadOwners(_))));
    }

    #[test]
    fn each_owner_has_its_own_mailbox() {
        let (a, b) = (person(1).public_key(), person(2).public_key());
        assert_eq!(owner_mailbox(&a).len(), 64);
        assert_ne!(owner_mailbox(&a), owner_mailbox(&b));
        assert_ne!(owner_mailbox(&a), hex::encode(a.to_bytes()));
    }
}
