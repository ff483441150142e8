//! One abusive address against honest ones, over real sockets: the abuser's client is bound to
//! 127.0.0.3, honest clients to 127.0.0.2 (and the device to 127.0.0.4), so the node counts
//! them apart as it would on the Internet. Each test performs one attack and shows honest
//! requests still succeed; none depends on timing. (More caps in tests/abuse_caps.rs.)

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use latchkey_node::Limits;
use latchkey_proto::chain::{Op, OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, ReplyTo};
use latchkey_proto::envelope::seal_command;
use latchkey_proto::hash;
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::{person, rng, sorted, TestDevice};
use reqwest::StatusCode;
use serde_json::Value;

const DEVICE: &str = "127.0.0.4";

/// A real sealed command from `owner` to the device (what an owner posts to its mailbox).
fn sealed_open(dev: &TestDevice, owner: &SigningKey, n: u8) -> Vec<u8> {
    let command = Command {
        device: dev.chain.device(),
        sender: owner.public_key(),
        action: "unlock".into(),
        args: Vec::new(),
        timestamp_ms: 1_800_000_000_000,
        nonce: [n; 16],
        challenge: None,
        grants: Vec::new(),
        reply_to: ReplyTo::Mailbox([n; 32]),
    };
    let signed = command.sign(owner).unwrap();
    seal_command(&signed, &dev.chain.state().kem, &mut rng(u64::from(n)))
        .unwrap()
        .0
}

async fn read_mailbox(c: &reqwest::Client, base: &str, mailbox: &str) -> Vec<Vec<u8>> {
    let (status, page) = get_json(c, &format!("{base}/v1/mailboxes/{mailbox}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            data_encoding::BASE64
                .decode(m["body"].as_str().unwrap().as_bytes())
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn long_polls_from_one_address_cannot_starve_ordinary_requests() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(
        &dir,
        Limits {
            max_concurrent_requests: 8,
            ..Limits::without_rate_limits()
        },
    )
    .await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));

    // The abuser parks more long polls than the node has places for requests.
    let mut polls = Vec::new();
    for n in 0..12u8 {
        let (c, url) = (
            abuser.clone(),
            format!("{base}/v1/mailboxes/{}?wait_secs=30", hex::encode([n; 32])),
        );
        polls.push(tokio::spawn(async move { c.get(url).send().await }));
    }
    let m = node.metrics();
    assert!(
        eventually(Duration::from_secs(10), || async {
            m.mailbox_reads.load(Ordering::Relaxed) + m.overloaded.load(Ordering::Relaxed) >= 12
        })
        .await,
        "every long poll reached the node"
    );

    // Every kind of ordinary request from an honest address still goes through.
    let mut dev = TestDevice::new(40, "front door");
    dev.claim(&[&person(1)], 1);
    let id = device_id(&dev);
    let (status, body) = post_ops(&honest, &base, &id, dev.chain.ops()).await;
    assert_eq!(status, StatusCode::OK, "op post: {body}");
    let (status, body) = head(&honest, &base, &id).await;
    assert_eq!(status, StatusCode::OK, "head: {body}");
    assert_eq!(get_ops(&honest, &base, &id, 0).await.unwrap().len(), 2);
    let envelope = sealed_open(&dev, &person(1), 1);
    let (status, body) = post_mailbox(&honest, &base, &hex::encode(id.0), &envelope).await;
    assert_eq!(status, StatusCode::CREATED, "mailbox post: {body}");
    assert_eq!(
        read_mailbox(&honest, &base, &hex::encode(id.0)).await,
        vec![envelope]
    );
    assert_eq!(
        m.overloaded.load(Ordering::Relaxed),
        0,
        "nobody was turned away"
    );
    node.shutdown().await.unwrap();
    for poll in polls {
        assert!(poll.await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn a_device_mailbox_takes_only_sealed_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&dir, Limits::without_rate_limits()).await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    let mut dev = TestDevice::new(41, "front door");
    dev.claim(&[&person(1)], 1);
    let id = device_id(&dev);
    assert_eq!(
        post_ops(&honest, &base, &id, dev.chain.ops()).await.0,
        StatusCode::OK
    );
    let device_box = hex::encode(id.0);

    let real = sealed_open(&dev, &person(1), 2);
    for junk in [
        b"open sesame".to_vec(),
        vec![0u8; real.len() - 1],
        vec![0u8; real.len() + 1],
        reply_body(3, 0),
        vec![7u8; 20_000],
    ] {
        let (status, body) = post_mailbox(&abuser, &base, &device_box, &junk).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "not_an_envelope"),
            "{} bytes",
            junk.len()
        );
    }
    let (status, body) = post_mailbox(&honest, &base, &device_box, &real).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The device reads only the real envelope.
    assert_eq!(read_mailbox(&honest, &base, &device_box).await, vec![real]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_mailbox_no_device_or_owner_has_takes_only_sealed_responses() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&dir, Limits::without_rate_limits()).await;
    let base = node.url();
    let (device, abuser) = (client_from(DEVICE), client_from(ABUSER));
    let reply_box = hex::encode([0x5au8; 32]);
    for junk in [b"spam".to_vec(), vec![1u8; 2137], vec![1u8; 20_000]] {
        let (status, body) = post_mailbox(&abuser, &base, &reply_box, &junk).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "unknown_mailbox"),
            "{} bytes",
            junk.len()
        );
    }
    // A device answering a relayed command into a fresh reply mailbox is taken.
    let answer = reply_body(9, 0);
    let (status, body) = post_mailbox(&device, &base, &reply_box, &answer).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(read_mailbox(&device, &base, &reply_box).await, vec![answer]);
    node.shutdown().await.unwrap();
}

