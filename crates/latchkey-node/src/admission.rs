//! What a mailbox may be sent (docs/API.md, "Who may post what"). Mailbox ids are hashes, so
//! the node tells the kinds apart by what it knows:
//!
//! - a **device mailbox** is the id of a device whose chain the node holds, and takes only
//!   sealed commands: bodies of the §5.4 sizes;
//! - an **owner mailbox** is `H("latchkey/v1/owner-mailbox", key)` (§11) for a key named as an
//!   owner in a held chain since its last claim ([`OwnerIndex`]), or named by the op posted to
//!   it; it takes only one op of a held device that is signed by a current owner of that device
//!   (a proposal) or is already in the device's chain (a notice of a change in effect), or one
//!   **event message** (§13, first byte `0xE1`, which no op starts with) signed by the identity
//!   key of a held device of which the mailbox's key is a current owner;
//! - anything else may only be a **reply mailbox** (a fresh random id per command, §8.4), which
//!   takes only sealed responses: bodies of the §5.6 sizes. Everything else is refused.
//!
//! **Invariant: the node still never opens an envelope**; it looks at sizes, and decodes only
//! ops, which are public, and the clear framing of event messages (device, mailbox, device
//! signature over the sealed bytes).

use std::collections::HashMap;
use std::sync::Mutex;

use latchkey_proto::chain::{check_proposal, Chain, ChainState, Op, OpBody};
use latchkey_proto::codec::Codec;
use latchkey_proto::envelope::{MAX_SEALED_COMMAND, MAX_SEALED_RESPONSE};
use latchkey_proto::event::EventMessage;
use latchkey_proto::hash;
use latchkey_proto::keys::{DeviceId, PublicKey};
use latchkey_proto::pad::BUCKETS;

use crate::error::Result;
use crate::mailbox::MailboxId;
use crate::registry::Registry;

/// The sizes of a sealed command (§5.4): one per padding bucket (§5.2).
pub const SEALED_COMMAND_SIZES: [usize; BUCKETS.len()] = sealed_sizes(MAX_SEALED_COMMAND);
/// The sizes of a sealed response (§5.6), padded to the same buckets.
pub const SEALED_RESPONSE_SIZES: [usize; BUCKETS.len()] = sealed_sizes(MAX_SEALED_RESPONSE);

/// A sealed message's size in each bucket: its header and tag around the padded content.
const fn sealed_sizes(largest: usize) -> [usize; BUCKETS.len()] {
    let overhead = largest - BUCKETS[BUCKETS.len() - 1];
    let mut sizes = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        sizes[i] = overhead + BUCKETS[i];
        i += 1;
    }
    sizes
}

/// An owner's mailbox id: `H("latchkey/v1/owner-mailbox", key)` (§11).
pub fn owner_mailbox(key: &PublicKey) -> MailboxId {
    hash::owner_mailbox(key)
}

/// Which kind of mailbox a post was admitted to, and who it counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    Device,
    /// `signer`: the current owner (or, for a notice, the first signer) the message speaks for.
    Owner {
        signer: PublicKey,
    },
    /// An event message (§13) from the device whose identity key is `device_key`.
    Event {
        device_key: PublicKey,
    },
    Reply,
}

/// Why a post was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A device mailbox was sent something that is not a sealed command.
    NotAnEnvelope { size: usize },
    /// An owner mailbox was sent something that is not an admissible op; says why.
    NotAnOwnerMessage(String),
    /// The id is no mailbox the node knows, and the body is no sealed response.
    UnknownMailbox { size: usize },
}

/// The owner mailbox ids of the devices the node holds: for each device, the mailbox of every
/// key named as an owner since the chain's last claim (current owners, and owners removed
/// since, who are still sent the notice of their removal). Updated whenever a chain grows.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    inner: Mutex<IndexInner>,
}

#[derive(Debug, Default)]
struct IndexInner {
    /// How many held devices name each owner mailbox.
    mailboxes: HashMap<MailboxId, u32>,
    by_device: HashMap<DeviceId, Vec<MailboxId>>,
}

