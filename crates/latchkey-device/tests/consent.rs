//! The reserved owner-only action `latchkey.consent` through the real pipeline (injected
//! clock, real SQLite): consents given and withdrawn, the key rotation durable before the
//! answer, and the attacks — a guest, a forged signature, a signer who is no owner, an entry
//! for another device, a revoke of an unknown consent — each refused with nothing changed. A
//! replayed old entry (or a resend after a lost answer) is answered accepted and changes
//! nothing. A device that missed entries still learns a later revoke.

use std::collections::BTreeSet;
use std::sync::Arc;

use latchkey_device::audit::Via;
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::pipeline::{Answer, Early, Pipeline, PipelineConfig};
use latchkey_device::store::Store;
use latchkey_device::stream::keys::StreamKeys;
use latchkey_device::view::View;
use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, Outcome, RejectCode, ReplyTo};
use latchkey_proto::consent::{
    purpose, ConsentAction, ConsentEntry, ConsentLog, ConsentRequest, ProviderIdentity,
    SignedConsentRequest, CONSENT_ACTION,
};
use latchkey_proto::envelope::{seal_command, PendingReply};
use latchkey_proto::grant::Grant;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{Signature, SigningKey};
use latchkey_proto::stream::open_key_grant;
use latchkey_testkit::{person, rng, sorted, ChaCha20Rng, TestDevice, HOUR, MINUTE, T0};
use rand_core::RngCore;

struct Provider {
    key: SigningKey,
    kem: KemSecretKey,
    name: &'static str,
}

impl Provider {
    fn new(n: u64, name: &'static str) -> Provider {
        Provider {
            key: person(100 + n),
            kem: KemSecretKey::generate(&mut rng(200 + n)),
            name,
        }
    }

    fn identity(&self) -> ProviderIdentity {
        ProviderIdentity {
            name: self.name.into(),
            url: "https://insights.example".into(),
            signing: self.key.public_key(),
            kem: self.kem.public().clone(),
        }
    }

    fn recipient(&self) -> [u8; 32] {
        self.identity().recipient()
    }
}

struct Fixture {
    device: TestDevice,
    owner: SigningKey,
    clock: ManualClock,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    streams: Arc<StreamKeys>,
    store: Arc<Store>,
    /// The consent log as the registry nodes hold it (every entry the owners made).
    log: ConsentLog,
    rng: ChaCha20Rng,
    /// Opens the answer to the last command run.
    pending: Option<PendingReply>,
    _tmp: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let owner = person(1);
    let mut device = TestDevice::new(1, "meter");
    device.claim(&[&owner], 1);
    let clock = ManualClock::at(T0);
    let store = Arc::new(Store::open(&tmp.path().join("state.db")).unwrap());
    let keys =
        latchkey_proto::device::DeviceKeys::from_secret_bytes(&device.keys.to_secret_bytes())
            .unwrap();
    let mut view = View::new(device.chain.clone());
    view.checks
        .record_quorum(&clock.boot_id(), clock.ticks_ms());
    let pipeline = Pipeline::new(
        keys,
        clock.clone(),
        rng(99),
        store.clone(),
        view,
        PipelineConfig {
            actions: BTreeSet::from(["unlock".to_owned()]),
            ..PipelineConfig::default()
        },
    );
    let streams = Arc::new(
        StreamKeys::open(
            store.clone(),
            device.keys.device_id(),
            ["p1".to_owned(), "gas".to_owned()],
            T0,
            &mut rng(5),
        )
        .unwrap(),
    );
    pipeline.set_streams(streams.clone());
    let log = ConsentLog::verify(&device.chain, vec![]).unwrap();
    Fixture {
        device,
        owner,
        clock,
        pipeline,
        streams,
        store,
        log,
        rng: rng(7),
        pending: None,
        _tmp: tmp,
    }
}

impl Fixture {
    fn request(
        &mut self,
        p: &Provider,
        stream: &str,
        until_ms: Option<u64>,
    ) -> SignedConsentRequest {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        ConsentRequest {
            provider: p.identity(),
            device: self.device.keys.device_id(),
            stream: stream.into(),
            purpose_code: purpose::INSIGHTS,
            purpose: "Monthly energy-saving tips".into(),
            retention_days: 30,
            until_ms,
            history: false,
            terms: None,
            issued_ms: T0 - MINUTE,
            nonce,
        }
        .sign(&p.key)
        .unwrap()
    }

