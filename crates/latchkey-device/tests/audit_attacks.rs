//! Attacks on the audit log, performed against the real pipeline and a real SQLite file with an
//! injected clock (docs/PROTOCOL.md §8.3): a flood of junk must not bury an accepted guest
//! entry nor grow the log by more than a few summaries, pruning never drops what the owners have
//! not fetched, and a transfer cuts the log so the new owners see nothing of the old era.

use std::collections::BTreeSet;
use std::sync::Arc;

use latchkey_device::audit::{
    verify_entries, AuditBody, AuditPage, EraCause, RefusalClass, SignedEntry, Stage, Via,
};
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::pipeline::{Answer, Early, Pipeline, PipelineConfig, SEALED_SIZES};
use latchkey_device::store::Store;
use latchkey_device::view::View;
use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, RejectCode, ReplyTo};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::{seal_command, PendingReply};
use latchkey_proto::grant::Grant;
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::{flip_bit, person, rng, ChaCha20Rng, TestDevice, HOUR, T0};
use rand_core::RngCore;

/// The device's chain as a quorum of nodes confirmed it just now.
fn confirmed_view(device: &TestDevice, clock: &ManualClock) -> View {
    let mut view = View::new(device.chain.clone());
    view.checks
        .record_quorum(&clock.boot_id(), clock.ticks_ms());
    view
}

struct Fixture {
    device: TestDevice,
    owner: SigningKey,
    clock: ManualClock,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    store: Arc<Store>,
    rng: ChaCha20Rng,
    _tmp: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let owner = person(1);
    let mut device = TestDevice::new(1, "front door");
    device.claim(&[&owner], 1);
    let clock = ManualClock::at(T0);
    let store = Arc::new(Store::open(&tmp.path().join("state.db")).unwrap());
    let pipeline = Pipeline::new(
        DeviceKeys::from_secret_bytes(&device.keys.to_secret_bytes()).unwrap(),
        clock.clone(),
        rng(99),
        store.clone(),
        confirmed_view(&device, &clock),
        PipelineConfig {
            window: Default::default(),
            max_view_age_ms: 300_000,
            // The flood below spans hours of injected time; staleness is not what this tests.
            max_guest_staleness_ms: 30 * 24 * HOUR,
            max_owner_staleness_ms: 0,
            actions: BTreeSet::from(["unlock".to_owned()]),
            ..PipelineConfig::default()
        },
    );
    Fixture {
        device,
        owner,
        clock,
        pipeline,
        store,
        rng: rng(7),
        _tmp: tmp,
    }
}

impl Fixture {
    fn command(&mut self, sender: &SigningKey, action: &str) -> Command {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        Command {
            device: self.device.keys.device_id(),
            sender: sender.public_key(),
            action: action.into(),
            args: vec![],
            timestamp_ms: self.clock.now_ms().unwrap(),
            nonce,
            challenge: None,
            grants: vec![],
            reply_to: ReplyTo::Direct,
        }
    }

    fn seal(&mut self, command: Command, key: &SigningKey) -> (Vec<u8>, PendingReply) {
        let signed = command.sign(key).unwrap();
        seal_command(&signed, self.device.keys.kem.public(), &mut self.rng).unwrap()
    }

    fn grant(&self, subject: &SigningKey) -> Grant {
        self.device.grant(
            &self.owner,
            &subject.public_key(),
            &["unlock"],
            T0 - HOUR,
            T0 + 24 * HOUR,
            0,
        )
    }

    /// Every step, as the agent runs them (the "about to run" entry is written by `authorize`).
    fn run(&self, envelope: &[u8]) -> Option<Answer> {
        let fresh = match self.pipeline.open(envelope, Via::Relay) {
            Ok(f) => f,
            Err(Early::Refused(_)) => return None,
            Err(Early::Answered(a)) => return Some(a),
        };
        let auth = match self.pipeline.authorize(fresh) {
            Ok(a) => a,
            Err(answer) => return Some(answer),
        };
        let result = if auth.is_audit() {
            self.pipeline.audit_page(auth.args())
        } else {
            // The "about to run" entry was written by `authorize`, with the nonce.
            Ok(b"opened".to_vec())
        };
        Some(self.pipeline.complete(auth, result))
    }