/// Every key named as an owner since the chain's last claim (none after a factory reset).
pub fn era_owners(chain: &Chain) -> Vec<PublicKey> {
    let mut keys: Vec<PublicKey> = Vec::new();
    for op in chain.ops() {
        match &op.body {
            OpBody::Claim(set) => keys = set.owners.clone(),
            OpBody::AmendOwners(set) | OpBody::Transfer(set) => keys.extend(&set.owners),
            OpBody::FactoryReset { .. } => keys.clear(),
            _ => {}
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

impl OwnerIndex {
    /// Indexes every chain the node holds (each is loaded and verified once).
    pub async fn build(registry: &Registry) -> Result<OwnerIndex> {
        let index = OwnerIndex::default();
        for device in registry.devices() {
            index.refresh(registry, device).await?;
        }
        Ok(index)
    }

    /// Re-reads one device's owners after its chain changed.
    pub async fn refresh(&self, registry: &Registry, device: DeviceId) -> Result<()> {
        let mailboxes = registry
            .inspect(device, |chain| {
                era_owners(chain)
                    .iter()
                    .map(owner_mailbox)
                    .collect::<Vec<_>>()
            })
            .await?
            .unwrap_or_default();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let IndexInner {
            mailboxes: counts,
            by_device,
        } = &mut *inner;
        for old in by_device.remove(&device).unwrap_or_default() {
            if let Some(n) = counts.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&old);
                }
            }
        }
        for new in &mailboxes {
            *counts.entry(*new).or_default() += 1;
        }
        if !mailboxes.is_empty() {
            by_device.insert(device, mailboxes);
        }
        Ok(())
    }

    pub fn is_owner_mailbox(&self, mailbox: &MailboxId) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.mailboxes.contains_key(mailbox)
    }

    /// Owner mailboxes indexed (for tests and metrics).
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.mailboxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides whether `body` may go into `mailbox`.
pub async fn admit(
    registry: &Registry,
    index: &OwnerIndex,
    mailbox: &MailboxId,
    body: &[u8],
) -> Result<core::result::Result<Admitted, Refused>> {
    let size = body.len();
    if registry.is_known(&DeviceId(*mailbox)) {
        return Ok(if SEALED_COMMAND_SIZES.contains(&size) {
            Ok(Admitted::Device)
        } else {
            Err(Refused::NotAnEnvelope { size })
        });
    }
    if EventMessage::is_event_message(body) {
        return admit_event(registry, mailbox, body).await;
    }
    let op = Op::from_bytes(body);
    if index.is_owner_mailbox(mailbox) || op.is_ok() {
        return match op {
            Ok(op) => admit_owner_message(registry, mailbox, op).await,
            Err(e) => Ok(Err(Refused::NotAnOwnerMessage(format!(
                "the body is not one op ({e}); an owner's mailbox takes only proposals and \
                 notices (docs/PROTOCOL.md §11)"
            )))),
        };
    }
    Ok(if SEALED_RESPONSE_SIZES.contains(&size) {
        Ok(Admitted::Reply)
    } else {
        Err(Refused::UnknownMailbox { size })
    })
}

/// An event message: well formed, addressed to this mailbox, from a device whose chain the
/// node holds, for a current owner of that device, signed by the device's identity key.
async fn admit_event(
    registry: &Registry,
    mailbox: &MailboxId,
    body: &[u8],
) -> Result<core::result::Result<Admitted, Refused>> {
    let refuse = |why: String| Ok(Err(Refused::NotAnOwnerMessage(why)));
    let message = match EventMessage::from_bytes(body) {
        Ok(m) => m,
        Err(e) => {
            return refuse(format!(
                "the body starts like an event message but is not one ({e}); see \
                 docs/PROTOCOL.md §13"
            ))
        }
    };
    if &message.mailbox != mailbox {
        return refuse(
            "the event message names another mailbox than the one it is posted to; post it to \
             the mailbox it names"
                .into(),
        );
    }
    let device = message.device;
    let facts = registry
        .inspect(device, |chain| {
            let state = chain.state();
            let owner = state.owners.iter().any(|k| owner_mailbox(k) == *mailbox);
            (state.identity, owner)
        })
        .await?;
    let Some((identity, owner)) = facts else {
        return refuse(format!(
            "the event is from {device}, whose chain this node does not hold; publish the \
             device's chain to this node first"
        ));
    };
    if !owner {
        return refuse(format!(
            "this mailbox is not the mailbox of a current owner of {device}; a device posts \
             events only to its owners (docs/PROTOCOL.md §13)"
        ));
    }
    match tokio::task::spawn_blocking(move || message.verify(&identity)).await? {
        Ok(()) => Ok(Ok(Admitted::Event {
            device_key: identity,
        })),
        Err(_) => refuse(format!(
            "the event message's signature is not {device}'s identity key's; only the device \
             itself posts its events"
        )),
    }
}

