//! Short-link invitations bound to the first phone that redeems them (grant extension 0x83,
//! docs/PROTOCOL.md §10), performed through the device's pipeline with an injected clock and a
//! real SQLite file: the link key redeems for the guest's phone key K; afterwards only K opens,
//! the link (leaked, or kept by a second phone) is refused, the binding survives a restart, and
//! revoking the grant voids the bound phone.

use std::collections::BTreeSet;
use std::sync::Arc;

use latchkey_device::audit::{AuditBody, AuditPage, Stage, Via};
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::pipeline::{Answer, Early, Pipeline, PipelineConfig};
use latchkey_device::store::{Accepted, Store};
use latchkey_device::view::View;
use latchkey_proto::chain::OpBody;
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, RejectCode, ReplyTo};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::seal_command;
use latchkey_proto::grant::{Extension, Grant, EXT_BIND_ON_FIRST_USE, REDEEM_ACTION};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::redeem::RedeemRequest;
use latchkey_testkit::{person, rng, ChaCha20Rng, TestDevice, HOUR, T0};
use rand_core::RngCore;

struct Door {
    device: TestDevice,
    owner: SigningKey,
    clock: ManualClock,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    rng: ChaCha20Rng,
    db: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn pipeline_over(
    device: &TestDevice,
    clock: &ManualClock,
    db: &std::path::Path,
) -> Pipeline<ManualClock, ChaCha20Rng> {
    let mut view = View::new(device.chain.clone());
    view.checks
        .record_quorum(&clock.boot_id(), clock.ticks_ms());
    Pipeline::new(
        DeviceKeys::from_secret_bytes(&device.keys.to_secret_bytes()).unwrap(),
        clock.clone(),
        rng(99),
        Arc::new(Store::open(db).unwrap()),
        view,
        PipelineConfig {
            actions: BTreeSet::from(["unlock".to_owned()]),
            ..PipelineConfig::default()
        },
    )
}

fn door() -> Door {
    let tmp = tempfile::tempdir().unwrap();
    let owner = person(1);
    let mut device = TestDevice::new(1, "front door");
    device.claim(&[&owner], 1);
    let clock = ManualClock::at(T0);
    let db = tmp.path().join("state.db");
    let pipeline = pipeline_over(&device, &clock, &db);
    Door {
        device,
        owner,
        clock,
        pipeline,
        rng: rng(7),
        db,
        _tmp: tmp,
    }
}

/// What happened to one command: its answer, and whether an actuator would have run.
struct Ran {
    answer: Answer,
    actuator: bool,
}

impl Door {
    /// The owner's bind-on-first-use grant to a one-time link key (unlock, `uses` uses).
    fn short_link_grant(&self, link: &SigningKey, uses: Option<u32>) -> Grant {
        let mut body = self
            .device
            .grant(
                &self.owner,
                &link.public_key(),
                &["unlock"],
                T0 - HOUR,
                T0 + 10 * HOUR,
                0,
            )
            .body;
        body.use_limit = uses;
        body.extensions.push(Extension {
            tag: EXT_BIND_ON_FIRST_USE,
            value: vec![],
        });
        body.sign(&self.owner).unwrap()
    }

    fn send(&mut self, key: &SigningKey, action: &str, args: Vec<u8>, grant: &Grant) -> Ran {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let command = Command {
            device: self.device.keys.device_id(),
            sender: key.public_key(),
            action: action.into(),
            args,
            timestamp_ms: self.clock.now_ms().unwrap(),
            nonce,
            challenge: None,
            grants: vec![grant.clone()],
            reply_to: ReplyTo::Direct,
        }
        .sign(key)
        .unwrap();
        let (env, _) =
            seal_command(&command, self.device.keys.kem.public(), &mut self.rng).unwrap();
        let fresh = match self.pipeline.open(&env, Via::Local) {
            Ok(f) => f,
            Err(Early::Answered(answer)) => {
                return Ran {
                    answer,
                    actuator: false,
                }
            }
            Err(Early::Refused(r)) => panic!("refused before authority: {r:?}"),
        };
        let auth = match self.pipeline.authorize(fresh) {
            Ok(a) => a,
            Err(answer) => {
                return Ran {
                    answer,
                    actuator: false,
                }
            }
        };
        // As the agent does: a redemption runs no actuator.
        let actuator = auth.redeemed().is_none();
        Ran {
            answer: self.pipeline.complete(auth, Ok(Vec::new())),
            actuator,
        }
    }

    fn redeem(&mut self, link: &SigningKey, phone: &SigningKey, grant: &Grant) -> Ran {
        let args = RedeemRequest::sign(phone, &self.device.keys.device_id(), &grant.id()).to_args();
        self.send(link, REDEEM_ACTION, args, grant)
    }