    /// The owner appends the next entry to the nodes' log (as `latchkey consent approve` /
    /// `revoke` do); not yet sent to the device.
    fn entry(&mut self, action: ConsentAction) -> ConsentEntry {
        let time = self.clock.now_ms().unwrap();
        let entry = self
            .log
            .next_entry(&self.device.chain, &self.owner, time, action)
            .unwrap();
        self.log.append(&self.device.chain, entry.clone()).unwrap();
        entry
    }

    fn command(&mut self, sender: &SigningKey, args: Vec<u8>, grants: Vec<Grant>) -> Command {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        Command {
            device: self.device.keys.device_id(),
            sender: sender.public_key(),
            action: CONSENT_ACTION.into(),
            args,
            timestamp_ms: self.clock.now_ms().unwrap(),
            nonce,
            challenge: None,
            grants,
            reply_to: ReplyTo::Direct,
        }
    }

    /// Seals and runs one command as the agent does.
    fn run(&mut self, command: Command, key: &SigningKey) -> Answer {
        let signed = command.sign(key).unwrap();
        let (env, pending) =
            seal_command(&signed, self.device.keys.kem.public(), &mut self.rng).unwrap();
        self.pending = Some(pending);
        let fresh = match self.pipeline.open(&env, Via::Local) {
            Ok(f) => f,
            Err(Early::Answered(a)) => return a,
            Err(Early::Refused(r)) => panic!("refused unauthenticated: {r:?}"),
        };
        let auth = match self.pipeline.authorize(fresh) {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        assert!(auth.is_consent());
        self.pipeline.consent(auth)
    }

    /// The owner sends `entry` to the device.
    fn send(&mut self, entry: &ConsentEntry) -> Answer {
        let owner = SigningKey::from_bytes(&self.owner.to_bytes());
        let c = self.command(&owner, entry.to_bytes(), vec![]);
        self.run(c, &owner)
    }

    /// An entry built and signed by hand, as a forger (or a buggy app) would, bypassing the
    /// log's own checks.
    fn craft(
        &self,
        seq: u64,
        prev: [u8; 32],
        signer: &SigningKey,
        action: ConsentAction,
    ) -> ConsentEntry {
        let mut entry = ConsentEntry {
            device: self.device.keys.device_id(),
            seq,
            prev,
            anchor: self.device.chain.head(),
            time_ms: self.clock.now_ms().unwrap(),
            action,
            signer: signer.public_key(),
            signature: Signature([0; 64]),
        };
        let message = [&b"latchkey/v1/consent-entry\0"[..], &entry.content_bytes()].concat();
        entry.signature = signer.sign(&message);
        entry
    }

    /// What the device said in its signed answer to the last command, if it accepted it.
    fn said(&self, answer: &Answer) -> String {
        let response = self
            .pending
            .as_ref()
            .unwrap()
            .open(&answer.sealed, &self.device.keys.identity.public_key())
            .unwrap();
        assert_eq!(
            response.response.outcome,
            Outcome::Accepted,
            "{}",
            answer.reason
        );
        String::from_utf8(response.response.body).unwrap()
    }

    fn held(&self) -> usize {
        self.streams.held_entries().unwrap().len()
    }

    /// Providers the next key messages go to, and the topics cleared.
    fn plan(&self, stream: &str) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
        self.streams.mark_all_dirty();
        let plan = self.streams.plan(stream).unwrap().unwrap();
        (
            plan.providers.iter().map(|p| p.0).collect(),
            plan.cleared.clone(),
        )
    }
}

fn code(a: &Answer) -> u16 {
    a.code
}

