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
        &[&alice],
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

/// Two answers extend our own chain in conflicting ways, and nothing settles it: the result is
/// our own chain (neither adopted), whichever answer is longer or comes first.
#[test]
fn conflicting_extensions_of_our_own_chain_leave_it_as_it_was() {
    let dev = door();
    let (alice, bob) = (person(1), person(2));
    let ours = Chain::verify(dev.chain.ops().to_vec()).unwrap();
    let grab = dev.op(
        OpBody::AmendOwners(OwnerSet {
            owners: vec![bob.public_key()],
            threshold: 1,
        }),
        &[&bob],
    );
    let mut longer = ours.clone();
    longer.append(grab.clone()).unwrap();
    let mut next = longer.propose(
        5,
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
    );
    next.sign(&bob);
    longer.append(next).unwrap();
    let other = dev.op(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 2,
        }),
        &[&alice],
    );
    for order in [false, true] {
        let mut answers = vec![
            ("grab".to_owned(), Answer::Ops(longer.ops()[3..].to_vec())),
            ("other".to_owned(), Answer::Ops(vec![other.clone()])),
        ];
        if order {
            answers.reverse();
        }
        let a = assess(&dev.chain.device(), Some(&ours), answers);
        assert_eq!(a.forks.len(), 1);
        assert_eq!(a.forks[0].seq, 3);
        assert_eq!(a.chain.as_ref().unwrap().head(), ours.head(), "ours kept");
    }
    // Without a chain of its own, the caller gets the longest and the fork, as before.
    let a = assess(
        &dev.chain.device(),
        None,
        vec![
            ("grab".into(), Answer::Ops(longer.ops().to_vec())),
            ("other".into(), Answer::Ops([ours.ops(), &[other]].concat())),
        ],
    );
    assert_eq!(a.forks.len(), 1);
    assert_eq!(a.chain.unwrap().head(), longer.head());
}
