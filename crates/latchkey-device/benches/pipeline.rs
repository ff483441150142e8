//! Commands per second through the device's verification pipeline on one core, next to the
//! raw cost of its parts in the same run:
//!
//! - `pipeline/full_owner_command`: open → signature → window → authority (staleness
//!   included) → nonce (in memory) → "about to run" entry → action (the `log`-like no-op) →
//!   the entry's group-committed fsync → outcome entry → signed, sealed response. Real SQLite
//!   file, WAL, so each command pays one fsync, before its answer.
//! - `pipeline/to_actuator_start`: the same up to the moment the actuator would start (no
//!   fsync: the entry is committed to the WAL and synced while the actuator runs).
//! - `pipeline/refused_replay`: a replayed envelope, refused at the nonce step with a signed
//!   answer (what a replay flood costs).
//! - `pipeline/refused_stranger`: a validly signed command from a key that is no owner and
//!   holds no grant, refused at authority with a signed answer — before any durable write.
//! - `pipeline/refused_tampered`: a tampered envelope, refused at decryption.
//! - `primitives/open_command+verify`: `envelope::open_command` and the command signature
//!   check alone (hybrid KEM decapsulation, AEAD, unpad, decode, Ed25519).
//! - `primitives/sign+seal_response`: signing and sealing one response.
//! - `primitives/durable_write`: one durable (fsynced) write, as the lease and a use count or
//!   binding take.
//! - `short_link/redeem_then_open`: a short link's first use — the link key redeems a fresh
//!   bind-on-first-use grant for the phone key (binding stored durably), then the phone
//!   opens — next to `short_link/primitives`: what those two commands cannot avoid (two
//!   `open_command`+verify, the grant's signature twice, the redemption's signature, two
//!   signed and sealed responses, the binding's durable write).
//!
//! Run: `cargo bench -p latchkey-device --bench pipeline`. Figures: docs/BENCHMARKS.md.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use latchkey_device::audit::Via;
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::pipeline::{Early, Pipeline, PipelineConfig};
use latchkey_device::store::Store;
use latchkey_device::view::View;
use latchkey_proto::command::{Command, Outcome, ReplyTo, Response};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::{open_command, seal_command};
use latchkey_proto::grant::{Extension, Grant, EXT_BIND_ON_FIRST_USE, REDEEM_ACTION};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::redeem::RedeemRequest;
use latchkey_testkit::{flip_bit, person, rng, ChaCha20Rng, TestDevice, T0};
use rand_core::RngCore;

