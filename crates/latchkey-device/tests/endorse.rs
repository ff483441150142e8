//! Issue 10, item 1: a second claim signed with a leaked setup key cannot fork the device away
//! from its owners. The device endorses the claim it accepted (an endorse op signed by its
//! identity key, published to the nodes), never leaves that branch, raises a fork alarm when a
//! node serves the rival, and every fresh verifier prefers the branch the device endorsed.
//! Real `latchkeyd` binary; registry nodes on loopback, one of them holding the rival claim.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::chain::{Chain, OpBody, OpList, OwnerSet};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::command::RejectCode;
use latchkey_proto::keys::PublicKey;
use latchkey_quorum::{Answer, QuorumClient, QuorumConfig};
use latchkey_testkit::person;
use support::*;

async fn start_node(addr: SocketAddr, db: &Path) -> RunningNode {
    let mut config = NodeConfig::new(addr, db);
    config.limits = Limits::without_rate_limits();
    latchkey_node::start(config).await.unwrap()
}

fn quorum(nodes: &[String]) -> QuorumClient {
    QuorumClient::new(
        nodes.to_vec(),
        QuorumConfig {
            sample: nodes.len(),
            min_answers: nodes.len(),
            timeout: Duration::from_secs(5),
            publish_to: nodes.len(),
            min_acks: 1,
        },
    )
    .unwrap()
}

/// The endorse ops in `chain` signed by its device's identity key.
fn endorsements(chain: &Chain) -> usize {
    let identity = chain.state().identity;
    chain
        .ops()
        .iter()
        .filter(|op| matches!(op.body, OpBody::Endorse))
        .filter(|op| op.signatures.iter().any(|s| s.signer == identity))
        .count()
}

/// What `node` holds for the device, verified.
async fn node_chain(q: &QuorumClient, node: &str, chain: &Chain) -> Chain {
    match q.fetch_ops(node, &chain.device(), 0).await {
        Answer::Ops(ops) => Chain::verify(ops).unwrap(),
        other => panic!("{node}: {other:?}"),
    }
}

