//! The verification pipeline without sockets: a fixed clock, deterministic randomness, a real
//! SQLite file. Every refusal has its own stage and code, leaves no trace it should not, and
//! lands in the signed audit log.

use std::collections::BTreeSet;
use std::sync::Arc;

use latchkey_device::audit::{
    verify_entries, ArgsDigest, AuditBody, AuditPage, RefusalClass, Stage, Via,
};
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::pipeline::{Answer, Early, Pipeline, PipelineConfig};
use latchkey_device::store::Store;
use latchkey_device::view::View;
use latchkey_proto::chain::OpBody;
use latchkey_proto::codec::{Codec, Writer};
use latchkey_proto::command::{Command, Outcome, RejectCode, ReplyTo, SignedResponse};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::{seal_command, PendingReply, MAX_SEALED_COMMAND};
use latchkey_proto::grant::{Grant, GrantBody};
use latchkey_proto::keys::{DeviceId, Signature, SigningKey};
use latchkey_proto::{kem, pad};
use latchkey_testkit::{flip_bit, person, rng, ChaCha20Rng, TestDevice, HOUR, T0};
use rand_core::RngCore;

struct Fixture {
    device: TestDevice,
    owner: SigningKey,
    clock: ManualClock,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    rng: ChaCha20Rng,
    db: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn copy_keys(keys: &DeviceKeys) -> DeviceKeys {
    DeviceKeys::from_secret_bytes(&keys.to_secret_bytes()).unwrap()
}

fn pipeline_over(
    device: &TestDevice,
    clock: &ManualClock,
    db: &std::path::Path,
) -> Pipeline<ManualClock, ChaCha20Rng> {
    let store = Arc::new(Store::open(db).unwrap());
    Pipeline::new(
        copy_keys(&device.keys),
        clock.clone(),
        rng(99),
        store,
        confirmed_view(device, clock),
        PipelineConfig {
            actions: BTreeSet::from(["unlock".to_owned(), "lock".to_owned()]),
            ..PipelineConfig::default()
        },
    )
}

/// The device's chain as a quorum of nodes confirmed it just now.
fn confirmed_view(device: &TestDevice, clock: &ManualClock) -> View {
    let mut view = View::new(device.chain.clone());
    view.checks
        .record_quorum(&clock.boot_id(), clock.ticks_ms());
    view
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let owner = person(1);
    let mut device = TestDevice::new(1, "front door");
    device.claim(&[&owner], 1);
    let clock = ManualClock::at(T0);
    let db = tmp.path().join("state.db");
    let pipeline = pipeline_over(&device, &clock, &db);
    Fixture {
        device,
        owner,
        clock,
        pipeline,
        rng: rng(7),
        db,
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
            timestamp_ms: T0,
            nonce,
            challenge: None,
            grants: vec![],
            reply_to: ReplyTo::Direct,
        }
    }

    fn sealed(&mut self, key: &SigningKey, action: &str) -> (Vec<u8>, PendingReply) {
        let command = self.command(key, action);
        self.seal(command, key)
    }

    fn seal(&mut self, command: Command, key: &SigningKey) -> (Vec<u8>, PendingReply) {
        let signed = command.sign(key).unwrap();
        seal_command(&signed, self.device.keys.kem.public(), &mut self.rng).unwrap()
    }

    /// Runs an envelope through every step; the action "runs" by returning `output`.
    fn run(&self, envelope: &[u8], output: Result<Vec<u8>, String>) -> Result<Answer, Stage> {
        let fresh = match self.pipeline.open(envelope, Via::Local) {
            Ok(f) => f,
            Err(Early::Refused(r)) => return Err(r.stage),
            Err(Early::Answered(a)) => return Ok(a),
        };
        let auth = match self.pipeline.authorize(fresh) {
            Ok(a) => a,
            Err(answer) => return Ok(answer),
        };
        let result = if auth.is_audit() {
            self.pipeline.audit_page(auth.args())
        } else {
            // The "about to run" entry was written by `authorize`, with the nonce.
            output
        };
        Ok(self.pipeline.complete(auth, result))
    }

    fn open_answer(&self, answer: &Answer, pending: &PendingReply) -> SignedResponse {
        pending
            .open(&answer.sealed, &self.device.keys.identity.public_key())
            .unwrap()
    }

