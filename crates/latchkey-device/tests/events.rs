//! Events for owners through the real pipeline (fixed clock, real SQLite): an owner subscribes
//! with a sealed `latchkey.subscribe` command, guests' decisions are noted, the poster's
//! `prepare` turns them into sealed messages in the outbox, and the owner opens them.

use std::collections::BTreeSet;
use std::sync::Arc;

use latchkey_device::audit::Via;
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::events::{self, EventNote};
use latchkey_device::pipeline::{Answer, Early, Pipeline, PipelineConfig};
use latchkey_device::store::Store;
use latchkey_device::view::View;
use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, RejectCode, ReplyTo};
use latchkey_proto::envelope::seal_command;
use latchkey_proto::event::{self, EventKind, EventMessage, SUBSCRIBE_ACTION};
use latchkey_proto::grant::Grant;
use latchkey_proto::hash;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::{person, rng, sorted, ChaCha20Rng, TestDevice, HOUR, T0};
use rand_core::RngCore;

struct Fixture {
    device: TestDevice,
    owner: SigningKey,
    clock: ManualClock,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    notes: events::NoteReceiver,
    rng: ChaCha20Rng,
    _tmp: tempfile::TempDir,
}

fn confirmed_view(device: &TestDevice, clock: &ManualClock) -> View {
    let mut view = View::new(device.chain.clone());
    view.checks
        .record_quorum(&clock.boot_id(), clock.ticks_ms());
    view
}

fn fixture_with_queue(queue: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let owner = person(1);
    let mut device = TestDevice::new(1, "front door");
    device.claim(&[&owner], 1);
    let clock = ManualClock::at(T0);
    let store = Arc::new(Store::open(&tmp.path().join("state.db")).unwrap());
    let keys =
        latchkey_proto::device::DeviceKeys::from_secret_bytes(&device.keys.to_secret_bytes())
            .unwrap();
    let pipeline = Pipeline::new(
        keys,
        clock.clone(),
        rng(99),
        store,
        confirmed_view(&device, &clock),
        PipelineConfig {
            actions: BTreeSet::from(["unlock".to_owned()]),
            ..PipelineConfig::default()
        },
    );
    let (tx, notes) = tokio::sync::mpsc::channel(queue);
    pipeline.set_event_sink(tx);
    Fixture {
        device,
        owner,
        clock,
        pipeline,
        notes,
        rng: rng(7),
        _tmp: tmp,
    }
}

fn fixture() -> Fixture {
    fixture_with_queue(events::NOTE_QUEUE)
}

impl Fixture {
    fn command(&mut self, sender: &SigningKey, action: &str, grants: Vec<Grant>) -> Command {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        Command {
            device: self.device.keys.device_id(),
            sender: sender.public_key(),
            action: action.into(),
            args: vec![],
            timestamp_ms: self.clock.now_ms().unwrap_or(T0),
            nonce,
            challenge: None,
            grants,
            reply_to: ReplyTo::Direct,
        }
    }

