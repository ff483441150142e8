//! Chains over real HTTP on loopback, stored in real SQLite files.

mod common;

use common::*;
use latchkey_proto::chain::{Op, OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_testkit::{person, sorted};
use reqwest::StatusCode;

#[tokio::test]
async fn post_genesis_and_claim_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let dev = claimed(1);
    let id = device_id(&dev);

    let (status, body) = post_ops(&c, &base, &id, dev.chain.ops()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["seq"], 1);
    assert_eq!(body["head"], dev.chain.head().to_string());

    let resp = c
        .get(format!("{base}/v1/devices/{id}/ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    assert_eq!(resp.bytes().await.unwrap(), list(dev.chain.ops()));
    assert_eq!(
        get_ops(&c, &base, &id, 1).await.unwrap(),
        dev.chain.ops()[1..]
    );
    assert_eq!(get_ops(&c, &base, &id, 7).await.unwrap(), Vec::<Op>::new());

    let (status, body) = head(&c, &base, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["device"], id.to_string());
    assert_eq!(body["seq"], 1);
    assert_eq!(body["head"], dev.chain.head().to_string());
    assert_eq!(body["forks"], 0);

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_ops_accepted_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("latchkey_devices 1"), "{metrics}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn reposting_known_ops_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let mut dev = claimed(2);
    let id = device_id(&dev);

    assert_eq!(post_ops(&c, &base, &id, dev.chain.ops()).await.0, 200);
    let (status, body) = post_ops(&c, &base, &id, dev.chain.ops()).await;
    assert_eq!((status.as_u16(), body["accepted"].as_u64()), (200, Some(0)));
    assert_eq!(body["seq"], 1);
    let (status, body) = post_ops(&c, &base, &id, &dev.chain.ops()[1..]).await;
    assert_eq!((status.as_u16(), body["accepted"].as_u64()), (200, Some(0)));

    // Read (and so cache the encoded answers) from genesis and from the head first: the
    // reads after the new op must not be served from what was encoded before it.
    assert_eq!(get_ops(&c, &base, &id, 0).await.unwrap(), dev.chain.ops());
    assert_eq!(
        get_ops(&c, &base, &id, 1).await.unwrap(),
        dev.chain.ops()[1..]
    );

    // Known ops followed by a new one: only the new one counts.
    let op = amend(&dev, 2);
    dev.chain.append(op).unwrap();
    let (status, body) = post_ops(&c, &base, &id, dev.chain.ops()).await;
    assert_eq!((status.as_u16(), body["accepted"].as_u64()), (200, Some(1)));
    assert_eq!(body["seq"], 2);
    assert_eq!(get_ops(&c, &base, &id, 0).await.unwrap(), dev.chain.ops());
    assert_eq!(
        get_ops(&c, &base, &id, 1).await.unwrap(),
        dev.chain.ops()[1..]
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_op_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());

    // A new device whose claim lacks the setup key's signature: not even the genesis is kept.
    let fresh = latchkey_testkit::TestDevice::new(3, "hub");
    let id = device_id(&fresh);
    let mut bad_claim = fresh.chain.propose(
        latchkey_testkit::T0,
        OpBody::Claim(OwnerSet {
            owners: sorted(&[&person(1)]),
            threshold: 1,
        }),
    );
    bad_claim.sign(&person(1));
    let ops = [fresh.chain.ops()[0].clone(), bad_claim];
    let (status, body) = post_ops(&c, &base, &id, &ops).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "invalid_op");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("setup key"),
        "{body}"
    );
    assert_eq!(head(&c, &base, &id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get_ops(&c, &base, &id, 0).await, Err(StatusCode::NOT_FOUND));

    // A held device: a valid op followed by one signed by a stranger is refused whole.
    let mut dev = claimed(4);
    let id = device_id(&dev);
    assert_eq!(post_ops(&c, &base, &id, dev.chain.ops()).await.0, 200);
    let good = amend(&dev, 2);
    let mut extended = dev.chain.clone();
    extended.append(good.clone()).unwrap();
    let mut stranger = extended.propose(
        latchkey_testkit::T0,
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&person(9)]),
            threshold: 1,
        }),
    );
    stranger.sign(&person(9));
    extended.check_next(&stranger).unwrap_err();
    let (status, body) = post_ops(&c, &base, &id, &[good.clone(), stranger]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "invalid_op");
    let (_, h) = head(&c, &base, &id).await;
    assert_eq!(h["seq"], 1, "nothing of the refused list was kept");
    assert_eq!(get_ops(&c, &base, &id, 0).await.unwrap().len(), 2);

    // The node's view is intact: the valid op alone is taken.
    let (status, body) = post_ops(&c, &base, &id, std::slice::from_ref(&good)).await;
    assert_eq!((status.as_u16(), body["accepted"].as_u64()), (200, Some(1)));
    dev.chain.append(good).unwrap();
    assert_eq!(get_ops(&c, &base, &id, 0).await.unwrap(), dev.chain.ops());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn fork_is_stored_as_evidence_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let dev = claimed(5);
    let id = device_id(&dev);
    let ours = amend(&dev, 2);
    let theirs = amend(&dev, 3);
    assert_ne!(ours.id(), theirs.id());

    let mut first = dev.chain.ops().to_vec();
    first.push(ours.clone());
    assert_eq!(post_ops(&c, &base, &id, &first).await.0, 200);

    let (status, body) = post_ops(&c, &base, &id, std::slice::from_ref(&theirs)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "fork");
    // The main chain stays first-come.
    let (_, h) = head(&c, &base, &id).await;
    assert_eq!(h["head"], ours.id().to_string());
    assert_eq!(h["forks"], 1);

    let (status, forks) = get_json(&c, &format!("{base}/v1/devices/{id}/forks")).await;
    assert_eq!(status, StatusCode::OK);
    let forks = forks["forks"].as_array().unwrap();
    assert_eq!(forks.len(), 1);
    assert_eq!(forks[0]["seq"], 2);
    let b64 = |v: &serde_json::Value| {
        data_encoding::BASE64
            .decode(v.as_str().unwrap().as_bytes())
            .unwrap()
    };
    assert_eq!(Op::from_bytes(&b64(&forks[0]["ours"])).unwrap(), ours);
    assert_eq!(Op::from_bytes(&b64(&forks[0]["theirs"])).unwrap(), theirs);

    // Posting the same evidence again (whole chain this time) answers the same, stores no more.
    let mut again = dev.chain.ops().to_vec();
    again.push(theirs.clone());
    let (status, body) = post_ops(&c, &base, &id, &again).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "fork"));
    let (_, h) = head(&c, &base, &id).await;
    assert_eq!(h["forks"], 1);

    // The evidence survives a restart.
    node.shutdown().await.unwrap();
    let node = common::node(&dir.path().join("node.db")).await;
    let base = node.url();
    let (_, h) = head(&c, &base, &id).await;
    assert_eq!((h["forks"].as_u64(), h["seq"].as_u64()), (Some(1), Some(2)));
    let (status, body) = post_ops(&c, &base, &id, &again).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "fork"));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let dev = claimed(6);
    let other = claimed(7);
    let id = device_id(&dev);
    let other_id = device_id(&other);

    // Ops of one device posted under another's id.
    let (status, body) = post_ops(&c, &base, &other_id, dev.chain.ops()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "device_mismatch")
    );

    // Bytes that are not an op list.
    let (status, body) = post_raw(&c, &base, &id, vec![0, 0, 0, 1, 9, 9, 9]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "malformed")
    );
    let mut trailing = list(dev.chain.ops());
    trailing.push(0);
    let (status, body) = post_raw(&c, &base, &id, trailing).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "malformed")
    );
    let (status, body) = post_ops(&c, &base, &id, &[]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "malformed")
    );

    // A list that does not start where the node can verify it.
    let (status, body) = post_ops(&c, &base, &id, &dev.chain.ops()[1..]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_op")
    );
    // Not consecutive.
    let skipping = [dev.chain.ops()[0].clone(), dev.chain.ops()[0].clone()];
    let (status, body) = post_ops(&c, &base, &id, &skipping).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_op")
    );

    // Ids and queries.
    let (status, body) = get_json(&c, &format!("{base}/v1/devices/lkpk1nope/head")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_device_id")
    );
    let (status, body) = head(&c, &base, &id).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_device")
    );
    let (status, body) = get_json(&c, &format!("{base}/v1/devices/{id}/forks")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_device")
    );
    let (status, body) = get_json(&c, &format!("{base}/v1/devices/{id}/ops?from=x")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let (status, body) = get_json(&c, &format!("{base}/v1/feed?limit=1001")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let (status, body) = get_json(&c, &format!("{base}/v2/nothing")).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let resp = c.put(format!("{base}/v1/feed")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "method_not_allowed");
    let resp = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "ok");

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("latchkey_ops_rejected_total{reason=\"malformed\"} 3"));
    assert!(metrics.contains("latchkey_ops_rejected_total{reason=\"device_mismatch\"} 1"));
    assert!(metrics.contains("latchkey_ops_rejected_total{reason=\"invalid_op\"} 2"));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn feed_lists_every_op_in_acceptance_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let a = claimed(8);
    let b = claimed(9);
    post_ops(&c, &base, &device_id(&a), &a.chain.ops()[..1]).await;
    post_ops(&c, &base, &device_id(&b), b.chain.ops()).await;
    post_ops(&c, &base, &device_id(&a), a.chain.ops()).await;
    let expected = [
        (device_id(&a), &a.chain.ops()[0]),
        (device_id(&b), &b.chain.ops()[0]),
        (device_id(&b), &b.chain.ops()[1]),
        (device_id(&a), &a.chain.ops()[1]),
    ];

    let (status, feed) = get_json(&c, &format!("{base}/v1/feed")).await;
    assert_eq!(status, StatusCode::OK);
    let entries = feed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    let mut last = 0;
    for (entry, (device, op)) in entries.iter().zip(expected) {
        let cursor = entry["cursor"].as_u64().unwrap();
        assert!(cursor > last);
        last = cursor;
        assert_eq!(entry["device"], device.to_string());
        let bytes = data_encoding::BASE64
            .decode(entry["op"].as_str().unwrap().as_bytes())
            .unwrap();
        assert_eq!(&Op::from_bytes(&bytes).unwrap(), op);
    }
    assert_eq!(feed["next"], last);

    // Paging: one at a time, then nothing after the end.
    let (_, page) = get_json(&c, &format!("{base}/v1/feed?after=0&limit=1")).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    let next = page["next"].as_u64().unwrap();
    let (_, page) = get_json(&c, &format!("{base}/v1/feed?after={next}&limit=2")).await;
    assert_eq!(page["entries"][0]["device"], device_id(&b).to_string());
    let (_, page) = get_json(&c, &format!("{base}/v1/feed?after={last}")).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 0);
    assert_eq!(page["next"], last);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn chains_survive_a_restart_and_are_verified_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let mut dev = claimed(10);
    let id = device_id(&dev);
    let c = client();
    {
        let node = node(&db).await;
        assert_eq!(post_ops(&c, &node.url(), &id, dev.chain.ops()).await.0, 200);
        node.shutdown().await.unwrap();
    }
    let node = node(&db).await;
    let base = node.url();
    assert_eq!(get_ops(&c, &base, &id, 0).await.unwrap(), dev.chain.ops());
    // Appending after a reload extends the reloaded chain.
    let op = amend(&dev, 4);
    dev.chain.append(op.clone()).unwrap();
    let (status, body) = post_ops(&c, &base, &id, &[op]).await;
    assert_eq!((status.as_u16(), body["seq"].as_u64()), (200, Some(2)));
    let bytes = c
        .get(format!("{base}/v1/devices/{id}/ops"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(OpList::from_bytes(&bytes).unwrap().0, dev.chain.ops());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn chains_dropped_from_the_cache_reload_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let limits = latchkey_node::Limits {
        max_cached_chains: 2,
        ..latchkey_node::Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("node.db"), limits))
        .await
        .unwrap();
    let (c, base) = (client(), node.url());
    let mut devices: Vec<_> = (11..16).map(claimed).collect();
    for dev in &devices {
        assert_eq!(
            post_ops(&c, &base, &device_id(dev), dev.chain.ops())
                .await
                .0,
            200
        );
    }
    for dev in &mut devices {
        let id = device_id(dev);
        assert_eq!(get_ops(&c, &base, &id, 0).await.unwrap(), dev.chain.ops());
        let op = amend(dev, 2);
        dev.chain.append(op.clone()).unwrap();
        let (status, body) = post_ops(&c, &base, &id, &[op]).await;
        assert_eq!((status.as_u16(), body["accepted"].as_u64()), (200, Some(1)));
    }
    for dev in &devices {
        let (_, h) = head(&c, &base, &device_id(dev)).await;
        assert_eq!(h["head"], dev.chain.head().to_string());
    }
    node.shutdown().await.unwrap();
}