    fn grant(&self, subject: &SigningKey, actions: &[&str], from: u64, until: u64) -> Grant {
        self.device
            .grant(&self.owner, &subject.public_key(), actions, from, until, 0)
    }
}

fn rejected_code(response: &SignedResponse) -> u16 {
    match &response.response.outcome {
        Outcome::Rejected { code, .. } => *code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn owner_command_runs_and_gets_a_signed_timestamped_answer() {
    let mut f = fixture();
    let owner = person(1);
    let (env, pending) = f.sealed(&owner, "unlock");
    let answer = f.run(&env, Ok(b"opened".to_vec())).unwrap();
    assert!(answer.accepted());
    let response = f.open_answer(&answer, &pending);
    assert_eq!(response.response.outcome, Outcome::Accepted);
    assert_eq!(response.response.body, b"opened");
    assert_eq!(response.response.timestamp_ms, Some(T0));
    assert_eq!(response.response.command, pending.command);
}

/// One case per refusal: how to spoil the command, where it must stop, and with what code.
#[test]
fn every_refusal_has_its_own_stage_and_code() {
    let mut f = fixture();
    let owner = person(1);
    let stranger = person(2);
    let guest = person(3);

    // Before the signature: refused without a sealed answer.
    let (good, _) = f.sealed(&owner, "unlock");
    let oversize = vec![0u8; MAX_SEALED_COMMAND + 1];
    let truncated = good[..good.len() - 1].to_vec();
    let tampered = flip_bit(&good, good.len() - 40);
    let mut wrong_version = good.clone();
    wrong_version[0] = 9;
    let bad_padding = handmade_envelope(&f.device, &mut f.rng, |w| {
        w.u32(5000); // length larger than the bucket
    });
    let undecodable = handmade_envelope(&f.device, &mut f.rng, |w| {
        w.u32(3);
        w.raw(&[1, 2, 3]);
    });
    let bad_signature = {
        let mut signed = f.command(&owner, "unlock").sign(&owner).unwrap();
        signed.signature = Signature([7; 64]);
        seal_command(&signed, f.device.keys.kem.public(), &mut f.rng)
            .unwrap()
            .0
    };
    for (name, env, stage) in [
        ("oversize", oversize, Stage::Size),
        ("truncated", truncated, Stage::Size),
        ("tampered", tampered, Stage::Decrypt),
        ("header", wrong_version, Stage::Header),
        ("padding", bad_padding, Stage::Unpad),
        ("decode", undecodable, Stage::Decode),
        ("signature", bad_signature, Stage::Signature),
    ] {
        assert_eq!(f.run(&env, Ok(vec![])).unwrap_err(), stage, "{name}");
    }

    // After the signature: a signed rejection sealed to the sender.
    let mut cases: Vec<(&str, Command, SigningKey, Stage, RejectCode)> = Vec::new();
    let mut c = f.command(&owner, "unlock");
    c.device = DeviceId([9; 32]);
    cases.push((
        "wrong device",
        c,
        person(1),
        Stage::Device,
        RejectCode::WrongDevice,
    ));
    let mut c = f.command(&owner, "unlock");
    c.timestamp_ms = T0 - 61_000;
    cases.push((
        "too old",
        c,
        person(1),
        Stage::Timestamp,
        RejectCode::TooOld,
    ));
    let mut c = f.command(&owner, "unlock");
    c.timestamp_ms = T0 + 31_000;
    cases.push((
        "too new",
        c,
        person(1),
        Stage::Timestamp,
        RejectCode::TooNew,
    ));
    let c = f.command(&stranger, "unlock");
    cases.push((
        "stranger",
        c,
        person(2),
        Stage::Authority,
        RejectCode::NotAuthorized,
    ));
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![f.grant(&guest, &["unlock"], T0 - 2 * HOUR, T0 - HOUR)];
    cases.push((
        "expired",
        c,
        person(3),
        Stage::Authority,
        RejectCode::GrantExpired,
    ));
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![f.grant(&guest, &["unlock"], T0 + HOUR, T0 + 2 * HOUR)];
    cases.push((
        "not yet",
        c,
        person(3),
        Stage::Authority,
        RejectCode::GrantNotYetValid,
    ));
    let mut c = f.command(&guest, "lock");
    c.grants = vec![f.grant(&guest, &["unlock"], T0 - HOUR, T0 + HOUR)];
    cases.push((
        "other action",
        c,
        person(3),
        Stage::Authority,
        RejectCode::ActionNotGranted,
    ));
    let mut c = f.command(&guest, "audit");
    c.grants = vec![f.grant(&guest, &["audit"], T0 - HOUR, T0 + HOUR)];
    cases.push((
        "guest audit",
        c,
        person(3),
        Stage::Authority,
        RejectCode::NotAuthorized,
    ));
    let c = f.command(&owner, "fly");
    cases.push((
        "unknown action",
        c,
        person(1),
        Stage::Action,
        RejectCode::UnknownAction,
    ));

    let nonces_before = f.pipeline.nonce_count();
    for (name, command, key, stage, code) in cases {
        let (env, pending) = f.seal(command, &key);
        let answer = f.run(&env, Ok(b"ran".to_vec())).unwrap();
        assert_eq!(
            (answer.stage, answer.code),
            (stage, code as u16),
            "{name}: {}",
            answer.reason
        );
        if code == RejectCode::WrongDevice {
            // The answer names the device that answered, so the sender sees it reached
            // another device than the one it meant.
            let err = pending.open(&answer.sealed, &f.device.keys.identity.public_key());
            assert!(matches!(
                err.unwrap_err(),
                latchkey_proto::Error::WrongDevice { .. }
            ));
            continue;
        }
        let response = f.open_answer(&answer, &pending);
        assert_eq!(rejected_code(&response), code as u16, "{name}");
        assert!(response.response.body.is_empty(), "{name}: nothing ran");
    }
    // None of them was authorized, so none touched the strike register.
    assert_eq!(
        f.pipeline.nonce_count(),
        nonces_before,
        "refused before the nonce step"
    );

    // The action itself failing.
    let (env, pending) = f.sealed(&owner, "unlock");
    let answer = f.run(&env, Err("motor jammed".into())).unwrap();
    assert_eq!(answer.stage, Stage::Action);
    assert_eq!(
        rejected_code(&f.open_answer(&answer, &pending)),
        RejectCode::ActionFailed as u16
    );
}

/// Builds a sealed command by hand around a chosen padded plaintext (to reach the unpad and
/// decode steps, which a well-behaved sender never fails).
fn handmade_envelope(
    device: &TestDevice,
    rng: &mut ChaCha20Rng,
    fill: impl FnOnce(&mut Writer),
) -> Vec<u8> {
    let (shared, ct) = kem::encapsulate(device.keys.kem.public(), rng).unwrap();
    let mut nonce = [0u8; kem::AEAD_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut header = Writer::new();
    header.u8(1);
    header.u8(1);
    header.nested(&ct);
    header.raw(&nonce);
    let header = header.into_inner();
    let mut padded = Writer::new();
    fill(&mut padded);
    let mut padded = padded.into_inner();
    padded.resize(pad::BUCKETS[0], 0);
    let sealed = kem::aead_seal(&shared.command_key(), &nonce, &header, &padded);
    [header, sealed].concat()
}

#[test]
fn a_replay_is_refused_within_a_run_from_memory_and_after_a_restart_by_the_barrier() {
    let mut f = fixture();
    let owner = person(1);
    let (env, _) = f.sealed(&owner, "unlock");
    assert!(f.run(&env, Ok(vec![])).unwrap().accepted());
    let again = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(
        (again.stage, again.code),
        (Stage::Nonce, RejectCode::Replayed as u16)
    );
    // One signed at the edge of the window's lead (its sender's clock 29 s ahead), accepted.
    let mut ahead = f.command(&owner, "unlock");
    ahead.timestamp_ms = T0 + 29_000;
    let (ahead, _) = f.seal(ahead, &owner);
    assert!(f.run(&ahead, Ok(vec![])).unwrap().accepted());
    // Every accepted timestamp is under the durable lease before the action runs.
    assert!(f.pipeline.store().lease().unwrap() >= T0 + 29_000);

    // A fresh pipeline over the same file, as after kill -9 (nonces in memory are gone), its
    // clock set back a second and then 25 s (still within the window of its mark, so trusted,
    // and the barrier does not depend on the clock): the captured envelopes meet the restart
    // barrier and get a challenge; nothing runs.
    for (back, captured) in [(1_000, &env), (1_000, &ahead), (25_000, &env)] {
        f.clock.set(T0 - back);
        f.pipeline = pipeline_over(&f.device, &f.clock, &f.db);
        assert!(f.pipeline.restart_barrier() >= T0 + 29_000);
        let after = f.run(captured, Ok(vec![])).unwrap();
        assert_eq!(
            (after.stage, after.code),
            (Stage::Challenge, RejectCode::ClockUnset as u16),
            "{}",
            after.reason
        );
        assert!(after.reason.contains("restarted"), "{}", after.reason);
    }
    // The owner's app answers the challenge with a fresh command, which runs once.
    f.clock.set(T0);
    let (fresh, pending) = f.sealed(&owner, "unlock");
    let asked = f.run(&fresh, Ok(vec![])).unwrap();
    let Outcome::ChallengeRequired { challenge } = f.open_answer(&asked, &pending).response.outcome
    else {
        panic!("a command signed before the barrier is challenged");
    };
    let mut answered = f.command(&owner, "unlock");
    answered.challenge = Some(challenge);
    let (answered, _) = f.seal(answered, &owner);
    assert!(f.run(&answered, Ok(vec![])).unwrap().accepted());
    let twice = f.run(&answered, Ok(vec![])).unwrap();
    assert_ne!(twice.code, 0, "a redeemed challenge runs nothing twice");
    // Once the senders' clocks pass the barrier, commands need no challenge again.
    let past = f.pipeline.restart_barrier() + 1 - T0;
    f.clock.advance(past);
    let mut later = f.command(&owner, "unlock");
    later.timestamp_ms = T0 + past;
    let (later, _) = f.seal(later, &owner);
    assert!(f.run(&later, Ok(vec![])).unwrap().accepted());
    // And the window refuses the first capture outright.
    let late = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(late.code, RejectCode::TooOld as u16);
}

#[test]
fn a_device_that_never_accepted_anything_has_no_barrier() {
    let mut f = fixture();
    assert_eq!(f.pipeline.restart_barrier(), 0);
    f.pipeline = pipeline_over(&f.device, &f.clock, &f.db);
    assert_eq!(f.pipeline.restart_barrier(), 0);
    let (env, _) = f.sealed(&person(1), "unlock");
    assert!(f.run(&env, Ok(vec![])).unwrap().accepted(), "no challenge");
}

#[test]
fn guest_grants_use_limits_and_revocation() {
    let mut f = fixture();
    let guest = person(3);
    let base = f.grant(&guest, &["unlock"], T0 - HOUR, T0 + HOUR);
    let limited = GrantBody {
        use_limit: Some(2),
        ..base.body.clone()
    }
    .sign(&f.owner)
    .unwrap();
    let mut codes = Vec::new();
    for _ in 0..3 {
        let mut c = f.command(&guest, "unlock");
        c.grants = vec![limited.clone()];
        let (env, _) = f.seal(c, &guest);
        codes.push(f.run(&env, Ok(vec![])).unwrap().code);
    }
    assert_eq!(codes, vec![0, 0, RejectCode::UseLimitReached as u16]);
    assert_eq!(f.pipeline.store().uses(&limited.id()).unwrap(), 2);

    // The owner revokes the unlimited grant; the device learns it from its view.
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![base.clone()];
    let (env, _) = f.seal(c, &guest);
    assert!(f.run(&env, Ok(vec![])).unwrap().accepted());
    let owner = person(1);
    f.device.apply(
        OpBody::RevokeGrant {
            chain: vec![base.clone()],
        },
        &[&owner],
    );
    f.pipeline
        .set_view(confirmed_view(&f.device, &f.clock))
        .unwrap();
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![base];
    let (env, _) = f.seal(c, &guest);
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Authority, RejectCode::GrantRevoked as u16)
    );

    // A factory reset voids every owner and grant.
    let identity = copy_keys(&f.device.keys).identity;
    f.device.apply(
        OpBody::FactoryReset {
            setup: person(50).public_key(),
        },
        &[&identity],
    );
    f.pipeline
        .set_view(confirmed_view(&f.device, &f.clock))
        .unwrap();
    let (env, _) = f.sealed(&owner, "unlock");
    assert_eq!(
        f.run(&env, Ok(vec![])).unwrap().code,
        RejectCode::NotAuthorized as u16
    );
}

#[test]
fn a_clockless_device_hands_out_one_time_challenges() {
    let mut f = fixture();
    f.clock.unset();
    let owner = person(1);
    let (env, pending) = f.sealed(&owner, "unlock");
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(answer.stage, Stage::Challenge);
    let response = f.open_answer(&answer, &pending);
    assert_eq!(
        response.response.timestamp_ms, None,
        "no clock, no timestamp"
    );
    let Outcome::ChallengeRequired { challenge } = response.response.outcome else {
        panic!("expected a challenge");
    };
    // Resent with the challenge (any timestamp), it runs once.
    let mut c = f.command(&owner, "unlock");
    c.timestamp_ms = 5;
    c.challenge = Some(challenge);
    let (env, pending) = f.seal(c.clone(), &owner);
    let answer = f.run(&env, Ok(b"ok".to_vec())).unwrap();
    assert!(answer.accepted(), "{}", answer.reason);
    assert_eq!(
        f.open_answer(&answer, &pending).response.outcome,
        Outcome::Accepted
    );
    // The challenge is spent.
    c.nonce = [42; 16];
    let (env, _) = f.seal(c, &owner);
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Challenge, RejectCode::ClockUnset as u16)
    );
    // Guests need the clock (grant windows are in real time): refused without a challenge.
    let guest = person(3);
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![f.grant(&guest, &["unlock"], 0, u64::MAX)];
    let (env, _) = f.seal(c, &guest);
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Authority, RejectCode::ClockUnset as u16)
    );
    // Strangers get no challenge either.
    let (env, _) = f.sealed(&person(2), "unlock");
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Authority, RejectCode::NotAuthorized as u16)
    );
}