/// A device owned by person(1) and person(2), threshold 2, on the node; returns it.
async fn co_owned(base: &str, c: &reqwest::Client, seed: u64) -> TestDevice {
    let mut dev = TestDevice::new(seed, "front door");
    dev.claim(&[&person(1), &person(2)], 2);
    assert_eq!(
        post_ops(c, base, &device_id(&dev), dev.chain.ops()).await.0,
        StatusCode::OK
    );
    dev
}

/// person(`by`) proposes adding person(`add`) (an op that needs both owners to sign).
fn proposal(dev: &TestDevice, by: u64, add: u64, issued: u64) -> Op {
    let mut op = dev.chain.propose(
        issued,
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&person(1), &person(2), &person(add)]),
            threshold: 2,
        }),
    );
    op.sign(&person(by));
    op
}

#[tokio::test]
async fn an_owner_mailbox_takes_only_ops_a_current_owner_signed() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&dir, Limits::without_rate_limits()).await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    let dev = co_owned(&base, &honest, 42).await;
    let owner2_box = hex::encode(hash::owner_mailbox(&person(2).public_key()));

    // Junk of every shape a stranger might send, including a sealed response's size.
    let stranger_op = proposal(&dev, 66, 66, 1);
    let mut forged = proposal(&dev, 1, 3, 2);
    forged.signatures[0].signature = proposal(&dev, 1, 3, 3).signatures[0].signature;
    let mut invalid_set = dev.chain.propose(
        6,
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&person(1), &person(2)]),
            threshold: 9,
        }),
    );
    invalid_set.sign(&person(1));
    let mut not_a_proposal = dev.chain.propose(
        7,
        OpBody::FactoryReset {
            setup: person(1).public_key(),
        },
    );
    not_a_proposal.sign(&person(1));
    for (what, junk) in [
        ("text", b"hello".to_vec()),
        (
            "an owner's proposal of an invalid owner set",
            invalid_set.to_bytes(),
        ),
        (
            "an owner-signed op of a kind nobody proposes",
            not_a_proposal.to_bytes(),
        ),
        ("sealed-response size", reply_body(4, 0)),
        ("an op only a stranger signed", stranger_op.to_bytes()),
        ("an op with a forged owner signature", forged.to_bytes()),
    ] {
        let (status, body) = post_mailbox(&abuser, &base, &owner2_box, &junk).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "not_an_owner_message"),
            "{what}: {body}"
        );
    }
    // A stale proposal (its seq is already taken by the claim) is refused too.
    let mut stale = proposal(&dev, 1, 3, 4);
    stale.seq = 1;
    stale.signatures.clear();
    stale.sign(&person(1));
    let (status, body) = post_mailbox(&abuser, &base, &owner2_box, &stale.to_bytes()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "not_an_owner_message"),
        "{body}"
    );

    // Owner 1's proposal reaches owner 2, and the recipient it names.
    let real = proposal(&dev, 1, 3, 5);
    let (status, body) = post_mailbox(&honest, &base, &owner2_box, &real.to_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let owner3_box = hex::encode(hash::owner_mailbox(&person(3).public_key()));
    let (status, body) = post_mailbox(&honest, &base, &owner3_box, &real.to_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The notice of the claim (an op already in the chain) is taken as well.
    let claim = dev.chain.ops()[1].to_bytes();
    let (status, body) = post_mailbox(&honest, &base, &owner2_box, &claim).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        read_mailbox(&honest, &base, &owner2_box).await,
        vec![real.to_bytes(), claim]
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_address_cannot_fill_a_device_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&dir, Limits::without_rate_limits()).await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    let mut dev = TestDevice::new(43, "front door");
    dev.claim(&[&person(1)], 1);
    let id = device_id(&dev);
    assert_eq!(
        post_ops(&honest, &base, &id, dev.chain.ops()).await.0,
        StatusCode::OK
    );
    let device_box = hex::encode(id.0);

    // Envelopes of the right size are all the abuser can send; it sends as many as it can
    // (more than the one cap a mailbox used to have).
    let junk = vec![1u8; sealed_open(&dev, &person(1), 0).len()];
    let mut taken = 0;
    let mut last = (StatusCode::CREATED, Value::Null);
    for _ in 0..260 {
        last = post_mailbox(&abuser, &base, &device_box, &junk).await;
        if last.0 != StatusCode::CREATED {
            break;
        }
        taken += 1;
    }
    assert_eq!(
        (last.0, code(&last.1)),
        (StatusCode::INSUFFICIENT_STORAGE, "mailbox_full"),
        "the abuser's share ran out after {taken}"
    );
    assert!(taken < 260);
    let real = sealed_open(&dev, &person(1), 5);
    let (status, body) = post_mailbox(&honest, &base, &device_box, &real).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rogue_co_owner_cannot_fill_another_owners_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&dir, Limits::without_rate_limits()).await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    // Owners 1, 2 and 3; owner 2 turns rogue and floods owner 1 with proposals.
    let mut dev = TestDevice::new(44, "front door");
    dev.claim(&[&person(1), &person(2), &person(3)], 2);
    assert_eq!(
        post_ops(&honest, &base, &device_id(&dev), dev.chain.ops())
            .await
            .0,
        StatusCode::OK
    );
    let owner1_box = hex::encode(hash::owner_mailbox(&person(1).public_key()));
    let mut taken = 0;
    let mut last = (StatusCode::CREATED, Value::Null);
    for n in 0..260u64 {
        let op = proposal(&dev, 2, 10 + n, n);
        last = post_mailbox(&abuser, &base, &owner1_box, &op.to_bytes()).await;
        if last.0 != StatusCode::CREATED {
            break;
        }
        taken += 1;
    }
    assert_eq!(
        (last.0, code(&last.1)),
        (StatusCode::INSUFFICIENT_STORAGE, "mailbox_full"),
        "the rogue owner's share ran out after {taken}"
    );
    assert!(taken < 260);
    // Owner 3's proposal still reaches owner 1.
    let real = proposal(&dev, 3, 4, 1_000);
    let (status, body) = post_mailbox(&honest, &base, &owner1_box, &real.to_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn owner_mailboxes_follow_the_chain_on_this_node_and_its_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&dir, Limits::without_rate_limits()).await;
    let replica = node_with_peers(&dir.path().join("replica.db"), &[&node]).await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    let mut dev = TestDevice::new(45, "front door");
    dev.claim(&[&person(1), &person(2)], 1);
    let id = device_id(&dev);
    assert_eq!(
        post_ops(&honest, &base, &id, dev.chain.ops()).await.0,
        StatusCode::OK
    );

    // Before person(3) is an owner, its mailbox id means nothing to the node: a reply fits.
    let owner3_box = hex::encode(hash::owner_mailbox(&person(3).public_key()));
    let (status, body) = post_mailbox(&abuser, &base, &owner3_box, &reply_body(1, 0)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Person 1 removes person 2 and adds person 3 (who signs too: a new owner proves
    // possession of its key).
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&person(1), &person(3)]),
            threshold: 1,
        }),
        &[&person(1), &person(3)],
    );
    let amend = dev.chain.ops()[2].clone();
    assert_eq!(
        post_ops(&honest, &base, &id, std::slice::from_ref(&amend))
            .await
            .0,
        StatusCode::OK
    );
    // Now it is an owner's mailbox, here and on the replica once it has the op.
    for (name, at) in [("node", base.clone()), ("replica", replica.url())] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                post_mailbox(&abuser, &at, &owner3_box, &reply_body(2, 0))
                    .await
                    .0
                    == StatusCode::UNPROCESSABLE_ENTITY
            })
            .await,
            "{name} indexes the new owner's mailbox"
        );
    }
    // The removed owner's mailbox still takes the notice of its removal.
    let owner2_box = hex::encode(hash::owner_mailbox(&person(2).public_key()));
    let (status, body) = post_mailbox(&honest, &base, &owner2_box, &amend.to_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // But the removed owner can no longer propose.
    let mut by_removed = dev.chain.propose(
        9,
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&person(2), &person(3)]),
            threshold: 1,
        }),
    );
    by_removed.sign(&person(2));
    let owner1_box = hex::encode(hash::owner_mailbox(&person(1).public_key()));
    let (status, body) = post_mailbox(&abuser, &base, &owner1_box, &by_removed.to_bytes()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "not_an_owner_message"),
        "{body}"
    );
    replica.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}
