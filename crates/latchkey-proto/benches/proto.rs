//! Criterion benchmarks: each protocol operation measured next to the raw primitives it is built
//! from, in the same run, so `latchkey / primitives` shows what our own code (encoding, padding,
//! key combining, hashing, state checks) adds. Every comparison is a criterion group with two
//! functions: `latchkey` (our API) and `primitives` (iota-crypto and pqcrypto-ntruprime called
//! directly, doing the same cryptographic work). The `parts` group times single primitives, for
//! reading the results.
//!
//! After criterion's output comes a paired pass: for each comparison, 201 rounds (41 for the
//! slow ones) that each time a block of about 1 ms of one side right after one of the other
//! (alternating which goes first), and the median of the per-round ratios. Both sides then see
//! the same machine load, so the ratio holds on a busy machine where two criterion figures taken
//! seconds apart may not. It runs only under `cargo bench` (not `--test`/`--list`), honours
//! criterion's filter as a substring, and is skipped when `LATCHKEY_BENCH_NO_PAIRED` is set.
//!
//! Run: `cargo bench -p latchkey-proto`. Figures and their reading are in docs/BENCHMARKS.md;
//! no test asserts a time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode};
use crypto::ciphers::chacha::XChaCha20Poly1305;
use crypto::ciphers::traits::Aead;
use crypto::hashes::blake2b::Blake2b256;
use crypto::hashes::Digest;
use crypto::keys::x25519;
use crypto::signatures::ed25519;
use hkdf::Hkdf;
use pqcrypto_ntruprime::sntrup761;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::Sha256;

use latchkey_proto::chain::{Chain, ChainState, Op, OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, Outcome, ReplyTo, Response, SignedCommand};
use latchkey_proto::consent::{
    self, ConsentAction, ConsentId, ConsentLog, ConsentRequest, ProviderIdentity,
};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope;
use latchkey_proto::grant::{self, Grant, GrantBody, GrantRequest, GrantScope};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, PublicKey, Signature, SigningKey};
use latchkey_proto::pad;
use latchkey_proto::schedule::WeeklySchedule;
use latchkey_proto::stream::{self, KeyEntry, KeyGrant, Phase, Reading, StreamKey};

/// The signing labels the protocol prefixes (docs/PROTOCOL.md). The raw benchmarks sign and
/// verify the very messages the protocol does, so their lengths match; setup checks that each
/// reconstructed message verifies, so a changed label fails loudly instead of skewing a figure.
const OP_LABEL: &[u8] = b"latchkey/v1/op\0";
const GRANT_LABEL: &[u8] = b"latchkey/v1/grant\0";
const COMMAND_LABEL: &[u8] = b"latchkey/v1/command\0";
const RESPONSE_LABEL: &[u8] = b"latchkey/v1/response\0";

/// 2026-01-01T00:00:00Z; any fixed time does.
const T0: u64 = 1_767_225_600_000;
const HOUR: u64 = 3_600_000;
/// Ops after genesis and claim in the long chain (1,000 in all).
const EXTRA_OPS: usize = 998;
/// The same for the 10,000-op chain (a device's history after years of stays and revocations).
const HUGE_EXTRA_OPS: usize = 9_998;
/// The padded plaintext of a typical command or response: the smallest bucket.
const BUCKET: usize = pad::BUCKETS[0];

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// How one comparison is measured. Times are modest so the whole run takes a few minutes on a
/// 2-core machine.
#[derive(Clone, Copy)]
struct Tune {
    sample_size: usize,
    measurement_secs: u64,
    /// One iteration a sample (for operations of tens of milliseconds).
    flat: bool,
    batch: BatchSize,
    /// Rounds of the paired pass.
    paired_rounds: usize,
}

const QUICK: Tune = Tune {
    sample_size: 30,
    measurement_secs: 3,
    flat: false,
    batch: BatchSize::SmallInput,
    paired_rounds: 201,
};

/// A chain ten times the long one: measured once per sample, few samples.
const HUGE: Tune = Tune {
    sample_size: 10,
    measurement_secs: 20,
    flat: true,
    batch: BatchSize::PerIteration,
    paired_rounds: 5,
};

const SLOW: Tune = Tune {
    sample_size: 20,
    measurement_secs: 6,
    flat: true,
    batch: BatchSize::PerIteration,
    paired_rounds: 41,
};

/// Each paired block runs about this long (at least one iteration).
const PAIRED_BLOCK: Duration = Duration::from_millis(1);

struct Runner {
    c: Criterion,
    /// `None` when the paired pass does not run.
    paired: Option<Paired>,
}

struct Paired {
    filters: Vec<String>,
    rows: Vec<PairedRow>,
}

struct PairedRow {
    name: String,
    ours: Duration,
    raw: Duration,
    /// Sorted per-round ratios.
    ratios: Vec<f64>,
}

impl Paired {
    fn from_args() -> Option<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if !has("--bench")
            || has("--test")
            || has("--list")
            || args.iter().any(|a| a.starts_with("--profile-time"))
            || std::env::var_os("LATCHKEY_BENCH_NO_PAIRED").is_some()
        {
            return None;
        }
        // Positional arguments are criterion's filters; skip the values of options taking one.
        const WITH_VALUE: &[&str] = &[
            "-c",
            "--color",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
            "--format",
        ];
        let mut filters = Vec::new();
        let mut skip = false;
        for a in &args {
            if skip {
                skip = false;
            } else if WITH_VALUE.contains(&a.as_str()) {
                skip = true;
            } else if !a.starts_with('-') {
                filters.push(a.clone());
            }
        }
        Some(Paired {
            filters,
            rows: Vec::new(),
        })
    }

    fn wants(&self, name: &str) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| name.contains(f.as_str()) || f.starts_with(name))
    }

    fn report(&self) {
        if self.rows.is_empty() {
            return;
        }
        println!();
        println!(
            "Paired pass: latchkey / primitives over alternating rounds (201, or 41 for the slow \
             ones), median [quartiles]; times are medians per iteration"
        );
        println!(
            "{:<24} {:>12} {:>12} {:>7} {:>15}",
            "comparison", "latchkey", "primitives", "ratio", "quartiles"
        );
        for row in &self.rows {
            let q = |p: f64| row.ratios[((row.ratios.len() - 1) as f64 * p).round() as usize];
            println!(
                "{:<24} {:>12} {:>12} {:>7.2} {:>15}",
                row.name,
                show(row.ours),
                show(row.raw),
                q(0.5),
                format!("[{:.2}, {:.2}]", q(0.25), q(0.75)),
            );
        }
    }
}