#[test]
fn the_audit_log_records_everything_and_verifies() {
    let mut f = fixture();
    let owner = person(1);
    let (good, _) = f.sealed(&owner, "unlock");
    f.run(&good, Ok(vec![])).unwrap();
    f.run(&good, Ok(vec![])).unwrap(); // replay
    f.run(&flip_bit(&good, 3000.min(good.len() - 1)), Ok(vec![]))
        .unwrap_err();
    let stranger = person(2);
    let (env, _) = f.sealed(&stranger, "unlock");
    f.run(&env, Ok(vec![])).unwrap();

    let (env, pending) = f.sealed(&owner, "audit");
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert!(answer.accepted());
    let body = f.open_answer(&answer, &pending).response.body;
    let page = AuditPage::from_bytes(&body).unwrap();
    assert_eq!((page.oldest, page.next_seq), (0, 4));
    verify_entries(&page.entries, &f.device.keys.identity.public_key(), None).unwrap();
    let kinds: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.entry.body.kind_name())
        .collect();
    assert_eq!(kinds, vec!["era", "about_to_run", "decision", "refusals"]);
    let AuditBody::Decision(accepted) = &page.entries[2].entry.body else {
        unreachable!()
    };
    assert_eq!((accepted.code, accepted.stage), (0, Stage::Action));
    assert_eq!(accepted.sender, Some(owner.public_key()));
    assert_eq!(accepted.action, "unlock");
    assert_eq!(accepted.args, Some(ArgsDigest::of(b"")));
    assert!(!accepted.view.stale, "the fixture's quorum is fresh");
    // The replay, the altered envelope and the stranger are counted in one summary.
    let AuditBody::Refusals(summary) = &page.entries[3].entry.body else {
        unreachable!()
    };
    let rows: Vec<(RefusalClass, Stage, u16, u32)> = summary
        .rows
        .iter()
        .map(|r| (r.class, r.stage, r.code, r.count))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                RefusalClass::Unauthenticated,
                Stage::Decrypt,
                RejectCode::Malformed as u16,
                1
            ),
            (
                RefusalClass::NoStanding,
                Stage::Authority,
                RejectCode::NotAuthorized as u16,
                1
            ),
            (
                RefusalClass::Repeat,
                Stage::Nonce,
                RejectCode::Replayed as u16,
                1
            ),
        ]
    );
    // Paging back.
    let (env, pending) = {
        let mut c = f.command(&owner, "audit");
        c.args = 2u64.to_be_bytes().to_vec();
        f.seal(c, &owner)
    };
    let answer = f.run(&env, Ok(vec![])).unwrap();
    let page = AuditPage::from_bytes(&f.open_answer(&answer, &pending).response.body).unwrap();
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.entries[1].entry.seq, 1);
}