/// Bloat through a node: a delegating guest revokes sub-grants it minted until the cap, and an
/// owner revokes a grant for another device. The node refuses what would only grow the chain.
#[tokio::test]
async fn a_node_refuses_revocations_that_only_bloat_the_chain() {
    use latchkey_proto::chain::MAX_ISSUER_REVOCATIONS;
    use latchkey_testkit::T0;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let mut dev = claimed(30);
    let id = device_id(&dev);
    assert_eq!(post_ops(&c, &base, &id, dev.chain.ops()).await.0, 200);
    let (alice, host) = (person(1), person(5));
    let day = 86_400_000;
    let root = dev.grant(&alice, &host.public_key(), &["open"], T0, T0 + day, 1);
    let revocation = |dev: &latchkey_testkit::TestDevice, n: u8| {
        let mut sub = dev.grant(&host, &person(100).public_key(), &["open"], T0, T0 + day, 0);
        sub.body.salt = [n; 16];
        let sub = sub.body.clone().sign(&host).unwrap();
        dev.op(
            OpBody::RevokeGrant {
                chain: vec![root.clone(), sub],
            },
            &[&host],
        )
    };
    for n in 0..MAX_ISSUER_REVOCATIONS as u8 {
        let op = revocation(&dev, n);
        dev.chain.append(op.clone()).unwrap();
        let (status, body) = post_ops(&c, &base, &id, &[op]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = post_ops(&c, &base, &id, &[revocation(&dev, 200)]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_op")
    );

    // A grant for another door, revoked on this one's chain.
    let other = claimed(31);
    let garage = other.grant(&alice, &host.public_key(), &["open"], T0, T0 + day, 0);
    let op = dev.op(
        OpBody::RevokeGrant {
            chain: vec![garage],
        },
        &[&alice],
    );
    let (status, body) = post_ops(&c, &base, &id, &[op]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_op")
    );
    // Nothing of either was stored.
    assert_eq!(get_ops(&c, &base, &id, 0).await.unwrap(), dev.chain.ops());
    node.shutdown().await.unwrap();
}
