//! Valid chains for the load tool, built from seeds with latchkey-proto (the binary cannot use
//! the test kit): the node verifies every op it is sent, so the load must be real ops.

use anyhow::Context;
use latchkey_proto::chain::{Chain, Op, OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::grant::{GrantBody, GrantScope};
use latchkey_proto::keys::{DeviceId, SigningKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The ops' issue time: 2027-01-15T08:00:00Z, as the tests use (the node does not judge it).
pub const T0: u64 = 1_800_000_000_000;
const DAY: u64 = 24 * 60 * 60 * 1000;

/// A key from a seed (stable across runs, so a re-run builds the same devices).
pub fn key(seed: u64) -> SigningKey {
    SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

/// A device, its keys and its verified chain, which the tool extends as an owner would.
pub struct BenchDevice {
    pub keys: DeviceKeys,
    pub chain: Chain,
    owner: SigningKey,
    /// Co-owners the amend ops rotate through (each signs to accept being added).
    others: Vec<SigningKey>,
    grants: u64,
}

impl BenchDevice {
    /// A freshly booted device (genesis only). `run` keeps devices of different runs apart
    /// (same seeds would make the same devices, which a node already holds).
    pub fn new(run: u64, index: u64) -> anyhow::Result<Self> {
        let seed = run.rotate_left(32) ^ index;
        let keys = DeviceKeys::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        let genesis = keys.genesis("bench", T0).context("genesis")?;
        let chain = Chain::from_genesis(genesis).context("own genesis verifies")?;
        Ok(BenchDevice {
            keys,
            chain,
            owner: key(0xb0_0000),
            others: (1..=3).map(|n| key(0xb0_0000 + n)).collect(),
            grants: 0,
        })
    }

    pub fn id(&self) -> DeviceId {
        self.chain.device()
    }

    /// Claims the device for the tool's owner (setup key + owner sign); returns the op.
    pub fn claim(&mut self) -> anyhow::Result<Op> {
        let mut op = self.chain.propose(
            T0,
            OpBody::Claim(OwnerSet {
                owners: vec![self.owner.public_key()],
                threshold: 1,
            }),
        );
        op.sign(&self.keys.setup);
        op.sign(&self.owner);
        self.chain.append(op.clone()).context("claim")?;
        Ok(op)
    }

    /// The `k`th owner-signed op after the claim: every third a revocation of a guest's grant
    /// (a side op, as a holiday rental's cancelled stay makes), else an amend of the owner set
    /// (a spine op, signed by the owner and the co-owner it adds).
    pub fn next_op(&mut self, k: u64) -> anyhow::Result<Op> {
        let op = if k % 3 == 2 {
            self.grants += 1;
            let state = self.chain.state();
            let mut salt = [0u8; 16];
            salt[..8].copy_from_slice(&self.grants.to_le_bytes());
            let grant = GrantBody {
                issuer: self.owner.public_key(),
                subject: self.others[0].public_key(),
                scope: vec![GrantScope {
                    device: state.device,
                    epoch: state.epoch,
                }],
                actions: vec!["unlock".into()],
                not_before_ms: T0,
                not_after_ms: T0 + 7 * DAY,
                use_limit: None,
                delegation_depth: 0,
                extensions: Vec::new(),
                salt,
            }
            .sign(&self.owner)
            .context("grant")?;
            let mut op = self
                .chain
                .propose(T0, OpBody::RevokeGrant { chain: vec![grant] });
            op.sign(&self.owner);
            op
        } else {
            let other = &self.others[(k % 3) as usize];
            let mut owners = vec![self.owner.public_key(), other.public_key()];
            owners.sort();
            let mut op = self.chain.propose(
                T0,
                OpBody::AmendOwners(OwnerSet {
                    owners,
                    threshold: 1,
                }),
            );
            op.sign(&self.owner);
            op.sign(other);
            op
        };
        self.chain.append(op.clone()).context("owner op")?;
        Ok(op)
    }
}

/// One device's posts, in order: genesis + claim, then owner ops, `per_post` in each.
pub struct DevicePosts {
    pub id: DeviceId,
    pub bodies: Vec<Vec<u8>>,
    /// Ops each post adds (2 for the first, `per_post` after).
    pub ops: Vec<u64>,
}

/// A device's posts: its genesis and claim in one, then `more` posts of `per_post` owner ops
/// each (one list, as a peer's feed page or an owner's batch of revocations arrives).
pub fn device_posts(run: u64, index: u64, more: u64, per_post: u64) -> anyhow::Result<DevicePosts> {
    let mut dev = BenchDevice::new(run, index)?;
    let claim = dev.claim()?;
    let genesis = dev.chain.ops()[0].clone();
    let mut bodies = vec![OpList(vec![genesis, claim]).to_bytes()];
    let mut ops = vec![2];
    let mut k = 0;
    for _ in 0..more {
        let list = (0..per_post)
            .map(|_| {
                k += 1;
                dev.next_op(k - 1)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        bodies.push(OpList(list).to_bytes());
        ops.push(per_post);
    }
    Ok(DevicePosts {
        id: dev.id(),
        bodies,
        ops,
    })
}
