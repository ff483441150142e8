//! The ownership chain: a per-device, hash-linked list of signed ops from genesis. Every party
//! verifies the whole chain itself; a registry node can withhold ops but cannot forge one.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::codec::{check_len, Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::grant::{self, Grant, GrantId};
use crate::hash;
use crate::kem::KemPublicKey;
use crate::keys::{DeviceId, PublicKey, Signature, SigningKey};

pub const OP_VERSION: u8 = 1;
pub const MAX_OWNERS: usize = 16;
pub const MAX_DEVICE_NAME: usize = 64;
/// Every signer an op may carry: all owners plus the setup or identity keys.
pub const MAX_SIGNATURES: usize = MAX_OWNERS + 2;
/// Largest op a decoder accepts: room for the largest valid op, a revocation carrying four
/// grants of up to 4 KiB each with every possible signature (about 18 KiB). A genesis is about
/// 1.3 KiB. Ops are checked against it when applied too, so no valid op is undecodable.
pub const MAX_OP_LEN: usize = 24 * 1024;
/// Most ops one list decode accepts.
pub const MAX_OPS: usize = 100_000;

const SIGNING_LABEL: &[u8] = b"latchkey/v1/op\0";

/// An op's id: the hash of its signed content. Signatures are not part of it, so one op keeps
/// one id however many (valid) signatures a copy carries.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OpId(pub [u8; 32]);

impl OpId {
    /// The `prev` of a genesis op.
    pub const NONE: OpId = OpId([0; 32]);
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({}…)", crate::keys::hex_prefix(&self.0))
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// A device's first op, signed by its identity key. It publishes everything a sender needs
/// beyond the device id: the KEM keys to seal commands to, and the setup key that may claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    pub identity: PublicKey,
    pub kem: KemPublicKey,
    pub setup: PublicKey,
    pub name: String,
}

/// Who owns a device and how many of them must sign a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSet {
    pub owners: Vec<PublicKey>,
    pub threshold: u8,
}

impl OwnerSet {
    /// What is wrong with this set under §3.2's rules (1 to 16 owners, sorted and distinct, a
    /// threshold from 1 to their number), if anything.
    pub fn problem(&self) -> Option<&'static str> {
        if self.owners.is_empty() || self.owners.len() > MAX_OWNERS {
            return Some("an owner set has 1 to 16 owners");
        }
        if !self.owners.windows(2).all(|w| w[0] < w[1]) {
            return Some("owners must be sorted and distinct");
        }
        if self.threshold == 0 || self.threshold as usize > self.owners.len() {
            return Some("the threshold must be between 1 and the number of owners");
        }
        None
    }

    fn check(&self, seq: u64, kind: &'static str) -> Result<()> {
        match self.problem() {
            Some(why) => Err(Error::OpNotAllowed { seq, kind, why }),
            None => Ok(()),
        }
    }
}

/// The proposal rule (docs/PROTOCOL.md §11), shared by the owners' apps and the nodes' owner
/// mailboxes: what an amend-owners or transfer op must already satisfy while it still waits for
/// approvals and acceptances, judged against the ownership `state` it would follow. It names a
/// valid owner set, every signature it carries verifies, a current owner signed it, and every
/// signer is a current owner or a key the set adds. Whether it links to the head is left to the
/// caller (a node may lag behind the proposer). Returns the proposer: the first current owner
/// among its signers.
pub fn check_proposal(op: &Op, state: &ChainState) -> Result<PublicKey> {
    let kind = op.body.kind();
    let not_allowed = |why| Error::OpNotAllowed {
        seq: op.seq,
        kind,
        why,
    };
    let (OpBody::AmendOwners(set) | OpBody::Transfer(set)) = &op.body else {
        return Err(not_allowed(
            "only amend-owners and transfer ops are proposals",
        ));
    };
    if op.device != state.device {
        return Err(Error::WrongDevice {
            what: format!("op {}", op.seq),
            expected: state.device.to_string(),
            found: op.device.to_string(),
        });
    }
    // Before the signatures: an invalid set must never reach anyone's screen.
    set.check(op.seq, kind)?;
    let (signers, _) = op.verified_signers()?;
    let Some(proposer) = signers.iter().find(|k| state.is_owner(k)).copied() else {
        return Err(Error::MissingSignature {
            seq: op.seq,
            who: "a current owner (the proposer)",
        });
    };
    let allowed: Vec<PublicKey> = state.owners.iter().chain(&set.owners).copied().collect();
    require_only(&signers, &allowed, op)?;
    Ok(proposer)
}

/// The kinds of op. Tags are the wire values (docs/PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpBody {
    /// Tag 1. By the device identity key.
    Genesis(Box<Genesis>),
    /// Tag 2. By the setup key (proof of physical presence) and by every new owner.
    Claim(OwnerSet),
    /// Tag 3. By at least `threshold` current owners. Grants stay valid.
    AmendOwners(OwnerSet),
    /// Tag 4. By at least `threshold` current owners. Starts a new era: older grants lapse.
    Transfer(OwnerSet),
    /// Tag 5. Revokes the last grant of the chain, which proves who issued it. By a current
    /// owner, or by that grant's issuer.
    RevokeGrant { chain: Vec<Grant> },
    /// Tag 6. By the current and the new identity key.
    RotateKeys {
        identity: PublicKey,
        kem: KemPublicKey,
    },
    /// Tag 7. By the identity key after a physical reset: owners and grants lose all power and
    /// the new setup key may claim the device again.
    FactoryReset { setup: PublicKey },
    /// Tag 8. A side op by the device identity key: "I hold the op I am anchored on". The fork
    /// choice prefers the branch the device endorsed (docs/PROTOCOL.md §3.3).
    Endorse,
}