#[test]
fn a_given_consent_reaches_the_provider_and_a_revoke_rotates_the_key_durably_before_the_answer() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let b = Provider::new(2, "Grid B");
    assert_eq!(f.streams.current_key_id("p1"), Some(1));
    let ra = f.request(&a, "p1", None);
    let rb = f.request(&b, "p1", None);
    let given_a = f.entry(ConsentAction::Given(ra.clone()));
    let given_b = f.entry(ConsentAction::Given(rb));
    assert!(f.send(&given_a).accepted());
    assert!(f.send(&given_b).accepted());
    assert_eq!(
        f.streams.current_key_id("p1"),
        Some(1),
        "a consent given rotates nothing"
    );
    let (providers, cleared) = f.plan("p1");
    assert_eq!(providers, vec![a.recipient(), b.recipient()]);
    assert!(cleared.is_empty());

    // A's key message opens with A's KEM key and holds key 1 (signed by the device).
    f.streams.mark_all_dirty();
    let plan = f.streams.plan("p1").unwrap().unwrap();
    let messages = plan
        .build(
            &f.device.keys.device_id(),
            &f.device.keys.identity,
            &[],
            T0,
            &mut rng(3),
        )
        .unwrap();
    let grant = open_key_grant(
        &messages[0].payload,
        &a.kem,
        &f.device.keys.identity.public_key(),
    )
    .unwrap();
    assert_eq!(grant.recipient, a.recipient());
    assert_eq!(grant.consent, Some(ra.id()));
    assert_eq!(
        grant.keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(
        open_key_grant(
            &messages[0].payload,
            &b.kem,
            &f.device.keys.identity.public_key()
        )
        .is_err(),
        "B cannot open A's key message"
    );

    f.clock.advance(MINUTE);
    let revoke_a = f.entry(ConsentAction::Revoked(ra.id()));
    let answer = f.send(&revoke_a);
    assert!(answer.accepted(), "{}", answer.reason);
    assert_eq!(f.streams.current_key_id("p1"), Some(2));
    assert_eq!(f.streams.current_key_id("gas"), Some(1), "only p1 rotated");
    let (providers, cleared) = f.plan("p1");
    assert_eq!(providers, vec![b.recipient()], "only B is still authorised");
    assert_eq!(cleared, vec![a.recipient()], "A's key topic is cleared");

    // What the answer promised is on disk: a restart finds the same new key.
    let key2 = f.streams.keys("p1").unwrap()[1].2.as_bytes().to_owned();
    let reopened = StreamKeys::open(
        f.store.clone(),
        f.device.keys.device_id(),
        ["p1".to_owned(), "gas".to_owned()],
        T0,
        &mut rng(77),
    )
    .unwrap();
    assert_eq!(reopened.current_key_id("p1"), Some(2));
    assert_eq!(reopened.keys("p1").unwrap()[1].2.as_bytes(), &key2);
    assert_eq!(reopened.held_entries().unwrap().len(), 3);
}

#[test]
fn a_guest_cannot_give_or_withdraw_consent() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let r = f.request(&a, "p1", None);
    let given = f.entry(ConsentAction::Given(r));
    let guest = person(3);
    // Even a grant naming the reserved action gives a guest no say.
    let grant = f.device.grant(
        &f.owner,
        &guest.public_key(),
        &["unlock", CONSENT_ACTION],
        T0 - HOUR,
        T0 + HOUR,
        0,
    );
    // With the entry as arguments the grant's pinned (empty) arguments already stop it …
    let c = f.command(&guest, given.to_bytes(), vec![grant.clone()]);
    let answer = f.run_unchecked(c, &guest);
    assert_eq!(code(&answer), RejectCode::ArgumentsNotGranted as u16);
    // … and without, the reserved action itself is owner-only.
    let c = f.command(&guest, vec![], vec![grant]);
    let answer = f.run_unchecked(c, &guest);
    assert_eq!(code(&answer), RejectCode::NotAuthorized as u16);
    assert!(answer.reason.contains("only owners"), "{}", answer.reason);
    assert_eq!(f.held(), 0, "nothing recorded");
    assert!(f.plan("p1").0.is_empty());
}

impl Fixture {
    /// As [`Fixture::run`], for commands the pipeline refuses before the action.
    fn run_unchecked(&mut self, command: Command, key: &SigningKey) -> Answer {
        let signed = command.sign(key).unwrap();
        let (env, _) = seal_command(&signed, self.device.keys.kem.public(), &mut self.rng).unwrap();
        let fresh = match self.pipeline.open(&env, Via::Local) {
            Ok(f) => f,
            Err(Early::Answered(a)) => return a,
            Err(Early::Refused(r)) => panic!("refused unauthenticated: {r:?}"),
        };
        match self.pipeline.authorize(fresh) {
            Ok(auth) => self.pipeline.consent(auth),
            Err(answer) => answer,
        }
    }
}

