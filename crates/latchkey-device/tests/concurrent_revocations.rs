//! Issue 10, item 1: a rogue co-owner posting conflicting revocations to different nodes cannot
//! fork the device. Two revocations made against the same op by two owners, each stored on a
//! different node, used to be two different ops at one sequence number — a fork the device
//! could only raise an alarm about, keeping one of them. Now they are side ops: the device
//! takes both, raises no alarm and keeps obeying its owners. Real `latchkeyd` binary, three
//! registry nodes on loopback.

mod support;

use std::time::{Duration, Instant};

use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::command::RejectCode;
use latchkey_quorum::{QuorumClient, QuorumConfig};
use latchkey_testkit::{person, sorted};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_revoking_at_once_on_different_nodes_do_not_fork_the_door() {
    let nodes = Nodes::start(3).await;
    let urls = nodes.urls();
    let (_tmp, dir, door_log, _) = init_door(&nodes, &[]);
    let payload =
        ClaimPayload::parse(&std::fs::read_to_string(dir.join("claim.txt")).unwrap()).unwrap();
    let agent = Agent::start(&dir);

    // Two co-owners, either of whom may act alone.
    let (alice, rogue) = (person(1), person(2));
    let mut chain = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    let mut claim = chain.propose(
        now_ms(),
        OpBody::Claim(OwnerSet {
            owners: sorted(&[&alice, &rogue]),
            threshold: 1,
        }),
    );
    claim.sign(&payload.setup_key());
    claim.sign(&alice);
    claim.sign(&rogue);
    chain.append(claim).unwrap();
    let q = QuorumClient::new(
        urls.clone(),
        QuorumConfig {
            sample: urls.len(),
            min_answers: urls.len(),
            timeout: Duration::from_secs(5),
            publish_to: urls.len(),
            min_acks: 1,
        },
    )
    .unwrap();
    q.publish_to(&chain.device(), chain.ops(), &urls)
        .await
        .unwrap();
    wait_for_seq(&agent.url, 1).await;

    let (ann, bo, cy) = (
        Sender::new(person(11), chain.clone()),
        Sender::new(person(12), chain.clone()),
        Sender::new(person(13), chain.clone()),
    );
    let (for_ann, for_bo, for_cy) = (
        hour_grant(&alice, &ann, &chain, 1),
        hour_grant(&alice, &bo, &chain, 2),
        hour_grant(&alice, &cy, &chain, 3),
    );
    assert_eq!(code(&guest_unlock(&ann, &agent.url, &for_ann).await), 0);
    assert_eq!(code(&guest_unlock(&bo, &agent.url, &for_bo).await), 0);

    // Alice revokes Ann's grant on one node; at the same moment the rogue co-owner revokes
    // Bo's on another. Both are made against the claim, the head they both saw.
    for (owner, grant, node) in [(&alice, &for_ann, &urls[0]), (&rogue, &for_bo, &urls[1])] {
        let mut op = chain.propose(
            now_ms(),
            OpBody::RevokeGrant {
                chain: vec![grant.clone()],
            },
        );
        op.sign(owner);
        let mut with = chain.clone();
        with.append(op).unwrap();
        q.publish_to(&chain.device(), with.ops(), std::slice::from_ref(node))
            .await
            .unwrap();
    }

    // The device learns both from its checks of the nodes: both guests are refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = fetch_chain(&reqwest::Client::new(), &agent.url).await;
        if held.state().revoked.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device never took both revocations"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let revoked = RejectCode::GrantRevoked as u16;
    assert_eq!(
        code(&guest_unlock(&ann, &agent.url, &for_ann).await),
        revoked
    );
    assert_eq!(code(&guest_unlock(&bo, &agent.url, &for_bo).await), revoked);

    // No fork, no alarm: the owners and the guest nobody revoked are obeyed.
    let out = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["freshness"]["forks"], 0, "{status}");
    assert_eq!(status["seq"], 1, "revocations do not move the spine");
    assert_eq!(code(&guest_unlock(&cy, &agent.url, &for_cy).await), 0);
    for owner in [&alice, &rogue] {
        let sender = Sender::new(
            latchkey_proto::keys::SigningKey::from_bytes(&owner.to_bytes()),
            chain.clone(),
        );
        let (env, pending) = sender.seal(sender.command("unlock", b""));
        assert_eq!(code(&sender.send(&agent.url, env, &pending).await), 0);
    }
    assert_eq!(lines(&door_log), 5);
    drop(agent);
    nodes.stop().await;
}

/// A transfer pushed on the LAN is endorsed like the claim; a revocation of the era it ended,
/// pushed afterwards, is valid but not kept: answered `added: 0`, nothing changes, while an
/// op the device cannot place at all is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_transfer_a_revocation_of_the_ended_era_changes_nothing() {
    use latchkey_proto::chain::OpList;
    use latchkey_proto::codec::Codec;
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, _, _) = init_door(&nodes, &[]);
    let agent = Agent::start(&dir);
    let (alice, bob) = (person(1), person(2));
    let chain = claim(&dir, &agent.url, &alice, &nodes.urls()).await;
    let guest = Sender::new(person(11), chain.clone());
    let grant = hour_grant(&alice, &guest, &chain, 1);
    let mut late = chain.propose(
        now_ms(),
        OpBody::RevokeGrant {
            chain: vec![grant.clone()],
        },
    );
    late.sign(&alice);

    let mut transfer = chain.propose(
        now_ms(),
        OpBody::Transfer(OwnerSet {
            owners: vec![bob.public_key()],
            threshold: 1,
        }),
    );
    transfer.sign(&alice);
    transfer.sign(&bob);
    let mut moved = chain.clone();
    moved.append(transfer).unwrap();
    let push = |ops: Vec<latchkey_proto::chain::Op>| {
        let url = agent.url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/v1/ops"))
                .body(OpList(ops).to_bytes())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, v) = push(moved.ops().to_vec()).await;
    assert_eq!((s, v["seq"].as_u64()), (200, Some(2)), "{v}");
    let held = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    assert!(
        held.is_endorsed(1) && held.is_endorsed(2),
        "claim and transfer endorsed"
    );

    let (s, v) = push(vec![late.clone()]).await;
    assert_eq!((s, v["added"].as_u64()), (200, Some(0)), "{v}");
    let after = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    assert_eq!(after.ops().len(), held.ops().len());
    assert!(after.state().revoked.is_empty());
    // The same revocation moved past the head cannot be placed: refused.
    let mut astray = late.clone();
    astray.seq += 5;
    astray.sign(&alice);
    let (s, v) = push(vec![astray]).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_ops")),
        "{v}"
    );

    let new_owner = Sender::new(person(2), held.clone());
    let (env, pending) = new_owner.seal(new_owner.command("unlock", b""));
    assert_eq!(code(&new_owner.send(&agent.url, env, &pending).await), 0);
    let old_owner = Sender::new(person(1), held);
    let (env, pending) = old_owner.seal(old_owner.command("unlock", b""));
    assert_eq!(
        code(&old_owner.send(&agent.url, env, &pending).await),
        RejectCode::NotAuthorized as u16
    );
    drop(agent);
    nodes.stop().await;
}