/// Runs `env` and says whether the action ran.
fn ran(f: &Fixture, env: &[u8]) -> (bool, Option<Answer>) {
    match f.run(env, Ok(b"opened".to_vec())) {
        Ok(a) => (a.accepted(), Some(a)),
        Err(_) => (false, None),
    }
}

#[test]
fn a_strangers_signed_command_costs_no_durable_write() {
    let mut f = fixture();
    let (env, _) = f.sealed(&person(2), "unlock");
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Authority, RejectCode::NotAuthorized as u16)
    );
    // A revoked or expired guest and a stale view are refused in memory as well.
    let guest = person(3);
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![f.grant(&guest, &["unlock"], T0 - 2 * HOUR, T0 - HOUR)];
    let (env, _) = f.seal(c, &guest);
    assert_eq!(
        f.run(&env, Ok(vec![])).unwrap().code,
        RejectCode::GrantExpired as u16
    );
    assert_eq!(f.pipeline.nonce_count(), 0, "no nonce taken");
    // The durable (synchronous=FULL) tables hold only what the boot record wrote when the
    // pipeline started. The audit log (lazy connection, no fsync per commit) holds the era's
    // first entry and the guest's refusal; the stranger has no standing, so it is only counted
    // towards the next refusal summary.
    let db = rusqlite::Connection::open(&f.db).unwrap();
    let durable = |db: &rusqlite::Connection| -> Vec<(String, i64)> {
        let mut stmt = db
            .prepare("SELECT key, ms FROM clock UNION ALL SELECT hex(grant_id), used FROM use_counts ORDER BY 1")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        durable(&db),
        vec![
            ("barrier".to_owned(), 0),
            ("boots".to_owned(), 1),
            ("mark".to_owned(), T0 as i64)
        ],
        "no lease, no use count, the mark as the boot record left it"
    );
    let audited: i64 = db
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(audited, 2);
}

