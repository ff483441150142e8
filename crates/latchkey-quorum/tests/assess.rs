//! The pure merge against every kind of hostile answer.

use latchkey_proto::chain::{Chain, OpBody, OwnerSet};
use latchkey_quorum::{assess, Answer, NodeOutcome};
use latchkey_testkit::{person, sorted, TestDevice};

fn door() -> TestDevice {
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(100, "Door");
    dev.claim(&[&alice], 1);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    dev
}

fn outcome(a: &latchkey_quorum::Assessment, node: &str) -> NodeOutcome {
    a.reports
        .iter()
        .find(|r| r.node == node)
        .unwrap()
        .outcome
        .clone()
}

#[test]
fn honest_and_stale_nodes() {
    let dev = door();
    let ops = dev.chain.ops().to_vec();
    let a = assess(
        &dev.chain.device(),
        None,
        vec![
            ("fresh".into(), Answer::Ops(ops.clone())),
            ("stale".into(), Answer::Ops(ops[..2].to_vec())),
            ("empty".into(), Answer::UnknownDevice),
            ("down".into(), Answer::Failed("connection refused".into())),
            ("slow".into(), Answer::TimedOut),
        ],
    );
    assert_eq!(a.chain.as_ref().unwrap().head(), dev.chain.head());
    assert_eq!(outcome(&a, "fresh"), NodeOutcome::Fresh);
    assert_eq!(
        outcome(&a, "stale"),
        NodeOutcome::Stale { their_seq: Some(1) }
    );
    assert_eq!(outcome(&a, "empty"), NodeOutcome::Unknown);
    assert_eq!(a.valid_answers, 3);
    assert!(a.forks.is_empty());
}

#[test]
fn forged_ops_are_never_accepted() {
    let dev = door();
    let mallory = person(6);
    // A node appends a transfer to Mallory signed by Mallory only.
    let mut forged = dev.op(
        OpBody::Transfer(OwnerSet {
            owners: vec![mallory.public_key()],
            threshold: 1,
        }),
        &[&mallory],
    );
    let mut liar_view = dev.chain.ops().to_vec();
    liar_view.push(forged.clone());
    // Another claims the owner signed, with a broken signature.
    forged.signatures.clear();
    forged.sign(&person(1));
    forged.signatures[0].signature.0[10] ^= 0x40;
    let mut liar2_view = dev.chain.ops().to_vec();
    liar2_view.push(forged);
    let a = assess(
        &dev.chain.device(),
        None,
        vec![
            ("liar".into(), Answer::Ops(liar_view)),
            ("liar2".into(), Answer::Ops(liar2_view)),
            ("honest".into(), Answer::Ops(dev.chain.ops().to_vec())),
        ],
    );
    let chain = a.chain.as_ref().unwrap();
    assert_eq!(chain.head(), dev.chain.head());
    assert!(!chain.state().is_owner(&mallory.public_key()));
    assert!(matches!(outcome(&a, "liar"), NodeOutcome::Lied(_)));
    assert!(matches!(outcome(&a, "liar2"), NodeOutcome::Lied(_)));
    assert_eq!(outcome(&a, "honest"), NodeOutcome::Fresh);
}

#[test]
fn another_devices_chain_is_a_lie() {
    let dev = door();
    let other = TestDevice::new(101, "Other");
    let a = assess(
        &dev.chain.device(),
        None,
        vec![("swap".into(), Answer::Ops(other.chain.ops().to_vec()))],
    );
    assert!(a.chain.is_none());
    assert!(matches!(outcome(&a, "swap"), NodeOutcome::Lied(_)));
}

#[test]
fn two_valid_branches_are_reported_as_a_fork() {
    let dev = door();
    let (alice, bob, carol) = (person(1), person(2), person(3));
    let mut branch_a = Chain::verify(dev.chain.ops().to_vec()).unwrap();
    let mut branch_b = branch_a.clone();
    let mut op_a = branch_a.propose(
        1,
        OpBody::Transfer(OwnerSet {
            owners: vec![carol.public_key()],
            threshold: 1,
        }),
    );
    op_a.sign(&alice);
    op_a.sign(&carol);
    branch_a.append(op_a).unwrap();
    let mut op_b = branch_b.propose(
        2,
        OpBody::AmendOwners(OwnerSet {
            owners: vec![bob.public_key()],
            threshold: 1,
        }),
    );
    op_b.sign(&bob);
    branch_b.append(op_b).unwrap();
    let a = assess(
        &dev.chain.device(),
        None,
        vec![
            ("a".into(), Answer::Ops(branch_a.ops().to_vec())),
            ("b".into(), Answer::Ops(branch_b.ops().to_vec())),
        ],
    );
    assert_eq!(a.forks.len(), 1);
    assert_eq!(a.forks[0].seq, 3);
    assert_eq!(outcome(&a, "b"), NodeOutcome::Forked);
    // The same fork seen against a cached view.
    let cached = branch_a.clone();
    let a = assess(
        &dev.chain.device(),
        Some(&cached),
        vec![("b".into(), Answer::Ops(branch_b.ops()[3..].to_vec()))],
    );
    assert_eq!(a.forks.len(), 1);
    assert_eq!(
        a.chain.as_ref().unwrap().head(),
        branch_a.head(),
        "ours kept"
    );
}