impl OpBody {
    pub fn tag(&self) -> u8 {
        match self {
            OpBody::Genesis(_) => 1,
            OpBody::Claim(_) => 2,
            OpBody::AmendOwners(_) => 3,
            OpBody::Transfer(_) => 4,
            OpBody::RevokeGrant { .. } => 5,
            OpBody::RotateKeys { .. } => 6,
            OpBody::FactoryReset { .. } => 7,
            OpBody::Endorse => 8,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            OpBody::Genesis(_) => "genesis",
            OpBody::Claim(_) => "claim",
            OpBody::AmendOwners(_) => "amend-owners",
            OpBody::Transfer(_) => "transfer",
            OpBody::RevokeGrant { .. } => "revoke-grant",
            OpBody::RotateKeys { .. } => "rotate-keys",
            OpBody::FactoryReset { .. } => "factory-reset",
            OpBody::Endorse => "endorse",
        }
    }

    /// Side ops hang off the spine op they were made against and are never anyone's parent, so
    /// any number of them can be made concurrently without forking the chain.
    pub fn is_side(&self) -> bool {
        matches!(self, OpBody::RevokeGrant { .. } | OpBody::Endorse)
    }

    fn encode(&self, w: &mut Writer) {
        let owner_set = |w: &mut Writer, set: &OwnerSet| {
            w.list8(&set.owners, |w, k| w.nested(k));
            w.u8(set.threshold);
        };
        match self {
            OpBody::Genesis(g) => {
                w.nested(&g.identity);
                w.nested(&g.kem);
                w.nested(&g.setup);
                w.bytes8(g.name.as_bytes());
            }
            OpBody::Claim(set) | OpBody::AmendOwners(set) | OpBody::Transfer(set) => {
                owner_set(w, set)
            }
            OpBody::RevokeGrant { chain } => w.list8(chain, |w, g| w.nested(g)),
            OpBody::RotateKeys { identity, kem } => {
                w.nested(identity);
                w.nested(kem);
            }
            OpBody::FactoryReset { setup } => w.nested(setup),
            OpBody::Endorse => {}
        }
    }

    fn read(tag: u8, r: &mut Reader<'_>) -> Result<Self> {
        let owner_set = |r: &mut Reader<'_>| -> Result<OwnerSet> {
            Ok(OwnerSet {
                owners: r.list8(MAX_OWNERS, |r| r.nested())?,
                threshold: r.u8()?,
            })
        };
        Ok(match tag {
            1 => OpBody::Genesis(Box::new(Genesis {
                identity: r.nested()?,
                kem: r.nested()?,
                setup: r.nested()?,
                name: r.str8("device name", MAX_DEVICE_NAME)?,
            })),
            2 => OpBody::Claim(owner_set(r)?),
            3 => OpBody::AmendOwners(owner_set(r)?),
            4 => OpBody::Transfer(owner_set(r)?),
            5 => OpBody::RevokeGrant {
                chain: r.list8(grant::MAX_GRANT_CHAIN, |r| r.nested())?,
            },
            6 => OpBody::RotateKeys {
                identity: r.nested()?,
                kem: r.nested()?,
            },
            7 => OpBody::FactoryReset { setup: r.nested()? },
            8 => OpBody::Endorse,
            tag => {
                return Err(Error::UnknownTag {
                    what: "op kind",
                    tag,
                })
            }
        })
    }
}

/// One signature on an op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSignature {
    pub signer: PublicKey,
    pub signature: Signature,
}

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub device: DeviceId,
    pub seq: u64,
    pub prev: OpId,
    /// When the op was made, by its author's clock (informational; not trusted for ordering).
    pub issued_ms: u64,
    pub body: OpBody,
    /// Sorted by signer, one per signer.
    pub signatures: Vec<OpSignature>,
}

impl Op {
    /// A new, unsigned op.
    pub fn new(device: DeviceId, seq: u64, prev: OpId, issued_ms: u64, body: OpBody) -> Self {
        Op {
            device,
            seq,
            prev,
            issued_ms,
            body,
            signatures: Vec::new(),
        }
    }

    fn encode_content(&self, w: &mut Writer) {
        w.u8(OP_VERSION);
        w.u8(self.body.tag());
        w.nested(&self.device);
        w.u64(self.seq);
        w.raw(&self.prev.0);
        w.u64(self.issued_ms);
        self.body.encode(w);
    }

    /// The bytes signatures and the id cover: everything but the signatures.
    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    pub fn id(&self) -> OpId {
        OpId(hash::labeled(hash::OP_ID, &[&self.content_bytes()]))
    }

    fn signing_message(&self) -> Vec<u8> {
        [SIGNING_LABEL, &self.content_bytes()].concat()
    }

    /// Adds (or replaces) `key`'s signature, keeping signatures sorted by signer.
    pub fn sign(&mut self, key: &SigningKey) {
        let signer = key.public_key();
        let signature = key.sign(&self.signing_message());
        self.signatures.retain(|s| s.signer != signer);
        let at = self.signatures.partition_point(|s| s.signer < signer);
        self.signatures
            .insert(at, OpSignature { signer, signature });
    }

    /// Adds signatures another party made over the same op (co-signing travels this way).
    pub fn merge_signatures(&mut self, other: &Op) -> Result<()> {
        if other.id() != self.id() {
            return Err(Error::Invalid {
                what: "co-signature",
                why: "it signs a different op",
            });
        }
        let message = self.signing_message();
        for s in &other.signatures {
            s.signer.verify_or(&s.signature, &message, "op")?;
            if !self.signatures.iter().any(|mine| mine.signer == s.signer) {
                let at = self.signatures.partition_point(|m| m.signer < s.signer);
                self.signatures.insert(at, s.clone());
            }
        }
        Ok(())
    }