    /// The newest page, read as `reader` through the `audit` action.
    fn read_log(&mut self, reader: &SigningKey) -> Result<AuditPage, u16> {
        let c = self.command(reader, "audit");
        let (env, pending) = self.seal(c, reader);
        let answer = self.run(&env).unwrap();
        if !answer.accepted() {
            return Err(answer.code);
        }
        let response = pending
            .open(&answer.sealed, &self.device.keys.identity.public_key())
            .unwrap();
        Ok(AuditPage::from_bytes(&response.response.body).unwrap())
    }

    fn stored(&self) -> Vec<SignedEntry> {
        self.store
            .audit_all()
            .unwrap()
            .iter()
            .map(|(_, b)| SignedEntry::from_bytes(b).unwrap())
            .collect()
    }
}

fn senders(entries: &[SignedEntry]) -> Vec<latchkey_proto::keys::PublicKey> {
    entries
        .iter()
        .filter_map(|e| match &e.entry.body {
            AuditBody::Decision(r) => r.sender,
            AuditBody::Running(r) => Some(r.sender),
            _ => None,
        })
        .collect()
}

#[test]
fn a_flood_of_junk_cannot_bury_an_accepted_3am_guest_entry() {
    let mut f = fixture();
    let guest = person(3);
    // 3 a.m.: the guest opens the door.
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![f.grant(&guest)];
    let (env, _) = f.seal(c, &guest);
    assert!(f.run(&env).unwrap().accepted());
    let before = f.store.audit_len().unwrap();

    // Then the flood: 100,000 envelopes that never authenticate (random bytes of the sealed
    // sizes, and real envelopes altered in flight), plus commands signed by throwaway keys.
    let mut junk = vec![0u8; SEALED_SIZES[2]];
    let mut posted = 0u64;
    for i in 0..98_000usize {
        // Mostly the smallest bucket, the relays' usual size; the others now and then.
        let len = SEALED_SIZES[if i % 50 == 0 { 1 + i % 2 } else { 0 }];
        f.rng.fill_bytes(&mut junk[..len]);
        assert!(f.run(&junk[..len]).is_none());
        posted += 1;
        if i % 100 == 0 {
            f.clock.advance(100);
        }
    }
    let (real, _) = {
        let c = f.command(&guest, "unlock");
        f.seal(c, &guest)
    };
    for i in 0..2_000 {
        assert!(f.run(&flip_bit(&real, 1100 + i % 900)).is_none());
        posted += 1;
    }
    for n in 0..200 {
        let stranger = person(1_000 + n);
        let c = f.command(&stranger, "unlock");
        let (env, _) = f.seal(c, &stranger);
        let answer = f.run(&env).unwrap();
        assert_eq!(answer.code, RejectCode::NotAuthorized as u16);
        posted += 1;
    }
    // Housekeeping with a tiny limit runs during the flood: it may not drop the guest's entry.
    f.pipeline.prune_audit(1).unwrap();
    assert!(
        senders(&f.stored()).contains(&guest.public_key()),
        "the accepted guest entry survived pruning: no owner had fetched it"
    );

    let page = f.read_log(&person(1)).unwrap();
    let grown = page.next_seq - before;
    assert!(
        grown <= 5,
        "{posted} junk envelopes grew the log by {grown} entries"
    );
    verify_entries(&page.entries, &f.device.keys.identity.public_key(), None).unwrap();
    assert!(senders(&page.entries).contains(&guest.public_key()));
    let mut counted = 0;
    let mut classes = BTreeSet::new();
    for e in &page.entries {
        if let AuditBody::Refusals(s) = &e.entry.body {
            counted += s.total();
            classes.extend(s.rows.iter().map(|r| r.class));
            assert!(s.first_ms.unwrap() <= s.last_ms.unwrap());
        }
    }
    assert_eq!(counted, posted, "every refusal is counted, none is lost");
    assert_eq!(
        classes,
        BTreeSet::from([RefusalClass::Unauthenticated, RefusalClass::NoStanding])
    );
}

