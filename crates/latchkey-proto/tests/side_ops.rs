//! Side ops (revocations, endorsements) and the fork choice, attacked through the chain's public
//! interface: concurrent revocations that used to fork the chain, a second claim made with a
//! leaked setup key, revocations that only bloat the chain.

use latchkey_proto::chain::{Chain, OpBody, OwnerSet, MAX_ISSUER_REVOCATIONS};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::Error;
use latchkey_testkit::{person, sorted, TestDevice, T0};

const DAY: u64 = 86_400_000;

fn owners(keys: &[&SigningKey], threshold: u8) -> OwnerSet {
    OwnerSet {
        owners: sorted(keys),
        threshold,
    }
}

fn verify(ops: &[latchkey_proto::chain::Op]) -> Chain {
    Chain::verify(ops.to_vec()).expect("valid")
}

#[test]
fn concurrent_revocations_by_two_owners_merge_instead_of_forking() {
    let (alice, rogue, guest1, guest2) = (person(1), person(2), person(7), person(8));
    let mut dev = TestDevice::new(40, "Door");
    dev.claim(&[&alice, &rogue], 1);
    let g1 = dev.grant(&alice, &guest1.public_key(), &["open"], T0, T0 + DAY, 0);
    let g2 = dev.grant(&rogue, &guest2.public_key(), &["open"], T0, T0 + DAY, 0);
    // Both made against the same head, posted to different nodes.
    let by_alice = dev.op(
        OpBody::RevokeGrant {
            chain: vec![g1.clone()],
        },
        &[&alice],
    );
    let by_rogue = dev.op(
        OpBody::RevokeGrant {
            chain: vec![g2.clone()],
        },
        &[&rogue],
    );
    assert_eq!(by_alice.seq, by_rogue.seq);
    let base = dev.chain.ops().to_vec();
    let node_a = verify(&[base.clone(), vec![by_alice.clone()]].concat());
    let node_b = verify(&[base.clone(), vec![by_rogue.clone()]].concat());

    let mut ours = node_a.clone();
    let report = ours.merge(node_b.ops());
    assert_eq!(report.fork, None, "two revocations are not a fork");
    assert_eq!(report.added, 1);
    assert!(ours.state().revoked.contains(&g1.id()) && ours.state().revoked.contains(&g2.id()));
    // Merged either way round, everyone ends with the same bytes.
    let mut theirs = node_b.clone();
    theirs.merge(node_a.ops());
    assert_eq!(theirs.ops(), ours.ops());
    assert_eq!(theirs.state(), ours.state());

    // The spine still moves: Alice transfers on top of either view, with Bob accepting.
    let bob = person(3);
    let mut transfer = ours.propose(T0 + 1, OpBody::Transfer(owners(&[&alice, &bob], 1)));
    transfer.sign(&alice);
    transfer.sign(&bob);
    theirs.append(transfer.clone()).unwrap();
    let mut view_a = node_a.clone();
    assert_eq!(view_a.merge(theirs.ops()).fork, None);
    assert_eq!(view_a.head(), transfer.id());
    // A new era: the old revocations are gone with it.
    assert!(view_a.state().revoked.is_empty());
    assert!(view_a
        .side_ops()
        .all(|op| matches!(op.body, OpBody::Endorse)));
}

#[test]
fn a_late_revocation_anchored_on_an_old_op_still_counts() {
    let (alice, bob, guest) = (person(1), person(2), person(7));
    let mut dev = TestDevice::new(41, "Door");
    dev.claim(&[&alice, &bob], 1);
    let grant = dev.grant(&alice, &guest.public_key(), &["open"], T0, T0 + DAY, 0);
    let stale_revocation = dev.op(
        OpBody::RevokeGrant {
            chain: vec![grant.clone()],
        },
        &[&alice],
    );
    // Meanwhile Bob amends the owners (same era): Alice's revocation arrives after.
    dev.apply(OpBody::AmendOwners(owners(&[&alice, &bob], 2)), &[&bob]);
    dev.chain.append(stale_revocation.clone()).unwrap();
    assert!(dev.chain.state().revoked.contains(&grant.id()));
    // A reader that asks only for what is new still gets it.
    assert!(dev
        .chain
        .ops_from(dev.chain.state().seq)
        .contains(&stale_revocation));
}