#[test]
fn a_forged_or_foreign_entry_is_refused_and_changes_nothing() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let r = f.request(&a, "p1", None);
    let given = f.entry(ConsentAction::Given(r.clone()));

    // Forged: the signature's last byte flipped.
    let mut bytes = given.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let owner = SigningKey::from_bytes(&f.owner.to_bytes());
    let c = f.command(&owner, bytes, vec![]);
    let answer = f.run(c, &owner);
    assert_eq!(
        code(&answer),
        RejectCode::ConsentRefused as u16,
        "{}",
        answer.reason
    );

    // Not a consent entry at all.
    let c = f.command(&owner, b"not an entry".to_vec(), vec![]);
    assert_eq!(code(&f.run(c, &owner)), RejectCode::ConsentRefused as u16);

    // Signed by someone who is not an owner (sent by the owner, who was fooled).
    let stranger = person(9);
    let forged = f.craft(1, [0; 32], &stranger, ConsentAction::Given(r.clone()));
    let answer = f.send(&forged);
    assert_eq!(
        code(&answer),
        RejectCode::ConsentRefused as u16,
        "{}",
        answer.reason
    );
    assert!(answer.reason.contains("not an owner"), "{}", answer.reason);

    // An entry of another device's log (its owner is this device's owner too).
    let mut other = TestDevice::new(2, "other meter");
    other.claim(&[&f.owner], 1);
    let other_request = ConsentRequest {
        device: other.keys.device_id(),
        ..r.request().clone()
    }
    .sign(&a.key)
    .unwrap();
    let foreign = ConsentLog::verify(&other.chain, vec![])
        .unwrap()
        .next_entry(
            &other.chain,
            &f.owner,
            T0,
            ConsentAction::Given(other_request),
        )
        .unwrap();
    let answer = f.send(&foreign);
    assert_eq!(code(&answer), RejectCode::ConsentRefused as u16);
    assert!(answer.reason.contains("device"), "{}", answer.reason);

    assert_eq!(f.held(), 0, "nothing recorded");
    assert!(f.plan("p1").0.is_empty(), "no provider gets a key");
    // The genuine entry still goes through.
    assert!(f.send(&given).accepted());
}

#[test]
fn a_revoke_of_an_unknown_consent_is_refused_and_a_replayed_old_entry_changes_nothing() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let b = Provider::new(2, "Grid B");
    let ra = f.request(&a, "p1", None);
    let given = f.entry(ConsentAction::Given(ra.clone()));
    assert!(f.send(&given).accepted());

    // B's consent was never given: a well-formed, owner-signed revoke of it (the nodes would
    // not take it) as the next entry.
    let rb = f.request(&b, "p1", None);
    let unknown = f.craft(
        2,
        given.hash(),
        &SigningKey::from_bytes(&f.owner.to_bytes()),
        ConsentAction::Revoked(rb.id()),
    );
    let answer = f.send(&unknown);
    assert_eq!(
        code(&answer),
        RejectCode::ConsentRefused as u16,
        "{}",
        answer.reason
    );
    assert!(answer.reason.contains("never given"), "{}", answer.reason);
    assert_eq!(f.held(), 1);
    assert_eq!(f.streams.current_key_id("p1"), Some(1), "no rotation");

    // Revoke A, then replay A's old Given entry in a fresh command: the device holds that
    // very entry, so it answers accepted — and nothing changes: A stays out.
    let revoke = f.entry(ConsentAction::Revoked(ra.id()));
    assert!(f.send(&revoke).accepted());
    assert_eq!(f.streams.current_key_id("p1"), Some(2));
    let (_, cleared) = f.plan("p1");
    assert_eq!(cleared, vec![a.recipient()]);
    let answer = f.send(&given);
    assert!(answer.accepted(), "{}", answer.reason);
    assert_eq!(
        f.said(&answer),
        "consent entry 1 is already recorded here; nothing changes"
    );
    assert!(
        !f.streams.is_dirty("p1"),
        "no key message is to be published"
    );
    assert!(f.plan("p1").0.is_empty(), "A is not authorised again");
    let consents = f.streams.consents().unwrap();
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].id, ra.id());
    assert!(!consents[0].active(), "A's consent stays ended");
    assert_eq!(f.streams.current_key_id("p1"), Some(2), "no rotation");
    assert_eq!(f.held(), 2, "nothing recorded");

    // Revoking A a second time (an entry the nodes would refuse) is refused too.
    let second = f.craft(
        3,
        revoke.hash(),
        &SigningKey::from_bytes(&f.owner.to_bytes()),
        ConsentAction::Revoked(ra.id()),
    );
    let answer = f.send(&second);
    assert_eq!(code(&answer), RejectCode::ConsentRefused as u16);
    assert!(answer.reason.contains("already ended"), "{}", answer.reason);
    assert_eq!(
        f.streams.current_key_id("p1"),
        Some(2),
        "no second rotation"
    );
    assert_eq!(f.held(), 2);
}

