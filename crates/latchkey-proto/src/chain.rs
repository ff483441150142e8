//! The ownership chain: a per-device, hash-linked list of signed ops from genesis. Every party
//! verifies the whole chain itself; a registry node can withhold ops but cannot forge one.

use core::fmt;
use std::collections::BTreeSet;

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
    fn check(&self, seq: u64, kind: &'static str) -> Result<()> {
        let not_allowed = |why| Err(Error::OpNotAllowed { seq, kind, why });
        if self.owners.is_empty() || self.owners.len() > MAX_OWNERS {
            return not_allowed("an owner set has 1 to 16 owners");
        }
        if !self.owners.windows(2).all(|w| w[0] < w[1]) {
            return not_allowed("owners must be sorted and distinct");
        }
        if self.threshold == 0 || self.threshold as usize > self.owners.len() {
            return not_allowed("the threshold must be between 1 and the number of owners");
        }
        Ok(())
    }
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
        }
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
    pub revoked: BTreeSet<GrantId>,
    pub head: OpId,
    pub seq: u64,
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
            head: id,
            seq: 0,
        })
    }

    /// The state after `op`, if `op` is a valid successor of this state.
    pub fn apply(&self, op: &Op) -> Result<ChainState> {
        let id = self.check(op)?;
        let mut next = self.clone();
        next.commit(op, id);
        Ok(next)
    }

    /// Applies `op` in place; on error the state is unchanged. Appending this way costs no copy
    /// of the state, whose revocation set grows with the chain.
    pub fn apply_in_place(&mut self, op: &Op) -> Result<()> {
        let id = self.check(op)?;
        self.commit(op, id);
        Ok(())
    }

    /// Every rule an op must pass to follow this state; returns its id.
    fn check(&self, op: &Op) -> Result<OpId> {
        let kind = op.body.kind();
        if op.device != self.device {
            return Err(Error::WrongDevice {
                what: format!("op {}", op.seq),
                expected: self.device.to_string(),
                found: op.device.to_string(),
            });
        }
        if op.seq != self.seq + 1 {
            return Err(Error::WrongSequence {
                expected: self.seq + 1,
                found: op.seq,
            });
        }
        if op.prev != self.head {
            return Err(Error::BrokenLink { seq: op.seq });
        }
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
                self.require_owner_quorum(&signers, op)?;
                set.check(op.seq, kind)?;
            }
            OpBody::RevokeGrant { chain } => {
                if !self.is_owned() {
                    return Err(not_allowed("the device has no owner"));
                }
                grant::verify_chain_structure(chain, self).map_err(|_| {
                    not_allowed("the revoked grant's chain does not verify against the owners")
                })?;
                let revoked = chain.last().expect("structure checked: not empty");
                let issuer = revoked.body.issuer;
                let by_owner = signers.iter().any(|s| self.is_owner(s));
                if !by_owner && !signers.contains(&issuer) {
                    return Err(Error::MissingSignature {
                        seq: op.seq,
                        who: "an owner or the grant's issuer",
                    });
                }
                let mut allowed = self.owners.clone();
                allowed.push(issuer);
                require_only(&signers, &allowed, op)?;
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
        }
        Ok(id)
    }

    /// The effect of an op that passed [`Self::check`].
    fn commit(&mut self, op: &Op, id: OpId) {
        self.head = id;
        self.seq = op.seq;
        match &op.body {
            OpBody::Genesis(_) => {}
            OpBody::Claim(set) => {
                self.setup = None;
                self.owners = set.owners.clone();
                self.threshold = set.threshold;
                self.epoch = id;
            }
            OpBody::AmendOwners(set) => {
                self.owners = set.owners.clone();
                self.threshold = set.threshold;
            }
            OpBody::Transfer(set) => {
                self.owners = set.owners.clone();
                self.threshold = set.threshold;
                self.epoch = id;
                self.revoked.clear();
            }
            OpBody::RevokeGrant { chain } => {
                if let Some(revoked) = chain.last() {
                    self.revoked.insert(revoked.id());
                }
            }
            OpBody::RotateKeys { identity, kem } => {
                self.identity = *identity;
                self.kem = kem.clone();
            }
            OpBody::FactoryReset { setup } => {
                self.setup = Some(*setup);
                self.owners.clear();
                self.threshold = 0;
                self.epoch = id;
                self.revoked.clear();
            }
        }
    }

    fn require_owner_quorum(&self, signers: &BTreeSet<PublicKey>, op: &Op) -> Result<()> {
        if !self.is_owned() {
            return Err(Error::OpNotAllowed {
                seq: op.seq,
                kind: op.body.kind(),
                why: "the device has no owner; claim it first",
            });
        }
        require_only(signers, &self.owners, op)?;
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

/// Two valid, different ops after the same parent: proof that signers equivocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvidence {
    pub seq: u64,
    pub ours: Op,
    pub theirs: Op,
}