#[test]
fn a_revocation_must_be_for_this_device_and_its_era() {
    let (alice, guest) = (person(1), person(7));
    let mut dev = TestDevice::new(42, "Door");
    let mut other = TestDevice::new(43, "Garage");
    dev.claim(&[&alice], 1);
    other.claim(&[&alice], 1);
    // Alice's grant for the garage, revoked on the front door's chain: bloat, refused.
    let garage = other.grant(&alice, &guest.public_key(), &["open"], T0, T0 + DAY, 0);
    let op = dev.op(
        OpBody::RevokeGrant {
            chain: vec![garage],
        },
        &[&alice],
    );
    assert!(matches!(
        dev.chain.check_next(&op),
        Err(Error::OpNotAllowed { .. })
    ));
    // A grant from before a transfer (an ended era) is refused too.
    let old = dev.grant(&alice, &guest.public_key(), &["open"], T0, T0 + DAY, 0);
    let bob = person(2);
    dev.apply(
        OpBody::Transfer(owners(&[&alice, &bob], 1)),
        &[&alice, &bob],
    );
    let op = dev.op(OpBody::RevokeGrant { chain: vec![old] }, &[&alice]);
    assert!(matches!(
        dev.chain.check_next(&op),
        Err(Error::OpNotAllowed { .. })
    ));
}

#[test]
fn a_grant_holder_who_is_not_an_owner_may_revoke_only_so_many() {
    let (alice, host) = (person(1), person(5));
    let mut dev = TestDevice::new(44, "Door");
    dev.claim(&[&alice], 1);
    // Alice lets the host delegate; the host mints sub-grants and revokes each one.
    let root = dev.grant(&alice, &host.public_key(), &["open"], T0, T0 + DAY, 1);
    for n in 0..MAX_ISSUER_REVOCATIONS + 1 {
        let guest = person(100 + n as u64);
        let mut sub = dev.grant(&host, &guest.public_key(), &["open"], T0, T0 + DAY, 0);
        // Distinct grants: vary the salt.
        sub.body.salt = [n as u8; 16];
        let sub = sub.body.clone().sign(&host).unwrap();
        let op = dev.op(
            OpBody::RevokeGrant {
                chain: vec![root.clone(), sub],
            },
            &[&host],
        );
        let result = dev.chain.append(op);
        if n < MAX_ISSUER_REVOCATIONS {
            result.unwrap();
        } else {
            assert!(
                matches!(result, Err(Error::OpNotAllowed { .. })),
                "{result:?}"
            );
        }
    }
    // An owner is not capped.
    let guest = person(99);
    let mut sub = dev.grant(&host, &guest.public_key(), &["open"], T0, T0 + DAY, 0);
    sub.body.salt = [0xee; 16];
    let sub = sub.body.clone().sign(&host).unwrap();
    let op = dev.op(
        OpBody::RevokeGrant {
            chain: vec![root, sub],
        },
        &[&alice],
    );
    dev.chain.append(op).unwrap();
    assert_eq!(dev.chain.state().revoked.len(), MAX_ISSUER_REVOCATIONS + 1);
}