    /// Every signature this op carries, verified (sorted by signer, one each, §3.1); returns
    /// the signers in that order. Says nothing of whether they may sign it.
    pub fn verified_signer_keys(&self) -> Result<Vec<PublicKey>> {
        Ok(self.verified_signers()?.0.into_iter().collect())
    }

    /// Checks the op's encoded size and every signature it carries; returns the signers and
    /// the op's id. The content is encoded once for all three.
    fn verified_signers(&self) -> Result<(BTreeSet<PublicKey>, OpId)> {
        if !self
            .signatures
            .windows(2)
            .all(|w| w[0].signer < w[1].signer)
        {
            return Err(Error::Invalid {
                what: "op",
                why: "signatures must be sorted by signer, one each",
            });
        }
        let content = self.content_bytes();
        // Encoded op = content || u8 count || (signer 32 || signature 64)*.
        check_len(
            "op",
            content.len() + 1 + self.signatures.len() * (PublicKey::LEN + 64),
            MAX_OP_LEN,
        )?;
        let message = [SIGNING_LABEL, &content].concat();
        let mut signers = BTreeSet::new();
        for s in &self.signatures {
            s.signer.verify_or(&s.signature, &message, "op")?;
            signers.insert(s.signer);
        }
        Ok((signers, OpId(hash::labeled(hash::OP_ID, &[&content]))))
    }
}

impl Codec for Op {
    const NAME: &'static str = "op";
    const MAX_LEN: usize = MAX_OP_LEN;
    fn encode(&self, w: &mut Writer) {
        self.encode_content(w);
        w.list8(&self.signatures, |w, s| {
            w.nested(&s.signer);
            w.nested(&s.signature);
        });
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let start = r.position();
        let version = r.u8()?;
        if version != OP_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "op",
                found: version,
                supported: OP_VERSION,
            });
        }
        let tag = r.u8()?;
        let device = r.nested()?;
        let seq = r.u64()?;
        let prev = OpId(r.array()?);
        let issued_ms = r.u64()?;
        let body = OpBody::read(tag, r)?;
        let signatures = r.list8(MAX_SIGNATURES, |r| {
            Ok(OpSignature {
                signer: r.nested()?,
                signature: r.nested()?,
            })
        })?;
        check_len("op", r.position() - start, MAX_OP_LEN)?;
        Ok(Op {
            device,
            seq,
            prev,
            issued_ms,
            body,
            signatures,
        })
    }
}

/// A list of ops as nodes serve them: `u32 count || op*`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpList(pub Vec<Op>);

impl Codec for OpList {
    const NAME: &'static str = "op list";
    const MAX_LEN: usize = 64 * 1024 * 1024;
    fn encode(&self, w: &mut Writer) {
        w.u32(self.0.len() as u32);
        for op in &self.0 {
            w.nested(op);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u32()? as usize;
        check_len("op list", n, MAX_OPS)?;
        // Each op is at least 100 bytes: refuse counts the input cannot hold before allocating.
        if n > r.remaining() / 100 + 1 {
            return Err(Error::Truncated {
                what: "op list",
                needed: n * 100 - r.remaining(),
            });
        }
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(r.nested()?);
        }
        Ok(OpList(ops))
    }
}

/// Most revocations a grant holder who is not an owner may make in one era. Owners are not
/// capped: they can already change everything. A holder who delegates can only revoke what they
/// issued, so the cap only stops them from growing every verifier's chain without end.
pub const MAX_ISSUER_REVOCATIONS: usize = 32;

/// What a verified chain says about its device at one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub device: DeviceId,
    pub name: String,
    /// The current identity key (after any rotation); responses are signed by it.
    pub identity: PublicKey,
    pub kem: KemPublicKey,
    /// The unspent setup key while the device is unclaimed; `None` once owned.
    pub setup: Option<PublicKey>,
    pub owners: Vec<PublicKey>,
    pub threshold: u8,
    /// The id of the latest claim, transfer or reset: grants are pinned to it.
    pub epoch: OpId,
    /// Grants revoked in this era (the union of its revocation side ops). Cleared by a new era.
    pub revoked: BTreeSet<GrantId>,
    /// This era's revocations by grant holders who are not owners, per holder (at most
    /// [`MAX_ISSUER_REVOCATIONS`] each).
    pub issuer_revocations: BTreeMap<PublicKey, usize>,
    /// The spine's head: side ops never move it.
    pub head: OpId,
    pub seq: u64,
}

/// What a side op is checked against: the state right after the spine op it is anchored on.
struct Anchor<'a> {
    device: DeviceId,
    seq: u64,
    id: OpId,
    owners: &'a [PublicKey],
    epoch: OpId,
    identity: PublicKey,
}

/// A side op that passed its checks.
struct SideChecked {
    id: OpId,
    /// A revocation by a grant holder who is not an owner counts against their cap.
    capped_issuer: Option<PublicKey>,
}

impl ChainState {
    pub fn is_owned(&self) -> bool {
        !self.owners.is_empty()
    }

    pub fn is_owner(&self, key: &PublicKey) -> bool {
        self.owners.contains(key)
    }