struct Bench {
    device: TestDevice,
    owner: SigningKey,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    rng: RefCell<ChaCha20Rng>,
    _tmp: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let owner = person(1);
        let mut device = TestDevice::new(1, "front door");
        device.claim(&[&owner], 1);
        let keys = DeviceKeys::from_secret_bytes(&device.keys.to_secret_bytes()).unwrap();
        let store = Arc::new(Store::open(&tmp.path().join("state.db")).unwrap());
        let clock = ManualClock::at(T0);
        let mut view = View::new(device.chain.clone());
        view.checks
            .record_quorum(&clock.boot_id(), clock.ticks_ms());
        let pipeline = Pipeline::new(
            keys,
            clock,
            rng(1),
            store,
            view,
            PipelineConfig {
                actions: BTreeSet::from(["unlock".to_owned()]),
                ..PipelineConfig::default()
            },
        );
        Bench {
            device,
            owner,
            pipeline,
            rng: RefCell::new(rng(2)),
            _tmp: tmp,
        }
    }

    fn envelope(&self) -> Vec<u8> {
        self.envelope_from(&self.owner)
    }

    fn envelope_from(&self, sender: &SigningKey) -> Vec<u8> {
        self.guest_envelope(sender, "unlock", vec![], vec![])
    }

    /// The owner's bind-on-first-use grant to `link` (unlock, all day).
    fn short_link_grant(&self, link: &SigningKey) -> Grant {
        let mut body = self
            .device
            .grant(
                &self.owner,
                &link.public_key(),
                &["unlock"],
                T0 - 1,
                T0 + 86_400_000,
                0,
            )
            .body;
        body.extensions.push(Extension {
            tag: EXT_BIND_ON_FIRST_USE,
            value: vec![],
        });
        body.sign(&self.owner).unwrap()
    }

    /// A short link's first use: the redemption by `link` for `phone`, and `phone`'s open.
    fn first_use(&self, n: u64) -> (Vec<u8>, Vec<u8>) {
        let (link, phone) = (person(1000 + 2 * n), person(1001 + 2 * n));
        let grant = self.short_link_grant(&link);
        let args =
            RedeemRequest::sign(&phone, &self.device.keys.device_id(), &grant.id()).to_args();
        (
            self.guest_envelope(&link, REDEEM_ACTION, args, vec![grant.clone()]),
            self.guest_envelope(&phone, "unlock", vec![], vec![grant]),
        )
    }

    fn guest_envelope(
        &self,
        sender: &SigningKey,
        action: &str,
        args: Vec<u8>,
        grants: Vec<Grant>,
    ) -> Vec<u8> {
        let mut rng = self.rng.borrow_mut();
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let command = Command {
            device: self.device.keys.device_id(),
            sender: sender.public_key(),
            action: action.into(),
            args,
            timestamp_ms: T0,
            nonce,
            challenge: None,
            grants,
            reply_to: ReplyTo::Direct,
        }
        .sign(sender)
        .unwrap();
        seal_command(&command, self.device.keys.kem.public(), &mut *rng)
            .unwrap()
            .0
    }

    fn full(&self, envelope: &[u8]) -> Vec<u8> {
        let fresh = self.pipeline.open(envelope, Via::Local).unwrap();
        let auth = self.pipeline.authorize(fresh).unwrap();
        // `authorize` took the nonce and committed the "about to run" entry; `complete` syncs it.
        let answer = self.pipeline.complete(auth, Ok(b"opened".to_vec()));
        assert!(answer.accepted());
        answer.sealed
    }

    /// A command refused after its signature verified (a signed answer), at whatever step.
    fn refused(&self, envelope: &[u8]) -> Vec<u8> {
        let answer = match self.pipeline.open(envelope, Via::Local) {
            Ok(fresh) => self.pipeline.authorize(fresh).unwrap_err(),
            Err(Early::Answered(a)) => a,
            Err(Early::Refused(r)) => panic!("refused before the signature: {r:?}"),
        };
        assert!(!answer.accepted());
        answer.sealed
    }
}

