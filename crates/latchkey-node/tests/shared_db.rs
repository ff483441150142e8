//! Two real `latchkey-node` processes on ONE PostgreSQL database: the stateless front ends of
//! issue 13 ("an op posted to one is read from the other; a race for the same seq produces
//! exactly one winner and fork evidence"). Always PostgreSQL, whatever
//! `LATCHKEY_NODE_TEST_DB` says: sharing a database is what only that backend offers.
//!
//! Every test here fails if the two processes had a database each (the other node would never
//! hear of the chain, the message or the feed entries), and the cache and long-poll tests fail
//! if the processes did not tell each other of their commits (LISTEN/NOTIFY).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use latchkey_proto::chain::Op;
use latchkey_proto::codec::Codec;
use latchkey_testkit::TestDevice;
use reqwest::StatusCode;
use serde_json::Value;

/// One node process; killed when dropped, so a failing test leaves none behind.
type Node = NodeBinary;

/// Rate limits off: every client of these tests is 127.0.0.1.
const ARGS: &[&str] = &["--ops-rate", "0", "--read-rate", "0", "--mailbox-rate", "0"];

/// Two node processes on a fresh database of this binary's cluster. Both start at once, so
/// they also race to migrate the empty database (one waits for the other's migration lock).
fn pair(dir: &tempfile::TempDir) -> (Node, Node) {
    let url = cluster().url(&pg_name(&dir.path().join("shared.db")));
    let (a, b) = (
        NodeBinary::launch(&url, ARGS),
        NodeBinary::launch(&url, ARGS),
    );
    (NodeBinary::ready(a), NodeBinary::ready(b))
}