    /// The state a genesis op establishes.
    fn genesis(op: &Op) -> Result<Self> {
        let OpBody::Genesis(g) = &op.body else {
            return Err(Error::MissingGenesis);
        };
        if op.seq != 0 {
            return Err(Error::WrongSequence {
                expected: 0,
                found: op.seq,
            });
        }
        if op.prev != OpId::NONE {
            return Err(Error::BrokenLink { seq: 0 });
        }
        if op.device != DeviceId::from_identity(&g.identity) {
            return Err(Error::DeviceIdMismatch);
        }
        let (signers, id) = op.verified_signers()?;
        require_exactly(&signers, &[(g.identity, "the device identity key")], op)?;
        Ok(ChainState {
            device: op.device,
            name: g.name.clone(),
            identity: g.identity,
            kem: g.kem.clone(),
            setup: Some(g.setup),
            owners: Vec::new(),
            threshold: 0,
            epoch: id,
            revoked: BTreeSet::new(),
            issuer_revocations: BTreeMap::new(),
            head: id,
            seq: 0,
        })
    }

    /// The state after `op`, if `op` is a valid successor of this state (a spine op) or a valid
    /// side op anchored on its head.
    pub fn apply(&self, op: &Op) -> Result<ChainState> {
        let mut next = self.clone();
        next.apply_in_place(op)?;
        Ok(next)
    }

    /// Applies `op` in place; on error the state is unchanged. Appending this way costs no copy
    /// of the state, whose revocation set grows with the era.
    pub fn apply_in_place(&mut self, op: &Op) -> Result<()> {
        if op.body.is_side() {
            let checked = check_side(op, &self.anchor(), &self.issuer_revocations)?;
            self.commit_side(op, &checked);
            return Ok(());
        }
        let id = self.check(op)?;
        self.commit(op, id);
        Ok(())
    }

    fn anchor(&self) -> Anchor<'_> {
        Anchor {
            device: self.device,
            seq: self.seq,
            id: self.head,
            owners: &self.owners,
            epoch: self.epoch,
            identity: self.identity,
        }
    }

    /// Every rule a spine op must pass to follow this state; returns its id.
    fn check(&self, op: &Op) -> Result<OpId> {
        let kind = op.body.kind();
        check_place(op, &self.device, self.seq, self.head)?;
        let (signers, id) = op.verified_signers()?;
        let not_allowed = |why| Error::OpNotAllowed {
            seq: op.seq,
            kind,
            why,
        };
        match &op.body {
            OpBody::Genesis(_) => return Err(not_allowed("a chain has one genesis")),
            OpBody::Claim(set) => {
                let Some(setup) = self.setup else {
                    return Err(not_allowed(
                        "the device is owned; it must be factory reset first",
                    ));
                };
                set.check(op.seq, kind)?;
                if !signers.contains(&setup) {
                    return Err(Error::MissingSignature {
                        seq: op.seq,
                        who: "the setup key",
                    });
                }
                if !set.owners.iter().all(|o| signers.contains(o)) {
                    return Err(Error::MissingSignature {
                        seq: op.seq,
                        who: "every new owner",
                    });
                }
                let mut allowed = set.owners.clone();
                allowed.push(setup);
                require_only(&signers, &allowed, op)?;
            }
            OpBody::AmendOwners(set) | OpBody::Transfer(set) => {
                self.require_owner_quorum(&signers, &set.owners, op)?;
                set.check(op.seq, kind)?;
                // Proof of possession: a key nobody holds (a typo, a phantom) can never become
                // an owner, so a transfer cannot leave a device owned by nobody.
                if !set
                    .owners
                    .iter()
                    .all(|o| self.is_owner(o) || signers.contains(o))
                {
                    return Err(Error::MissingSignature {
                        seq: op.seq,
                        who: "every new owner (each key added must sign to prove it is held)",
                    });
                }
            }
            OpBody::RotateKeys { identity, .. } => {
                require_exactly(
                    &signers,
                    &[
                        (self.identity, "the current device identity key"),
                        (*identity, "the new device identity key"),
                    ],
                    op,
                )?;
            }
            OpBody::FactoryReset { .. } => {
                require_exactly(&signers, &[(self.identity, "the device identity key")], op)?;
            }
            OpBody::RevokeGrant { .. } | OpBody::Endorse => {
                unreachable!("side ops are checked by check_side")
            }
        }
        Ok(id)
    }

    /// The effect of a spine op that passed [`Self::check`].
    fn commit(&mut self, op: &Op, id: OpId) {
        self.head = id;
        self.seq = op.seq;
        match &op.body {
            OpBody::Genesis(_) | OpBody::RevokeGrant { .. } | OpBody::Endorse => {}
            OpBody::Claim(set) => {
                self.setup = None;
                self.owners = set.owners.clone();
                self.threshold = set.threshold;
                self.new_era(id);
            }
            OpBody::AmendOwners(set) => {
                self.owners = set.owners.clone();
                self.threshold = set.threshold;
            }
            OpBody::Transfer(set) => {
                self.owners = set.owners.clone();
                self.threshold = set.threshold;
                self.new_era(id);
            }
            OpBody::RotateKeys { identity, kem } => {
                self.identity = *identity;
                self.kem = kem.clone();
            }
            OpBody::FactoryReset { setup } => {
                self.setup = Some(*setup);
                self.owners.clear();
                self.threshold = 0;
                self.new_era(id);
            }
        }
    }

    fn new_era(&mut self, epoch: OpId) {
        self.epoch = epoch;
        self.revoked.clear();
        self.issuer_revocations.clear();
    }

    /// The effect of a side op that passed [`check_side`] against an anchor in this era.
    fn commit_side(&mut self, op: &Op, checked: &SideChecked) {
        let OpBody::RevokeGrant { chain } = &op.body else {
            return;
        };
        let Some(revoked) = chain.last() else {
            return;
        };
        if self.revoked.insert(revoked.id()) {
            if let Some(issuer) = checked.capped_issuer {
                *self.issuer_revocations.entry(issuer).or_default() += 1;
            }
        }
    }

    fn require_owner_quorum(
        &self,
        signers: &BTreeSet<PublicKey>,
        new_owners: &[PublicKey],
        op: &Op,
    ) -> Result<()> {
        if !self.is_owned() {
            return Err(Error::OpNotAllowed {
                seq: op.seq,
                kind: op.body.kind(),
                why: "the device has no owner; claim it first",
            });
        }
        let allowed: Vec<PublicKey> = self.owners.iter().chain(new_owners).copied().collect();
        require_only(signers, &allowed, op)?;
        let valid = signers.iter().filter(|s| self.is_owner(s)).count();
        if valid < self.threshold as usize {
            return Err(Error::NotEnoughSignatures {
                seq: op.seq,
                kind: op.body.kind(),
                valid,
                required: self.threshold as usize,
            });
        }
        Ok(())
    }
}

