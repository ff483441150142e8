//! What events (docs/PROTOCOL.md §13) cost, and what they add to a guest's open:
//!
//! - `events/build+seal`: sign an event, seal it to one owner's event KEM key (a hybrid KEM
//!   encapsulation), frame and sign the message — the poster's work per owner.
//! - `events/prepare_1_owner`: the poster's whole step for one note and one subscriber: the
//!   subscription read, the sequence number, the above, and the durable outbox write.
//! - `guest_open/no_sink` and `guest_open/with_sink`: a guest's accepted "unlock" through the
//!   whole pipeline (durable nonce, audit entries, signed sealed answer) without an event
//!   sink, and with one (the pipeline only notes the decision on a channel; a thread drains
//!   it). The difference is what events add to the open path.
//!
//! Run: `cargo bench -p latchkey-device --bench events`. Figures: docs/BENCHMARKS.md.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use latchkey_device::audit::Via;
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::events::{self, EventNote};
use latchkey_device::pipeline::{Pipeline, PipelineConfig};
use latchkey_device::store::Store;
use latchkey_device::view::View;
use latchkey_proto::command::{Command, ReplyTo};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::seal_command;
use latchkey_proto::event::{self as proto_event, Event, EventKind};
use latchkey_proto::grant::Grant;
use latchkey_proto::hash;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::{person, rng, ChaCha20Rng, TestDevice, HOUR, T0};
use rand_core::RngCore;

struct Door {
    device: TestDevice,
    guest: SigningKey,
    grant: Grant,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    rng: RefCell<ChaCha20Rng>,
    _tmp: tempfile::TempDir,
}

impl Door {
    fn new(with_sink: bool) -> Door {
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
        if with_sink {
            let (tx, mut rx) = events::channel();
            pipeline.set_event_sink(tx);
            std::thread::spawn(move || while rx.blocking_recv().is_some() {});
        }
        let guest = person(3);
        let grant = device.grant(
            &owner,
            &guest.public_key(),
            &["unlock"],
            T0 - HOUR,
            T0 + HOUR,
            0,
        );
        Door {
            device,
            guest,
            grant,
            pipeline,
            rng: RefCell::new(rng(2)),
            _tmp: tmp,
        }
    }

    fn envelope(&self) -> Vec<u8> {
        let mut rng = self.rng.borrow_mut();
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let command = Command {
            device: self.device.keys.device_id(),
            sender: self.guest.public_key(),
            action: "unlock".into(),
            args: vec![],
            timestamp_ms: T0,
            nonce,
            challenge: None,
            grants: vec![self.grant.clone()],
            reply_to: ReplyTo::Direct,
        }
        .sign(&self.guest)
        .unwrap();
        seal_command(&command, self.device.keys.kem.public(), &mut *rng)
            .unwrap()
            .0
    }

    fn open(&self, envelope: &[u8]) -> Vec<u8> {
        let fresh = self.pipeline.open(envelope, Via::Local).unwrap();
        let auth = self.pipeline.authorize(fresh).unwrap();
        let answer = self.pipeline.complete(auth, Ok(Vec::new()));
        assert!(answer.accepted());
        answer.sealed
    }
}

fn benches(c: &mut Criterion) {
    let door = Door::new(false);
    let owner_kem = KemSecretKey::generate(&mut rng(5));
    let identity = &door.device.keys.identity;
    let mailbox = hash::owner_mailbox(&person(1).public_key());
    {
        let mut g = c.benchmark_group("events");
        g.sample_size(20).measurement_time(Duration::from_secs(5));
        let mut r = rng(6);
        g.bench_function("build+seal", |b| {
            b.iter(|| {
                let signed = Event {
                    device: door.device.keys.device_id(),
                    seq: 1,
                    time_ms: Some(T0),
                    kind: EventKind::FirstOpen,
                    grant: door.grant.id(),
                    guest: door.guest.public_key(),
                    action: "unlock".into(),
                }
                .sign(identity)
                .unwrap();
                black_box(
                    proto_event::build_message(
                        &signed,
                        owner_kem.public(),
                        mailbox,
                        identity,
                        &mut r,
                    )
                    .unwrap(),
                )
            })
        });
        let store = door.pipeline.store();
        events::subscribe(store, &person(1).public_key(), owner_kem.public()).unwrap();
        let state = door.pipeline.view().chain.state().clone();
        let note = EventNote {
            kind: EventKind::Refused { code: 11 },
            grant: door.grant.id(),
            guest: door.guest.public_key(),
            action: "unlock".into(),
            time_ms: Some(T0),
        };
        g.bench_function("prepare_1_owner", |b| {
            b.iter(|| {
                black_box(events::prepare(store, &state, identity, &note, T0, &mut r).unwrap())
            })
        });
        g.finish();
    }
    {
        let with = Door::new(true);
        let mut g = c.benchmark_group("guest_open");
        g.sample_size(20).measurement_time(Duration::from_secs(10));
        g.bench_function("no_sink", |b| {
            b.iter_batched(
                || door.envelope(),
                |env| black_box(door.open(&env)),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("with_sink", |b| {
            b.iter_batched(
                || with.envelope(),
                |env| black_box(with.open(&env)),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(events_benches, benches);
criterion_main!(events_benches);