fn benches(c: &mut Criterion) {
    let b = Bench::new();
    {
        let mut g = c.benchmark_group("pipeline");
        g.throughput(Throughput::Elements(1))
            .sample_size(30)
            .measurement_time(Duration::from_secs(10));
        g.bench_function("full_owner_command", |bench| {
            bench.iter_batched(
                || b.envelope(),
                |env| black_box(b.full(&env)),
                BatchSize::SmallInput,
            )
        });
        // Receive → actuator start: what the device does before an owner's action begins
        // (open, verify, window, authority, nonce in memory, the "about to run" entry committed
        // without an fsync). The entry's fsync, which the agent runs while the actuator does,
        // is not in it; the answer waits for it (`full_owner_command` has both).
        g.bench_function("to_actuator_start", |bench| {
            bench.iter_batched(
                || b.envelope(),
                |env| {
                    let fresh = b.pipeline.open(&env, Via::Local).unwrap();
                    black_box(b.pipeline.authorize(fresh).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
        let replayed = b.envelope();
        b.full(&replayed);
        g.bench_function("refused_replay", |bench| {
            bench.iter(|| black_box(b.refused(&replayed)))
        });
        // A fresh envelope each time, as a flood from new keys would be (and as the old order,
        // nonce before authority, needed to reach authority at all).
        g.bench_function("refused_stranger", |bench| {
            bench.iter_batched(
                || b.envelope_from(&person(2)),
                |env| black_box(b.refused(&env)),
                BatchSize::SmallInput,
            )
        });
        let tampered = flip_bit(&b.envelope(), 1500);
        g.bench_function("refused_tampered", |bench| {
            bench.iter(|| black_box(b.pipeline.open(&tampered, Via::Local).unwrap_err()))
        });
        // Random bytes of the smallest sealed size: refused at the header, counted, not written.
        let mut junk = vec![0u8; latchkey_device::pipeline::SEALED_SIZES[0]];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut junk);
        junk[0] = 0xFF;
        g.bench_function("refused_junk", |bench| {
            bench.iter(|| black_box(b.pipeline.open(&junk, Via::Local).unwrap_err()))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("primitives");
        g.throughput(Throughput::Elements(1))
            .sample_size(30)
            .measurement_time(Duration::from_secs(5));
        let env = b.envelope();
        g.bench_function("open_command+verify", |bench| {
            bench.iter(|| {
                let opened = open_command(black_box(&env), &b.device.keys.kem).unwrap();
                opened.command.verify_signature().unwrap();
                black_box(opened)
            })
        });
        let opened = open_command(&env, &b.device.keys.kem).unwrap();
        let mut seal_rng = rng(3);
        g.bench_function("sign+seal_response", |bench| {
            bench.iter(|| {
                let response = Response {
                    device: b.device.keys.device_id(),
                    command: opened.command.command.id(),
                    timestamp_ms: Some(T0),
                    outcome: Outcome::Accepted,
                    body: b"opened".to_vec(),
                }
                .sign(&b.device.keys.identity)
                .unwrap();
                black_box(opened.reply.seal(&response, &mut seal_rng).unwrap())
            })
        });
        // What every refused envelope cost before refusals were counted: one signed entry on
        // the lazy connection. And what an accepted command now adds: one on the durable one.
        let era = b.pipeline.era();
        let refusal = || {
            latchkey_device::audit::AuditBody::Decision(latchkey_device::audit::AuditRecord {
                via: Via::Local,
                envelope: [1; 32],
                sender: None,
                command: None,
                action: String::new(),
                args: None,
                code: 1,
                stage: latchkey_device::audit::Stage::Header,
                detail: "unsupported envelope version 255".into(),
                view: Default::default(),
            })
        };
        g.bench_function("audit_append_lazy", |bench| {
            bench.iter(|| {
                black_box(
                    b.pipeline
                        .store()
                        .append_audit(&era, Some(T0), refusal(), &b.device.keys.identity)
                        .unwrap(),
                )
            })
        });
        g.bench_function("audit_append_durable", |bench| {
            bench.iter(|| {
                black_box(
                    b.pipeline
                        .store()
                        .append_audit_durable(&era, Some(T0), refusal(), &b.device.keys.identity)
                        .unwrap(),
                )
            })
        });
        let mut n = 0u64;
        // One durable write (a WAL commit with fsync): what every accepted command paid for
        // its nonce before the restart barrier, and what a use limit or a binding still pays.
        g.bench_function("durable_write", |bench| {
            bench.iter(|| {
                n += 1;
                black_box(b.pipeline.store().extend_lease(T0 + n, T0).unwrap())
            })
        });
        g.finish();
    }
}

fn short_links(c: &mut Criterion) {
    let b = Bench::new();
    let mut g = c.benchmark_group("short_link");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    let mut n = 0u64;
    g.bench_function("redeem_then_open", |bench| {
        bench.iter_batched(
            || {
                n += 1;
                b.first_use(n)
            },
            |(redeem, open)| black_box((b.full(&redeem), b.full(&open))),
            BatchSize::SmallInput,
        )
    });
    let (redeem, open) = b.first_use(0);
    let grant = open_command(&open, &b.device.keys.kem)
        .unwrap()
        .command
        .command
        .grants[0]
        .clone();
    let mut seal_rng = rng(4);
    let mut m = 0u64;
    g.bench_function("primitives", |bench| {
        bench.iter(|| {
            for env in [&redeem, &open] {
                let opened = open_command(black_box(env), &b.device.keys.kem).unwrap();
                opened.command.verify_signature().unwrap();
                grant.verify_signature().unwrap();
                if opened.command.command.action == REDEEM_ACTION {
                    RedeemRequest::from_args(&opened.command.command.args)
                        .unwrap()
                        .verify(&b.device.keys.device_id(), &grant.id())
                        .unwrap();
                    // The binding's durable write.
                    m += 1;
                    black_box(b.pipeline.store().extend_lease(T0 + m, T0).unwrap());
                }
                let response = Response {
                    device: b.device.keys.device_id(),
                    command: opened.command.command.id(),
                    timestamp_ms: Some(T0),
                    outcome: Outcome::Accepted,
                    body: Vec::new(),
                }
                .sign(&b.device.keys.identity)
                .unwrap();
                black_box(opened.reply.seal(&response, &mut seal_rng).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(pipeline, benches, short_links);
criterion_main!(pipeline);