/// Every rule a side op must pass against its anchor (docs/PROTOCOL.md §3.2, §3.3).
fn check_side(
    op: &Op,
    anchor: &Anchor<'_>,
    issuer_revocations: &BTreeMap<PublicKey, usize>,
) -> Result<SideChecked> {
    let kind = op.body.kind();
    check_place(op, &anchor.device, anchor.seq, anchor.id)?;
    let (signers, id) = op.verified_signers()?;
    let not_allowed = |why| Error::OpNotAllowed {
        seq: op.seq,
        kind,
        why,
    };
    match &op.body {
        OpBody::Endorse => {
            require_exactly(
                &signers,
                &[(anchor.identity, "the device identity key")],
                op,
            )?;
            Ok(SideChecked {
                id,
                capped_issuer: None,
            })
        }
        OpBody::RevokeGrant { chain } => {
            if anchor.owners.is_empty() {
                return Err(not_allowed("the device has no owner"));
            }
            grant::verify_chain_structure_for(chain, anchor.owners).map_err(|_| {
                not_allowed("the revoked grant's chain does not verify against the owners")
            })?;
            let revoked = chain.last().expect("structure checked: not empty");
            if !revoked.body.covers(&anchor.device, &anchor.epoch) {
                return Err(not_allowed(
                    "the revoked grant is not for this device in the era the revocation names",
                ));
            }
            let issuer = revoked.body.issuer;
            let by_owner = signers.iter().any(|s| anchor.owners.contains(s));
            if !by_owner && !signers.contains(&issuer) {
                return Err(Error::MissingSignature {
                    seq: op.seq,
                    who: "an owner or the grant's issuer",
                });
            }
            let mut allowed = anchor.owners.to_vec();
            allowed.push(issuer);
            require_only(&signers, &allowed, op)?;
            let capped_issuer = (!by_owner).then_some(issuer);
            if let Some(issuer) = capped_issuer {
                if issuer_revocations.get(&issuer).copied().unwrap_or(0) >= MAX_ISSUER_REVOCATIONS {
                    return Err(not_allowed(
                        "a grant holder who is not an owner may revoke at most 32 grants per era; ask an owner",
                    ));
                }
            }
            Ok(SideChecked { id, capped_issuer })
        }
        _ => Err(not_allowed(
            "only revocations and endorsements are side ops",
        )),
    }
}

/// Where an op must sit: on this device, right after the op it names (a spine op's parent, a
/// side op's anchor), checked before any signature.
fn check_place(op: &Op, device: &DeviceId, before_seq: u64, before: OpId) -> Result<()> {
    if op.device != *device {
        return Err(Error::WrongDevice {
            what: format!("op {}", op.seq),
            expected: device.to_string(),
            found: op.device.to_string(),
        });
    }
    if op.seq != before_seq + 1 {
        return Err(Error::WrongSequence {
            expected: before_seq + 1,
            found: op.seq,
        });
    }
    if op.prev != before {
        return Err(Error::BrokenLink { seq: op.seq });
    }
    Ok(())
}

fn require_exactly(
    signers: &BTreeSet<PublicKey>,
    expected: &[(PublicKey, &'static str)],
    op: &Op,
) -> Result<()> {
    for (key, who) in expected {
        if !signers.contains(key) {
            return Err(Error::MissingSignature { seq: op.seq, who });
        }
    }
    let keys: Vec<PublicKey> = expected.iter().map(|(k, _)| *k).collect();
    require_only(signers, &keys, op)
}

/// Refuses signatures by keys with no say in this op, so a copy of an op cannot be padded with
/// junk that makes different nodes hold different bytes for no reason.
fn require_only(signers: &BTreeSet<PublicKey>, allowed: &[PublicKey], op: &Op) -> Result<()> {
    if signers.iter().all(|s| allowed.contains(s)) {
        Ok(())
    } else {
        Err(Error::OpNotAllowed {
            seq: op.seq,
            kind: op.body.kind(),
            why: "it carries a signature by a key with no say in it",
        })
    }
}

/// Two valid, different spine ops after the same parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvidence {
    pub seq: u64,
    pub ours: Op,
    pub theirs: Op,
}

/// What merging another view into ours found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeReport {
    /// Ops the other view had that we did not (spine ops appended, side ops taken).
    pub added: usize,
    /// The other view's spine ended before ours: it is stale (withholding or lagging).
    pub behind: bool,
    /// An unresolved fork: a valid different spine op where ours has one, and the device has
    /// endorsed neither branch (or both). Ours is kept; raise an alarm.
    pub fork: Option<ForkEvidence>,
    /// The device endorsed their branch and not ours: their branch replaced ours from `seq`.
    pub switched: Option<ForkEvidence>,
    /// A valid different spine op on a branch the device did not endorse, where it endorsed
    /// ours: theirs lost. Evidence that someone signed a rival history (e.g. a leaked setup key).
    pub outvoted: Option<ForkEvidence>,
    /// The first invalid op of the other view, if any; no spine op from it on was taken.
    pub invalid: Option<Error>,
    /// Side ops anchored on an op our spine does not hold (another branch, or past our head):
    /// not taken. A replica that sees them should fetch the other party's whole chain.
    pub unanchored: usize,
}