    /// Seals and runs one command through every step, as the agent does (the built-in actions
    /// answered by the pipeline, any other "runs" successfully).
    fn run(&mut self, command: Command, key: &SigningKey) -> Answer {
        let signed = command.sign(key).unwrap();
        let (env, _) = seal_command(&signed, self.device.keys.kem.public(), &mut self.rng).unwrap();
        let fresh = match self.pipeline.open(&env, Via::Local) {
            Ok(f) => f,
            Err(Early::Answered(a)) => return a,
            Err(Early::Refused(r)) => panic!("refused unauthenticated: {r:?}"),
        };
        let auth = match self.pipeline.authorize(fresh) {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let result = if auth.is_subscribe() {
            let (sender, args) = (auth.sender(), auth.args().to_vec());
            self.pipeline.subscribe(&sender, &args)
        } else {
            Ok(Vec::new())
        };
        self.pipeline.complete(auth, result)
    }

    fn subscribe(&mut self, owner: &SigningKey, kem: &KemSecretKey) -> Answer {
        let mut c = self.command(owner, SUBSCRIBE_ACTION, vec![]);
        c.args = event::subscribe_args(kem.public());
        self.run(c, owner)
    }

    fn grant(&self, subject: &SigningKey, from: u64, until: u64) -> Grant {
        self.device.grant(
            &self.owner,
            &subject.public_key(),
            &["unlock"],
            from,
            until,
            0,
        )
    }

    fn drain(&mut self) -> Vec<EventNote> {
        let mut out = Vec::new();
        while let Ok(n) = self.notes.try_recv() {
            out.push(n);
        }
        out
    }

    /// The poster's first step for one note, against the pipeline's current view.
    fn prepare(&mut self, note: &EventNote) -> usize {
        let state = self.pipeline.view().chain.state().clone();
        events::prepare(
            self.pipeline.store(),
            &state,
            &self.device.keys.identity,
            note,
            T0,
            &mut self.rng,
        )
        .unwrap()
    }
}

#[test]
fn a_guests_first_open_and_a_refusal_reach_the_subscribed_owner_sealed_and_signed() {
    let mut f = fixture();
    let kem = KemSecretKey::generate(&mut rng(5));
    let owner = f.owner.clone_for_test();
    assert!(f.subscribe(&owner, &kem).accepted());
    // The owner's own command is no event.
    assert!(f.drain().is_empty());

    let guest = person(3);
    let grant = f.grant(&guest, T0 - HOUR, T0 + HOUR);
    for _ in 0..2 {
        let c = f.command(&guest, "unlock", vec![grant.clone()]);
        assert!(f.run(c, &guest).accepted());
    }
    let notes = f.drain();
    assert_eq!(notes.len(), 2, "every accepted guest command is noted");
    assert!(notes.iter().all(|n| n.kind == EventKind::FirstOpen));
    // Only the grant's first use becomes an event.
    assert_eq!(f.prepare(&notes[0]), 1);
    assert_eq!(f.prepare(&notes[1]), 0);

    // Two hours later the grant has expired: a refusal event.
    f.clock.advance(2 * HOUR);
    let c = f.command(&guest, "unlock", vec![grant.clone()]);
    let answer = f.run(c, &guest);
    assert_eq!(answer.code, RejectCode::GrantExpired as u16);
    let notes = f.drain();
    assert_eq!(
        notes.iter().map(|n| n.kind).collect::<Vec<_>>(),
        vec![EventKind::Refused {
            code: RejectCode::GrantExpired as u16
        }]
    );
    assert_eq!(f.prepare(&notes[0]), 1);

    // The owner opens both messages from the outbox: signed by the device, numbered 1 and 2.
    let pending = events::pending(f.pipeline.store(), T0).unwrap();
    assert_eq!(pending.len(), 2);
    let mailbox = hash::owner_mailbox(&owner.public_key());
    let identity = f.device.keys.identity.public_key();
    let opened: Vec<_> = pending
        .iter()
        .map(|p| {
            assert_eq!(p.owner, owner.public_key());
            EventMessage::from_bytes(&p.message)
                .unwrap()
                .open(&identity, &mailbox, &kem)
                .unwrap()
                .event
        })
        .collect();
    assert_eq!(
        opened.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(),
        vec![
            (1, EventKind::FirstOpen),
            (
                2,
                EventKind::Refused {
                    code: RejectCode::GrantExpired as u16
                }
            )
        ]
    );
    assert!(opened.iter().all(|e| e.grant == grant.id()
        && e.guest == guest.public_key()
        && e.action == "unlock"
        && e.device == f.device.keys.device_id()));
    assert_eq!(opened[0].time_ms, Some(T0));
    events::delivered(f.pipeline.store(), pending[0].id).unwrap();
    assert_eq!(events::outbox_len(f.pipeline.store()).unwrap(), 1);
}

#[test]
fn strangers_forged_chains_and_bad_subscriptions_make_no_event() {
    let mut f = fixture();
    let kem = KemSecretKey::generate(&mut rng(5));
    let owner = f.owner.clone_for_test();
    assert!(f.subscribe(&owner, &kem).accepted());

    // A grant the stranger issued to itself: not from an owner, so no standing and no event.
    let stranger = person(9);
    let forged = f.device.grant(
        &stranger,
        &stranger.public_key(),
        &["unlock"],
        T0 - HOUR,
        T0 + HOUR,
        0,
    );
    let c = f.command(&stranger, "unlock", vec![forged]);
    assert_eq!(f.run(c, &stranger).code, RejectCode::GrantInvalid as u16);
    // A guest using someone else's (valid) grant: step 5 refuses it, no event.
    let guest = person(3);
    let theirs = f.grant(&guest, T0 - HOUR, T0 + HOUR);
    let c = f.command(&stranger, "unlock", vec![theirs]);
    assert_eq!(f.run(c, &stranger).code, RejectCode::GrantInvalid as u16);
    assert!(f.drain().is_empty());

    // A guest may not subscribe, even with the action in its grant; an owner's subscription
    // must carry a whole KEM key.
    let grant = f.device.grant(
        &owner,
        &guest.public_key(),
        &[SUBSCRIBE_ACTION],
        T0 - HOUR,
        T0 + HOUR,
        0,
    );
    let c = f.command(&guest, SUBSCRIBE_ACTION, vec![grant]);
    assert_eq!(f.run(c, &guest).code, RejectCode::NotAuthorized as u16);
    let mut c = f.command(&owner, SUBSCRIBE_ACTION, vec![]);
    c.args = vec![7; 32];
    assert_eq!(f.run(c, &owner).code, RejectCode::ActionFailed as u16);
    assert!(f.drain().is_empty());
}

#[test]
fn a_removed_owners_subscription_is_dropped() {
    let mut f = fixture();
    let kem = KemSecretKey::generate(&mut rng(5));
    let owner = f.owner.clone_for_test();
    assert!(f.subscribe(&owner, &kem).accepted());
    let guest = person(3);
    let grant = f.grant(&guest, T0 - HOUR, T0 + HOUR);
    let c = f.command(&guest, "unlock", vec![grant]);
    assert!(f.run(c, &guest).accepted());
    let note = f.drain().remove(0);

    // The owner hands the door to someone else (same era: amend-owners).
    let next = person(2);
    f.device.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&next]),
            threshold: 1,
        }),
        &[&owner, &next],
    );
    f.pipeline
        .set_view(confirmed_view(&f.device, &f.clock))
        .unwrap();
    assert_eq!(f.prepare(&note), 0, "nobody current is subscribed");
    let state = f.pipeline.view().chain.state().clone();
    assert!(events::subscriptions(f.pipeline.store(), &state)
        .unwrap()
        .is_empty());
    assert_eq!(events::outbox_len(f.pipeline.store()).unwrap(), 0);
}

/// The poster never holds up an answer: with nobody reading the notes and the queue full,
/// every command is still answered at once, and the surplus notes are dropped.
#[test]
fn a_full_event_queue_never_delays_or_fails_an_answer() {
    let mut f = fixture_with_queue(1);
    let guest = person(3);
    let grant = f.grant(&guest, T0 - HOUR, T0 + HOUR);
    for _ in 0..5 {
        let c = f.command(&guest, "unlock", vec![grant.clone()]);
        assert!(f.run(c, &guest).accepted());
    }
    assert_eq!(f.drain().len(), 1);
}

trait CloneForTest {
    fn clone_for_test(&self) -> SigningKey;
}

impl CloneForTest for SigningKey {
    fn clone_for_test(&self) -> SigningKey {
        SigningKey::from_bytes(&self.to_bytes())
    }
}