fn show(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times `k` runs of `routine` on inputs prepared beforehand (untimed), like
/// criterion's `iter_batched`; outputs are dropped after the clock stops.
fn block<I, O>(
    k: usize,
    setup: &mut impl FnMut() -> I,
    routine: &mut impl FnMut(I) -> O,
) -> Duration {
    let inputs: Vec<I> = (0..k).map(|_| setup()).collect();
    let mut outputs = Vec::with_capacity(k);
    let start = Instant::now();
    for input in inputs {
        outputs.push(black_box(routine(black_box(input))));
    }
    let elapsed = start.elapsed();
    drop(outputs);
    elapsed
}

impl Runner {
    /// One comparison: a criterion group with `latchkey` and `primitives`, then (when enabled)
    /// the paired rounds. Setups are never timed.
    fn compare<I, O, J, P>(
        &mut self,
        name: &str,
        tune: Tune,
        mut ours_setup: impl FnMut() -> I,
        mut ours: impl FnMut(I) -> O,
        mut raw_setup: impl FnMut() -> J,
        mut raw: impl FnMut(J) -> P,
    ) {
        let mut g = self.c.benchmark_group(name);
        g.sample_size(tune.sample_size)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(tune.measurement_secs));
        if tune.flat {
            g.sampling_mode(SamplingMode::Flat);
        }
        g.bench_function("latchkey", |b| {
            b.iter_batched(&mut ours_setup, &mut ours, tune.batch)
        });
        g.bench_function("primitives", |b| {
            b.iter_batched(&mut raw_setup, &mut raw, tune.batch)
        });
        g.finish();

        let Some(paired) = self.paired.as_mut().filter(|p| p.wants(name)) else {
            return;
        };
        let one = block(1, &mut ours_setup, &mut ours).max(block(1, &mut raw_setup, &mut raw));
        let k = (PAIRED_BLOCK.as_nanos() / one.as_nanos().max(1)).max(1) as usize;
        let (mut ours_t, mut raw_t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..tune.paired_rounds {
            let (a, b) = if round % 2 == 0 {
                let a = block(k, &mut ours_setup, &mut ours);
                (a, block(k, &mut raw_setup, &mut raw))
            } else {
                let b = block(k, &mut raw_setup, &mut raw);
                (block(k, &mut ours_setup, &mut ours), b)
            };
            ratios.push(a.as_secs_f64() / b.as_secs_f64());
            ours_t.push(a / k as u32);
            raw_t.push(b / k as u32);
        }
        ratios.sort_by(f64::total_cmp);
        paired.rows.push(PairedRow {
            name: name.to_owned(),
            ours: median(ours_t),
            raw: median(raw_t),
            ratios,
        });
    }

    /// [`Runner::compare`] for routines that need no fresh input.
    fn compare_simple<O, P>(
        &mut self,
        name: &str,
        tune: Tune,
        mut ours: impl FnMut() -> O,
        mut raw: impl FnMut() -> P,
    ) {
        self.compare(name, tune, || (), |()| ours(), || (), |()| raw());
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn sorted(mut keys: Vec<PublicKey>) -> Vec<PublicKey> {
    keys.sort();
    keys
}

fn raw_public(key: &PublicKey) -> ed25519::PublicKey {
    ed25519::PublicKey::try_from_bytes(key.to_bytes()).expect("a valid key stays valid")
}

fn raw_signature(sig: &Signature) -> ed25519::Signature {
    ed25519::Signature::from_bytes(sig.0)
}

/// One Ed25519 verification as the raw benchmarks perform it.
struct RawCheck {
    key: ed25519::PublicKey,
    signature: ed25519::Signature,
    message: Vec<u8>,
}

impl RawCheck {
    fn new(key: &PublicKey, signature: &Signature, label: &[u8], content: &[u8]) -> Self {
        let check = RawCheck {
            key: raw_public(key),
            signature: raw_signature(signature),
            message: [label, content].concat(),
        };
        assert!(check.run(), "reconstructed signing message does not verify");
        check
    }

    fn run(&self) -> bool {
        self.key.verify(&self.signature, &self.message)
    }
}

/// A device with two owners (one-of-two), and the raw stand-ins for the device's KEM keys.
struct World {
    rng: ChaCha20Rng,
    device: DeviceKeys,
    owner: SigningKey,
    co_owner: SigningKey,
    /// Genesis and claim only: the state a device checks commands against.
    chain: Chain,
}

impl World {
    fn new() -> Self {
        let mut rng = rng(0x1a7c);
        let device = DeviceKeys::generate(&mut rng);
        let owner = SigningKey::generate(&mut rng);
        let co_owner = SigningKey::generate(&mut rng);
        let genesis = device.genesis("Front door", T0).expect("genesis");
        let mut chain = Chain::from_genesis(genesis).expect("genesis verifies");
        let owners = sorted(vec![owner.public_key(), co_owner.public_key()]);
        let mut claim = chain.propose(
            T0 + 1,
            OpBody::Claim(OwnerSet {
                owners,
                threshold: 1,
            }),
        );
        claim.sign(&device.setup);
        claim.sign(&owner);
        claim.sign(&co_owner);
        chain.append(claim).expect("claim verifies");
        World {
            rng,
            device,
            owner,
            co_owner,
            chain,
        }
    }

    fn state(&self) -> &ChainState {
        self.chain.state()
    }

    /// A typical owner command: "unlock", no arguments, reply through a mailbox.
    fn unlock(&mut self) -> Command {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let mut mailbox = [0u8; 32];
        self.rng.fill_bytes(&mut mailbox);
        Command {
            device: self.device.device_id(),
            sender: self.owner.public_key(),
            action: "unlock".into(),
            args: Vec::new(),
            timestamp_ms: T0 + 2 * HOUR,
            nonce,
            challenge: None,
            grants: Vec::new(),
            reply_to: ReplyTo::Mailbox(mailbox),
        }
    }

    fn grant(
        &mut self,
        issuer: &SigningKey,
        subject: PublicKey,
        actions: &[&str],
        window: (u64, u64),
        delegation_depth: u8,
    ) -> Grant {
        let mut salt = [0u8; 16];
        self.rng.fill_bytes(&mut salt);
        GrantBody {
            issuer: issuer.public_key(),
            subject,
            scope: vec![GrantScope {
                device: self.state().device,
                epoch: self.state().epoch,
            }],
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_before_ms: window.0,
            not_after_ms: window.1,
            use_limit: None,
            delegation_depth,
            extensions: Vec::new(),
            salt,
        }
        .sign(issuer)
        .expect("issuer signs")
    }

    /// A long chain: genesis, claim, then `extra` ops: amend-owners (signed by both owners,
    /// threshold alternating 2 and 1) and revoke-grant (a side op: a one-link owner grant to a
    /// fresh guest key, signed by one owner) in turn.
    fn long_chain(&mut self, extra: usize) -> Vec<Op> {
        let mut chain = self.chain.clone();
        let owners = sorted(vec![self.owner.public_key(), self.co_owner.public_key()]);
        for i in 0..extra {
            let issued = T0 + 10 + i as u64;
            let op = if i % 2 == 0 {
                let threshold = if i % 4 == 0 { 2 } else { 1 };
                let mut op = chain.propose(
                    issued,
                    OpBody::AmendOwners(OwnerSet {
                        owners: owners.clone(),
                        threshold,
                    }),
                );
                op.sign(&self.owner);
                op.sign(&self.co_owner);
                op
            } else {
                let guest = SigningKey::generate(&mut self.rng).public_key();
                let owner = SigningKey::from_bytes(&self.owner.to_bytes());
                let g = self.grant(&owner, guest, &["unlock"], (T0, T0 + 24 * HOUR), 0);
                let mut op = chain.propose(issued, OpBody::RevokeGrant { chain: vec![g] });
                op.sign(&self.owner);
                op
            };
            chain.append(op).expect("generated op verifies");
        }
        chain.ops().to_vec()
    }
}

/// Every Ed25519 verification `Chain::verify` performs on `ops`: each op signature, and each
/// grant signature inside a revocation (the revoked grant's chain is verified too).
fn chain_checks(ops: &[Op]) -> Vec<RawCheck> {
    let mut checks = Vec::new();
    for op in ops {
        let content = op.content_bytes();
        for s in &op.signatures {
            checks.push(RawCheck::new(&s.signer, &s.signature, OP_LABEL, &content));
        }
        if let OpBody::RevokeGrant { chain } = &op.body {
            for g in chain {
                checks.push(grant_check(g));
            }
        }
    }
    checks
}

fn grant_check(g: &Grant) -> RawCheck {
    RawCheck::new(
        &g.body.issuer,
        &g.signature,
        GRANT_LABEL,
        &g.body.content_bytes(),
    )
}

/// Raw stand-ins for the device's hybrid KEM keys.
struct RawKem {
    x_secret: x25519::SecretKey,
    x_public: x25519::PublicKey,
    pq_public: sntrup761::PublicKey,
    pq_secret: sntrup761::SecretKey,
    pq_ct: sntrup761::Ciphertext,
}

impl RawKem {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let x_secret = x25519::SecretKey::from_bytes(random32(rng));
        let x_public = x25519::SecretKey::from_bytes(random32(rng)).public_key();
        let (pq_public, pq_secret) = sntrup761::keypair();
        let (_, pq_ct) = sntrup761::encapsulate(&pq_public);
        RawKem {
            x_secret,
            x_public,
            pq_public,
            pq_secret,
            pq_ct,
        }
    }
}

fn random32(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes
}

const AEAD_KEY: [u8; 32] = [0x42; 32];
const AEAD_NONCE: [u8; 24] = [0x24; 24];

fn raw_aead_seal(plaintext: &[u8], aad: &[u8], out: &mut [u8]) {
    let (ct, tag) = out.split_at_mut(plaintext.len());
    XChaCha20Poly1305::try_encrypt(&AEAD_KEY, &AEAD_NONCE, aad, plaintext, ct, tag)
        .expect("sizes match");
}

fn raw_aead_open(sealed: &[u8], aad: &[u8], out: &mut [u8]) {
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    XChaCha20Poly1305::try_decrypt(&AEAD_KEY, &AEAD_NONCE, aad, &mut out[..ct.len()], ct, tag)
        .expect("authentic ciphertext");
}

fn sealed_bucket() -> Vec<u8> {
    let mut sealed = vec![0u8; BUCKET + 16];
    raw_aead_seal(&[0x5a; BUCKET], &[], &mut sealed);
    sealed
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

fn commands(r: &mut Runner) {
    let mut w = World::new();
    let mut raw_rng = rng(2);
    let kem = RawKem::new(&mut raw_rng);
    let raw_key = ed25519::SecretKey::from_bytes(&w.owner.to_bytes());
    let device_kem = w.state().kem.clone();
    let device_pub = w.device.identity.public_key();

    let command = w.unlock();
    let signed: SignedCommand = command.clone().sign(&w.owner).expect("sign");
    let command_message = [COMMAND_LABEL, &command.content_bytes()].concat();
    let command_check = RawCheck::new(
        &signed.command.sender,
        &signed.signature,
        COMMAND_LABEL,
        &command.content_bytes(),
    );
    let (envelope, pending) =
        envelope::seal_command(&signed, &device_kem, &mut w.rng).expect("seal");
    let sealed = sealed_bucket();
    let mut buf = vec![0u8; BUCKET + 16];

    // Command::sign consumes the command: each iteration gets a clone, made untimed.
    r.compare(
        "command_sign",
        QUICK,
        || command.clone(),
        |cmd| cmd.sign(black_box(&w.owner)).expect("sign"),
        || (),
        |()| raw_key.sign(black_box(&command_message)),
    );

    r.compare_simple(
        "command_verify",
        QUICK,
        || {
            black_box(&signed).verify_signature().expect("valid");
        },
        || assert!(black_box(&command_check).run()),
    );

    // Ours: X25519 ephemeral key + DH, sntrup761 encapsulation, HKDF combiner, padding to
    // 1024 B, XChaCha20-Poly1305 with the header as associated data, the command id.
    let mut seal_rng = rng(3);
    r.compare_simple(
        "command_seal",
        QUICK,
        || envelope::seal_command(black_box(&signed), &device_kem, &mut seal_rng).expect("seal"),
        || {
            let ss_x = kem.x_secret.diffie_hellman(black_box(&kem.x_public));
            let (ss_pq, ct) = sntrup761::encapsulate(black_box(&kem.pq_public));
            raw_aead_seal(black_box(&[0x5a; BUCKET]), &[], &mut buf);
            (ss_x.to_bytes(), ss_pq, ct)
        },
    );

    r.compare_simple(
        "command_open",
        QUICK,
        || {
            let opened =
                envelope::open_command(black_box(&envelope), &w.device.kem).expect("opens");
            opened.command.verify_signature().expect("valid");
            opened
        },
        || {
            let ss_x = kem.x_secret.diffie_hellman(black_box(&kem.x_public));
            let ss_pq = sntrup761::decapsulate(black_box(&kem.pq_ct), &kem.pq_secret);
            raw_aead_open(black_box(&sealed), &[], &mut buf);
            assert!(command_check.run());
            (ss_x.to_bytes(), ss_pq)
        },
    );

    // Responses: the device signs and seals its answer; the sender opens and verifies it.
    let opened = envelope::open_command(&envelope, &w.device.kem).expect("opens");
    let response = Response {
        device: w.device.device_id(),
        command: command.id(),
        timestamp_ms: Some(T0 + 2 * HOUR),
        outcome: Outcome::Accepted,
        body: Vec::new(),
    };
    let signed_response = response.clone().sign(&w.device.identity).expect("sign");
    let response_bytes = signed_response.to_bytes();
    let response_content = &response_bytes[..response_bytes.len() - 64];
    let response_message = [RESPONSE_LABEL, response_content].concat();
    let response_check = RawCheck::new(
        &device_pub,
        &signed_response.signature,
        RESPONSE_LABEL,
        response_content,
    );
    let raw_device_key = ed25519::SecretKey::from_bytes(&w.device.identity.to_bytes());
    let response_envelope = opened
        .reply
        .seal(&signed_response, &mut w.rng)
        .expect("seal");

    // Ours: Response::sign then Responder::seal (padding, AEAD with the header as AAD).
    let mut seal_rng = rng(4);
    r.compare(
        "response_seal",
        QUICK,
        || response.clone(),
        |response| {
            let signed = response.sign(&w.device.identity).expect("sign");
            opened.reply.seal(&signed, &mut seal_rng).expect("seal")
        },
        || (),
        |()| {
            let sig = raw_device_key.sign(black_box(&response_message));
            raw_aead_seal(black_box(&[0x5a; BUCKET]), &[], &mut buf);
            sig
        },
    );

    // Ours: PendingReply::open (AEAD, unpadding, decoding, signature, command match).
    r.compare_simple(
        "response_open",
        QUICK,
        || {
            pending
                .open(black_box(&response_envelope), &device_pub)
                .expect("opens")
        },
        || {
            raw_aead_open(black_box(&sealed), &[], &mut buf);
            assert!(response_check.run());
        },
    );
}

fn chain_and_grants(r: &mut Runner) {
    let mut w = World::new();

    // A 1,000-op chain, built once; each iteration verifies a fresh clone (cloning is untimed).
    let ops = w.long_chain(EXTRA_OPS);
    assert_eq!(ops.len(), 2 + EXTRA_OPS);
    let checks = chain_checks(&ops);
    let op_signatures: usize = ops.iter().map(|op| op.signatures.len()).sum();
    eprintln!(
        "chain: {} ops, {} Ed25519 verifications ({} op signatures, {} grant signatures)",
        ops.len(),
        checks.len(),
        op_signatures,
        checks.len() - op_signatures
    );
    r.compare(
        "chain_verify_1000",
        SLOW,
        || ops.clone(),
        |ops| Chain::verify(ops).expect("verifies"),
        || (),
        |()| {
            for check in black_box(&checks) {
                assert!(check.run());
            }
        },
    );

    // Ten times longer: what a device (or a new verifier) replays after years of history.
    let huge = w.long_chain(HUGE_EXTRA_OPS);
    assert_eq!(huge.len(), 2 + HUGE_EXTRA_OPS);
    let huge_checks = chain_checks(&huge);
    r.compare(
        "chain_verify_10000",
        HUGE,
        || huge.clone(),
        |ops| Chain::verify(ops).expect("verifies"),
        || (),
        |()| {
            for check in black_box(&huge_checks) {
                assert!(check.run());
            }
        },
    );

    // A two-link delegation: owner → host (may delegate once) → cleaner (unlock only, narrower
    // window), checked against the device's state for the cleaner's "unlock".
    let host = SigningKey::generate(&mut w.rng);
    let cleaner = SigningKey::generate(&mut w.rng);
    let owner = SigningKey::from_bytes(&w.owner.to_bytes());
    let to_host = w.grant(
        &owner,
        host.public_key(),
        &["unlock", "lock", "status"],
        (T0, T0 + 7 * 24 * HOUR),
        1,
    );
    let to_cleaner = w.grant(
        &host,
        cleaner.public_key(),
        &["unlock"],
        (T0 + HOUR, T0 + 3 * HOUR),
        0,
    );
    let grants = vec![to_host, to_cleaner];
    let grant_checks: Vec<RawCheck> = grants.iter().map(grant_check).collect();
    let state = w.state().clone();
    let device = state.device;
    let sender = cleaner.public_key();
    let request = GrantRequest {
        device: &device,
        sender: &sender,
        action: "unlock",
        args: b"",
        now_ms: T0 + 2 * HOUR,
    };
    r.compare_simple(
        "grant_chain_verify_2",
        QUICK,
        || grant::verify_grant_chain(black_box(&grants), &state, &request).expect("allowed"),
        || {
            for check in black_box(&grant_checks) {
                assert!(check.run());
            }
        },
    );

    // The same delegation with pinned arguments at their caps' worst: the owner pins 8 strings
    // (the most the 512-byte extension holds at ~60 bytes each), the host pins one of them, and
    // the cleaner sends it. The extra work is decoding both lists (twice: shape, subset) and
    // the lookups.
    let strings: Vec<Vec<u8>> = (0..8u8)
        .map(|i| {
            format!("{{\"entity_id\":\"lock.door_{i}\",\"hold_open_s\":30,\"code\":\"0000\"}}")
        })
        .map(String::into_bytes)
        .collect();
    let pin = |list: &[Vec<u8>]| {
        grant::AllowedArguments::new(list.to_vec())
            .expect("within the caps")
            .to_extension()
    };
    let repin = |g: &Grant, issuer: &SigningKey, list: &[Vec<u8>]| {
        GrantBody {
            extensions: vec![pin(list)],
            ..g.body.clone()
        }
        .sign(issuer)
        .expect("issuer signs")
    };
    let pinned = vec![
        repin(&grants[0], &owner, &strings),
        repin(&grants[1], &host, &strings[5..6]),
    ];
    let pinned_checks: Vec<RawCheck> = pinned.iter().map(grant_check).collect();
    let pinned_request = GrantRequest {
        args: &strings[5],
        ..request
    };
    r.compare_simple(
        "grant_chain_verify_2_pinned_args",
        QUICK,
        || grant::verify_grant_chain(black_box(&pinned), &state, &pinned_request).expect("allowed"),
        || {
            for check in black_box(&pinned_checks) {
                assert!(check.run());
            }
        },
    );

    // Decoding only (no signature is verified). Decoding checks that every public key is a
    // valid point, the bulk of the work; `primitives` times that check for each key the input
    // holds.
    let genesis_bytes = ops[0].to_bytes();
    let genesis_keys = keys_in(&ops[..1]);
    r.compare_simple(
        "decode_genesis_op",
        QUICK,
        || Op::from_bytes(black_box(&genesis_bytes)).expect("decodes"),
        || decode_keys(black_box(&genesis_keys)),
    );

    let list_bytes = OpList(ops.clone()).to_bytes();
    let list_keys = keys_in(&ops);
    eprintln!(
        "op list: {} bytes, {} public keys",
        list_bytes.len(),
        list_keys.len()
    );
    r.compare_simple(
        "decode_op_list_1000",
        SLOW,
        || OpList::from_bytes(black_box(&list_bytes)).expect("decodes"),
        || decode_keys(black_box(&list_keys)),
    );
}

/// Weekly schedules (grant extension 0x81): the check on its own against jiff's own offset
/// lookup, and what it adds to a guest's whole open + verify + authorize on the device, with
/// and without schedules on both grants of a host → cleaner chain, each against the raw
/// primitives of that same open (X25519, sntrup761, AEAD, decompressing the five public keys
/// the command carries, three Ed25519 verifications).
fn schedules(r: &mut Runner) {
    let mut w = World::new();
    let weekdays = WeeklySchedule::parse_spec(&["mon-fri 08:00-12:00"], "Europe/Amsterdam")
        .expect("valid schedule");
    let value = weekdays.encode();
    // Wednesday 2026-06-10 10:00 CEST, inside both windows below.
    let wednesday = 1_781_078_400_000;
    assert!(weekdays.allows(wednesday));
    let zone = jiff::tz::TimeZoneDatabase::bundled()
        .get("Europe/Amsterdam")
        .expect("bundled zone");
    let ts = jiff::Timestamp::from_millisecond(wednesday as i64).expect("in range");
    // Ours: what step 4 does per grant, decoding the extension value (name lookup in the
    // embedded database included) and checking the instant. Primitives: one jiff offset
    // lookup and civil conversion on a zone already in hand.
    r.compare_simple(
        "schedule_check",
        QUICK,
        || {
            WeeklySchedule::decode(black_box(&value))
                .expect("decodes")
                .allows(black_box(wednesday))
        },
        || zone.to_datetime(black_box(ts)),
    );

    let host = SigningKey::generate(&mut w.rng);
    let cleaner = SigningKey::generate(&mut w.rng);
    let owner = SigningKey::from_bytes(&w.owner.to_bytes());
    let window = (T0, T0 + 365 * 24 * HOUR);
    let plain = vec![
        w.grant(&owner, host.public_key(), &["unlock", "lock"], window, 1),
        w.grant(&host, cleaner.public_key(), &["unlock"], window, 0),
    ];
    let schedule = |g: &Grant, issuer: &SigningKey, spec: &str| {
        GrantBody {
            extensions: vec![WeeklySchedule::parse_spec(&[spec], "Europe/Amsterdam")
                .expect("valid schedule")
                .to_extension()],
            ..g.body.clone()
        }
        .sign(issuer)
        .expect("issuer signs")
    };
    let scheduled = vec![
        schedule(&plain[0], &owner, "mon-fri 08:00-12:00"),
        schedule(&plain[1], &host, "wed 09:00-12:00"),
    ];
    let state = w.state().clone();
    let device_kem = state.kem.clone();
    let mut raw_rng = rng(7);
    let kem = RawKem::new(&mut raw_rng);
    let mut buf = vec![0u8; pad::BUCKETS[1] + 16];
    let mut envelopes = Vec::new();
    for (name, grants) in [
        ("guest_open_authorize", &plain),
        ("guest_open_authorize_scheduled", &scheduled),
    ] {
        let mut command = w.unlock();
        command.sender = cleaner.public_key();
        command.timestamp_ms = wednesday;
        command.grants = grants.clone();
        let signed = command.clone().sign(&cleaner).expect("sign");
        let (envelope, _) = envelope::seal_command(&signed, &device_kem, &mut w.rng).expect("seal");
        envelopes.push(envelope.clone());
        let bucket = pad::bucket_for(signed.to_bytes().len()).expect("fits");
        let mut sealed = vec![0u8; bucket + 16];
        raw_aead_seal(&vec![0x5a; bucket], &[], &mut sealed);
        let mut checks = vec![RawCheck::new(
            &cleaner.public_key(),
            &signed.signature,
            COMMAND_LABEL,
            &command.content_bytes(),
        )];
        checks.extend(grants.iter().map(grant_check));
        // Every public key the command carries arrives as 32 bytes; verifying from bytes needs
        // each decompressed, so the primitives decode them too (ours also checks them strictly).
        let keys: Vec<[u8; 32]> = std::iter::once(cleaner.public_key())
            .chain(grants.iter().flat_map(|g| [g.body.issuer, g.body.subject]))
            .map(|k| k.to_bytes())
            .collect();
        eprintln!(
            "{name}: command {} bytes in a {bucket}-byte bucket",
            signed.to_bytes().len()
        );
        r.compare_simple(
            name,
            QUICK,
            || {
                let opened =
                    envelope::open_command(black_box(&envelope), &w.device.kem).expect("opens");
                opened.command.verify_signature().expect("valid");
                latchkey_proto::command::authorize(&opened.command.command, &state, wednesday)
                    .expect("allowed")
            },
            || {
                let ss_x = kem.x_secret.diffie_hellman(black_box(&kem.x_public));
                let ss_pq = sntrup761::decapsulate(black_box(&kem.pq_ct), &kem.pq_secret);
                raw_aead_open(black_box(&sealed), &[], &mut buf);
                decode_keys(black_box(&keys));
                for check in black_box(&checks) {
                    assert!(check.run());
                }
                (ss_x.to_bytes(), ss_pq)
            },
        );
    }
    // What the schedules themselves add: the same guest open with them ("latchkey") against
    // without them (in the "primitives" slot), paired so both see the same load.
    let open_authorize = |env: &[u8]| {
        let opened = envelope::open_command(black_box(env), &w.device.kem).expect("opens");
        opened.command.verify_signature().expect("valid");
        latchkey_proto::command::authorize(&opened.command.command, &state, wednesday)
            .expect("allowed")
    };
    r.compare_simple(
        "guest_open_schedule_vs_none",
        QUICK,
        || open_authorize(&envelopes[1]),
        || open_authorize(&envelopes[0]),
    );
}

/// A short link's sealed invitation (docs/PROTOCOL.md §10.3): sealing checks the invitation
/// (the grant's signature), pads it and runs the AEAD; opening runs the AEAD, unpads, decodes
/// and checks. `primitives`: the same AEAD over the same bucket, the grant's Ed25519
/// verification and the two BLAKE2b derivations (id and key), called directly.
fn short_links(r: &mut Runner) {
    use latchkey_proto::invite::{Invitation, InviteDoor};
    use latchkey_proto::shortlink::{SealedInvitation, ShortLink};
    let mut w = World::new();
    let link_key = SigningKey::generate(&mut w.rng);
    let owner = SigningKey::from_bytes(&w.owner.to_bytes());
    let grant = w.grant(
        &owner,
        link_key.public_key(),
        &["unlock"],
        (T0, T0 + HOUR),
        0,
    );
    let invitation = Invitation {
        guest_secret: link_key.to_bytes(),
        grants: vec![grant.clone()],
        guest_name: "Guest".into(),
        doors: vec![InviteDoor {
            device: w.state().device,
            name: "Front door".into(),
            addrs: Vec::new(),
        }],
        nodes: vec!["https://n1.latchkey.example".into()],
    };
    let link = ShortLink::generate(
        vec![
            "https://n1.latchkey.example".into(),
            "https://n2.latchkey.example".into(),
        ],
        &mut w.rng,
    )
    .expect("fits");
    let mut seal_rng = rng(77);
    let blob = SealedInvitation::seal(&link, &invitation, &mut seal_rng).expect("seals");
    let bucket = blob.len() - 1 - 24 - 16;
    eprintln!("sealed invitation: {} bytes (bucket {bucket})", blob.len());
    let check = grant_check(&grant);
    let secret = *link.secret;
    let derive = move || {
        let mut id = Blake2b256::new();
        id.update(b"latchkey/v1/invite-id\0");
        id.update(secret);
        let mut key = Blake2b256::new();
        key.update(b"latchkey/v1/invite-key\0");
        key.update(secret);
        (id.finalize(), key.finalize())
    };
    let plain = vec![0x5a; bucket];
    let mut out = vec![0u8; bucket + 16];
    r.compare_simple(
        "sealed_invitation_seal",
        QUICK,
        || SealedInvitation::seal(&link, black_box(&invitation), &mut seal_rng).expect("seals"),
        || {
            black_box(derive());
            assert!(check.run());
            raw_aead_seal(black_box(&plain), &[0; 32], &mut out);
        },
    );
    let mut sealed_raw = vec![0u8; bucket + 16];
    raw_aead_seal(&plain, &[0; 32], &mut sealed_raw);
    let mut opened = vec![0u8; bucket];
    r.compare_simple(
        "sealed_invitation_open",
        QUICK,
        || SealedInvitation::open(&link, black_box(&blob)).expect("opens"),
        || {
            black_box(derive());
            raw_aead_open(black_box(&sealed_raw), &[0; 32], &mut opened);
            assert!(check.run());
        },
    );
}

/// The bytes of every Ed25519 public key an op encoding carries (each is checked on decode).
fn keys_in(ops: &[Op]) -> Vec<[u8; 32]> {
    let mut keys = Vec::new();
    for op in ops {
        match &op.body {
            OpBody::Genesis(g) => keys.extend([g.identity, g.setup]),
            OpBody::Claim(set) | OpBody::AmendOwners(set) | OpBody::Transfer(set) => {
                keys.extend(set.owners.iter().copied())
            }
            OpBody::RevokeGrant { chain } => {
                for g in chain {
                    keys.extend([g.body.issuer, g.body.subject]);
                }
            }
            OpBody::RotateKeys { identity, .. } => keys.push(*identity),
            OpBody::FactoryReset { setup } => keys.push(*setup),
            OpBody::Endorse => {}
        }
        keys.extend(op.signatures.iter().map(|s| s.signer));
    }
    keys.iter().map(PublicKey::to_bytes).collect()
}

fn decode_keys(keys: &[[u8; 32]]) {
    for k in keys {
        black_box(ed25519::PublicKey::try_from_bytes(*k).expect("valid"));
    }
}

/// Single primitives, to read the groups above (what a step costs on its own).
fn parts(c: &mut Criterion) {
    let mut r = rng(5);
    let kem = RawKem::new(&mut r);
    let sk = ed25519::SecretKey::from_bytes(&random32(&mut r));
    let pk = sk.public_key();
    let msg = [7u8; 200];
    let sig = sk.sign(&msg);
    let sealed = sealed_bucket();
    let mut buf = vec![0u8; BUCKET + 16];
    let header = [0u8; 2 + 32 + 1039 + 24];
    let ikm = [3u8; 64 + 32 + 1039 + 32 + 1158];

    let mut g = c.benchmark_group("parts");
    g.sample_size(QUICK.sample_size)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(QUICK.measurement_secs));
    g.bench_function("ed25519_sign", |b| b.iter(|| sk.sign(black_box(&msg))));
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| pk.verify(black_box(&sig), black_box(&msg)))
    });
    g.bench_function("ed25519_public_key_decode", |b| {
        let bytes = pk.to_bytes();
        b.iter(|| ed25519::PublicKey::try_from_bytes(black_box(bytes)).expect("valid"))
    });
    // Latchkey's decode: the same decompression plus the weak-key rule (docs/PROTOCOL.md §1).
    g.bench_function("latchkey_public_key_decode_strict", |b| {
        let bytes = pk.to_bytes();
        b.iter(|| PublicKey::from_bytes(black_box(bytes)).expect("valid"))
    });
    g.bench_function("x25519_dh", |b| {
        b.iter(|| kem.x_secret.diffie_hellman(black_box(&kem.x_public)))
    });
    g.bench_function("x25519_public_key", |b| {
        b.iter(|| black_box(&kem.x_secret).public_key())
    });
    g.bench_function("sntrup761_encapsulate", |b| {
        b.iter(|| sntrup761::encapsulate(black_box(&kem.pq_public)))
    });
    g.bench_function("sntrup761_decapsulate", |b| {
        b.iter(|| sntrup761::decapsulate(black_box(&kem.pq_ct), &kem.pq_secret))
    });
    g.bench_function("aead_seal_1024", |b| {
        b.iter(|| raw_aead_seal(black_box(&[0x5a; BUCKET]), &[], &mut buf))
    });
    g.bench_function("aead_open_1024", |b| {
        b.iter(|| raw_aead_open(black_box(&sealed), &[], &mut buf))
    });
    g.bench_function("aead_seal_1024_with_header_aad", |b| {
        b.iter(|| raw_aead_seal(black_box(&[0x5a; BUCKET]), &header, &mut buf))
    });
    g.bench_function("hkdf_combine_and_2_expands", |b| {
        b.iter(|| {
            let (prk, hk) = Hkdf::<Sha256>::extract(Some(b"label"), black_box(&ikm));
            let mut k1 = [0u8; 32];
            let mut k2 = [0u8; 32];
            hk.expand(b"command", &mut k1).expect("32 bytes");
            hk.expand(b"response", &mut k2).expect("32 bytes");
            black_box((prk, k1, k2))
        })
    });
    g.bench_function("blake2b_256_200B", |b| {
        b.iter(|| Blake2b256::digest(black_box(&msg)))
    });
    g.bench_function("chacha20rng_fill_1000B", |b| {
        let mut fill = [0u8; 1000];
        b.iter(|| r.fill_bytes(black_box(&mut fill)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Data streams and consent (docs/PROTOCOL.md §14).

const KEY_GRANT_LABEL: &[u8] = b"latchkey/v1/key-grant\0";
const CONSENT_ENTRY_LABEL: &[u8] = b"latchkey/v1/consent-entry\0";
const CONSENT_REQUEST_LABEL: &[u8] = b"latchkey/v1/consent-request\0";

/// A DSMR 5 three-phase reading with gas (135 bytes encoded).
fn meter_reading() -> Reading {
    let phase = |v: u32, a: u32, w: u32| Phase {
        voltage_mv: Some(v),
        current_ma: Some(a),
        power_delivered_w: Some(w),
        power_returned_w: Some(0),
    };
    Reading {
        meter_time_ms: Some(T0),
        tariff: Some(2),
        energy_delivered_wh: vec![4_546_201, 2_984_102],
        energy_returned_wh: vec![12, 0],
        power_delivered_w: Some(1_193),
        power_returned_w: Some(0),
        phases: vec![
            phase(229_000, 2_000, 445),
            phase(230_100, 1_000, 213),
            phase(229_900, 3_000, 535),
        ],
        gas_l: Some(2_569_646),
        gas_time_ms: Some(T0),
    }
}

fn streams(r: &mut Runner) {
    let mut fixture = rng(40);
    let device = DeviceId([7; 32]);
    let key = StreamKey::generate(&mut fixture);
    let reading = meter_reading();
    let frame =
        stream::seal_reading(&device, "p1", 1, &key, 1, &reading, &mut fixture).expect("seal");
    // The raw side: the same AEAD over the same sizes (a 258-byte block, the 69-byte header as
    // associated data), without encoding, padding, key derivation or decoding.
    let header = frame[..69].to_vec();
    let block = [0x5au8; stream::READING_BLOCK];
    let mut raw_sealed = vec![0u8; stream::READING_BLOCK + 16];
    raw_aead_seal(&block, &header, &mut raw_sealed);
    let mut buf = vec![0u8; stream::READING_BLOCK + 16];

    let mut seal_rng = rng(41);
    r.compare_simple(
        "stream_reading_seal",
        QUICK,
        || {
            stream::seal_reading(
                &device,
                "p1",
                1,
                &key,
                2,
                black_box(&reading),
                &mut seal_rng,
            )
            .expect("seal")
        },
        || raw_aead_seal(black_box(&block), &header, &mut buf),
    );
    r.compare_simple(
        "stream_reading_open",
        QUICK,
        || stream::open_reading(black_box(&frame), &key).expect("opens"),
        || raw_aead_open(black_box(&raw_sealed), &header, &mut buf),
    );

    // One key message per recipient: what a rotation costs per provider (N providers = N×).
    let identity = SigningKey::generate(&mut fixture);
    let raw_identity = ed25519::SecretKey::from_bytes(&identity.to_bytes());
    let recipient = KemSecretKey::generate(&mut fixture);
    let kem = RawKem::new(&mut fixture);
    let grant = KeyGrant {
        device,
        stream: "p1".into(),
        recipient: [3; 32],
        consent: Some(ConsentId([4; 32])),
        issued_ms: T0,
        keys: vec![KeyEntry {
            key_id: 2,
            from_seq: 1_000,
            key: StreamKey::generate(&mut fixture),
        }],
    };
    let signed_grant = grant.to_signed_bytes(&identity).expect("sign");
    let grant_message = [KEY_GRANT_LABEL, &signed_grant[..signed_grant.len() - 64]].concat();
    let mut grant_buf = vec![0u8; stream::GRANT_BLOCK + 16];
    let mut grant_rng = rng(42);
    r.compare_simple(
        "stream_key_grant_seal",
        QUICK,
        || {
            stream::seal_key_grant(
                black_box(&grant),
                &identity,
                recipient.public(),
                &mut grant_rng,
            )
            .expect("seal")
        },
        || {
            let sig = raw_identity.sign(black_box(&grant_message));
            let ss_x = kem.x_secret.diffie_hellman(black_box(&kem.x_public));
            let (ss_pq, ct) = sntrup761::encapsulate(black_box(&kem.pq_public));
            raw_aead_seal(black_box(&[0x5a; stream::GRANT_BLOCK]), &[], &mut grant_buf);
            (sig, ss_x.to_bytes(), ss_pq, ct)
        },
    );
    let message =
        stream::seal_key_grant(&grant, &identity, recipient.public(), &mut fixture).expect("seal");
    let identity_public = identity.public_key();
    let grant_check = RawCheck::new(
        &identity_public,
        &Signature(
            signed_grant[signed_grant.len() - 64..]
                .try_into()
                .expect("64"),
        ),
        KEY_GRANT_LABEL,
        &signed_grant[..signed_grant.len() - 64],
    );
    let mut sealed_grant = vec![0u8; stream::GRANT_BLOCK + 16];
    raw_aead_seal(&[0x5a; stream::GRANT_BLOCK], &[], &mut sealed_grant);
    r.compare_simple(
        "stream_key_grant_open",
        QUICK,
        || {
            stream::open_key_grant(black_box(&message), &recipient, &identity_public)
                .expect("opens")
        },
        || {
            let ss_x = kem.x_secret.diffie_hellman(black_box(&kem.x_public));
            let ss_pq = sntrup761::decapsulate(black_box(&kem.pq_ct), &kem.pq_secret);
            raw_aead_open(black_box(&sealed_grant), &[], &mut grant_buf);
            assert!(grant_check.run());
            (ss_x.to_bytes(), ss_pq)
        },
    );

    // A consent log of 100 entries (50 given, then 50 revoked) verified against its chain.
    let mut d = latchkey_testkit::TestDevice::new(43, "meter");
    let owner = latchkey_testkit::person(1);
    d.claim(&[&owner], 1);
    let chain = d.chain;
    let provider = SigningKey::generate(&mut fixture);
    let provider_kem = recipient.public().clone();
    let mut log = ConsentLog::new(&chain);
    let mut ids = Vec::new();
    for i in 0..50u8 {
        let request = ConsentRequest {
            provider: ProviderIdentity {
                name: format!("Provider {i}"),
                url: "https://provider.example".into(),
                signing: provider.public_key(),
                kem: provider_kem.clone(),
            },
            device: chain.device(),
            stream: "p1".into(),
            purpose_code: consent::purpose::INSIGHTS,
            purpose: "Monthly energy report.".into(),
            retention_days: 30,
            until_ms: None,
            history: false,
            terms: None,
            issued_ms: T0,
            nonce: [i; 16],
        }
        .sign(&provider)
        .expect("sign");
        ids.push(request.id());
        let e = log
            .next_entry(&chain, &owner, T0 + i as u64, ConsentAction::Given(request))
            .expect("entry");
        log.append(&chain, e).expect("append");
    }
    for (i, id) in ids.iter().enumerate() {
        let e = log
            .next_entry(
                &chain,
                &owner,
                T0 + 100 + i as u64,
                ConsentAction::Revoked(*id),
            )
            .expect("entry");
        log.append(&chain, e).expect("append");
    }
    let entries = log.entries().to_vec();
    assert_eq!(entries.len(), 100);
    // The raw side: the 150 Ed25519 verifications the log's rules need (each entry's owner
    // signature, each given request's provider signature) and a BLAKE2b hash per entry.
    let mut checks = Vec::new();
    let mut contents = Vec::new();
    for e in &entries {
        let content = e.content_bytes();
        checks.push(RawCheck::new(
            &e.signer,
            &e.signature,
            CONSENT_ENTRY_LABEL,
            &content,
        ));
        if let ConsentAction::Given(request) = &e.action {
            checks.push(RawCheck::new(
                &request.request().provider.signing,
                request.signature(),
                CONSENT_REQUEST_LABEL,
                &request.request().content_bytes(),
            ));
        }
        contents.push(content);
    }
    assert_eq!(checks.len(), 150);
    r.compare(
        "stream_consent_log_verify_100",
        SLOW,
        || entries.clone(),
        |entries| ConsentLog::verify(&chain, entries).expect("verifies"),
        || (),
        |()| {
            for c in &checks {
                assert!(c.run());
            }
            for content in &contents {
                black_box(Blake2b256::digest(black_box(content)));
            }
        },
    );
}

fn main() {
    let mut r = Runner {
        c: Criterion::default().configure_from_args(),
        paired: Paired::from_args(),
    };
    commands(&mut r);
    chain_and_grants(&mut r);
    schedules(&mut r);
    short_links(&mut r);
    streams(&mut r);
    parts(&mut r.c);
    if let Some(p) = &r.paired {
        p.report();
    }
    r.c.final_summary();
}