/// One op of the spine with what its side ops are checked against.
#[derive(Debug, Clone)]
struct SpineEntry {
    /// Where the op is in [`Chain::all`].
    at: usize,
    id: OpId,
    /// Owners right after this op, shared with neighbours that did not change them.
    owners: Arc<[PublicKey]>,
    epoch: OpId,
    identity: PublicKey,
    /// The device endorsed this op (or signed it itself).
    endorsed: bool,
}

/// A verified chain: the spine (every op but side ops, linked one to the next) and the side
/// ops that count (this era's revocations, every endorsement). Construction verifies from
/// genesis; every mutation verifies the new op.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Every op that counts, in canonical wire order: each spine op, then the side ops anchored
    /// on it by id. A new spine op therefore always goes last.
    all: Vec<Op>,
    spine: Vec<SpineEntry>,
    /// The side ops held, by (seq, id).
    side: BTreeSet<(u64, OpId)>,
    state: ChainState,
}

/// An op's place in the canonical order: each spine op, then the side ops anchored on it by id.
fn canonical_key(op: &Op, id: impl FnOnce() -> OpId) -> (u64, bool, OpId) {
    if op.body.is_side() {
        (op.seq.saturating_sub(1), true, id())
    } else {
        (op.seq, false, OpId::NONE)
    }
}

impl Chain {
    pub fn from_genesis(genesis: Op) -> Result<Self> {
        let state = ChainState::genesis(&genesis)?;
        let entry = SpineEntry {
            at: 0,
            id: state.head,
            owners: Arc::from(Vec::new()),
            epoch: state.epoch,
            identity: state.identity,
            endorsed: true,
        };
        Ok(Chain {
            all: vec![genesis],
            spine: vec![entry],
            side: BTreeSet::new(),
            state,
        })
    }

    /// Verifies a whole chain from its genesis (spine and side ops in canonical order, or any
    /// order where each side op follows its anchor).
    pub fn verify(ops: Vec<Op>) -> Result<Self> {
        let mut iter = ops.into_iter();
        let genesis = iter.next().ok_or(Error::MissingGenesis)?;
        let mut chain = Chain::from_genesis(genesis)?;
        for op in iter {
            chain.append(op)?;
        }
        Ok(chain)
    }

    pub fn device(&self) -> DeviceId {
        self.state.device
    }

    /// Every op that counts, spine and side, in canonical wire order: what to serve or store.
    pub fn ops(&self) -> &[Op] {
        &self.all
    }

    /// The id of each op of [`Self::ops`], in the same order, without hashing: spine ids are
    /// remembered, and side ops sit in `all` in the order of their `(seq, id)` keys.
    pub fn op_ids(&self) -> Vec<OpId> {
        let mut spine = self.spine.iter().peekable();
        let mut side = self.side.iter();
        let ids: Vec<OpId> = (0..self.all.len())
            .map(|at| match spine.next_if(|e| e.at == at) {
                Some(entry) => entry.id,
                None => side.next().expect("one key per side op").1,
            })
            .collect();
        debug_assert!(self.all.iter().zip(&ids).all(|(op, id)| op.id() == *id));
        ids
    }

    /// Spine ops from `seq` on, with every side op (side ops are few, and one anchored on an old
    /// op may arrive late: a reader asking for what is new must not miss it).
    pub fn ops_from(&self, seq: u64) -> Vec<Op> {
        self.iter_from(seq).cloned().collect()
    }

    /// [`Self::ops_from`] without copying the ops (a node encodes them straight off the chain).
    pub fn iter_from(&self, seq: u64) -> impl Iterator<Item = &Op> {
        self.all
            .iter()
            .filter(move |op| op.seq >= seq || op.body.is_side())
    }

    /// The spine, genesis first: op `seq` is at index `seq`.
    pub fn spine(&self) -> impl DoubleEndedIterator<Item = &Op> + ExactSizeIterator {
        self.spine.iter().map(|e| &self.all[e.at])
    }