#[test]
fn resending_the_latest_entry_after_a_lost_answer_is_accepted_and_changes_nothing() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let b = Provider::new(2, "Grid B");
    let ra = f.request(&a, "p1", None);
    let rb = f.request(&b, "p1", None);
    let given_a = f.entry(ConsentAction::Given(ra.clone()));
    let given_b = f.entry(ConsentAction::Given(rb.clone()));
    assert!(f.send(&given_a).accepted());
    assert!(f.send(&given_b).accepted());
    f.clock.advance(MINUTE);
    let revoke = f.entry(ConsentAction::Revoked(ra.id()));
    let first = f.send(&revoke);
    assert!(first.accepted(), "{}", first.reason);
    assert_eq!(
        f.said(&first),
        "consent entry 3 recorded; stream p1 now uses key 2"
    );
    assert_eq!(f.plan("p1").0, vec![b.recipient()]);
    let keys_before: Vec<_> = f
        .streams
        .keys("p1")
        .unwrap()
        .iter()
        .map(|k| (k.0, k.1, k.2.as_bytes().to_owned()))
        .collect();

    // The owner never got that answer and sends the same entry again (a fresh command).
    f.clock.advance(MINUTE);
    let again = f.send(&revoke);
    assert!(again.accepted(), "{}", again.reason);
    assert_eq!(
        f.said(&again),
        "consent entry 3 is already recorded here; nothing changes"
    );
    assert_eq!(
        f.streams.current_key_id("p1"),
        Some(2),
        "no second rotation"
    );
    let keys_after: Vec<_> = f
        .streams
        .keys("p1")
        .unwrap()
        .iter()
        .map(|k| (k.0, k.1, k.2.as_bytes().to_owned()))
        .collect();
    assert_eq!(keys_after, keys_before, "the keys are the same");
    assert!(!f.streams.is_dirty("p1"), "no key message to republish");
    assert_eq!(f.held(), 3, "nothing recorded");
    let mut consents: Vec<_> = f
        .streams
        .consents()
        .unwrap()
        .iter()
        .map(|c| (c.id, c.active()))
        .collect();
    consents.sort();
    let mut expected = vec![(ra.id(), false), (rb.id(), true)];
    expected.sort();
    assert_eq!(consents, expected, "A stays ended, B stays active");

    // A different entry at a held sequence number (a fork) is still refused, and the first
    // one stays.
    let fork = f.craft(
        3,
        revoke.prev,
        &SigningKey::from_bytes(&f.owner.to_bytes()),
        ConsentAction::Revoked(rb.id()),
    );
    let answer = f.send(&fork);
    assert_eq!(
        code(&answer),
        RejectCode::ConsentRefused as u16,
        "{}",
        answer.reason
    );
    assert!(answer.reason.contains("fork"), "{}", answer.reason);
    assert_eq!(f.streams.held_entries().unwrap()[&3], revoke);
    assert_eq!(f.plan("p1").0, vec![b.recipient()], "B keeps its key");
    assert_eq!(f.streams.current_key_id("p1"), Some(2));
}

#[test]
fn a_consent_for_a_stream_the_device_does_not_publish_is_unknown_stream() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let r = f.request(&a, "water", None);
    let given = f.entry(ConsentAction::Given(r));
    let answer = f.send(&given);
    assert_eq!(code(&answer), RejectCode::UnknownStream as u16);
    assert!(answer.reason.contains("p1"), "{}", answer.reason);
    assert_eq!(f.held(), 0);
}