/// What an owner mailbox post is checked against, read from the device's verified chain.
struct OwnerFacts {
    /// The mailbox belongs to a key named as an owner since the last claim, or by this op.
    mailbox_matches: bool,
    held: bool,
    /// The head's state: a proposal is judged against the owners it would follow.
    state: ChainState,
}

async fn admit_owner_message(
    registry: &Registry,
    mailbox: &MailboxId,
    op: Op,
) -> Result<core::result::Result<Admitted, Refused>> {
    let refuse = |why: String| Ok(Err(Refused::NotAnOwnerMessage(why)));
    let device = op.device;
    let id = op.id();
    let named: Vec<PublicKey> = match &op.body {
        OpBody::Claim(set) | OpBody::AmendOwners(set) | OpBody::Transfer(set) => set.owners.clone(),
        _ => Vec::new(),
    };
    let facts = registry
        .inspect(device, |chain| OwnerFacts {
            mailbox_matches: era_owners(chain)
                .iter()
                .chain(&named)
                .any(|k| owner_mailbox(k) == *mailbox),
            held: chain
                .ops()
                .iter()
                .filter(|o| o.seq == op.seq)
                .any(|o| o.id() == id),
            state: chain.state().clone(),
        })
        .await?;
    let Some(facts) = facts else {
        return refuse(format!(
            "the op is for {device}, whose chain this node does not hold; publish the device's \
             chain to this node first"
        ));
    };
    if !facts.mailbox_matches {
        return refuse(format!(
            "this mailbox is not the mailbox of an owner of {device}, nor of a key the op names; \
             send proposals to the owners' mailboxes (docs/PROTOCOL.md §11)"
        ));
    }
    let state = facts.state;
    if facts.held {
        // A notice of a change in effect: its copy must carry only valid signatures; it counts
        // against a current owner who signed it, else against its first signer.
        let signers = tokio::task::spawn_blocking(move || op.verified_signer_keys()).await?;
        return Ok(match signers {
            Ok(signers) if !signers.is_empty() => Ok(Admitted::Owner {
                signer: signers
                    .iter()
                    .find(|k| state.is_owner(k))
                    .copied()
                    .unwrap_or(signers[0]),
            }),
            _ => Err(Refused::NotAnOwnerMessage(
                "a signature on the op does not verify; send the op as its signers made it".into(),
            )),
        });
    }
    if op.seq <= state.seq {
        return refuse(format!(
            "the op is at seq {} but {device}'s chain is already at seq {}: a stale \
             proposal; propose again from the head",
            op.seq, state.seq
        ));
    }
    // On this node's head it must link to it; one further ahead (this node is behind) can only
    // be judged by the rule itself.
    if op.seq == state.seq + 1 && op.prev != state.head {
        return refuse(format!(
            "the proposal does not follow {device}'s head; propose again from the head"
        ));
    }
    // The same rule the owners' apps apply (latchkey-proto's check_proposal); it verifies
    // every signature once.
    match tokio::task::spawn_blocking(move || check_proposal(&op, &state)).await? {
        Ok(proposer) => Ok(Ok(Admitted::Owner { signer: proposer })),
        Err(e) => refuse(format!(
            "not a proposal an owner's app would take: {e} (docs/PROTOCOL.md §11)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_sizes_follow_the_protocol() {
        // docs/PROTOCOL.md §5.4 and §5.6 spell these out.
        assert_eq!(SEALED_COMMAND_SIZES, [2137, 5209, 17497]);
        assert_eq!(SEALED_RESPONSE_SIZES, [1066, 4138, 16426]);
    }
}
