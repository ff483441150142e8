//! Bind-on-first-use grants (extension 0x83) through `authorize_bound`: redemption, the bound
//! key as the grant's effective subject (for opening and for delegating), and revocations of
//! chains below a bound grant (docs/PROTOCOL.md §4, §10).

use latchkey_proto::chain::OpBody;
use latchkey_proto::command::{authorize, authorize_bound, Authorization, Command, ReplyTo};
use latchkey_proto::grant::{Extension, Grant, GrantId, EXT_BIND_ON_FIRST_USE, REDEEM_ACTION};
use latchkey_proto::keys::{PublicKey, SigningKey};
use latchkey_proto::redeem::RedeemRequest;
use latchkey_proto::Error;
use latchkey_testkit::{person, TestDevice, DAY, HOUR, T0};

fn bind_on_first_use(
    dev: &TestDevice,
    issuer: &SigningKey,
    subject: &SigningKey,
    depth: u8,
) -> Grant {
    let mut body = dev
        .grant(
            issuer,
            &subject.public_key(),
            &["unlock"],
            T0,
            T0 + DAY,
            depth,
        )
        .body;
    body.extensions.push(Extension {
        tag: EXT_BIND_ON_FIRST_USE,
        value: vec![],
    });
    body.sign(issuer).unwrap()
}

fn command(
    dev: &TestDevice,
    sender: &SigningKey,
    action: &str,
    args: Vec<u8>,
    grants: Vec<Grant>,
) -> Command {
    Command {
        device: dev.chain.device(),
        sender: sender.public_key(),
        action: action.into(),
        args,
        timestamp_ms: T0 + HOUR,
        nonce: [1; 16],
        challenge: None,
        grants,
        reply_to: ReplyTo::Direct,
    }
}

fn lookup(bindings: &[(GrantId, PublicKey)]) -> impl Fn(&GrantId) -> Option<PublicKey> + '_ {
    move |id| bindings.iter().find(|(g, _)| g == id).map(|(_, k)| *k)
}

#[test]
fn a_redeemed_manager_delegates_with_its_own_key() {
    let (alice, link, manager, cleaner, other) =
        (person(1), person(2), person(3), person(4), person(5));
    let mut dev = TestDevice::new(40, "Door");
    dev.claim(&[&alice], 1);
    let bound = bind_on_first_use(&dev, &alice, &link, 1);
    let to_cleaner = dev.grant(
        &manager,
        &cleaner.public_key(),
        &["unlock"],
        T0,
        T0 + DAY,
        0,
    );
    let chain = vec![bound.clone(), to_cleaner.clone()];
    let cmd = command(&dev, &cleaner, "unlock", vec![], chain.clone());
    let state = dev.chain.state();
    let at = T0 + HOUR;

    // Before the manager redeemed: nothing below the link key is usable.
    assert_eq!(authorize(&cmd, state, at), Err(Error::NotRedeemed));
    // Bound to the manager's key: the manager's delegation holds.
    let to_manager = [(bound.id(), manager.public_key())];
    assert!(matches!(
        authorize_bound(&cmd, state, at, &lookup(&to_manager)),
        Ok(Authorization::Guest(_))
    ));
    // Bound to someone else: the manager's grant to the cleaner is not from the holder.
    let to_other = [(bound.id(), other.public_key())];
    assert!(matches!(
        authorize_bound(&cmd, state, at, &lookup(&to_other)),
        Err(Error::GrantInvalid { index: 1, .. })
    ));
    // A delegation signed with the link key after the binding: the link is spent.
    let by_link = dev.grant(&link, &cleaner.public_key(), &["unlock"], T0, T0 + DAY, 0);
    let cmd = command(
        &dev,
        &cleaner,
        "unlock",
        vec![],
        vec![bound.clone(), by_link],
    );
    assert_eq!(
        authorize_bound(&cmd, state, at, &lookup(&to_manager)),
        Err(Error::AlreadyRedeemed)
    );

    // The owner revokes the manager's line: structurally valid without any binding, so the
    // revocation applies, and the cleaner's command is refused as revoked.
    dev.apply(
        OpBody::RevokeGrant {
            chain: chain.clone(),
        },
        &[&alice],
    );
    let cmd = command(&dev, &cleaner, "unlock", vec![], chain);
    assert_eq!(
        authorize_bound(&cmd, dev.chain.state(), at, &lookup(&to_manager)),
        Err(Error::GrantRevoked)
    );
}

