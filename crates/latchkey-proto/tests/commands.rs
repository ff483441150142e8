//! Commands end to end through the protocol core: an owner or guest signs, pads and seals; the
//! device opens, verifies, checks freshness and authority, and answers with a sealed, signed
//! response the sender can open and check.

use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_proto::command::{
    authorize, Authorization, Command, Outcome, RejectCode, ReplyTo, Response, SignedCommand,
};
use latchkey_proto::envelope::{open_command, seal_command, MAX_SEALED_COMMAND};
use latchkey_proto::grant::{Grant, GrantBody};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::pad::BUCKETS;
use latchkey_proto::replay::{MemoryNonceStore, ReplayWindow};
use latchkey_proto::Error;
use latchkey_testkit::{flip_bit, person, rng, TestDevice, DAY, HOUR, T0};

fn command(
    dev: &TestDevice,
    sender: &SigningKey,
    action: &str,
    grants: Vec<Grant>,
    nonce: u8,
) -> SignedCommand {
    Command {
        device: dev.chain.device(),
        sender: sender.public_key(),
        action: action.into(),
        args: vec![],
        timestamp_ms: T0,
        nonce: [nonce; 16],
        challenge: None,
        grants,
        reply_to: ReplyTo::Direct,
    }
    .sign(sender)
    .unwrap()
}

#[test]
fn owner_unlock_round_trip() {
    let alice = person(1);
    let mut dev = TestDevice::new(20, "Front door");
    dev.claim(&[&alice], 1);
    let mut r = rng(1);
    let cmd = command(&dev, &alice, "unlock", vec![], 1);
    let (envelope, pending) = seal_command(&cmd, &dev.chain.state().kem, &mut r).unwrap();
    assert!(envelope.len() <= MAX_SEALED_COMMAND);

    // Device side.
    let opened = open_command(&envelope, &dev.keys.kem).unwrap();
    let received = opened.command.verify_signature().unwrap();
    assert_eq!(received, &cmd.command);
    let mut strikes = MemoryNonceStore::default();
    ReplayWindow::default()
        .check(
            T0 + 500,
            0,
            received.timestamp_ms,
            &received.nonce,
            &mut strikes,
        )
        .unwrap();
    assert_eq!(
        authorize(received, dev.chain.state(), T0).unwrap(),
        Authorization::Owner
    );
    let response = Response {
        device: dev.chain.device(),
        command: received.id(),
        timestamp_ms: Some(T0 + 600),
        outcome: Outcome::Accepted,
        body: b"door open".to_vec(),
    }
    .sign(&dev.keys.identity)
    .unwrap();
    let sealed_response = opened.reply.seal(&response, &mut r).unwrap();

    // Sender side.
    let answer = pending
        .open(&sealed_response, &dev.chain.state().identity)
        .unwrap();
    assert_eq!(answer.response.outcome, Outcome::Accepted);
    assert_eq!(answer.response.body, b"door open");

    // A replay of the same envelope opens fine but is refused by the strike register.
    let again = open_command(&envelope, &dev.keys.kem).unwrap();
    let c = again.command.verify_signature().unwrap();
    assert_eq!(
        ReplayWindow::default().check(T0 + 900, T0 + 500, c.timestamp_ms, &c.nonce, &mut strikes),
        Err(Error::Replayed)
    );
}

#[test]
fn envelope_length_does_not_reveal_the_action() {
    let alice = person(1);
    let mut dev = TestDevice::new(21, "Door");
    dev.claim(&[&alice], 1);
    let mut r = rng(2);
    let short = command(&dev, &alice, "lock", vec![], 1);
    let mut long = command(&dev, &alice, "unlock-with-a-much-longer-name", vec![], 2).command;
    long.args = vec![7; 300];
    let long = long.sign(&alice).unwrap();
    let guest = person(7);
    let g = dev.grant(
        &alice,
        &guest.public_key(),
        &["unlock"],
        T0 - HOUR,
        T0 + DAY,
        0,
    );
    let guest_cmd = command(&dev, &guest, "unlock", vec![g], 3);
    let lens: Vec<usize> = [short, long, guest_cmd]
        .iter()
        .map(|c| {
            seal_command(c, &dev.chain.state().kem, &mut r)
                .unwrap()
                .0
                .len()
        })
        .collect();
    assert!(lens.windows(2).all(|w| w[0] == w[1]), "{lens:?}");
    assert_eq!(lens[0], 2 + 32 + 1039 + 24 + BUCKETS[0] + 16);
}