/// A gauge or counter from a node's `/metrics`.
async fn metric(c: &reqwest::Client, node: &Node, name: &str) -> u64 {
    let text = c
        .get(format!("{}/metrics", node.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn b64(v: &Value) -> Vec<u8> {
    data_encoding::BASE64
        .decode(v.as_str().unwrap().as_bytes())
        .unwrap()
}

/// Long enough for a NOTIFY to cross between processes on a loaded machine; only a change
/// that never arrives runs into it.
const PATIENCE: Duration = Duration::from_secs(10);

/// Waits until `node` serves exactly `ops` as the device's chain.
async fn serves(c: &reqwest::Client, node: &Node, dev: &TestDevice, ops: &[Op]) -> bool {
    let id = device_id(dev);
    eventually(PATIENCE, || async {
        get_ops(c, &node.url, &id, 0).await.as_deref() == Ok(ops)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_posted_to_one_node_is_read_from_the_other_even_when_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&dir);
    let c = client();
    let mut dev = claimed(1);
    let id = device_id(&dev);
    assert_eq!(
        get_ops(&c, &b.url, &id, 0).await,
        Err(StatusCode::NOT_FOUND)
    );

    let (status, body) = post_ops(&c, &a.url, &id, dev.chain.ops()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        serves(&c, &b, &dev, dev.chain.ops()).await,
        "B never served the chain posted to A"
    );
    // B now holds the chain at version 1 in its cache.
    let (_, h) = head(&c, &b.url, &id).await;
    assert_eq!(h["seq"], 1);

    // A moves the chain on: B's cached copy is out of date and must be dropped.
    let op = amend(&dev, 2);
    let (status, body) = post_ops(&c, &a.url, &id, std::slice::from_ref(&op)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    dev.chain.append(op).unwrap();
    assert!(
        serves(&c, &b, &dev, dev.chain.ops()).await,
        "B kept serving its cached, older chain"
    );
    assert_eq!(head(&c, &b.url, &id).await.1, head(&c, &a.url, &id).await.1);

    // And the other way round: A has the chain cached too.
    let op = amend(&dev, 3);
    let (status, body) = post_ops(&c, &b.url, &id, std::slice::from_ref(&op)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    dev.chain.append(op).unwrap();
    assert!(
        serves(&c, &a, &dev, dev.chain.ops()).await,
        "A kept serving its cached, older chain"
    );
    let (_, h) = head(&c, &a.url, &id).await;
    assert_eq!(h["seq"], 3);
}

/// Devices raced for at once in [`a_race_for_one_seq_has_one_winner_and_evidence_on_both`].
const RACES: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_race_for_one_seq_has_one_winner_and_evidence_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&dir);
    let c = client();
    let devices: Vec<TestDevice> = (0..RACES).map(|i| claimed(100 + i)).collect();
    for dev in &devices {
        let (status, body) = post_ops(&c, &a.url, &device_id(dev), dev.chain.ops()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Both nodes hold every chain cached at the same version, so each race is decided in the
    // database, not by one node having seen the other's op first.
    for dev in &devices {
        assert!(serves(&c, &b, dev, dev.chain.ops()).await);
    }

    // Two different valid ops for seq 2 of every device, one to each node, all at once; which
    // node gets which alternates, so neither is always the one holding the first-posted op.
    let mut races = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        let (to_a, to_b) = if i % 2 == 0 {
            (amend(dev, 2), amend(dev, 3))
        } else {
            (amend(dev, 3), amend(dev, 2))
        };
        let (c, url_a, url_b, id) = (c.clone(), a.url.clone(), b.url.clone(), device_id(dev));
        races.push(tokio::spawn(async move {
            let (on_a, on_b) = tokio::join!(
                post_ops(&c, &url_a, &id, std::slice::from_ref(&to_a)),
                post_ops(&c, &url_b, &id, std::slice::from_ref(&to_b)),
            );
            (to_a, on_a, to_b, on_b)
        }));
    }

    let mut won_on_a = 0;
    for (dev, race) in devices.iter().zip(races) {
        let id = device_id(dev);
        let (to_a, (status_a, body_a), to_b, (status_b, body_b)) = race.await.unwrap();
        let (winner, loser, loser_body) = match (status_a, status_b) {
            (StatusCode::OK, StatusCode::CONFLICT) => {
                won_on_a += 1;
                (to_a, to_b, body_b)
            }
            (StatusCode::CONFLICT, StatusCode::OK) => (to_b, to_a, body_a),
            _ => panic!(
                "{id}: want one 200 and one 409, got A {status_a} {body_a}, B {status_b} {body_b}"
            ),
        };
        assert_eq!(code(&loser_body), "fork", "{loser_body}");

        // Both serve the winner's chain.
        let mut want = dev.chain.ops().to_vec();
        want.push(winner.clone());
        assert_eq!(get_ops(&c, &a.url, &id, 0).await.unwrap(), want, "A, {id}");
        assert_eq!(get_ops(&c, &b.url, &id, 0).await.unwrap(), want, "B, {id}");
        // The heads agree once the winner's node hears of the evidence the loser's stored
        // (its cached fork count is dropped by the NOTIFY).
        let (_, head_a) = head(&c, &a.url, &id).await;
        assert_eq!(head_a["head"], winner.id().to_string());
        let heads_agree = eventually(PATIENCE, || async {
            let (head_a, head_b) = (head(&c, &a.url, &id).await.1, head(&c, &b.url, &id).await.1);
            head_a == head_b && head_a["forks"] == 1
        })
        .await;
        assert!(
            heads_agree,
            "{id}: A {head_a}, B {}",
            head(&c, &b.url, &id).await.1
        );

        // Both show the loser's op as fork evidence against the winner's.
        for node in [&a, &b] {
            let (status, forks) =
                get_json(&c, &format!("{}/v1/devices/{id}/forks", node.url)).await;
            assert_eq!(status, StatusCode::OK);
            let forks = forks["forks"].as_array().unwrap();
            assert_eq!(forks.len(), 1, "{} {id}: {forks:?}", node.url);
            assert_eq!(forks[0]["seq"], 2);
            assert_eq!(Op::from_bytes(&b64(&forks[0]["ours"])).unwrap(), winner);
            assert_eq!(Op::from_bytes(&b64(&forks[0]["theirs"])).unwrap(), loser);
        }
    }
    // How often the losing node's write found the version moved under it (rather than seeing
    // the winner's op before it wrote): shows the races were real.
    let stale = metric(&c, &a, "latchkey_stale_writes_total").await
        + metric(&c, &b, "latchkey_stale_writes_total").await;
    eprintln!("{RACES} races: {won_on_a} won on A; {stale} lost at the version check");
}

fn bodies(page: &Value) -> Vec<Vec<u8>> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| b64(&m["body"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_wakes_for_a_post_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&dir);
    let c = client();
    // The poll asks to wait 30 s, the most a node allows; this client gives up after 20 s. A
    // poll that was not woken would answer only after 30 s, too late: the test fails on it.
    let poller = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mailbox = hex::encode([0x5a; 32]);
    let mut after = 0;
    // A few rounds, each with the poll already waiting on B when A takes the message.
    for round in 1..=3u8 {
        let waiter = {
            let url = format!(
                "{}/v1/mailboxes/{mailbox}?after={after}&wait_secs=30",
                b.url
            );
            let poller = poller.clone();
            tokio::spawn(async move {
                let resp = poller.get(url).send().await?;
                let status = resp.status();
                Ok::<_, reqwest::Error>((status, resp.json::<Value>().await?))
            })
        };
        assert!(
            eventually(PATIENCE, || async {
                metric(&c, &b, "latchkey_long_polls").await == 1
            })
            .await,
            "B never held the long poll"
        );
        // Let the poll look once (finding nothing) before the message exists.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "nothing to read yet: the poll waits");

        let body = reply_body(round, 0);
        let (status, posted) = post_mailbox(&c, &a.url, &mailbox, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{posted}");
        let (status, page) = waiter
            .await
            .unwrap()
            .expect("B's poll is woken by A's post, long before the poll's own 30 s");
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(bodies(&page), vec![body], "round {round}");
        assert_eq!(page["next"], posted["id"]);
        after = posted["id"].as_u64().unwrap();
    }
}

/// Every entry of a node's op feed: `(cursor, device, op bytes)`.
async fn whole_feed(c: &reqwest::Client, node: &Node) -> Vec<(u64, String, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) =
            get_json(c, &format!("{}/v1/feed?after={after}&limit=50", node.url)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let rows = page["entries"].as_array().unwrap();
        if rows.is_empty() {
            return entries;
        }
        for e in rows {
            entries.push((
                e["cursor"].as_u64().unwrap(),
                e["device"].as_str().unwrap().to_owned(),
                b64(&e["op"]),
            ));
        }
        after = page["next"].as_u64().unwrap();
    }
}

/// Devices written through each node at once in [`both_nodes_serve_one_feed`].
const FEED_DEVICES: u64 = 6;
/// Amend ops per device after genesis and claim.
const FEED_AMENDS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_nodes_serve_one_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&dir);
    let c = client();
    // Writers on both nodes at once, one op per post, so commits of the two processes
    // interleave in the feed.
    let mut devices = Vec::new();
    let mut writers = Vec::new();
    for i in 0..2 * FEED_DEVICES {
        let mut dev = claimed(200 + i);
        for k in 0..FEED_AMENDS {
            let op = amend(&dev, 2 + k % 3);
            dev.chain.append(op).unwrap();
        }
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let (c, url, ops, id) = (
            c.clone(),
            url.clone(),
            dev.chain.ops().to_vec(),
            device_id(&dev),
        );
        writers.push(tokio::spawn(async move {
            let (status, body) = post_ops(&c, &url, &id, &ops[..2]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            for op in &ops[2..] {
                let (status, body) = post_ops(&c, &url, &id, std::slice::from_ref(op)).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        }));
        devices.push(dev);
    }
    for w in writers {
        w.await.unwrap();
    }

    let from_a = whole_feed(&c, &a).await;
    let from_b = whole_feed(&c, &b).await;
    assert_eq!(from_a, from_b, "the two nodes' feeds differ");
    // It is every op written through either node, once, in increasing cursors, each device's
    // ops in seq order.
    let want: BTreeSet<(String, Vec<u8>)> = devices
        .iter()
        .flat_map(|dev| {
            let id = device_id(dev).to_string();
            dev.chain
                .ops()
                .iter()
                .map(move |op| (id.clone(), op.to_bytes()))
        })
        .collect();
    let got: BTreeSet<(String, Vec<u8>)> = from_a
        .iter()
        .map(|(_, device, bytes)| (device.clone(), bytes.clone()))
        .collect();
    assert_eq!(from_a.len(), want.len(), "an entry is missing or doubled");
    assert_eq!(got, want);
    assert!(from_a.windows(2).all(|w| w[0].0 < w[1].0), "cursors grow");
    for dev in &devices {
        let id = device_id(dev).to_string();
        let seqs: Vec<u64> = from_a
            .iter()
            .filter(|(_, device, _)| *device == id)
            .map(|(_, _, bytes)| Op::from_bytes(bytes).unwrap().seq)
            .collect();
        assert_eq!(seqs, (0..=FEED_AMENDS + 1).collect::<Vec<_>>(), "{id}");
    }
}
