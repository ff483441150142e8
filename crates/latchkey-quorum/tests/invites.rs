//! The owner-side helpers for short links' sealed invitations against real nodes on loopback:
//! store on several nodes (one down), fetch from the first that has it, write-once conflicts,
//! and a lying node's endless answer cut off at the cap.

use std::time::Duration;

use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::invite::{Invitation, InviteDoor};
use latchkey_proto::shortlink::{SealedInvitation, ShortLink};
use latchkey_quorum::invites::{get_invite, put_invite, Put, INVITE_BLOB_CAP};
use latchkey_quorum::{Error, QuorumClient, QuorumConfig};
use latchkey_testkit::liar::{Liar, Lie};
use latchkey_testkit::{person, rng, TestDevice, DAY, T0};

async fn nodes(dir: &std::path::Path, n: usize) -> Vec<RunningNode> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut config =
            NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.join(format!("{i}.db")));
        config.limits = Limits::without_rate_limits();
        out.push(latchkey_node::start(config).await.unwrap());
    }
    out
}

fn later() -> u64 {
    latchkey_node::store::now_ms() + DAY
}

/// A real sealed invitation and its link.
fn sealed() -> (ShortLink, Invitation, Vec<u8>) {
    let (owner, link_key) = (person(1), person(2));
    let mut dev = TestDevice::new(5, "Door");
    dev.claim(&[&owner], 1);
    let grant = dev.grant(&owner, &link_key.public_key(), &["unlock"], T0, T0 + DAY, 0);
    let invitation = Invitation {
        guest_secret: link_key.to_bytes(),
        grants: vec![grant],
        guest_name: "Ana".into(),
        doors: vec![InviteDoor {
            device: dev.chain.device(),
            name: "Door".into(),
            addrs: vec![],
        }],
        nodes: vec![],
    };
    let link = ShortLink::generate(vec!["http://127.0.0.1:1".into()], &mut rng(3)).unwrap();
    let blob = SealedInvitation::seal(&link, &invitation, &mut rng(4)).unwrap();
    (link, invitation, blob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_stores_on_the_nodes_and_a_guest_fetches_and_opens() {
    let dir = tempfile::tempdir().unwrap();
    let running = nodes(dir.path(), 2).await;
    let mut urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    // A node that is down: nothing listens on port 1.
    urls.insert(0, "http://127.0.0.1:1".into());
    let q = QuorumClient::new(
        urls.clone(),
        QuorumConfig {
            timeout: Duration::from_secs(5),
            ..QuorumConfig::default()
        },
    )
    .unwrap();
    let (link, invitation, blob) = sealed();
    let id = link.blob_id();
    let report = q.publish_invite(&urls, &id, &blob, later()).await.unwrap();
    assert_eq!(report.stored, urls[1..].to_vec());
    assert_eq!(report.failed.len(), 1);
    // A retry is fine.
    let again = q.publish_invite(&urls, &id, &blob, later()).await.unwrap();
    assert_eq!(again.stored.len(), 2);
    // The guest asks the link's nodes in order; the dead one is skipped.
    let fetched = q.fetch_invite(&urls, &id).await.unwrap().unwrap();
    assert_eq!(SealedInvitation::open(&link, &fetched).unwrap(), invitation);
    // Unknown id: every live node says so.
    assert_eq!(q.fetch_invite(&urls, &[9; 32]).await.unwrap(), None);
    // Other bytes under the id are refused everywhere.
    let mut other = blob.clone();
    other[10] ^= 1;
    assert!(matches!(
        q.publish_invite(&urls[1..], &id, &other, later()).await,
        Err(Error::InviteExists { .. })
    ));
    // The single-node helpers.
    let http = reqwest::Client::new();
    assert_eq!(
        put_invite(&http, &urls[1], &[7; 32], &blob, later())
            .await
            .unwrap(),
        Put::Stored
    );
    assert_eq!(
        put_invite(&http, &urls[1], &[7; 32], &blob, later())
            .await
            .unwrap(),
        Put::AlreadyStored
    );
    assert_eq!(
        get_invite(&http, &urls[1], &[7; 32]).await.unwrap(),
        Some(blob)
    );
    assert_eq!(get_invite(&http, &urls[2], &[7; 32]).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_streaming_forever_is_cut_off_at_the_cap() {
    let endless = Liar::start(Lie::Endless);
    let huge = Liar::start(Lie::Declares(100_000_000));
    let http = reqwest::Client::new();
    for liar in [&endless, &huge] {
        let got = get_invite(&http, &liar.url(), &[1; 32]).await;
        assert!(
            matches!(got, Err(Error::TooLarge { cap, .. }) if cap == INVITE_BLOB_CAP),
            "{got:?}"
        );
        assert!(liar.wait_hung_up(1, Duration::from_secs(10)));
    }
}
