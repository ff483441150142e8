//! A guest controls only what its grant names, arguments included (docs/PROTOCOL.md §4, the
//! allowed-arguments extension): the extension's codec, the subset rule along a delegation
//! chain, and `command::authorize` deciding on a guest's arguments, as unit and property tests.

use latchkey_proto::codec::Writer;
use latchkey_proto::command::{authorize, Authorization, Command, RejectCode, ReplyTo};
use latchkey_proto::grant::{
    verify_chain_structure, AllowedArguments, Extension, Grant, GrantBody, EXT_ALLOWED_ARGUMENTS,
    MAX_ALLOWED_ARGUMENTS, MAX_ALLOWED_ARGUMENT_LEN,
};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::Error;
use latchkey_testkit::{person, TestDevice, DAY, HOUR, T0};
use proptest::prelude::*;

const FRONT: &[u8] = br#"{"entity_id":"lock.front"}"#;
const GARAGE: &[u8] = br#"{"entity_id":"lock.garage"}"#;

fn door() -> (TestDevice, SigningKey) {
    let owner = person(1);
    let mut dev = TestDevice::new(40, "Front door");
    dev.claim(&[&owner], 1);
    (dev, owner)
}

/// `base` re-signed by `issuer` with `pins` as its allowed arguments (none: no extension).
fn pinning(base: &Grant, issuer: &SigningKey, pins: Option<&[&[u8]]>) -> Grant {
    GrantBody {
        extensions: pins
            .map(|p| {
                vec![
                    AllowedArguments::new(p.iter().map(|a| a.to_vec()).collect())
                        .unwrap()
                        .to_extension(),
                ]
            })
            .unwrap_or_default(),
        ..base.body.clone()
    }
    .sign(issuer)
    .unwrap()
}

fn guest_command(
    dev: &TestDevice,
    guest: &SigningKey,
    action: &str,
    args: &[u8],
    grants: Vec<Grant>,
) -> Command {
    Command {
        device: dev.chain.device(),
        sender: guest.public_key(),
        action: action.into(),
        args: args.to_vec(),
        timestamp_ms: T0 + HOUR,
        nonce: [7; 16],
        challenge: None,
        grants,
        reply_to: ReplyTo::Direct,
    }
}

#[test]
fn a_guest_without_pinned_arguments_sends_none() {
    let (dev, owner) = door();
    let guest = person(2);
    let grant = dev.grant(&owner, &guest.public_key(), &["call"], T0, T0 + DAY, 0);
    let state = dev.chain.state();
    let bare = guest_command(&dev, &guest, "call", b"", vec![grant.clone()]);
    assert!(matches!(
        authorize(&bare, state, T0 + HOUR),
        Ok(Authorization::Guest(_))
    ));
    for args in [GARAGE, b"--guest-flag\0/etc/shadow", b"\0", b" "] {
        let cmd = guest_command(&dev, &guest, "call", args, vec![grant.clone()]);
        let e = authorize(&cmd, state, T0 + HOUR).unwrap_err();
        assert_eq!(e, Error::ArgumentsNotGranted("call".into()));
        assert_eq!(RejectCode::for_error(&e), RejectCode::ArgumentsNotGranted);
        assert_eq!(RejectCode::for_error(&e) as u16, 19);
        assert!(e.to_string().contains("does not allow passing arguments"));
    }
    // Owners are not guests: any arguments.
    let owner_cmd = Command {
        sender: owner.public_key(),
        grants: vec![],
        ..guest_command(&dev, &owner, "call", GARAGE, vec![])
    };
    assert_eq!(
        authorize(&owner_cmd, state, T0 + HOUR).unwrap(),
        Authorization::Owner
    );
}