#[test]
fn any_tampered_byte_is_refused() {
    let alice = person(1);
    let mut dev = TestDevice::new(22, "Door");
    dev.claim(&[&alice], 1);
    let cmd = command(&dev, &alice, "unlock", vec![], 1);
    let (envelope, _) = seal_command(&cmd, &dev.chain.state().kem, &mut rng(3)).unwrap();
    // Sample positions across header, KEM ciphertext, nonce and body.
    for i in (0..envelope.len())
        .step_by(97)
        .chain([0, 1, envelope.len() - 1])
    {
        let bad = flip_bit(&envelope, i);
        let err = open_command(&bad, &dev.keys.kem).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DecryptFailed | Error::UnsupportedVersion { .. } | Error::UnknownTag { .. }
            ),
            "byte {i}: {err:?}"
        );
    }
    assert!(matches!(
        open_command(&envelope[..envelope.len() - 1], &dev.keys.kem),
        Err(Error::DecryptFailed | Error::Truncated { .. })
    ));
    assert!(matches!(
        open_command(&envelope[..100], &dev.keys.kem),
        Err(Error::Truncated { .. })
    ));
    let oversize = vec![1u8; MAX_SEALED_COMMAND + 1];
    assert!(matches!(
        open_command(&oversize, &dev.keys.kem),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn a_command_sealed_to_another_device_does_not_open() {
    let alice = person(1);
    let mut dev = TestDevice::new(23, "Door");
    dev.claim(&[&alice], 1);
    let other = TestDevice::new(24, "Gate");
    let cmd = command(&dev, &alice, "unlock", vec![], 1);
    let (envelope, _) = seal_command(&cmd, &other.chain.state().kem, &mut rng(4)).unwrap();
    assert_eq!(
        open_command(&envelope, &dev.keys.kem).unwrap_err(),
        Error::DecryptFailed
    );
}

#[test]
fn strangers_and_former_owners_are_not_authorized() {
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(25, "Door");
    dev.claim(&[&alice], 1);
    let cmd = command(&dev, &bob, "unlock", vec![], 1);
    assert_eq!(
        authorize(&cmd.command, dev.chain.state(), T0),
        Err(Error::NotAuthorized)
    );
    dev.apply(
        OpBody::Transfer(OwnerSet {
            owners: vec![bob.public_key()],
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    let cmd = command(&dev, &alice, "unlock", vec![], 2);
    assert_eq!(
        authorize(&cmd.command, dev.chain.state(), T0),
        Err(Error::NotAuthorized)
    );
}

#[test]
fn a_forged_signature_is_caught() {
    let (alice, mallory) = (person(1), person(6));
    let mut dev = TestDevice::new(26, "Door");
    dev.claim(&[&alice], 1);
    // Mallory signs a command that claims to come from Alice.
    let mut cmd = command(&dev, &mallory, "unlock", vec![], 1);
    cmd.command.sender = alice.public_key();
    let (envelope, _) = seal_command(&cmd, &dev.chain.state().kem, &mut rng(5)).unwrap();
    let opened = open_command(&envelope, &dev.keys.kem).unwrap();
    let err = opened.command.verify_signature().unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }));
    assert_eq!(RejectCode::for_error(&err), RejectCode::BadSignature);
}

#[test]
fn guest_opens_inside_the_window_only() {
    let (alice, guest) = (person(1), person(7));
    let mut dev = TestDevice::new(27, "Door");
    dev.claim(&[&alice], 1);
    let grant = dev.grant(
        &alice,
        &guest.public_key(),
        &["unlock"],
        T0,
        T0 + 2 * DAY,
        0,
    );
    let cmd = command(&dev, &guest, "unlock", vec![grant.clone()], 1);
    let state = dev.chain.state();
    assert!(matches!(
        authorize(&cmd.command, state, T0 + HOUR),
        Ok(Authorization::Guest(_))
    ));
    assert_eq!(
        authorize(&cmd.command, state, T0 - 1000),
        Err(Error::GrantNotYetValid(1))
    );
    assert_eq!(
        authorize(&cmd.command, state, T0 + 2 * DAY + 5000),
        Err(Error::GrantExpired(5))
    );
    let lock = command(&dev, &guest, "lock", vec![grant.clone()], 2);
    assert_eq!(
        authorize(&lock.command, state, T0 + HOUR),
        Err(Error::ActionNotGranted("lock".into()))
    );
    // Someone else presenting the guest's grant gets nothing.
    let thief = person(8);
    let stolen = command(&dev, &thief, "unlock", vec![grant], 3);
    assert!(matches!(
        authorize(&stolen.command, state, T0 + HOUR),
        Err(Error::GrantInvalid { .. })
    ));
}

#[test]
fn revocation_on_the_chain_voids_the_grant_and_its_delegations() {
    let (alice, host, cleaner) = (person(1), person(2), person(3));
    let mut dev = TestDevice::new(28, "Door");
    dev.claim(&[&alice], 1);
    let to_host = dev.grant(
        &alice,
        &host.public_key(),
        &["unlock", "lock"],
        T0,
        T0 + 30 * DAY,
        1,
    );
    let to_cleaner = dev.grant(&host, &cleaner.public_key(), &["unlock"], T0, T0 + DAY, 0);
    let cmd = command(
        &dev,
        &cleaner,
        "unlock",
        vec![to_host.clone(), to_cleaner.clone()],
        1,
    );
    assert!(authorize(&cmd.command, dev.chain.state(), T0 + HOUR).is_ok());

    // The host revokes the cleaner's grant itself (it issued it).
    let mut revoked = dev.clone_chain_device();
    revoked.apply(
        OpBody::RevokeGrant {
            chain: vec![to_host.clone(), to_cleaner.clone()],
        },
        &[&host],
    );
    assert_eq!(
        authorize(&cmd.command, revoked.chain.state(), T0 + HOUR),
        Err(Error::GrantRevoked)
    );

    // The owner revokes the host's grant: the cleaner's, derived from it, dies too.
    dev.apply(
        OpBody::RevokeGrant {
            chain: vec![to_host],
        },
        &[&alice],
    );
    assert_eq!(
        authorize(&cmd.command, dev.chain.state(), T0 + HOUR),
        Err(Error::GrantRevoked)
    );

    // A stranger cannot revoke anything.
    let stranger = person(9);
    let op = dev.op(
        OpBody::RevokeGrant {
            chain: vec![to_cleaner],
        },
        &[&stranger],
    );
    assert!(dev.chain.check_next(&op).is_err());
}

#[test]
fn delegation_must_narrow() {
    let (alice, host, cleaner) = (person(1), person(2), person(3));
    let mut dev = TestDevice::new(29, "Door");
    dev.claim(&[&alice], 1);
    let no_delegation = dev.grant(&alice, &host.public_key(), &["unlock"], T0, T0 + DAY, 0);
    let sub = dev.grant(&host, &cleaner.public_key(), &["unlock"], T0, T0 + DAY, 0);
    let cmd = command(&dev, &cleaner, "unlock", vec![no_delegation, sub], 1);
    assert!(matches!(
        authorize(&cmd.command, dev.chain.state(), T0 + 1),
        Err(Error::GrantInvalid { index: 1, .. })
    ));
    let host_grant = dev.grant(&alice, &host.public_key(), &["unlock"], T0, T0 + DAY, 1);
    let wider = dev.grant(
        &host,
        &cleaner.public_key(),
        &["unlock"],
        T0,
        T0 + 2 * DAY,
        0,
    );
    let cmd = command(&dev, &cleaner, "unlock", vec![host_grant.clone(), wider], 2);
    assert!(matches!(
        authorize(&cmd.command, dev.chain.state(), T0 + 1),
        Err(Error::GrantInvalid { index: 1, .. })
    ));
    let more_actions = dev.grant(
        &host,
        &cleaner.public_key(),
        &["unlock", "lock"],
        T0,
        T0 + DAY,
        0,
    );
    let cmd = command(&dev, &cleaner, "unlock", vec![host_grant, more_actions], 3);
    assert!(matches!(
        authorize(&cmd.command, dev.chain.state(), T0 + 1),
        Err(Error::GrantInvalid { index: 1, .. })
    ));
}

#[test]
fn transfer_voids_grants_but_amend_keeps_them() {
    let (alice, bob, guest) = (person(1), person(2), person(7));
    let mut dev = TestDevice::new(30, "Door");
    dev.claim(&[&alice], 1);
    let grant = dev.grant(&alice, &guest.public_key(), &["unlock"], T0, T0 + DAY, 0);
    let cmd = command(&dev, &guest, "unlock", vec![grant], 1);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: latchkey_testkit::sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    assert!(authorize(&cmd.command, dev.chain.state(), T0 + 1).is_ok());
    dev.apply(
        OpBody::Transfer(OwnerSet {
            owners: latchkey_testkit::sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice],
    );
    assert!(matches!(
        authorize(&cmd.command, dev.chain.state(), T0 + 1),
        Err(Error::GrantInvalid { .. })
    ));
}

#[test]
fn unknown_critical_extensions_are_refused_and_others_ignored() {
    let (alice, guest) = (person(1), person(7));
    let mut dev = TestDevice::new(31, "Door");
    dev.claim(&[&alice], 1);
    let base = dev
        .grant(&alice, &guest.public_key(), &["unlock"], T0, T0 + DAY, 0)
        .body;
    // 0xc1: critical and assigned to nothing (0x81-0x83 are known or reserved).
    for (tag, ok) in [(0x01u8, true), (0xc1u8, false)] {
        let grant = GrantBody {
            extensions: vec![latchkey_proto::grant::Extension {
                tag,
                value: vec![1, 2, 3],
            }],
            ..base.clone()
        }
        .sign(&alice)
        .unwrap();
        let cmd = command(&dev, &guest, "unlock", vec![grant], tag);
        assert_eq!(
            authorize(&cmd.command, dev.chain.state(), T0 + 1).is_ok(),
            ok,
            "tag {tag:#x}"
        );
    }
}

trait CloneDevice {
    fn clone_chain_device(&self) -> TestDevice;
}

impl CloneDevice for TestDevice {
    /// Same device keys and chain: a second view of the same device to try an op on.
    fn clone_chain_device(&self) -> TestDevice {
        TestDevice {
            keys: latchkey_proto::device::DeviceKeys::from_secret_bytes(
                &self.keys.to_secret_bytes(),
            )
            .unwrap(),
            chain: self.chain.clone(),
            name: self.name.clone(),
        }
    }
}
