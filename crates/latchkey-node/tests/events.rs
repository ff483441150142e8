//! Event messages into owner mailboxes over real HTTP (docs/PROTOCOL.md §13): a device's event
//! for a current owner is stored; a forged one (wrong signature), one for a mailbox that is
//! no current owner's, one from a device the node does not hold and an oversize one are
//! refused, and nothing of them is stored.

mod common;

use common::*;
use latchkey_proto::codec::Codec;
use latchkey_proto::event::{self, Event, EventKind, EventMessage};
use latchkey_proto::grant::GrantId;
use latchkey_proto::hash;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::{person, rng, TestDevice, T0};
use reqwest::StatusCode;
use serde_json::Value;

fn message_for(dev: &TestDevice, mailbox: [u8; 32], signer: &SigningKey) -> Vec<u8> {
    let mut r = rng(3);
    let kem = KemSecretKey::generate(&mut r);
    let signed = Event {
        device: dev.chain.device(),
        seq: 1,
        time_ms: Some(T0),
        kind: EventKind::FirstOpen,
        grant: GrantId([4; 32]),
        guest: person(3).public_key(),
        action: "unlock".into(),
    }
    .sign(&dev.keys.identity)
    .unwrap();
    let sealed = event::seal_event(&signed, kem.public(), &mut r).unwrap();
    event::frame_message(dev.chain.device(), mailbox, sealed, signer)
        .unwrap()
        .to_bytes()
}

async fn stored(c: &reqwest::Client, base: &str, mailbox: &[u8; 32]) -> usize {
    let (status, page): (StatusCode, Value) =
        get_json(c, &format!("{base}/v1/mailboxes/{}", hex::encode(mailbox))).await;
    assert_eq!(status, StatusCode::OK);
    page["messages"].as_array().unwrap().len()
}

#[tokio::test]
async fn only_a_held_devices_signed_event_for_a_current_owner_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let dev = claimed(1);
    let (status, body) = post_ops(&c, &base, &device_id(&dev), dev.chain.ops()).await;
    assert!(status.is_success(), "{body}");
    let owner_box = hash::owner_mailbox(&person(1).public_key());
    let owner_hex = hex::encode(owner_box);

    // The device's own event for its owner: stored.
    let good = message_for(&dev, owner_box, &dev.keys.identity);
    let (status, body) = post_mailbox_ttl(&c, &base, &owner_hex, &good, Some("3600")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(stored(&c, &base, &owner_box).await, 1);
    let page: Value = get_json(&c, &format!("{base}/v1/mailboxes/{owner_hex}"))
        .await
        .1;
    let body = data_encoding::BASE64
        .decode(page["messages"][0]["body"].as_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(body, good);
    assert!(EventMessage::is_event_message(&body));

    // Forged: framed and signed by a key that is not the device's.
    let forged = message_for(&dev, owner_box, &person(9));
    let (status, body) = post_mailbox(&c, &base, &owner_hex, &forged).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "not_an_owner_message");
    assert!(body.to_string().contains("identity key"), "{body}");

    // Forged: the device's good message with one sealed byte changed in transit.
    let mut tampered = good.clone();
    tampered[1000] ^= 1;
    let (status, body) = post_mailbox(&c, &base, &owner_hex, &tampered).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // For a mailbox that is no owner's (a stranger's), correctly signed by the device.
    let stranger_box = hash::owner_mailbox(&person(9).public_key());
    let to_stranger = message_for(&dev, stranger_box, &dev.keys.identity);
    let (status, body) = post_mailbox(&c, &base, &hex::encode(stranger_box), &to_stranger).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string()
            .contains("not the mailbox of a current owner"),
        "{body}"
    );
    assert_eq!(stored(&c, &base, &stranger_box).await, 0);

    // The owner's message posted to another mailbox than the one it names.
    let (status, body) = post_mailbox(&c, &base, &hex::encode(stranger_box), &good).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // From a device the node does not hold.
    let unknown = claimed(2);
    let foreign = message_for(&unknown, owner_box, &unknown.keys.identity);
    let (status, body) = post_mailbox(&c, &base, &owner_hex, &foreign).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("does not hold"), "{body}");

    // Oversize: the good message with bytes after it, and a body over the node's cap.
    let longer = [good.clone(), vec![0; 16]].concat();
    let (status, body) = post_mailbox(&c, &base, &owner_hex, &longer).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let mut huge = vec![0u8; 30_000];
    huge[0] = event::EVENT_MESSAGE_TAG;
    let (status, body) = post_mailbox(&c, &base, &owner_hex, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Nothing of the refused ones was stored anywhere.
    assert_eq!(stored(&c, &base, &owner_box).await, 1);
    assert_eq!(stored(&c, &base, &stranger_box).await, 0);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_removed_owners_mailbox_takes_no_more_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let mut dev = claimed(1);
    // person(1) adds person(2), then hands the door to person(2) alone.
    let add = amend(&dev, 2);
    dev.chain.append(add).unwrap();
    dev.apply(
        latchkey_proto::chain::OpBody::AmendOwners(latchkey_proto::chain::OwnerSet {
            owners: vec![person(2).public_key()],
            threshold: 1,
        }),
        &[&person(1)],
    );
    let (status, body) = post_ops(&c, &base, &device_id(&dev), dev.chain.ops()).await;
    assert!(status.is_success(), "{body}");
    let former = hash::owner_mailbox(&person(1).public_key());
    let current = hash::owner_mailbox(&person(2).public_key());
    let (status, body) = post_mailbox(
        &c,
        &base,
        &hex::encode(former),
        &message_for(&dev, former, &dev.keys.identity),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(stored(&c, &base, &former).await, 0);
    let (status, body) = post_mailbox(
        &c,
        &base,
        &hex::encode(current),
        &message_for(&dev, current, &dev.keys.identity),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.shutdown().await.unwrap();
}