#[test]
fn guests_are_refused_on_a_stale_view_and_owners_a_day_later() {
    let mut f = fixture();
    let owner = person(1);
    let guest = person(3);
    let grant = f.grant(&guest, &["unlock"], T0 - HOUR, T0 + 48 * HOUR);
    let guest_env = |f: &mut Fixture| {
        let mut c = f.command(&guest, "unlock");
        c.timestamp_ms = f.clock.now_ms().unwrap();
        c.grants = vec![grant.clone()];
        f.seal(c, &guest).0
    };
    let owner_env = |f: &mut Fixture| {
        let mut c = f.command(&owner, "unlock");
        c.timestamp_ms = f.clock.now_ms().unwrap();
        f.seal(c, &owner).0
    };
    // 15 minutes after the last quorum: still fine.
    f.clock.advance(900_000);
    let env = guest_env(&mut f);
    assert!(ran(&f, &env).0);
    // One more second (the nodes are cut off): the guest is refused, in plain words.
    f.clock.advance(1_000);
    let env = guest_env(&mut f);
    let (did, answer) = ran(&f, &env);
    let answer = answer.unwrap();
    assert!(!did);
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Authority, RejectCode::StaleView as u16)
    );
    assert_eq!(
        answer.reason,
        "the door cannot confirm your invitation is still valid; it has been offline from the registry since 2027-01-15T08:00Z (15 minutes)",
    );
    // The owner keeps working for a day of up-time without a quorum.
    let env = owner_env(&mut f);
    assert!(ran(&f, &env).0);
    f.clock.advance(86_400_000 - 901_000);
    let env = owner_env(&mut f);
    assert!(ran(&f, &env).0, "exactly a day");
    f.clock.advance(1_000);
    let env = owner_env(&mut f);
    let answer = ran(&f, &env).1.unwrap();
    assert_eq!(answer.code, RejectCode::StaleView as u16);
    assert!(
        answer
            .reason
            .starts_with("the door cannot confirm you are still an owner; it has been offline from the registry since 2027-01-15T08:00Z (1440 minutes)"),
        "{}",
        answer.reason
    );
    // A quorum makes both welcome again.
    let mut view = f.pipeline.view().clone();
    view.checks
        .record_quorum(&f.clock.boot_id(), f.clock.ticks_ms());
    f.pipeline.set_view(view).unwrap();
    let env = owner_env(&mut f);
    assert!(ran(&f, &env).0);
    let env = guest_env(&mut f);
    assert!(ran(&f, &env).0);
}