#[test]
fn a_device_offline_when_consent_was_given_still_learns_a_later_revoke() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let b = Provider::new(2, "Grid B");
    let ra = f.request(&a, "p1", None);
    let rb = f.request(&b, "p1", None);
    let given_a = f.entry(ConsentAction::Given(ra.clone()));
    assert!(f.send(&given_a).accepted());
    // The device is offline: B's consent (seq 2) never reaches it.
    let given_b = f.entry(ConsentAction::Given(rb.clone()));
    // The owner revokes A, then B (seq 3, 4), and these reach the device.
    f.clock.advance(MINUTE);
    let revoke_a = f.entry(ConsentAction::Revoked(ra.id()));
    let revoke_b = f.entry(ConsentAction::Revoked(rb.id()));
    let answer = f.send(&revoke_a);
    assert!(answer.accepted(), "{}", answer.reason);
    assert_eq!(
        f.streams.current_key_id("p1"),
        Some(2),
        "A's revoke rotates"
    );
    let answer = f.send(&revoke_b);
    assert!(answer.accepted(), "{}", answer.reason);
    assert_eq!(
        f.streams.current_key_id("p1"),
        Some(2),
        "B never had a key from this device: nothing to rotate"
    );
    // B's Given arrives late: recorded as already revoked, B gets nothing.
    let answer = f.send(&given_b);
    assert!(answer.accepted(), "{}", answer.reason);
    let (providers, _) = f.plan("p1");
    assert!(providers.is_empty(), "neither A nor B is authorised");
    let b_held = f
        .streams
        .consents()
        .unwrap()
        .into_iter()
        .find(|c| c.id == rb.id())
        .unwrap();
    assert!(!b_held.active());
    assert_eq!(f.held(), 4);
}

#[test]
fn a_consents_period_ending_on_the_device_clock_rotates_the_key() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let b = Provider::new(2, "Grid B");
    let ra = f.request(&a, "p1", Some(T0 + 2 * MINUTE));
    let rb = f.request(&b, "p1", None);
    let given_a = f.entry(ConsentAction::Given(ra.clone()));
    let given_b = f.entry(ConsentAction::Given(rb));
    assert!(f.send(&given_a).accepted());
    assert!(f.send(&given_b).accepted());
    assert!(f
        .streams
        .lapse_due(T0 + MINUTE, &mut rng(1))
        .unwrap()
        .is_empty());
    assert_eq!(f.streams.current_key_id("p1"), Some(1));
    f.clock.advance(2 * MINUTE);
    assert_eq!(
        f.streams.lapse_due(T0 + 2 * MINUTE, &mut rng(1)).unwrap(),
        vec!["p1".to_owned()]
    );
    assert_eq!(f.streams.current_key_id("p1"), Some(2));
    let (providers, cleared) = f.plan("p1");
    assert_eq!(providers, vec![b.recipient()]);
    assert_eq!(cleared, vec![a.recipient()]);
    // The owner's Expired entry afterwards is recorded without a second rotation.
    f.clock.advance(MINUTE);
    let expired = f.entry(ConsentAction::Expired(ra.id()));
    let answer = f.send(&expired);
    assert!(answer.accepted(), "{}", answer.reason);
    assert_eq!(f.streams.current_key_id("p1"), Some(2));
    // A consent whose period ended by the device's clock before it arrived is refused.
    let now = f.clock.now_ms().unwrap();
    let late = f.request(&a, "p1", Some(now + MINUTE));
    let given_late = f.entry(ConsentAction::Given(late));
    f.clock.advance(2 * MINUTE);
    let answer = f.send(&given_late);
    assert_eq!(code(&answer), RejectCode::ConsentRefused as u16);
    assert!(answer.reason.contains("period ended"), "{}", answer.reason);
    assert_eq!(f.streams.current_key_id("p1"), Some(2));
}

#[test]
fn a_crafted_entry_whose_hash_links_do_not_match_what_the_device_holds_is_refused() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let r = f.request(&a, "p1", None);
    let given = f.entry(ConsentAction::Given(r.clone()));
    assert!(f.send(&given).accepted());
    let owner = SigningKey::from_bytes(&f.owner.to_bytes());
    // After a gap (seq 3), an entry still cannot claim seq 2 with a wrong link.
    let b = Provider::new(2, "Grid B");
    let rb = f.request(&b, "p1", None);
    let wrong_prev = f.craft(2, [7; 32], &owner, ConsentAction::Given(rb.clone()));
    let answer = f.send(&wrong_prev);
    assert_eq!(code(&answer), RejectCode::ConsentRefused as u16);
    // A fork at seq 1: another Given, properly signed, where the device holds one.
    let fork = f.craft(1, [0; 32], &owner, ConsentAction::Given(rb));
    let answer = f.send(&fork);
    assert_eq!(code(&answer), RejectCode::ConsentRefused as u16);
    assert!(answer.reason.contains("fork"), "{}", answer.reason);
    assert_eq!(f.held(), 1);
}