    fn bound_to(&self, grant: &Grant) -> Option<latchkey_proto::keys::PublicKey> {
        self.pipeline
            .store()
            .bindings()
            .unwrap()
            .into_iter()
            .find(|(g, _)| *g == grant.id())
            .map(|(_, k)| k)
    }
}

fn code(ran: &Ran) -> u16 {
    ran.answer.code
}

#[test]
fn the_first_phone_binds_the_link_and_a_leaked_link_opens_nothing() {
    let mut d = door();
    let (link, phone, thief) = (person(10), person(11), person(12));
    let grant = d.short_link_grant(&link, Some(2));

    // Unbound: the link key itself may only redeem.
    let early = d.send(&link, "unlock", vec![], &grant);
    assert_eq!(code(&early), RejectCode::NotRedeemed as u16);
    assert!(!early.actuator);
    assert_eq!(d.bound_to(&grant), None);

    // The guest's phone redeems: success, nothing runs, no use is spent.
    let redeemed = d.redeem(&link, &phone, &grant);
    assert!(redeemed.answer.accepted(), "{}", redeemed.answer.reason);
    assert!(!redeemed.actuator);
    assert_eq!(d.bound_to(&grant), Some(phone.public_key()));
    assert_eq!(d.pipeline.store().uses(&grant.id()).unwrap(), 0);

    // The bound phone opens.
    let open = d.send(&phone, "unlock", vec![], &grant);
    assert!(open.answer.accepted(), "{}", open.answer.reason);
    assert!(open.actuator);

    // The link leaked after redemption: its key opens nothing.
    let leaked = d.send(&link, "unlock", vec![], &grant);
    assert_eq!(code(&leaked), RejectCode::AlreadyRedeemed as u16);
    assert!(!leaked.actuator);

    // A second phone that got the same link redeems: refused, and the binding is unchanged.
    let second = d.redeem(&link, &thief, &grant);
    assert_eq!(code(&second), RejectCode::AlreadyRedeemed as u16);
    assert_eq!(d.bound_to(&grant), Some(phone.public_key()));
    // Nor can it open with its own key.
    let thief_open = d.send(&thief, "unlock", vec![], &grant);
    assert_eq!(code(&thief_open), RejectCode::GrantInvalid as u16);
    assert!(!thief_open.actuator);

    // The same phone redeeming again (a retry after a lost answer) is fine.
    let again = d.redeem(&link, &phone, &grant);
    assert!(again.answer.accepted(), "{}", again.answer.reason);
    assert_eq!(d.bound_to(&grant), Some(phone.public_key()));

    // Redemptions spent no use: the phone still has its second.
    assert!(d.send(&phone, "unlock", vec![], &grant).answer.accepted());
    assert_eq!(
        code(&d.send(&phone, "unlock", vec![], &grant)),
        RejectCode::UseLimitReached as u16
    );
}

#[test]
fn the_binding_survives_a_restart() {
    let mut d = door();
    let (link, phone, thief) = (person(10), person(11), person(12));
    let grant = d.short_link_grant(&link, None);
    assert!(d.redeem(&link, &phone, &grant).answer.accepted());

    // Power cut for a few minutes: a new pipeline over the same database file (commands are
    // signed after its restart barrier, so no challenge is asked).
    d.clock.advance(200_000);
    d.pipeline = pipeline_over(&d.device, &d.clock, &d.db);
    assert!(d.pipeline.restart_barrier() > 0);
    assert!(d.send(&phone, "unlock", vec![], &grant).answer.accepted());
    assert_eq!(
        code(&d.send(&link, "unlock", vec![], &grant)),
        RejectCode::AlreadyRedeemed as u16
    );
    assert_eq!(
        code(&d.redeem(&link, &thief, &grant)),
        RejectCode::AlreadyRedeemed as u16
    );
}

#[test]
fn revoking_the_grant_voids_the_bound_phone() {
    let mut d = door();
    let (link, phone) = (person(10), person(11));
    let grant = d.short_link_grant(&link, None);
    assert!(d.redeem(&link, &phone, &grant).answer.accepted());
    assert!(d.send(&phone, "unlock", vec![], &grant).answer.accepted());
    let owner = person(1);
    d.device.apply(
        OpBody::RevokeGrant {
            chain: vec![grant.clone()],
        },
        &[&owner],
    );
    let mut view = View::new(d.device.chain.clone());
    view.checks
        .record_quorum(&d.clock.boot_id(), d.clock.ticks_ms());
    d.pipeline.set_view(view).unwrap();
    let refused = d.send(&phone, "unlock", vec![], &grant);
    assert_eq!(
        (refused.answer.stage, code(&refused)),
        (Stage::Authority, RejectCode::GrantRevoked as u16)
    );
    // A revoked link cannot be redeemed by anyone either.
    assert_eq!(
        code(&d.redeem(&link, &person(12), &grant)),
        RejectCode::GrantRevoked as u16
    );
}

#[test]
fn the_redemption_is_audited_with_the_phone_key() {
    let mut d = door();
    let (link, phone) = (person(10), person(11));
    let grant = d.short_link_grant(&link, None);
    assert!(d.redeem(&link, &phone, &grant).answer.accepted());
    let page = AuditPage::from_bytes(&d.pipeline.audit_page(&[]).unwrap()).unwrap();
    let decision = page
        .entries
        .iter()
        .find_map(|e| match &e.entry.body {
            AuditBody::Decision(r) if r.action == REDEEM_ACTION => Some(r.clone()),
            _ => None,
        })
        .expect("a decision entry for the redemption");
    assert_eq!(decision.code, 0);
    assert_eq!(decision.sender, Some(link.public_key()));
    assert!(
        decision.detail.contains(&phone.public_key().to_string()),
        "{}",
        decision.detail
    );
    assert_eq!(
        decision.detail,
        format!(
            "bound grant {} to {}",
            &grant.id().to_string()[..16],
            phone.public_key()
        )
    );
}

#[test]
fn two_phones_redeeming_at_once_cannot_both_win() {
    // Both passed authority against an unbound grant; the store decides in the transaction.
    let d = door();
    let (link, phone, other) = (person(10), person(11), person(12));
    let grant = d.short_link_grant(&link, None);
    let store = d.pipeline.store();
    let first = store
        .accept_durable(&[], Some((grant.id(), phone.public_key(), T0)), None)
        .unwrap();
    assert_eq!(first, Accepted::Recorded);
    let second = store
        .accept_durable(&[], Some((grant.id(), other.public_key(), T0)), None)
        .unwrap();
    assert_eq!(second, Accepted::AlreadyBound);
    assert_eq!(
        store.bindings().unwrap(),
        vec![(grant.id(), phone.public_key())]
    );
}
