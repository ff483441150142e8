//! The event poster in the real `latchkeyd` against a real registry node: an owner subscribes,
//! a guest's first open lands in the owner's mailbox as a sealed, signed event; with the node
//! down, a refusal waits in the durable outbox and reaches the mailbox once the node is back.

mod support;

use std::time::{Duration, Instant};

use latchkey_device::events;
use latchkey_device::store::Store;
use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::codec::Codec;
use latchkey_proto::event::{self, Event, EventKind, EventMessage, SUBSCRIBE_ACTION};
use latchkey_proto::hash;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::PublicKey;
use latchkey_testkit::{person, rng};
use support::*;

async fn node_at(port: u16, db: &std::path::Path) -> RunningNode {
    let mut config = NodeConfig::new(format!("127.0.0.1:{port}").parse().unwrap(), db);
    config.limits = Limits::without_rate_limits();
    latchkey_node::start(config).await.unwrap()
}

/// Every event in `owner`'s mailbox on `node`, opened and verified.
async fn events_in(
    node: &str,
    owner: &PublicKey,
    identity: &PublicKey,
    kem: &KemSecretKey,
) -> Vec<Event> {
    let mailbox = hash::owner_mailbox(owner);
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!("{node}/v1/mailboxes/{}", hex::encode(mailbox)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let body = data_encoding::BASE64
                .decode(m["body"].as_str().unwrap().as_bytes())
                .unwrap();
            EventMessage::from_bytes(&body)
                .unwrap()
                .open(identity, &mailbox, kem)
                .unwrap()
                .event
        })
        .collect()
}

async fn wait_for_events(
    node: &str,
    owner: &PublicKey,
    identity: &PublicKey,
    kem: &KemSecretKey,
    n: usize,
) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = events_in(node, owner, identity, kem).await;
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "only {found:?} arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_owners_mailbox_and_wait_in_the_outbox_while_the_node_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = tmp.path().join("node.db");
    let node = node_at(port, &db).await;
    let url = node.url();
    let out = tmp.path().join("door.log");
    let dir = tmp.path().join("device");
    let unlock = format!("unlock=exec:{}", door_script(tmp.path(), &out).display());
    init(
        &dir,
        std::slice::from_ref(&url),
        &["--action", unlock.as_str()],
    );
    let agent = Agent::start(&dir);
    let owner = person(1);
    let chain = claim(&dir, &agent.url, &owner, std::slice::from_ref(&url)).await;
    let identity = chain.state().identity;

    // The owner subscribes with its event key.
    let kem = KemSecretKey::generate(&mut rng(5));
    let owner_sender = Sender::new(person(1), chain.clone());
    let (env, pending) = owner_sender
        .seal(owner_sender.command(SUBSCRIBE_ACTION, &event::subscribe_args(kem.public())));
    let answer = owner_sender.send(&agent.url, env, &pending).await;
    assert_eq!(code(&answer), 0);

    // A guest opens twice: one first-open event.
    let guest = Sender::new(person(3), chain.clone());
    let grant = hour_grant(&owner, &guest, &chain, 1);
    for _ in 0..2 {
        assert_eq!(code(&guest_unlock(&guest, &agent.url, &grant).await), 0);
    }
    let got = wait_for_events(&url, &owner.public_key(), &identity, &kem, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, EventKind::FirstOpen);
    assert_eq!(got[0].grant, grant.id());
    assert_eq!(got[0].guest, guest.key.public_key());
    assert_eq!(got[0].seq, 1);

    // The node goes down; the guest tries an action its grant does not allow: refused, and
    // the event waits in the device's outbox.
    node.shutdown().await.unwrap();
    let mut c = guest.command("lock", b"");
    c.grants = vec![grant.clone()];
    let (env, pending) = guest.seal(c);
    let refused = guest.send(&agent.url, env, &pending).await;
    assert_eq!(code(&refused), 12, "ActionNotGranted");
    let store = Store::open(&dir.join("state.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while events::outbox_len(&store).unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "the refusal never reached the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        events::outbox_len(&store).unwrap(),
        1,
        "kept while no node takes it"
    );

    // The node is back (same address, same database): the poster delivers and forgets it.
    let node = node_at(port, &db).await;
    let got = wait_for_events(&url, &owner.public_key(), &identity, &kem, 2).await;
    assert_eq!(got[1].kind, EventKind::Refused { code: 12 });
    assert_eq!(got[1].seq, 2);
    assert_eq!(got[1].action, "lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while events::outbox_len(&store).unwrap() != 0 {
        assert!(
            Instant::now() < deadline,
            "a delivered event stayed in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines(&out), 2, "the refused action never ran");
    drop(agent);
    node.shutdown().await.unwrap();
}