/// What merging another view into ours found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeReport {
    /// Ops the other view had that extend ours (now appended).
    pub added: usize,
    /// The other view ended before ours: it is stale (withholding or lagging).
    pub behind: bool,
    /// The other view has a valid different op where ours has one; ours is kept.
    pub fork: Option<ForkEvidence>,
    /// The first invalid op of the other view, if any; nothing from it on was taken.
    pub invalid: Option<Error>,
}

/// A verified chain. Construction verifies from genesis; every mutation verifies the new op.
#[derive(Debug, Clone)]
pub struct Chain {
    ops: Vec<Op>,
    state: ChainState,
}

impl Chain {
    pub fn from_genesis(genesis: Op) -> Result<Self> {
        let state = ChainState::genesis(&genesis)?;
        Ok(Chain {
            ops: vec![genesis],
            state,
        })
    }

    /// Verifies a whole chain from its genesis.
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

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
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

    /// The state as of op `seq` ("who owned this, with what threshold, then").
    pub fn state_at(&self, seq: u64) -> Option<ChainState> {
        let last = usize::try_from(seq).ok()?;
        if last >= self.ops.len() {
            return None;
        }
        let mut state = ChainState::genesis(&self.ops[0]).ok()?;
        for op in &self.ops[1..=last] {
            state = state.apply(op).ok()?;
        }
        Some(state)
    }

    /// Starts the next op (unsigned): sequence and link are filled in.
    pub fn propose(&self, issued_ms: u64, body: OpBody) -> Op {
        Op::new(
            self.state.device,
            self.state.seq + 1,
            self.state.head,
            issued_ms,
            body,
        )
    }

    /// Checks that `op` would be a valid next op, without appending it.
    pub fn check_next(&self, op: &Op) -> Result<ChainState> {
        self.state.apply(op)
    }

    pub fn append(&mut self, op: Op) -> Result<OpId> {
        self.state.apply_in_place(&op)?;
        self.ops.push(op);
        Ok(self.state.head)
    }

    /// Merges ops another party served (a whole chain, or a run of consecutive ops starting at
    /// any sequence up to our length). Extends ours with the longest valid run; a valid
    /// different op at a position we already hold is reported as a fork and never preferred
    /// silently; an invalid op stops the merge and is reported.
    pub fn merge(&mut self, theirs: &[Op]) -> MergeReport {
        let mut report = MergeReport::default();
        let Some(first) = theirs.first() else {
            report.behind = true;
            return report;
        };
        if first.seq > self.ops.len() as u64 {
            report.invalid = Some(Error::WrongSequence {
                expected: self.ops.len() as u64,
                found: first.seq,
            });
            return report;
        }
        for (i, op) in theirs.iter().enumerate() {
            let expected_seq = first.seq + i as u64;
            if op.seq != expected_seq {
                report.invalid = Some(Error::WrongSequence {
                    expected: expected_seq,
                    found: op.seq,
                });
                return report;
            }
            let Ok(pos) = usize::try_from(op.seq) else {
                report.invalid = Some(Error::WrongSequence {
                    expected: self.ops.len() as u64,
                    found: op.seq,
                });
                return report;
            };
            if pos < self.ops.len() {
                if self.ops[pos].id() == op.id() {
                    continue;
                }
                let valid = if pos == 0 {
                    ChainState::genesis(op).map(|_| ())
                } else {
                    self.state_at(op.seq - 1)
                        .expect("our own prefix is valid")
                        .apply(op)
                        .map(|_| ())
                };
                match valid {
                    Ok(()) if op.device != self.device() => {
                        report.invalid = Some(Error::WrongDevice {
                            what: format!("op {}", op.seq),
                            expected: self.device().to_string(),
                            found: op.device.to_string(),
                        });
                    }
                    Ok(()) => {
                        report.fork = Some(ForkEvidence {
                            seq: op.seq,
                            ours: self.ops[pos].clone(),
                            theirs: op.clone(),
                        });
                    }
                    Err(e) => report.invalid = Some(e),
                }
                return report;
            }
            match self.append(op.clone()) {
                Ok(_) => report.added += 1,
                Err(e) => {
                    report.invalid = Some(e);
                    return report;
                }
            }
        }
        let last_seq = first.seq + theirs.len() as u64 - 1;
        report.behind = last_seq < self.state.seq;
        report
    }
}
