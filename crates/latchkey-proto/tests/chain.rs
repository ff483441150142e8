//! The ownership chain through its public interface: who may append what, and what a verifier
//! concludes from the result.

use latchkey_proto::chain::{Chain, OpBody, OpId, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::SigningKey;
use latchkey_proto::Error;
use latchkey_testkit::{person, sorted, TestDevice};

fn owners(keys: &[&SigningKey], threshold: u8) -> OwnerSet {
    OwnerSet {
        owners: sorted(keys),
        threshold,
    }
}

#[test]
fn claim_makes_the_scanner_the_owner_and_spends_the_setup_key() {
    let alice = person(1);
    let mut dev = TestDevice::new(1, "Front door");
    assert!(!dev.chain.state().is_owned());
    assert!(dev.chain.state().setup.is_some());
    dev.claim(&[&alice], 1);
    let state = dev.chain.state();
    assert_eq!(state.owners, vec![alice.public_key()]);
    assert_eq!(state.threshold, 1);
    assert_eq!(state.setup, None);
    assert_eq!(state.epoch, dev.chain.head());
    // A second claim with the same (spent) setup key is refused.
    let again = dev.claim_op(&[&person(2)], 1);
    assert!(matches!(
        dev.chain.check_next(&again),
        Err(Error::OpNotAllowed { kind: "claim", .. })
    ));
}

#[test]
fn claim_needs_the_setup_key_and_every_new_owner() {
    let (alice, bob) = (person(1), person(2));
    let dev = TestDevice::new(2, "Hub");
    let no_setup = dev.op(OpBody::Claim(owners(&[&alice], 1)), &[&alice]);
    assert_eq!(
        dev.chain.check_next(&no_setup).unwrap_err(),
        Error::MissingSignature {
            seq: 1,
            who: "the setup key"
        }
    );
    let missing_bob = dev.op(
        OpBody::Claim(owners(&[&alice, &bob], 1)),
        &[&dev.keys.setup, &alice],
    );
    assert_eq!(
        dev.chain.check_next(&missing_bob).unwrap_err(),
        Error::MissingSignature {
            seq: 1,
            who: "every new owner"
        }
    );
    let stranger = dev.op(
        OpBody::Claim(owners(&[&alice], 1)),
        &[&dev.keys.setup, &alice, &person(9)],
    );
    assert!(matches!(
        dev.chain.check_next(&stranger),
        Err(Error::OpNotAllowed { .. })
    ));
}

#[test]
fn owner_sets_must_be_sorted_distinct_and_thresholds_sane() {
    let (alice, bob) = (person(1), person(2));
    let dev = TestDevice::new(3, "Hub");
    let mut unsorted = owners(&[&alice, &bob], 1);
    unsorted.owners.reverse();
    for set in [
        unsorted,
        owners(&[&alice], 0),
        owners(&[&alice], 2),
        OwnerSet {
            owners: vec![],
            threshold: 1,
        },
    ] {
        let op = dev.op(OpBody::Claim(set), &[&dev.keys.setup, &alice, &bob]);
        assert!(
            matches!(dev.chain.check_next(&op), Err(Error::OpNotAllowed { .. })),
            "{op:?}"
        );
    }
}

#[test]
fn amending_owners_takes_threshold_signatures() {
    let (alice, bob, carol) = (person(1), person(2), person(3));
    let mut dev = TestDevice::new(4, "Door");
    dev.claim(&[&alice], 1);
    dev.apply(
        OpBody::AmendOwners(owners(&[&alice, &bob], 2)),
        &[&alice, &bob],
    );
    assert_eq!(dev.chain.state().threshold, 2);
    // Now one signature is not enough.
    let solo = dev.op(
        OpBody::AmendOwners(owners(&[&alice, &bob, &carol], 2)),
        &[&alice],
    );
    assert_eq!(
        dev.chain.check_next(&solo).unwrap_err(),
        Error::NotEnoughSignatures {
            seq: 3,
            kind: "amend-owners",
            valid: 1,
            required: 2
        }
    );
    // Co-signing: Bob signs his own copy, the copies are merged; Carol, the new owner, must
    // sign too (proof that her key is held).
    let mut bobs = solo.clone();
    bobs.signatures.clear();
    bobs.sign(&bob);
    let mut merged = solo;
    merged.merge_signatures(&bobs).unwrap();
    assert!(matches!(
        dev.chain.check_next(&merged),
        Err(Error::MissingSignature { seq: 3, .. })
    ));
    merged.sign(&carol);
    dev.chain.append(merged).unwrap();
    assert_eq!(dev.chain.state().owners.len(), 3);
    // Grants survive an amendment: the era is unchanged.
    let claim_epoch = dev.chain.state_at(1).unwrap().epoch;
    assert_eq!(dev.chain.state().epoch, claim_epoch);
}

#[test]
fn transfer_starts_a_new_era() {
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(5, "Door");
    dev.claim(&[&alice], 1);
    let before = dev.chain.state().epoch;
    dev.apply(OpBody::Transfer(owners(&[&bob], 1)), &[&alice, &bob]);
    let state = dev.chain.state();
    assert_eq!(state.owners, vec![bob.public_key()]);
    assert_ne!(state.epoch, before);
    // Alice has no say any more: her signature counts only as the new owner's proof of
    // possession, not as a current owner's vote.
    let op = dev.op(OpBody::AmendOwners(owners(&[&alice], 1)), &[&alice]);
    assert!(matches!(
        dev.chain.check_next(&op),
        Err(Error::NotEnoughSignatures { valid: 0, .. })
    ));
}

#[test]
fn factory_reset_clears_owners_and_allows_a_new_claim() {
    let (alice, mallory) = (person(1), person(6));
    let mut dev = TestDevice::new(6, "Door");
    dev.claim(&[&alice], 1);
    // Only the device itself can reset.
    let forged = dev.op(
        OpBody::FactoryReset {
            setup: mallory.public_key(),
        },
        &[&mallory],
    );
    assert!(dev.chain.check_next(&forged).is_err());
    let new_setup = person(50);
    let identity = SigningKey::from_bytes(&dev.keys.identity.to_bytes());
    dev.apply(
        OpBody::FactoryReset {
            setup: new_setup.public_key(),
        },
        &[&identity],
    );
    assert!(!dev.chain.state().is_owned());
    dev.keys.setup = new_setup;
    dev.claim(&[&mallory], 1);
    assert_eq!(dev.chain.state().owners, vec![mallory.public_key()]);
}

#[test]
fn key_rotation_needs_old_and_new_identity() {
    let alice = person(1);
    let mut dev = TestDevice::new(7, "Door");
    dev.claim(&[&alice], 1);
    let next = latchkey_proto::device::DeviceKeys::generate(&mut latchkey_testkit::rng(70));
    let body = OpBody::RotateKeys {
        identity: next.identity.public_key(),
        kem: next.kem.public().clone(),
    };
    let identity = SigningKey::from_bytes(&dev.keys.identity.to_bytes());
    let only_old = dev.op(body.clone(), &[&identity]);
    assert!(matches!(
        dev.chain.check_next(&only_old),
        Err(Error::MissingSignature { .. })
    ));
    dev.apply(body, &[&identity, &next.identity]);
    assert_eq!(dev.chain.state().identity, next.identity.public_key());
    assert_eq!(dev.chain.device(), dev.keys.device_id(), "the id stays");
}

#[test]
fn links_sequences_and_devices_are_checked() {
    let alice = person(1);
    let mut dev = TestDevice::new(8, "Door");
    dev.claim(&[&alice], 1);
    let good = dev.op(OpBody::AmendOwners(owners(&[&alice], 1)), &[&alice]);

    let mut wrong_prev = good.clone();
    wrong_prev.prev = OpId([1; 32]);
    wrong_prev.signatures.clear();
    wrong_prev.sign(&alice);
    assert_eq!(
        dev.chain.check_next(&wrong_prev).unwrap_err(),
        Error::BrokenLink { seq: 2 }
    );

    let mut wrong_seq = good.clone();
    wrong_seq.seq = 5;
    wrong_seq.signatures.clear();
    wrong_seq.sign(&alice);
    assert!(matches!(
        dev.chain.check_next(&wrong_seq),
        Err(Error::WrongSequence {
            expected: 2,
            found: 5
        })
    ));

    let other = TestDevice::new(9, "Other");
    let mut wrong_device = good.clone();
    wrong_device.device = other.chain.device();
    wrong_device.signatures.clear();
    wrong_device.sign(&alice);
    assert!(matches!(
        dev.chain.check_next(&wrong_device),
        Err(Error::WrongDevice { .. })
    ));

    let mut bad_sig = good;
    bad_sig.signatures[0].signature.0[3] ^= 1;
    assert!(matches!(
        dev.chain.check_next(&bad_sig),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn a_genesis_must_match_its_device_id_and_signer() {
    let dev = TestDevice::new(10, "Door");
    let mut g = dev.chain.ops()[0].clone();
    g.device = TestDevice::new(11, "x").chain.device();
    g.signatures.clear();
    g.sign(&dev.keys.identity);
    assert_eq!(Chain::from_genesis(g).unwrap_err(), Error::DeviceIdMismatch);
    let mut unsigned = dev.chain.ops()[0].clone();
    unsigned.signatures.clear();
    assert!(Chain::from_genesis(unsigned).is_err());
    assert_eq!(Chain::verify(vec![]).unwrap_err(), Error::MissingGenesis);
}

#[test]
fn op_ids_ignore_signatures_and_ops_round_trip() {
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(12, "Door");
    dev.claim(&[&alice, &bob], 1);
    let op = dev.op(OpBody::AmendOwners(owners(&[&alice, &bob], 2)), &[&alice]);
    let mut more = op.clone();
    more.sign(&bob);
    assert_eq!(op.id(), more.id());
    let bytes = more.to_bytes();
    assert_eq!(latchkey_proto::chain::Op::from_bytes(&bytes).unwrap(), more);
}

#[test]
fn state_at_answers_who_owned_it_then() {
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(13, "Door");
    dev.claim(&[&alice], 1);
    dev.apply(OpBody::Transfer(owners(&[&bob], 1)), &[&alice, &bob]);
    assert_eq!(dev.chain.state_at(0).unwrap().owners, vec![]);
    assert_eq!(
        dev.chain.state_at(1).unwrap().owners,
        vec![alice.public_key()]
    );
    assert_eq!(
        dev.chain.state_at(2).unwrap().owners,
        vec![bob.public_key()]
    );
    assert!(dev.chain.state_at(3).is_none());
}

#[test]
fn merge_takes_extensions_reports_stale_views_and_forks() {
    let (alice, bob, carol) = (person(1), person(2), person(3));
    let mut dev = TestDevice::new(14, "Door");
    dev.claim(&[&alice, &bob], 1);
    let mut ours = Chain::verify(dev.chain.ops().to_vec()).unwrap();
    dev.apply(OpBody::AmendOwners(owners(&[&alice, &bob], 2)), &[&alice]);

    // A newer view extends ours.
    let report = ours.merge(dev.chain.ops());
    assert_eq!(
        (report.added, report.behind, report.fork.is_none()),
        (1, false, true)
    );
    assert_eq!(ours.head(), dev.chain.head());

    // An older view is stale, changes nothing.
    let report = ours.merge(&dev.chain.ops()[..2]);
    assert!(report.behind && report.added == 0 && report.fork.is_none());

    // A suffix starting mid-chain is fine.
    let report = ours.merge(&dev.chain.ops()[2..]);
    assert_eq!(report.added, 0);
    assert!(!report.behind);

    // Bob alone, at the old threshold 1, signs a different op at seq 2: a valid fork.
    let mut forked = Chain::verify(dev.chain.ops()[..2].to_vec()).unwrap();
    let mut other = forked.propose(1, OpBody::AmendOwners(owners(&[&bob, &carol], 1)));
    other.sign(&bob);
    other.sign(&carol);
    forked.append(other).unwrap();
    let report = ours.merge(forked.ops());
    let fork = report.fork.expect("fork reported");
    assert_eq!(fork.seq, 2);
    assert_eq!(
        ours.head(),
        dev.chain.head(),
        "ours kept, never silently replaced"
    );

    // A forged op (bad signature) after our head is reported invalid and not taken.
    let mut forged = dev.op(
        OpBody::Transfer(owners(&[&carol], 1)),
        &[&alice, &bob, &carol],
    );
    forged.signatures[0].signature.0[0] ^= 1;
    let mut view = dev.chain.ops().to_vec();
    view.push(forged);
    let report = ours.merge(&view);
    assert!(matches!(report.invalid, Some(Error::BadSignature { .. })));
    assert_eq!(ours.len(), 3);
}

/// The proposal rule the owners' apps and the nodes' owner mailboxes share (§11).
#[test]
fn a_proposal_needs_a_current_owner_a_valid_set_and_no_outsider() {
    use latchkey_proto::chain::check_proposal;
    let (alice, bob, carol, mallory) = (person(1), person(2), person(3), person(6));
    let mut dev = TestDevice::new(20, "Door");
    dev.claim(&[&alice, &bob], 2);
    let state = dev.chain.state().clone();
    // Alice proposes adding Carol: it still awaits Bob's approval and Carol's acceptance.
    let waiting = dev.op(
        OpBody::AmendOwners(owners(&[&alice, &bob, &carol], 2)),
        &[&alice],
    );
    assert_eq!(check_proposal(&waiting, &state), Ok(alice.public_key()));
    assert!(dev
        .chain
        .check_next(&waiting)
        .unwrap_err()
        .awaits_signatures());
    // Carol accepting first is fine too; the proposer is still the owner who signed.
    let mut accepted = waiting.clone();
    accepted.sign(&carol);
    assert_eq!(check_proposal(&accepted, &state), Ok(alice.public_key()));
    // A stranger's self-signed transfer is no proposal.
    let grab = dev.op(OpBody::Transfer(owners(&[&mallory], 1)), &[&mallory]);
    assert!(matches!(
        check_proposal(&grab, &state),
        Err(Error::MissingSignature { .. })
    ));
    // An owner's signature does not carry an outsider's along.
    let mut padded = waiting.clone();
    padded.sign(&mallory);
    assert!(matches!(
        check_proposal(&padded, &state),
        Err(Error::OpNotAllowed { .. })
    ));
    // A set that could never take effect is refused before anyone sees it.
    let invalid = dev.op(OpBody::AmendOwners(owners(&[&alice], 2)), &[&alice]);
    assert!(matches!(
        check_proposal(&invalid, &state),
        Err(Error::OpNotAllowed { .. })
    ));
    // A forged signature is refused.
    let mut forged = waiting.clone();
    forged.signatures[0].signature.0[0] ^= 1;
    assert!(matches!(
        check_proposal(&forged, &state),
        Err(Error::BadSignature { .. })
    ));
    // Only owner changes are proposals.
    let reset = dev.op(
        OpBody::FactoryReset {
            setup: mallory.public_key(),
        },
        &[&alice],
    );
    assert!(matches!(
        check_proposal(&reset, &state),
        Err(Error::OpNotAllowed { .. })
    ));
}