#[test]
fn a_sender_with_standing_cannot_flood_either() {
    let mut f = fixture();
    let guest = person(3);
    let expired = f.device.grant(
        &f.owner,
        &guest.public_key(),
        &["unlock"],
        T0 - 2 * HOUR,
        T0 - HOUR,
        0,
    );
    let mut refused = 0;
    for _ in 0..500 {
        let mut c = f.command(&guest, "unlock");
        c.grants = vec![expired.clone()];
        let (env, _) = f.seal(c, &guest);
        assert_eq!(f.run(&env).unwrap().code, RejectCode::GrantExpired as u16);
        refused += 1;
    }
    let page = f.read_log(&person(1)).unwrap();
    let written = page
        .entries
        .iter()
        .filter(|e| matches!(&e.entry.body, AuditBody::Decision(r) if r.code == RejectCode::GrantExpired as u16))
        .count();
    assert_eq!(
        written, 16,
        "the first refusals of a known guest are written one by one"
    );
    let counted: u64 = page
        .entries
        .iter()
        .filter_map(|e| match &e.entry.body {
            AuditBody::Refusals(s) => Some(s.total()),
            _ => None,
        })
        .sum();
    assert_eq!(written as u64 + counted, refused);
}

#[test]
fn after_a_transfer_the_new_owners_see_nothing_before_it() {
    let mut f = fixture();
    let old_owner = person(1);
    let guest = person(3);
    let c = f.command(&old_owner, "unlock");
    let (env, _) = f.seal(c, &old_owner);
    assert!(f.run(&env).unwrap().accepted());
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![f.grant(&guest)];
    let (env, _) = f.seal(c, &guest);
    assert!(f.run(&env).unwrap().accepted());
    let old_page = f.read_log(&old_owner).unwrap();
    assert!(old_page.entries.len() >= 5);

    // The old owner transfers the door; the device learns it.
    let new_owner = person(4);
    f.device.apply(
        OpBody::Transfer(OwnerSet {
            owners: vec![new_owner.public_key()],
            threshold: 1,
        }),
        // The recipient signs too: new owners prove they hold their keys.
        &[&old_owner, &new_owner],
    );
    f.pipeline
        .set_view(confirmed_view(&f.device, &f.clock))
        .unwrap();
    let new_era = f.device.chain.state().epoch.0;

    let page = f.read_log(&new_owner).unwrap();
    assert_eq!((page.oldest, page.next_seq), (0, 1));
    assert_eq!(page.entries.len(), 1);
    let first = &page.entries[0].entry;
    assert_eq!((first.seq, first.prev, first.era), (0, [0; 32], new_era));
    assert!(matches!(
        first.body,
        AuditBody::EraStart(e) if e.cause == EraCause::Transfer && e.op_seq == 2
    ));
    verify_entries(&page.entries, &f.device.keys.identity.public_key(), None).unwrap();
    // Deleted from the device, not merely hidden; paging back finds nothing either.
    let stored = f.stored();
    assert!(stored.iter().all(|e| e.entry.era == new_era));
    let senders = senders(&stored);
    assert!(!senders.contains(&old_owner.public_key()) && !senders.contains(&guest.public_key()));
    // The old owner and the old era's guest have no standing now: refused, and counted.
    assert_eq!(
        f.read_log(&old_owner).unwrap_err(),
        RejectCode::NotAuthorized as u16
    );
    let page = f.read_log(&new_owner).unwrap();
    let last = page.entries.last().unwrap();
    assert!(
        matches!(&last.entry.body, AuditBody::Refusals(s) if s.rows[0].class == RefusalClass::NoStanding && s.rows[0].stage == Stage::Authority),
        "{:?}",
        last.entry.body
    );
}