#[test]
fn pinned_arguments_match_byte_for_byte() {
    let (dev, owner) = door();
    let guest = person(2);
    let base = dev.grant(&owner, &guest.public_key(), &["call"], T0, T0 + DAY, 0);
    let grant = pinning(&base, &owner, Some(&[FRONT]));
    let state = dev.chain.state();
    let run = |args: &[u8]| {
        authorize(
            &guest_command(&dev, &guest, "call", args, vec![grant.clone()]),
            state,
            T0 + HOUR,
        )
    };
    assert!(run(FRONT).is_ok());
    assert!(run(b"").is_ok());
    for other in [
        GARAGE,
        &FRONT[..FRONT.len() - 1],
        br#"{"entity_id":"lock.front"} "#,
        br#"{"entity_id": "lock.front"}"#,
    ] {
        assert_eq!(
            run(other).unwrap_err(),
            Error::ArgumentsNotGranted("call".into())
        );
    }
}

#[test]
fn refusals_of_the_grant_itself_come_before_arguments() {
    let (mut dev, owner) = door();
    let guest = person(2);
    let grant = dev.grant(&owner, &guest.public_key(), &["call"], T0, T0 + DAY, 0);
    let state = dev.chain.state().clone();
    let cmd = |action: &str| guest_command(&dev, &guest, action, GARAGE, vec![grant.clone()]);
    assert!(matches!(
        authorize(&cmd("unlock"), &state, T0 + HOUR),
        Err(Error::ActionNotGranted(_))
    ));
    assert!(matches!(
        authorize(&cmd("call"), &state, T0 + 2 * DAY),
        Err(Error::GrantExpired(_))
    ));
    let unlock = cmd("call");
    dev.apply(
        latchkey_proto::chain::OpBody::RevokeGrant {
            chain: vec![grant.clone()],
        },
        &[&owner],
    );
    assert_eq!(
        authorize(&unlock, dev.chain.state(), T0 + HOUR),
        Err(Error::GrantRevoked)
    );
}

#[test]
fn a_verifier_that_predates_the_extension_refuses_the_grant() {
    // The tag is critical: an old device must not read a pinned grant as "any arguments".
    assert_ne!(EXT_ALLOWED_ARGUMENTS & 0x80, 0);
    let (dev, owner) = door();
    let base = dev.grant(&owner, &person(2).public_key(), &["call"], T0, T0 + DAY, 0);
    let unknown = GrantBody {
        extensions: vec![Extension {
            tag: 0xfe,
            value: vec![0],
        }],
        ..base.body.clone()
    }
    .sign(&owner)
    .unwrap();
    assert!(verify_chain_structure(&[unknown], dev.chain.state()).is_err());
    let known = pinning(&base, &owner, Some(&[FRONT]));
    verify_chain_structure(&[known], dev.chain.state()).unwrap();
}

#[test]
fn signing_refuses_a_malformed_list() {
    let (dev, owner) = door();
    let base = dev.grant(&owner, &person(2).public_key(), &["call"], T0, T0 + DAY, 0);
    let mut w = Writer::new();
    w.list8(&[GARAGE, FRONT], |w, a| w.bytes16(a));
    let unsorted = GrantBody {
        extensions: vec![Extension {
            tag: EXT_ALLOWED_ARGUMENTS,
            value: w.into_inner(),
        }],
        ..base.body.clone()
    };
    assert!(matches!(
        unsorted.sign(&owner),
        Err(Error::Invalid {
            what: "allowed-arguments extension",
            ..
        })
    ));
    assert!(AllowedArguments::new(vec![]).is_err());
    assert!(AllowedArguments::new(vec![vec![]]).is_err());
    assert!(AllowedArguments::new(vec![vec![1; MAX_ALLOWED_ARGUMENT_LEN + 1]]).is_err());
    assert!(AllowedArguments::new(
        (0..=MAX_ALLOWED_ARGUMENTS as u8)
            .map(|i| vec![i + 1])
            .collect()
    )
    .is_err());
    // Repeats collapse; order does not matter.
    assert_eq!(
        AllowedArguments::new(vec![GARAGE.to_vec(), FRONT.to_vec(), GARAGE.to_vec()]).unwrap(),
        AllowedArguments::new(vec![FRONT.to_vec(), GARAGE.to_vec()]).unwrap()
    );
}

