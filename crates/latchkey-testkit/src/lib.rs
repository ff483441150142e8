//! The test kit every Latchkey crate shares: a fixed clock, deterministic randomness and keys,
//! a builder for devices with verified ownership chains, and helpers that tamper with bytes in
//! flight, and a peer that lies about the size of its answers ([`liar`]). Only for tests and
//! benchmarks.

pub mod liar;
pub mod postgres;

use latchkey_proto::chain::{Chain, Op, OpBody, OwnerSet};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::grant::{Grant, GrantBody, GrantScope};
use latchkey_proto::keys::{PublicKey, SigningKey};
use rand_chacha::rand_core::SeedableRng;
pub use rand_chacha::ChaCha20Rng;

/// A fixed "now": 2027-01-15T08:00:00Z, in milliseconds since the Unix epoch.
pub const T0: u64 = 1_800_000_000_000;
pub const MINUTE: u64 = 60_000;
pub const HOUR: u64 = 60 * MINUTE;
pub const DAY: u64 = 24 * HOUR;

/// Deterministic randomness for one test.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// The `n`th test person's key (stable across runs).
pub fn person(n: u64) -> SigningKey {
    SigningKey::generate(&mut rng(0x5eed_0000 + n))
}

/// Sorted public keys, as an owner set needs them.
pub fn sorted(keys: &[&SigningKey]) -> Vec<PublicKey> {
    let mut v: Vec<PublicKey> = keys.iter().map(|k| k.public_key()).collect();
    v.sort();
    v
}

/// A device and its verified chain, with helpers to grow the chain the way real parties do.
#[derive(Debug)]
pub struct TestDevice {
    pub keys: DeviceKeys,
    pub chain: Chain,
    pub name: String,
}

impl TestDevice {
    /// A freshly booted device: keys and genesis, unclaimed.
    pub fn new(seed: u64, name: &str) -> Self {
        let keys = DeviceKeys::generate(&mut rng(seed));
        let genesis = keys.genesis(name, T0).expect("short name");
        let chain = Chain::from_genesis(genesis).expect("own genesis verifies");
        TestDevice {
            keys,
            chain,
            name: name.to_owned(),
        }
    }

    /// The claim op (setup key + every new owner signs), unapplied.
    pub fn claim_op(&self, owners: &[&SigningKey], threshold: u8) -> Op {
        let mut op = self.chain.propose(
            T0,
            OpBody::Claim(OwnerSet {
                owners: sorted(owners),
                threshold,
            }),
        );
        op.sign(&self.keys.setup);
        for o in owners {
            op.sign(o);
        }
        op
    }

    pub fn claim(&mut self, owners: &[&SigningKey], threshold: u8) -> &mut Self {
        let op = self.claim_op(owners, threshold);
        self.chain.append(op).expect("valid claim");
        self
    }

    /// An op with `body`, signed by `signers`, unapplied.
    pub fn op(&self, body: OpBody, signers: &[&SigningKey]) -> Op {
        let mut op = self.chain.propose(T0, body);
        for s in signers {
            op.sign(s);
        }
        op
    }

    /// The device's signed endorsement of its spine op at `seq`, unapplied.
    pub fn endorsement(&self, seq: u64) -> Op {
        let mut op = self.chain.endorsement(seq, T0).expect("a held op");
        op.sign(&self.keys.identity);
        op
    }

    pub fn apply(&mut self, body: OpBody, signers: &[&SigningKey]) -> &mut Self {
        let op = self.op(body, signers);
        self.chain.append(op).expect("valid op");
        self
    }

    /// A grant from `issuer` to `subject` for `actions` on this device in its current era,
    /// valid from `from` to `until` (ms).
    pub fn grant(
        &self,
        issuer: &SigningKey,
        subject: &PublicKey,
        actions: &[&str],
        from: u64,
        until: u64,
        depth: u8,
    ) -> Grant {
        let state = self.chain.state();
        GrantBody {
            issuer: issuer.public_key(),
            subject: *subject,
            scope: vec![GrantScope {
                device: state.device,
                epoch: state.epoch,
            }],
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_before_ms: from,
            not_after_ms: until,
            use_limit: None,
            delegation_depth: depth,
            extensions: Vec::new(),
            salt: [issuer.public_key().as_bytes()[0]; 16],
        }
        .sign(issuer)
        .expect("issuer signs")
    }
}

/// A copy of `bytes` with one bit flipped at `index` (as a network attacker would).
pub fn flip_bit(bytes: &[u8], index: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[index] ^= 0x01;
    out
}

/// A TCP port on 127.0.0.1 that is free now, for a server a test starts a moment later.
///
/// Picked at random **below** Linux's ephemeral range (32768–60999): a port found by binding
/// `:0` and letting go comes from that range, so the kernel may hand it to an outgoing
/// connection or another test's `:0` bind before the server binds it (seen in CI as
/// `AddrInUse`). Two tests picking the same port at random stays possible but rare, and the
/// port must bind when chosen.
pub fn free_port() -> u16 {
    use rand_core::RngCore;
    for _ in 0..1_000 {
        let port = 20_000 + (rand_core::OsRng.next_u32() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 between 20000 and 31999");
}

/// [`free_port`] as an address.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}