#[test]
fn with_a_cached_view_a_withholding_node_is_stale() {
    let dev = door();
    let cached = Chain::verify(dev.chain.ops().to_vec()).unwrap();
    let a = assess(
        &dev.chain.device(),
        Some(&cached),
        vec![
            ("withholds".into(), Answer::Ops(vec![])),
            ("gone".into(), Answer::UnknownDevice),
            ("same".into(), Answer::Ops(dev.chain.ops()[2..].to_vec())),
        ],
    );
    assert_eq!(
        outcome(&a, "withholds"),
        NodeOutcome::Stale { their_seq: None }
    );
    assert_eq!(outcome(&a, "same"), NodeOutcome::Fresh);
    assert_eq!(a.chain.as_ref().unwrap().head(), dev.chain.head());
}

#[test]
fn malformed_answers_count_as_lies() {
    let dev = door();
    let a = assess(
        &dev.chain.device(),
        None,
        vec![
            (
                "junk".into(),
                Answer::Malformed("op list ends early".into()),
            ),
            ("honest".into(), Answer::Ops(dev.chain.ops().to_vec())),
        ],
    );
    assert!(matches!(outcome(&a, "junk"), NodeOutcome::Lied(_)));
    assert_eq!(a.valid_answers, 1);
}

/// Two owners revoke concurrently on different nodes; a third node withholds both. The merged
/// view holds both revocations, no fork is reported, and the withholding node is stale.
#[test]
fn revocations_from_different_nodes_are_a_union_and_withholding_one_is_stale() {
    let dev = door();
    let (alice, bob) = (person(1), person(2));
    let day = 86_400_000;
    let t0 = latchkey_testkit::T0;
    let g1 = dev.grant(&alice, &person(7).public_key(), &["open"], t0, t0 + day, 0);
    let g2 = dev.grant(&bob, &person(8).public_key(), &["open"], t0, t0 + day, 0);
    let r1 = dev.op(
        OpBody::RevokeGrant {
            chain: vec![g1.clone()],
        },
        &[&alice],
    );
    let r2 = dev.op(
        OpBody::RevokeGrant {
            chain: vec![g2.clone()],
        },
        &[&bob],
    );
    let base = dev.chain.ops().to_vec();
    let a = assess(
        &dev.chain.device(),
        None,
        vec![
            ("one".into(), Answer::Ops([base.clone(), vec![r1]].concat())),
            ("two".into(), Answer::Ops([base.clone(), vec![r2]].concat())),
            ("withholder".into(), Answer::Ops(base)),
        ],
    );
    assert!(a.forks.is_empty() && a.settled.is_empty());
    let revoked = &a.chain.as_ref().unwrap().state().revoked;
    assert!(revoked.contains(&g1.id()) && revoked.contains(&g2.id()));
    assert!(matches!(
        outcome(&a, "withholder"),
        NodeOutcome::Stale { .. }
    ));
    assert!(matches!(outcome(&a, "one"), NodeOutcome::Stale { .. }));
}

/// A node serves a rival claim made with a leaked setup key; the others serve the claim the
/// device endorsed. The view is the endorsed one, the rival is settled evidence, not an alarm.
#[test]
fn a_rival_claim_is_settled_by_the_device_endorsement() {
    let (alice, mallory) = (person(1), person(6));
    let mut dev = TestDevice::new(101, "Door");
    let genesis = dev.chain.ops().to_vec();
    let rival = dev.claim_op(&[&mallory], 1);
    dev.claim(&[&alice], 1);
    dev.chain.append(dev.endorsement(1)).unwrap();
    for known in [
        None,
        Some(Chain::verify([genesis.clone(), vec![rival.clone()]].concat()).unwrap()),
    ] {
        let a = assess(
            &dev.chain.device(),
            known.as_ref(),
            vec![
                (
                    "stranger".into(),
                    Answer::Ops([genesis.clone(), vec![rival.clone()]].concat()),
                ),
                ("honest".into(), Answer::Ops(dev.chain.ops().to_vec())),
            ],
        );
        assert!(a.forks.is_empty(), "{:?}", a.forks);
        assert_eq!(a.settled.len(), 1);
        assert_eq!(
            a.chain.as_ref().unwrap().state().owners,
            vec![alice.public_key()]
        );
        assert_eq!(outcome(&a, "stranger"), NodeOutcome::Forked);
        assert_eq!(outcome(&a, "honest"), NodeOutcome::Fresh);
    }
}