#[test]
fn only_the_link_key_redeems_and_only_a_binding_grant() {
    let (alice, link, phone) = (person(1), person(2), person(3));
    let mut dev = TestDevice::new(41, "Door");
    dev.claim(&[&alice], 1);
    let bound = bind_on_first_use(&dev, &alice, &link, 0);
    let args = RedeemRequest::sign(&phone, &dev.chain.device(), &bound.id()).to_args();
    let state = dev.chain.state();
    let at = T0 + HOUR;
    let redeem = command(
        &dev,
        &link,
        REDEEM_ACTION,
        args.clone(),
        vec![bound.clone()],
    );
    assert_eq!(
        authorize(&redeem, state, at),
        Ok(Authorization::Redeem {
            grant: bound.id(),
            key: phone.public_key()
        })
    );
    // The same redemption on an ordinary grant is an action it does not allow.
    let plain = dev.grant(&alice, &link.public_key(), &["unlock"], T0, T0 + DAY, 0);
    let redeem_plain = command(&dev, &link, REDEEM_ACTION, args, vec![plain]);
    assert_eq!(
        authorize(&redeem_plain, state, at),
        Err(Error::ActionNotGranted(REDEEM_ACTION.into()))
    );
    // A redemption for another door's device id does not verify.
    let elsewhere = RedeemRequest::sign(
        &phone,
        &latchkey_proto::keys::DeviceId([9; 32]),
        &bound.id(),
    );
    let wrong = command(&dev, &link, REDEEM_ACTION, elsewhere.to_args(), vec![bound]);
    assert!(matches!(
        authorize(&wrong, state, at),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn a_bind_on_first_use_extension_must_be_empty_and_single() {
    let (alice, link) = (person(1), person(2));
    let mut dev = TestDevice::new(42, "Door");
    dev.claim(&[&alice], 1);
    let mut body = dev
        .grant(&alice, &link.public_key(), &["unlock"], T0, T0 + DAY, 0)
        .body;
    body.extensions.push(Extension {
        tag: EXT_BIND_ON_FIRST_USE,
        value: vec![1],
    });
    assert!(matches!(
        body.clone().sign(&alice),
        Err(Error::Invalid { .. })
    ));
    body.extensions[0].value.clear();
    body.extensions.push(body.extensions[0].clone());
    assert!(matches!(body.sign(&alice), Err(Error::Invalid { .. })));
}

#[test]
fn a_scheduled_link_is_redeemed_outside_its_hours_but_opens_only_inside_them() {
    use latchkey_proto::schedule::WeeklySchedule;
    let (alice, link, phone) = (person(1), person(2), person(3));
    let mut dev = TestDevice::new(42, "Door");
    dev.claim(&[&alice], 1);
    let mut body = bind_on_first_use(&dev, &alice, &link, 0).body;
    // A one-minute window each midnight: the redemption time is outside it.
    let at = T0 + HOUR;
    let schedule = WeeklySchedule::parse_spec(&["mon-sun 00:00-00:01"], "UTC").unwrap();
    assert!(
        !schedule.allows(at),
        "the test needs a time outside the window"
    );
    body.extensions.push(schedule.to_extension());
    let bound = body.sign(&alice).unwrap();
    let state = dev.chain.state();
    let args = RedeemRequest::sign(&phone, &dev.chain.device(), &bound.id()).to_args();
    let redeem = command(&dev, &link, REDEEM_ACTION, args, vec![bound.clone()]);
    assert_eq!(
        authorize(&redeem, state, at),
        Ok(Authorization::Redeem {
            grant: bound.id(),
            key: phone.public_key()
        })
    );
    let bindings = [(bound.id(), phone.public_key())];
    let open = command(&dev, &phone, "unlock", vec![], vec![bound]);
    assert!(matches!(
        authorize_bound(&open, state, at, &lookup(&bindings)),
        Err(Error::OutsideSchedule { .. })
    ));
}