// --- properties ------------------------------------------------------------------------------

/// One argument string: 1 to 40 bytes over a small alphabet, so lists share strings often.
fn argument() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"ab\0{}".to_vec()), 1..=40)
}

fn as_refs(l: &Option<Vec<Vec<u8>>>) -> Option<Vec<&[u8]>> {
    l.as_ref().map(|l| l.iter().map(Vec::as_slice).collect())
}

fn list() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(argument(), 1..=MAX_ALLOWED_ARGUMENTS)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn allowed_arguments_round_trip(strings in list(), cut in any::<prop::sample::Index>()) {
        let built = AllowedArguments::new(strings.clone()).unwrap();
        let value = built.encode();
        prop_assert_eq!(AllowedArguments::decode(&value).unwrap(), built.clone());
        // One encoding per list: what decodes re-encodes to the same bytes.
        prop_assert!(built.as_slice().windows(2).all(|w| w[0] < w[1]));
        for s in &strings {
            prop_assert!(built.allows(s));
        }
        // No strict prefix decodes, nor one more byte.
        let at = cut.index(value.len());
        prop_assert!(AllowedArguments::decode(&value[..at]).is_err());
        let mut longer = value.clone();
        longer.push(0);
        prop_assert!(AllowedArguments::decode(&longer).is_err());
        // The same strings in another order, or one repeated, do not decode.
        if built.as_slice().len() >= 2 {
            let mut reversed: Vec<&[u8]> = built.as_slice().iter().map(Vec::as_slice).collect();
            reversed.reverse();
            let mut w = Writer::new();
            w.list8(&reversed, |w, a| w.bytes16(a));
            prop_assert!(AllowedArguments::decode(&w.into_inner()).is_err());
        }
        let first = &built.as_slice()[0];
        let mut w = Writer::new();
        w.list8(&[first, first], |w, a| w.bytes16(a));
        prop_assert!(AllowedArguments::decode(&w.into_inner()).is_err());
    }

    /// A delegated grant verifies exactly when its list is a subset of its parent's (no list:
    /// always), and a guest's arguments pass exactly when both grants allow them.
    #[test]
    fn delegation_narrows_arguments(
        parent in prop::option::of(list()),
        child in prop::option::of(list()),
        args in prop_oneof![Just(Vec::new()), argument()],
    ) {
        let (dev, owner) = door();
        let (host, cleaner) = (person(2), person(3));
        let (p_refs, c_refs) = (as_refs(&parent), as_refs(&child));
        let to_host = pinning(
            &dev.grant(&owner, &host.public_key(), &["call"], T0, T0 + DAY, 1),
            &owner,
            p_refs.as_deref(),
        );
        let to_cleaner = pinning(
            &dev.grant(&host, &cleaner.public_key(), &["call"], T0, T0 + DAY, 0),
            &host,
            c_refs.as_deref(),
        );
        let contains = |l: &Option<Vec<Vec<u8>>>, a: &[u8]| {
            l.as_ref().is_some_and(|l| l.iter().any(|x| x == a))
        };
        let subset = match &child {
            None => true,
            Some(c) => c.iter().all(|a| contains(&parent, a)),
        };
        let chain = vec![to_host, to_cleaner];
        let structure = verify_chain_structure(&chain, dev.chain.state());
        prop_assert_eq!(structure.is_ok(), subset);
        let result = authorize(
            &guest_command(&dev, &cleaner, "call", &args, chain),
            dev.chain.state(),
            T0 + HOUR,
        );
        if !subset {
            prop_assert!(
                matches!(result, Err(Error::GrantInvalid { index: 1, .. })),
                "{:?}",
                result
            );
        } else if args.is_empty() || (contains(&parent, &args) && contains(&child, &args)) {
            prop_assert!(result.is_ok(), "{:?}", result);
        } else {
            prop_assert_eq!(result, Err(Error::ArgumentsNotGranted("call".into())));
        }
    }
}
