//! Replication between nodes on loopback: pulling feeds, catching up late, forks across nodes.

mod common;

use std::time::Duration;

use common::*;
use latchkey_node::store;
use latchkey_proto::keys::DeviceId;
use reqwest::StatusCode;

/// Whether `base` serves `head_hex` as the device's head within 5 s.
async fn reaches(c: &reqwest::Client, base: &str, id: DeviceId, head_hex: &str) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = head(c, base, &id).await;
        if status == StatusCode::OK && body["head"] == head_hex {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn peers_catch_up_including_a_node_started_late() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a.db")).await;
    let b = node_with_peers(&dir.path().join("b.db"), &[&a]).await;
    let c = client();

    let mut devices: Vec<_> = (30..34).map(claimed).collect();
    for dev in &devices {
        assert_eq!(
            post_ops(&c, &a.url(), &device_id(dev), dev.chain.ops())
                .await
                .0,
            200
        );
    }
    for dev in &devices {
        let head_hex = dev.chain.head().to_string();
        assert!(
            reaches(&c, &b.url(), device_id(dev), &head_hex).await,
            "B caught up with A"
        );
        assert_eq!(
            get_ops(&c, &b.url(), &device_id(dev), 0).await.unwrap(),
            dev.chain.ops()
        );
    }

    // Later ops follow.
    let op = amend(&devices[0], 2);
    devices[0].chain.append(op.clone()).unwrap();
    assert_eq!(
        post_ops(&c, &a.url(), &device_id(&devices[0]), &[op])
            .await
            .0,
        200
    );
    let head_hex = devices[0].chain.head().to_string();
    assert!(reaches(&c, &b.url(), device_id(&devices[0]), &head_hex).await);

    // A node started after all of it catches up from B (which learnt it by replication).
    let late = node_with_peers(&dir.path().join("late.db"), &[&b]).await;
    for dev in &devices {
        let head_hex = dev.chain.head().to_string();
        assert!(
            reaches(&c, &late.url(), device_id(dev), &head_hex).await,
            "the late node caught up"
        );
    }
    let metrics = c
        .get(format!("{}/metrics", late.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_replication_ops_total 9"),
        "{metrics}"
    );
    assert!(metrics.contains("latchkey_devices 4"), "{metrics}");

    late.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_that_was_down_resumes_from_its_saved_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a.db")).await;
    let c = client();
    let first = claimed(40);
    let second = claimed(41);
    post_ops(&c, &a.url(), &device_id(&first), first.chain.ops()).await;

    let b_db = dir.path().join("b.db");
    let b = node_with_peers(&b_db, &[&a]).await;
    let head_hex = first.chain.head().to_string();
    assert!(reaches(&c, &b.url(), device_id(&first), &head_hex).await);
    b.shutdown().await.unwrap();

    // While B is down, A takes more.
    post_ops(&c, &a.url(), &device_id(&second), second.chain.ops()).await;
    let b = node_with_peers(&b_db, &[&a]).await;
    let head_hex = second.chain.head().to_string();
    assert!(reaches(&c, &b.url(), device_id(&second), &head_hex).await);
    // It did not pull the first device again: only the second's two ops were new.
    let metrics = c
        .get(format!("{}/metrics", b.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_replication_ops_total 2"),
        "{metrics}"
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn ops_whose_predecessors_are_missing_are_fetched_from_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a.db")).await;
    let c = client();
    let mut dev = claimed(42);
    let id = device_id(&dev);
    post_ops(&c, &a.url(), &id, dev.chain.ops()).await;
    let op = amend(&dev, 3);
    dev.chain.append(op.clone()).unwrap();
    post_ops(&c, &a.url(), &id, &[op]).await;

    // B's cursor into A already points past the genesis and claim (as if those entries had
    // been lost): the feed gives B only seq 2, so B must fetch 0 and 1 itself.
    let b_db = dir.path().join("b.db");
    let (_, feed) = get_json(&c, &format!("{}/v1/feed", a.url())).await;
    let cursor = feed["entries"][1]["cursor"].as_u64().unwrap();
    let peer = a.url();
    let s = store::open(&location(&b_db)).await.unwrap();
    s.set_peer_cursor(&peer, cursor).await.unwrap();
    drop(s);

    let b = node_with_peers(&b_db, &[&a]).await;
    let head_hex = dev.chain.head().to_string();
    assert!(reaches(&c, &b.url(), id, &head_hex).await);
    assert_eq!(
        get_ops(&c, &b.url(), &id, 0).await.unwrap(),
        dev.chain.ops()
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fork_between_nodes_is_recorded_not_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a.db")).await;
    let b = node(&dir.path().join("b.db")).await;
    let c = client();
    let dev = claimed(43);
    let id = device_id(&dev);
    let ours = amend(&dev, 2);
    let theirs = amend(&dev, 3);
    let mut on_a = dev.chain.ops().to_vec();
    on_a.push(theirs.clone());
    let mut on_b = dev.chain.ops().to_vec();
    on_b.push(ours.clone());
    assert_eq!(post_ops(&c, &a.url(), &id, &on_a).await.0, 200);
    assert_eq!(post_ops(&c, &b.url(), &id, &on_b).await.0, 200);

    // C replicates from both: whichever it takes first stays, the other is evidence.
    let c_node = node_with_peers(&dir.path().join("c.db"), &[&a, &b]).await;
    let mut settled = false;
    for _ in 0..100 {
        let (status, h) = head(&c, &c_node.url(), &id).await;
        if status == StatusCode::OK && h["forks"] == 1 && h["seq"] == 2 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "C holds one branch and records the other");
    let (_, forks) = get_json(&c, &format!("{}/v1/devices/{id}/forks", c_node.url())).await;
    assert_eq!(forks["forks"].as_array().unwrap().len(), 1);
    c_node.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn peers_added_after_start_form_a_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node(&dir.path().join(format!("n{i}.db"))).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, url) in urls.iter().enumerate() {
            if i != j {
                node.add_peer(url.parse().unwrap()).unwrap();
            }
        }
    }
    let c = client();
    let first = claimed(44);
    let second = claimed(45);
    post_ops(&c, &urls[0], &device_id(&first), first.chain.ops()).await;
    post_ops(&c, &urls[2], &device_id(&second), second.chain.ops()).await;
    for url in &urls {
        assert!(reaches(&c, url, device_id(&first), &first.chain.head().to_string()).await);
        assert!(
            reaches(
                &c,
                url,
                device_id(&second),
                &second.chain.head().to_string()
            )
            .await
        );
    }
    assert!(nodes[0].add_peer("ftp://x".parse().unwrap()).is_err());
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Two owners' revocations at one seq, posted to different nodes: both nodes end with both
/// (a set, not a fork), and no fork is recorded.
#[tokio::test]
async fn concurrent_revocations_on_different_nodes_merge() {
    use latchkey_proto::chain::OpBody;
    use latchkey_testkit::{person, T0};
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a.db")).await;
    let b = node_with_peers(&dir.path().join("b.db"), &[&a]).await;
    let c = client();
    let mut dev = latchkey_testkit::TestDevice::new(44, "front door");
    let (alice, rogue) = (person(1), person(2));
    dev.claim(&[&alice, &rogue], 1);
    let id = device_id(&dev);
    let day = 86_400_000;
    let g1 = dev.grant(&alice, &person(7).public_key(), &["open"], T0, T0 + day, 0);
    let g2 = dev.grant(&rogue, &person(8).public_key(), &["open"], T0, T0 + day, 0);
    let r1 = dev.op(OpBody::RevokeGrant { chain: vec![g1] }, &[&alice]);
    let r2 = dev.op(OpBody::RevokeGrant { chain: vec![g2] }, &[&rogue]);
    assert_eq!(post_ops(&c, &a.url(), &id, dev.chain.ops()).await.0, 200);
    assert_eq!(post_ops(&c, &b.url(), &id, dev.chain.ops()).await.0, 200);
    assert_eq!(
        post_ops(&c, &a.url(), &id, std::slice::from_ref(&r1))
            .await
            .0,
        200
    );
    let (status, body) = post_ops(&c, &b.url(), &id, std::slice::from_ref(&r2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // B pulls A's revocation: both held, same head, no fork.
    let mut both = false;
    for _ in 0..100 {
        let ops = get_ops(&c, &b.url(), &id, 0).await.unwrap();
        if ops.contains(&r1) && ops.contains(&r2) {
            both = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(both, "B holds both revocations");
    let (_, h) = head(&c, &b.url(), &id).await;
    assert_eq!((h["forks"].as_u64(), h["seq"].as_u64()), (Some(0), Some(1)));
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// A stranger with a leaked setup key posts a rival claim to node A before the rightful one
/// reaches it. Once the device's endorsement of the rightful claim is anywhere, A switches to
/// the rightful branch, keeps the rival as evidence, and so does every node replicating from it.
#[tokio::test]
async fn a_node_misled_by_a_rival_claim_switches_to_the_branch_the_device_endorsed() {
    use latchkey_testkit::person;
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a.db")).await;
    let b = node(&dir.path().join("b.db")).await;
    let c = client();
    let mut dev = latchkey_testkit::TestDevice::new(45, "front door");
    let id = device_id(&dev);
    let genesis = dev.chain.ops().to_vec();
    let rival = dev.claim_op(&[&person(6)], 1);
    let rightful = dev.claim_op(&[&person(1)], 1);
    dev.chain.append(rightful.clone()).unwrap();
    dev.chain.append(dev.endorsement(1)).unwrap();

    let with_rival = [genesis.clone(), vec![rival.clone()]].concat();
    assert_eq!(post_ops(&c, &a.url(), &id, &with_rival).await.0, 200);
    // The rightful claim alone is a fork to A (nobody endorsed either yet, for A).
    let (status, body) = post_ops(&c, &a.url(), &id, &dev.chain.ops()[..2]).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "fork"));
    // With the endorsement, A switches.
    let (status, body) = post_ops(&c, &a.url(), &id, dev.chain.ops()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get_ops(&c, &a.url(), &id, 0).await.unwrap(),
        dev.chain.ops()
    );
    // The rival is refused from now on, and kept as evidence.
    let (status, body) = post_ops(&c, &a.url(), &id, &with_rival).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "fork"));
    let (_, h) = head(&c, &a.url(), &id).await;
    assert_eq!(h["head"], rightful.id().to_string());
    assert!(h["forks"].as_u64().unwrap() >= 1);

    // B got the rival from the stranger too, then replicates from A.
    assert_eq!(post_ops(&c, &b.url(), &id, &with_rival).await.0, 200);
    let mut b = b;
    b.add_peer(latchkey_node::Url::parse(&a.url()).unwrap())
        .unwrap();
    assert!(reaches(&c, &b.url(), id, &rightful.id().to_string()).await);
    // The switch survives a restart (the store holds the endorsed branch only).
    b.shutdown().await.unwrap();
    let b = node(&dir.path().join("b.db")).await;
    assert_eq!(
        get_ops(&c, &b.url(), &id, 0).await.unwrap(),
        dev.chain.ops()
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