#[test]
fn setting_the_wall_clock_forward_or_back_does_not_change_the_views_age() {
    let mut f = fixture();
    let guest = person(3);
    let grant = f.grant(&guest, &["unlock"], 0, u64::MAX);
    f.clock.advance(1_000_000);
    // Time passes (ticks), the attacker sets the wall clock back to the quorum's time.
    f.clock.set(T0);
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![grant];
    let (env, _) = f.seal(c, &guest);
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(
        answer.code,
        RejectCode::StaleView as u16,
        "ages come from the monotonic ticks: {}",
        answer.reason
    );
}

#[test]
fn after_a_reboot_guests_wait_for_a_quorum_and_owners_carry_their_up_time() {
    let f = fixture();
    let owner = person(1);
    let guest = person(3);
    f.clock.advance(60_000);
    // The agent saved its view a minute after the quorum, then the power went.
    let view = f.pipeline.view().clone();
    f.pipeline.set_view(view).unwrap();
    f.clock.reboot("boot-2");
    f.clock.set(T0 + HOUR);
    let store = Store::open(&f.db).unwrap();
    let mut view = View::load(&store).unwrap().unwrap();
    view.adopt_boot(&f.clock.boot_id(), f.clock.ticks_ms(), 60_000);
    let pipeline = Pipeline::new(
        copy_keys(&f.device.keys),
        f.clock.clone(),
        rng(5),
        Arc::new(store),
        view,
        PipelineConfig {
            actions: BTreeSet::from(["unlock".to_owned()]),
            ..PipelineConfig::default()
        },
    );
    let mut r = rng(6);
    let mut seal = |key: &SigningKey, grants: Vec<Grant>| {
        let mut nonce = [0u8; 16];
        r.fill_bytes(&mut nonce);
        let c = Command {
            device: f.device.keys.device_id(),
            sender: key.public_key(),
            action: "unlock".into(),
            args: vec![],
            timestamp_ms: T0 + HOUR,
            nonce,
            challenge: None,
            grants,
            reply_to: ReplyTo::Direct,
        };
        seal_command(&c.sign(key).unwrap(), f.device.keys.kem.public(), &mut r)
            .unwrap()
            .0
    };
    let run = |env: &[u8]| -> Answer {
        let fresh = pipeline.open(env, Via::Local).map_err(|_| ()).unwrap();
        match pipeline.authorize(fresh) {
            Ok(auth) => pipeline.complete(auth, Ok(vec![])),
            Err(a) => a,
        }
    };
    let grant = f.grant(&guest, &["unlock"], 0, u64::MAX);
    let answer = run(&seal(&guest, vec![grant]));
    assert_eq!(answer.code, RejectCode::StaleView as u16);
    assert!(
        answer.reason.ends_with("since it started"),
        "{}",
        answer.reason
    );
    assert!(
        run(&seal(&owner, vec![])).accepted(),
        "owners: 2 minutes of up-time"
    );
}