#[test]
fn when_the_device_changes_hands_the_old_owners_consents_end_and_the_key_rotates() {
    let mut f = fixture();
    let a = Provider::new(1, "Insights A");
    let r = f.request(&a, "p1", None);
    let given = f.entry(ConsentAction::Given(r));
    assert!(f.send(&given).accepted());
    let new_owner = person(4);
    let old_owner = SigningKey::from_bytes(&f.owner.to_bytes());
    f.device.apply(
        OpBody::Transfer(OwnerSet {
            owners: vec![new_owner.public_key()],
            threshold: 1,
        }),
        &[&old_owner, &new_owner],
    );
    let mut view = View::new(f.device.chain.clone());
    view.checks
        .record_quorum(&f.clock.boot_id(), f.clock.ticks_ms());
    f.pipeline.set_view(view).unwrap();
    assert_eq!(
        f.streams.current_key_id("p1"),
        Some(2),
        "rotated at the transfer"
    );
    assert_eq!(
        f.streams.current_key_id("gas"),
        Some(2),
        "no consent there, but the old owner's own copy must open nothing from now on"
    );
    let (providers, cleared) = f.plan("p1");
    assert!(providers.is_empty());
    assert_eq!(cleared, vec![a.recipient()]);
    // The old owner can no longer give consent.
    let mut log = ConsentLog::verify(&f.device.chain, f.log.entries().to_vec()).unwrap();
    let b = Provider::new(2, "Grid B");
    let rb = f.request(&b, "p1", None);
    assert!(log
        .next_entry(
            &f.device.chain,
            &old_owner,
            T0,
            ConsentAction::Given(rb.clone())
        )
        .is_err());
    let forged = f.craft(
        2,
        given.hash(),
        &old_owner,
        ConsentAction::Given(rb.clone()),
    );
    let answer = f.send(&forged);
    assert_eq!(
        code(&answer),
        RejectCode::NotAuthorized as u16,
        "the old owner is no owner"
    );
    // The new owner's consent is taken.
    let entry = log
        .next_entry(&f.device.chain, &new_owner, T0, ConsentAction::Given(rb))
        .unwrap();
    log.append(&f.device.chain, entry.clone()).unwrap();
    let c = f.command(&new_owner, entry.to_bytes(), vec![]);
    let answer = f.run(c, &new_owner);
    assert!(answer.accepted(), "{}", answer.reason);
    assert_eq!(f.plan("p1").0, vec![b.recipient()]);
}

/// Attack: a co-owner removed by amend-owners keeps the owner's copy of the stream key she
/// was sent and listens on the broker. Every stream rotates when she is removed, so nothing
/// published afterwards opens with what she holds; the remaining owner's copy follows.
#[test]
fn an_owner_removed_by_amend_owners_cannot_read_on_with_her_copy_of_the_key() {
    let mut f = fixture();
    let removed = person(2);
    let owner = SigningKey::from_bytes(&f.owner.to_bytes());
    f.device.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&owner, &removed]),
            threshold: 1,
        }),
        &[&owner, &removed],
    );
    let mut view = View::new(f.device.chain.clone());
    view.checks
        .record_quorum(&f.clock.boot_id(), f.clock.ticks_ms());
    f.pipeline.set_view(view).unwrap();
    assert_eq!(
        f.streams.current_key_id("p1"),
        Some(1),
        "adding an owner rotates nothing"
    );
    let held_by_removed = f.streams.keys("p1").unwrap();

    f.device.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: vec![owner.public_key()],
            threshold: 1,
        }),
        &[&owner],
    );
    let mut view = View::new(f.device.chain.clone());
    view.checks
        .record_quorum(&f.clock.boot_id(), f.clock.ticks_ms());
    f.pipeline.set_view(view).unwrap();
    assert_eq!(f.streams.current_key_id("p1"), Some(2));
    assert_eq!(f.streams.current_key_id("gas"), Some(2));
    let now = f.streams.keys("p1").unwrap();
    let current = &now.last().unwrap().2;
    assert!(
        held_by_removed
            .iter()
            .all(|(_, _, k)| k.as_bytes() != current.as_bytes()),
        "the removed owner holds the key now in use"
    );
    // Durable: a reopened store has the same current key.
    drop(f.pipeline);
    let reopened = StreamKeys::open(
        f.store.clone(),
        f.device.keys.device_id(),
        ["p1".to_owned(), "gas".to_owned()],
        T0,
        &mut rng(6),
    )
    .unwrap();
    assert_eq!(reopened.current_key_id("p1"), Some(2));
}