/// The "old photo of the claim QR" attack: a stranger who copied the setup secret signs a
/// second claim at the claim's position. The device endorsed the rightful claim, so every
/// verifier prefers it — including one that saw the stranger's claim first.
#[test]
fn a_second_claim_with_a_leaked_setup_key_loses_to_the_claim_the_device_endorsed() {
    let (alice, mallory) = (person(1), person(6));
    let mut dev = TestDevice::new(45, "Door");
    let genesis = dev.chain.ops().to_vec();
    let rightful = dev.claim_op(&[&alice], 1);
    let rival = dev.claim_op(&[&mallory], 1); // same setup key, leaked
    dev.chain.append(rightful.clone()).unwrap();
    let endorsement = dev.endorsement(1);
    dev.chain.append(endorsement.clone()).unwrap();
    assert!(dev.chain.is_endorsed(1));

    // A node that got the rival first.
    let mut misled = verify(&[genesis.clone(), vec![rival.clone()]].concat());
    let report = misled.merge(dev.chain.ops());
    assert_eq!(report.switched.as_ref().map(|f| f.seq), Some(1));
    assert_eq!(report.fork, None);
    assert_eq!(misled.state().owners, vec![alice.public_key()]);
    assert_eq!(misled.ops(), dev.chain.ops());

    // The rightful view hears of the rival: outvoted, kept as evidence, nothing changes.
    let mut rightful_view = dev.chain.clone();
    let report = rightful_view.merge(&[genesis.clone(), vec![rival.clone()]].concat());
    assert_eq!(report.outvoted.as_ref().map(|f| f.seq), Some(1));
    assert_eq!(report.fork, None);
    assert_eq!(rightful_view.ops(), dev.chain.ops());

    // An endorsement forged by the stranger does not count: only the device key signs them.
    let mut forged = dev.chain.endorsement(0, T0).unwrap();
    forged.prev = rival.id();
    forged.sign(&mallory);
    let mut misled = verify(&[genesis.clone(), vec![rival.clone()]].concat());
    assert!(misled.append(forged).is_err());

    // Before the device endorses either claim, the fork is unresolved: each keeps its own.
    let mut unendorsed = verify(&[genesis.clone(), vec![rightful.clone()]].concat());
    let report = unendorsed.merge(&[genesis, vec![rival]].concat());
    assert!(report.fork.is_some() && report.switched.is_none());
    assert_eq!(unendorsed.head(), rightful.id());
}

#[test]
fn a_second_endorsement_of_one_op_is_not_kept() {
    let alice = person(1);
    let mut dev = TestDevice::new(46, "Door");
    dev.claim(&[&alice], 1);
    dev.chain.append(dev.endorsement(1)).unwrap();
    let before = dev.chain.ops().to_vec();
    let mut again = dev.chain.endorsement(1, T0 + 5).unwrap();
    again.sign(&dev.keys.identity);
    dev.chain.append(again).unwrap();
    assert_eq!(dev.chain.ops(), before.as_slice());
    // Endorsements are signed by exactly the device key.
    let mut by_owner = dev.chain.endorsement(1, T0 + 6).unwrap();
    by_owner.sign(&dev.keys.identity);
    by_owner.sign(&alice);
    assert!(matches!(
        dev.chain.append(by_owner),
        Err(Error::OpNotAllowed { .. })
    ));
}

/// `op_ids` reads ids off the chain's bookkeeping instead of hashing: it must agree with the
/// ops across an era change (which rebuilds that bookkeeping) and endorsements made after it,
/// whichever way their ids compare.
#[test]
fn op_ids_match_the_ops_across_an_era_change() {
    let (alice, bob) = (person(1), person(2));
    for n in 0..16u64 {
        let mut dev = TestDevice::new(47, "Door");
        dev.claim(&[&alice], 1);
        dev.chain.append(dev.endorsement(1)).unwrap();
        dev.apply(OpBody::Transfer(owners(&[&bob], 1)), &[&alice, &bob]);
        let mut endorse = dev.chain.endorsement(2, T0 + n).unwrap();
        endorse.sign(&dev.keys.identity);
        dev.chain.append(endorse).unwrap();
        let ids: Vec<_> = dev.chain.ops().iter().map(|op| op.id()).collect();
        assert_eq!(dev.chain.op_ids(), ids, "variant {n}");
    }
}