fn owners(chain: &Chain) -> Vec<PublicKey> {
    chain.state().owners.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rival_claim_with_a_leaked_setup_key_loses_to_the_claim_the_device_endorsed() {
    let honest = Nodes::start(3).await;
    let tmp = tempfile::tempdir().unwrap();
    // The fourth node the device knows is down while the rightful owner claims; it comes back
    // holding the stranger's rival claim (its database prepared while it was off).
    let rogue_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rogue_url = format!("http://{rogue_addr}");
    let rogue_db = tmp.path().join("rogue.db");
    let mut all = honest.urls();
    all.push(rogue_url.clone());
    let (_door_tmp, dir, door_log, _) = init_door_on(&all);

    // The stranger photographed the QR before the claim.
    let photo =
        ClaimPayload::parse(&std::fs::read_to_string(dir.join("claim.txt")).unwrap()).unwrap();
    let agent = Agent::start(&dir);
    let owner = person(1);
    let chain = claim(&dir, &agent.url, &owner, &honest.urls()).await;

    // The device endorses the claim and publishes the endorsement to the nodes.
    let q = quorum(&honest.urls());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = fetch_chain(&reqwest::Client::new(), &agent.url).await;
        let on_nodes = node_chain(&q, &honest.urls()[0], &chain).await;
        if endorsements(&held) >= 1 && endorsements(&on_nodes) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device never endorsed its claim"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stranger's rival claim, signed with the photographed setup key, on the fourth node.
    let stranger = person(66);
    let mut rival = Chain::from_genesis(chain.ops()[0].clone()).unwrap();
    let mut op = rival.propose(
        now_ms(),
        OpBody::Claim(OwnerSet {
            owners: vec![stranger.public_key()],
            threshold: 1,
        }),
    );
    op.sign(&photo.setup_key());
    op.sign(&stranger);
    rival.append(op).unwrap();
    {
        let prep = start_node("127.0.0.1:0".parse().unwrap(), &rogue_db).await;
        quorum(&[prep.url()])
            .publish_to(&rival.device(), rival.ops(), &[prep.url()])
            .await
            .unwrap();
        prep.shutdown().await.unwrap();
    }
    let rogue = start_node(rogue_addr, &rogue_db).await;
    assert_eq!(
        owners(
            &node_chain(
                &quorum(std::slice::from_ref(&rogue_url)),
                &rogue_url,
                &chain
            )
            .await
        ),
        vec![stranger.public_key()],
        "the fourth node serves the rival claim"
    );

    // The device's next checks meet the rival on the fourth node: an alarm, and it keeps its
    // branch.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if status["freshness"]["forks"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no fork alarm: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The stranger also hands the rival to the device on the LAN: refused, and an alarm.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/ops", agent.url))
        .body(latchkey_proto::codec::Codec::to_bytes(&OpList(
            rival.ops().to_vec(),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "{}", r.text().await.unwrap());
    let out = latchkeyd(&["status", "--dir", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALARM"), "{text}");
    // Checks of all four nodes, the rival's included, leave the device on its branch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    assert_eq!(owners(&held), vec![owner.public_key()]);
    let sender = Sender::new(person(1), chain.clone());
    let (env, pending) = sender.seal(sender.command("unlock", b""));
    assert_eq!(code(&sender.send(&agent.url, env, &pending).await), 0);
    let thief = Sender::new(person(66), rival.clone());
    let (env, pending) = thief.seal(thief.command("unlock", b""));
    assert_eq!(
        code(&thief.send(&agent.url, env, &pending).await),
        RejectCode::NotAuthorized as u16
    );
    assert_eq!(lines(&door_log), 1);

    // A fresh verifier that trusts no node: whichever answer it reads first, it ends on the
    // branch the device endorsed.
    let everyone = quorum(&all);
    let rogue_answer = node_chain(&everyone, &rogue_url, &chain).await;
    let honest_answer = node_chain(&everyone, &honest.urls()[1], &chain).await;
    let mut from_rogue = rogue_answer.clone();
    let report = from_rogue.merge(honest_answer.ops());
    assert!(report.switched.is_some(), "{report:?}");
    assert_eq!(owners(&from_rogue), vec![owner.public_key()]);
    let mut from_honest = honest_answer.clone();
    let report = from_honest.merge(rogue_answer.ops());
    assert!(
        report.switched.is_none() && report.fork.is_none(),
        "{report:?}"
    );
    assert_eq!(owners(&from_honest), vec![owner.public_key()]);
    // And the quorum client, asking all four nodes with nothing cached.
    let checked = everyone
        .check(&chain.device(), None, now_ms(), &mut rand_core::OsRng)
        .await
        .unwrap();
    assert_eq!(owners(&checked.chain), vec![owner.public_key()]);
    assert!(checked.forks.is_empty(), "settled, not unresolved");
    assert!(!checked.settled.is_empty(), "the rival is evidence");
    drop(agent);
    rogue.shutdown().await.unwrap();
    honest.stop().await;
}

/// `init_door` for an explicit node list (some of which may be down).
fn init_door_on(
    nodes: &[String],
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    String,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    let out = tmp.path().join("door.log");
    let unlock = format!("unlock=exec:{}", door_script(tmp.path(), &out).display());
    let printed = init(&dir, nodes, &["--action", unlock.as_str()]);
    (tmp, dir, out, printed)
}

/// The endorsement is durable before anyone is told, and the device keeps publishing it until a
/// node stores it: every node is down when the owner claims on the LAN, the agent is killed,
/// and the node that comes back gets the endorsement from the restarted agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endorsement_made_while_every_node_is_down_reaches_the_nodes_when_they_return() {
    let tmp = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let url = format!("http://{addr}");
    let (_door_tmp, dir, _, _) = init_door_on(std::slice::from_ref(&url));
    let photo =
        ClaimPayload::parse(&std::fs::read_to_string(dir.join("claim.txt")).unwrap()).unwrap();
    let agent = Agent::start(&dir);
    let genesis = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    let owner = person(1);
    let mut claimed = genesis.clone();
    let mut op = claimed.propose(
        now_ms(),
        OpBody::Claim(OwnerSet {
            owners: vec![owner.public_key()],
            threshold: 1,
        }),
    );
    op.sign(&photo.setup_key());
    op.sign(&owner);
    claimed.append(op).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/ops", agent.url))
        .body(latchkey_proto::codec::Codec::to_bytes(&OpList(
            claimed.ops().to_vec(),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let held = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    assert_eq!(
        endorsements(&held),
        1,
        "endorsed as soon as it accepted the claim"
    );

    agent.kill9();
    let agent = Agent::start(&dir);
    let held = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    assert_eq!(endorsements(&held), 1, "the endorsement survived kill -9");
    let status = |dir: &Path| -> serde_json::Value {
        let out = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(status(&dir)["freshness"]["endorsement_unpublished"], true);

    let node = start_node(addr, &tmp.path().join("node.db")).await;
    let q = quorum(std::slice::from_ref(&url));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Answer::Ops(ops) = q.fetch_ops(&url, &claimed.device(), 0).await {
            let on_node = Chain::verify(ops).unwrap();
            if endorsements(&on_node) == 1 {
                assert_eq!(owners(&on_node), vec![owner.public_key()]);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the endorsement never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&dir)["freshness"]["endorsement_unpublished"] != false {
        assert!(Instant::now() < deadline, "still marked unpublished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(agent);
    node.shutdown().await.unwrap();
}