    /// The ids of the spine ops, genesis first (remembered, not hashed).
    pub fn spine_ids(&self) -> impl ExactSizeIterator<Item = OpId> + '_ {
        self.spine.iter().map(|e| e.id)
    }

    /// The ids of the side ops held (remembered, not hashed).
    pub fn side_ids(&self) -> impl Iterator<Item = OpId> + '_ {
        self.side.iter().map(|&(_, id)| id)
    }

    /// The spine op at `seq`.
    pub fn spine_op(&self, seq: u64) -> Option<&Op> {
        let entry = self.spine.get(usize::try_from(seq).ok()?)?;
        Some(&self.all[entry.at])
    }

    /// This era's revocations and every endorsement, in canonical order.
    pub fn side_ops(&self) -> impl Iterator<Item = &Op> {
        self.all.iter().filter(|op| op.body.is_side())
    }

    /// How many spine ops the chain has (the head's seq + 1).
    pub fn len(&self) -> usize {
        self.spine.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn head(&self) -> OpId {
        self.state.head
    }

    /// The state after the last op.
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// The device endorsed the spine op at `seq` (or signed it itself).
    pub fn is_endorsed(&self, seq: u64) -> bool {
        usize::try_from(seq)
            .ok()
            .and_then(|i| self.spine.get(i))
            .is_some_and(|e| e.endorsed)
    }

    /// The device endorsed some spine op at or after `seq`, and so this branch from `seq` on.
    fn endorsed_from(&self, seq: usize) -> bool {
        self.spine.iter().skip(seq).any(|e| e.endorsed)
    }

    /// Where the spine op `id` sits and what held right after it: its seq, the owners then and
    /// the era (the id of the latest claim, transfer or reset up to it). Consent entries are
    /// anchored on spine ops this way (docs/PROTOCOL.md §14.5).
    pub fn spine_anchor(&self, id: &OpId) -> Option<(u64, &[PublicKey], OpId)> {
        self.spine
            .iter()
            .enumerate()
            .find(|(_, e)| e.id == *id)
            .map(|(seq, e)| (seq as u64, &*e.owners, e.epoch))
    }

    /// The first spine op after `seq` that starts a new era (a transfer, a factory reset, or the
    /// claim after a reset): its seq and `issued_ms`; `None` when the era of `seq` is current.
    pub fn era_end_after(&self, seq: u64) -> Option<(u64, u64)> {
        let start = usize::try_from(seq).ok()?;
        let epoch = self.spine.get(start)?.epoch;
        self.spine
            .iter()
            .enumerate()
            .skip(start + 1)
            .find(|(_, e)| e.epoch != epoch)
            .map(|(i, e)| (i as u64, self.all[e.at].issued_ms))
    }

    /// The unsigned endorsement of the spine op at `seq`, for the device to sign with its
    /// identity key; `None` past the head.
    pub fn endorsement(&self, seq: u64, issued_ms: u64) -> Option<Op> {
        let entry = self.spine.get(usize::try_from(seq).ok()?)?;
        Some(Op::new(
            self.state.device,
            seq + 1,
            entry.id,
            issued_ms,
            OpBody::Endorse,
        ))
    }

    /// The state as of spine op `seq` ("who owned this, with what threshold, then"), with the
    /// side ops anchored up to it.
    pub fn state_at(&self, seq: u64) -> Option<ChainState> {
        Some(
            self.prefix(usize::try_from(seq).ok()?.checked_add(1)?)?
                .state,
        )
    }

    /// The chain cut after its first `len` spine ops, with the side ops anchored on them.
    fn prefix(&self, len: usize) -> Option<Chain> {
        if len == 0 || len > self.spine.len() {
            return None;
        }
        let ops = self
            .all
            .iter()
            .filter(|op| {
                if op.body.is_side() {
                    op.seq <= len as u64
                } else {
                    op.seq < len as u64
                }
            })
            .cloned()
            .collect();
        Some(Chain::verify(ops).expect("a prefix of a verified chain verifies"))
    }

    /// Starts the next op (unsigned): sequence and link are filled in. A side op is anchored on
    /// the head.
    pub fn propose(&self, issued_ms: u64, body: OpBody) -> Op {
        Op::new(
            self.state.device,
            self.state.seq + 1,
            self.state.head,
            issued_ms,
            body,
        )
    }

    /// Checks that `op` would be a valid next spine op, or a valid side op on any spine op,
    /// without appending it; returns the state it would lead to.
    pub fn check_next(&self, op: &Op) -> Result<ChainState> {
        if !op.body.is_side() {
            return self.state.apply(op);
        }
        let entry = self.anchor_entry(op)?;
        let checked = check_side(op, &self.anchor_of(entry), &self.state.issuer_revocations)?;
        let mut next = self.state.clone();
        if entry.epoch == self.state.epoch {
            next.commit_side(op, &checked);
        }
        Ok(next)
    }

    /// Appends a spine op or takes a side op; returns the op's id. A side op that changes
    /// nothing (a copy, a second endorsement of one op, a revocation of a grant already revoked
    /// or anchored in an ended era) is verified and then not kept.
    pub fn append(&mut self, op: Op) -> Result<OpId> {
        if op.body.is_side() {
            return self.add_side(op).map(|(id, _)| id);
        }
        let era = self.state.epoch;
        self.state.apply_in_place(&op)?;
        let last = self.spine.last().expect("a chain has a genesis");
        let owners = if *last.owners == *self.state.owners {
            last.owners.clone()
        } else {
            Arc::from(self.state.owners.clone())
        };
        let endorsed = matches!(
            op.body,
            OpBody::RotateKeys { .. } | OpBody::FactoryReset { .. }
        );
        self.spine.push(SpineEntry {
            at: self.all.len(),
            id: self.state.head,
            owners,
            epoch: self.state.epoch,
            identity: self.state.identity,
            endorsed,
        });
        self.all.push(op);
        if self.state.epoch != era {
            self.drop_revocations();
        }
        Ok(self.state.head)
    }

    /// Revocations die with their era; endorsements stay to settle old forks.
    fn drop_revocations(&mut self) {
        self.all
            .retain(|op| !matches!(op.body, OpBody::RevokeGrant { .. }));
        self.side = self
            .all
            .iter()
            .filter(|op| op.body.is_side())
            .map(|op| (op.seq, op.id()))
            .collect();
        self.reindex();
    }

    fn reindex(&mut self) {
        let mut spine = self.spine.iter_mut();
        for (at, op) in self.all.iter().enumerate() {
            if !op.body.is_side() {
                spine.next().expect("one entry per spine op").at = at;
            }
        }
    }

    fn anchor_entry(&self, op: &Op) -> Result<&SpineEntry> {
        let entry = op
            .seq
            .checked_sub(1)
            .and_then(|a| usize::try_from(a).ok())
            .and_then(|a| self.spine.get(a));
        match entry {
            Some(entry) if entry.id == op.prev => Ok(entry),
            Some(_) => Err(Error::BrokenLink { seq: op.seq }),
            None => Err(Error::WrongSequence {
                expected: self.state.seq + 1,
                found: op.seq,
            }),
        }
    }

    fn anchor_of<'a>(&self, entry: &'a SpineEntry) -> Anchor<'a> {
        Anchor {
            device: self.state.device,
            seq: self.all[entry.at].seq,
            id: entry.id,
            owners: &entry.owners,
            epoch: entry.epoch,
            identity: entry.identity,
        }
    }

    /// Verifies a side op against its anchor; returns its id and whether it was kept.
    fn add_side(&mut self, op: Op) -> Result<(OpId, bool)> {
        let entry = self.anchor_entry(&op)?;
        let checked = check_side(&op, &self.anchor_of(entry), &self.state.issuer_revocations)?;
        let id = checked.id;
        if self.side.contains(&(op.seq, id)) {
            return Ok((id, false));
        }
        let anchor = (op.seq - 1) as usize;
        let kept = match &op.body {
            OpBody::Endorse => !std::mem::replace(&mut self.spine[anchor].endorsed, true),
            OpBody::RevokeGrant { chain } => {
                self.spine[anchor].epoch == self.state.epoch
                    && chain
                        .last()
                        .is_some_and(|g| !self.state.revoked.contains(&g.id()))
            }
            _ => false,
        };
        if kept {
            self.state.commit_side(&op, &checked);
            let key = canonical_key(&op, || id);
            let at = self
                .all
                .partition_point(|o| canonical_key(o, || o.id()) < key);
            self.side.insert((op.seq, id));
            self.all.insert(at, op);
            for entry in self.spine.iter_mut().filter(|e| e.at >= at) {
                entry.at += 1;
            }
        }
        Ok((id, kept))
    }

    /// Merges ops another party served (a whole chain, or spine ops from any sequence up to our
    /// length, with side ops). Extends our spine with the longest valid run and takes their
    /// valid side ops. A valid different spine op where we hold one is settled by the device's
    /// endorsement (docs/PROTOCOL.md §3.3): their branch replaces ours only if the device
    /// endorsed it and not ours; otherwise ours is kept and the fork reported. An invalid spine
    /// op stops the spine merge and is reported.
    pub fn merge(&mut self, theirs: &[Op]) -> MergeReport {
        let mut report = MergeReport::default();
        let (spine, side): (Vec<&Op>, Vec<&Op>) = theirs.iter().partition(|op| !op.body.is_side());
        self.merge_spine(&spine, &side, &mut report);
        for op in side {
            match self.add_side(op.clone()) {
                Ok((_, true)) => report.added += 1,
                Ok((_, false)) => {}
                // Anchored on a branch we do not hold, or past our head: not ours to judge.
                Err(Error::BrokenLink { .. } | Error::WrongSequence { .. }) => {
                    report.unanchored += 1
                }
                Err(e) => {
                    report.invalid.get_or_insert(e);
                }
            }
        }
        report
    }

    fn merge_spine(&mut self, theirs: &[&Op], their_side: &[&Op], report: &mut MergeReport) {
        let Some(first) = theirs.first() else {
            report.behind = true;
            return;
        };
        if first.seq > self.spine.len() as u64 {
            report.invalid = Some(Error::WrongSequence {
                expected: self.spine.len() as u64,
                found: first.seq,
            });
            return;
        }
        for (i, op) in theirs.iter().enumerate() {
            let expected_seq = first.seq + i as u64;
            if op.seq != expected_seq {
                report.invalid = Some(Error::WrongSequence {
                    expected: expected_seq,
                    found: op.seq,
                });
                return;
            }
            let pos = op.seq as usize;
            if pos >= self.spine.len() {
                match self.append((*op).clone()) {
                    Ok(_) => report.added += 1,
                    Err(e) => {
                        report.invalid = Some(e);
                        return;
                    }
                }
                continue;
            }
            if self.spine[pos].id == op.id() {
                continue;
            }
            self.settle_fork(pos, &theirs[i..], their_side, report);
            return;
        }
        let last_seq = first.seq + theirs.len() as u64 - 1;
        report.behind = last_seq < self.state.seq;
    }

    /// Their spine (from `pos` on) differs from ours at `pos`.
    fn settle_fork(
        &mut self,
        pos: usize,
        theirs: &[&Op],
        their_side: &[&Op],
        report: &mut MergeReport,
    ) {
        let op = theirs[0];
        if op.device != self.device() {
            report.invalid = Some(Error::WrongDevice {
                what: format!("op {}", op.seq),
                expected: self.device().to_string(),
                found: op.device.to_string(),
            });
            return;
        }
        let evidence = ForkEvidence {
            seq: op.seq,
            ours: self.all[self.spine[pos].at].clone(),
            theirs: op.clone(),
        };
        if pos == 0 {
            // Two geneses of one device id: the device key signed both. Nothing settles that.
            match ChainState::genesis(op) {
                Ok(_) => report.fork = Some(evidence),
                Err(e) => report.invalid = Some(e),
            }
            return;
        }
        let mut candidate = self.prefix(pos).expect("0 < pos < len");
        let mut taken = 0;
        for op in theirs {
            if let Err(e) = candidate.append((*op).clone()) {
                report.invalid = Some(e);
                break;
            }
            taken += 1;
        }
        if taken == 0 {
            return;
        }
        for s in their_side {
            let _ = candidate.add_side((*s).clone());
        }
        match (self.endorsed_from(pos), candidate.endorsed_from(pos)) {
            (false, true) => {
                for s in self.side_ops() {
                    let _ = candidate.add_side(s.clone());
                }
                report.added += taken;
                report.switched = Some(evidence);
                *self = candidate;
            }
            (true, false) => report.outvoted = Some(evidence),
            _ => report.fork = Some(evidence),
        }
    }
}