#[test]
fn a_clock_set_back_does_not_bring_back_a_pruned_replay() {
    let mut f = fixture();
    let owner = person(1);
    let (captured, _) = f.sealed(&owner, "unlock");
    let mut runs = 0;
    assert!(ran(&f, &captured).0);
    runs += 1;
    // The window passes; the timer raises the mark and prunes the nonce.
    f.clock.advance(61_000);
    f.pipeline.housekeeping();
    f.clock.advance(1);
    f.pipeline.housekeeping();
    assert_eq!(f.pipeline.nonce_count(), 0, "pruned");
    for (name, back_to) in [("to the capture", T0), ("to capture + 10 s", T0 + 10_000)] {
        f.clock.set(back_to);
        let (did, answer) = ran(&f, &captured);
        assert!(!did, "{name}: replayed");
        let answer = answer.unwrap();
        assert_ne!(answer.code, 0, "{name}");
        // A restart (new pipeline on the same file) remembers the mark.
        f.pipeline = pipeline_over(&f.device, &f.clock, &f.db);
        assert!(!ran(&f, &captured).0, "{name}: replayed after a restart");
    }
    assert_eq!(runs, 1);
    // Set back by 61 s: behind the mark by more than the window: challenges, in words.
    f.clock.set(T0);
    let answer = f.run(&captured, Ok(vec![])).unwrap();
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Challenge, RejectCode::ClockUnset as u16)
    );
    assert!(
        answer.reason.contains("behind its high-water mark"),
        "{}",
        answer.reason
    );
    // By 51 s: trusted, but the floor is the mark's.
    f.clock.set(T0 + 10_000);
    let answer = f.run(&captured, Ok(vec![])).unwrap();
    assert_eq!(
        (answer.stage, answer.code),
        (Stage::Timestamp, RejectCode::TooOld as u16)
    );
}

#[test]
fn a_clock_set_back_does_not_bring_back_an_expired_grant() {
    let mut f = fixture();
    let guest = person(3);
    let grant = f.grant(&guest, &["unlock"], T0 - HOUR, T0 + 30_000);
    // 50 s after the grant ended the mark knows the time...
    f.clock.advance(80_000);
    f.pipeline.housekeeping();
    // ...and the clock is set back 55 s, to before the end (inside the window: trusted).
    f.clock.set(T0 + 25_000);
    let mut c = f.command(&guest, "unlock");
    c.timestamp_ms = T0 + 25_000;
    c.grants = vec![grant];
    let (env, _) = f.seal(c, &guest);
    let (did, answer) = ran(&f, &env);
    assert!(!did);
    assert_eq!(
        answer.unwrap().code,
        RejectCode::GrantExpired as u16,
        "judged at max(now, mark)"
    );
    // Behind by more than the window: guests are refused outright.
    f.clock.set(T0);
    let mut c = f.command(&guest, "unlock");
    c.grants = vec![f.grant(&guest, &["unlock"], T0 - HOUR, T0 + 30_000)];
    let (env, _) = f.seal(c, &guest);
    let answer = f.run(&env, Ok(vec![])).unwrap();
    assert_eq!(answer.code, RejectCode::ClockUnset as u16);
    assert!(
        answer.reason.contains("high-water mark"),
        "{}",
        answer.reason
    );
}

#[test]
fn a_thousand_strangers_cannot_flush_an_owners_challenge() {
    let tmp = tempfile::tempdir().unwrap();
    let owner = person(1);
    let co_owner = person(4);
    let mut device = TestDevice::new(1, "front door");
    device.claim(&[&owner, &co_owner], 1);
    let clock = ManualClock::at(T0);
    let db = tmp.path().join("state.db");
    let pipeline = pipeline_over(&device, &clock, &db);
    let mut f = Fixture {
        device,
        owner: person(1),
        clock,
        pipeline,
        rng: rng(7),
        db,
        _tmp: tmp,
    };
    f.clock.unset();
    let ask = |f: &mut Fixture, key: &SigningKey| -> Answer {
        let (env, _) = f.sealed(key, "unlock");
        f.run(&env, Ok(vec![])).unwrap()
    };
    let (env, pending) = f.sealed(&owner, "unlock");
    let answer = f.run(&env, Ok(vec![])).unwrap();
    let Outcome::ChallengeRequired { challenge } =
        f.open_answer(&answer, &pending).response.outcome
    else {
        panic!("expected a challenge");
    };
    for i in 0..1000u32 {
        let stranger = SigningKey::from_bytes(&{
            let mut b = [0x77; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b
        });
        let answer = ask(&mut f, &stranger);
        assert_eq!(
            (answer.stage, answer.code),
            (Stage::Authority, RejectCode::NotAuthorized as u16),
            "no challenge for a stranger"
        );
    }
    // A co-owner asking over and over pushes out only its own.
    for _ in 0..100 {
        assert_eq!(ask(&mut f, &co_owner).stage, Stage::Challenge);
    }
    let mut c = f.command(&owner, "unlock");
    c.challenge = Some(challenge);
    let (env, _) = f.seal(c, &owner);
    assert!(f.run(&env, Ok(vec![])).unwrap().accepted());
    assert_eq!(f.pipeline.nonce_count(), 1);
}
