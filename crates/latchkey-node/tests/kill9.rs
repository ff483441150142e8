//! kill -9 loops under load (issue 13): the real `latchkey-node` binary takes concurrent op
//! posts and mailbox posts, is killed with SIGKILL at a varying moment once some have been
//! acknowledged, and is restarted on the same database, round after round. After every restart
//! each op and each mailbox message that ever got a 2xx is there; an unacknowledged write that
//! was in flight at the kill may or may not have landed.
//!
//! Bounded: some hundreds of ops and of messages over loopback.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use latchkey_node::admission::SEALED_COMMAND_SIZES;
use latchkey_proto::chain::Chain;
use latchkey_testkit::TestDevice;
use serde_json::Value;

const ROUNDS: usize = 8;
const DEVICES: usize = 32;
/// Amend ops per device after genesis and claim: far more than the rounds post, so every kill
/// lands while op writers still have work.
const AMENDS: usize = 40;
const OP_WRITERS: usize = 6;
/// The first MAILBOXES devices' mailboxes take the message traffic (a device mailbox exists
/// once the node holds the device's chain).
const MAILBOXES: usize = 4;
const MAIL_WRITERS: usize = 6;
/// Messages one mail writer posts at most per round, so the whole test stays well inside the
/// node's mailbox capacity (100,000 live messages) whatever the machine's speed.
const MAIL_PER_WRITER_ROUND: usize = 1_500;

/// Every writer shares 127.0.0.1, so the quotas and rate limits meant for strangers are off.
const ARGS: &[&str] = &[
    "--ops-rate",
    "0",
    "--mailbox-rate",
    "0",
    "--read-rate",
    "0",
    "--mailbox-per-sender",
    "1000000",
    "--mailbox-per-address",
    "1000000",
];

/// What the node acknowledged, over all rounds.
#[derive(Default)]
struct Acked {
    /// The highest acknowledged seq per device.
    seqs: Vec<Option<u64>>,
    /// Acknowledged messages: mailbox index → id → body.
    messages: Vec<BTreeMap<u64, Vec<u8>>>,
}

/// Acknowledgements of the current round.
#[derive(Default)]
struct Counts {
    ops: AtomicUsize,
    messages: AtomicUsize,
}

fn chains() -> Vec<TestDevice> {
    (0..DEVICES)
        .map(|i| {
            let mut dev = claimed(500 + i as u64);
            for k in 0..AMENDS {
                let op = amend(&dev, 2 + (k % 5) as u64);
                dev.chain.append(op).unwrap();
            }
            dev
        })
        .collect()
}

/// A client with a short timeout: after the kill every request fails at once (connection
/// refused), and none hangs the test.
fn writer_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A pseudo-random number from the clock: each run kills at other moments; the seed is
/// printed so a failing run can be told apart.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // splitmix64's finaliser spreads the low bits.
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Posts each device's remaining ops one request at a time (genesis and claim together),
/// OP_WRITERS devices at once; stops at the first failed request (the node was killed).
fn op_writers(
    url: &str,
    devices: &Arc<Vec<TestDevice>>,
    acked: &Arc<Mutex<Acked>>,
    counts: &Arc<Counts>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..OP_WRITERS)
        .map(|w| {
            let (url, devices, acked, counts) = (
                url.to_owned(),
                devices.clone(),
                acked.clone(),
                counts.clone(),
            );
            tokio::spawn(async move {
                let c = writer_client();
                for d in (w..DEVICES).step_by(OP_WRITERS) {
                    let dev = &devices[d];
                    let ops = dev.chain.ops();
                    let mut i = acked.lock().unwrap().seqs[d].map_or(0, |s| s as usize + 1);
                    while i < ops.len() {
                        let batch = if i == 0 { &ops[0..2] } else { &ops[i..i + 1] };
                        let resp = c
                            .post(format!("{url}/v1/devices/{}/ops", dev.chain.device()))
                            .body(list(batch))
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().is_success() => {
                                acked.lock().unwrap().seqs[d] = Some(batch.last().unwrap().seq);
                                counts.ops.fetch_add(batch.len(), Ordering::SeqCst);
                                i += batch.len();
                            }
                            Ok(r) => panic!("op post answered {}", r.status()),
                            Err(_) => return,
                        }
                    }
                }
            })
        })
        .collect()
}

/// A sealed-command-sized body (a device mailbox looks at sizes only) naming its round,
/// writer and number, so every message is told apart.
fn message_body(round: usize, writer: usize, n: usize) -> Vec<u8> {
    let mut body = vec![0x5a; SEALED_COMMAND_SIZES[0]];
    body[..4].copy_from_slice(&(round as u32).to_le_bytes());
    body[4..8].copy_from_slice(&(writer as u32).to_le_bytes());
    body[8..16].copy_from_slice(&(n as u64).to_le_bytes());
    body
}

fn mailbox_hex(dev: &TestDevice) -> String {
    hex::encode(dev.chain.device().0)
}

/// Posts messages round-robin over the MAILBOXES device mailboxes, MAIL_WRITERS at once, until
/// a request fails (the node was killed) or the round's share is posted.
fn mail_writers(
    url: &str,
    round: usize,
    devices: &Arc<Vec<TestDevice>>,
    acked: &Arc<Mutex<Acked>>,
    counts: &Arc<Counts>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..MAIL_WRITERS)
        .map(|w| {
            let (url, devices, acked, counts) = (
                url.to_owned(),
                devices.clone(),
                acked.clone(),
                counts.clone(),
            );
            tokio::spawn(async move {
                let c = writer_client();
                for n in 0..MAIL_PER_WRITER_ROUND {
                    let m = (w + n) % MAILBOXES;
                    let body = message_body(round, w, n);
                    let resp = c
                        .post(format!("{url}/v1/mailboxes/{}", mailbox_hex(&devices[m])))
                        .header("x-latchkey-ttl-secs", "3600")
                        .body(body.clone())
                        .send()
                        .await;
                    let r = match resp {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    let status = r.status();
                    // The body may be cut off by the kill: then it was not an acknowledgement.
                    let Ok(answer) = r.json::<Value>().await else {
                        return;
                    };
                    assert!(
                        status.is_success(),
                        "mailbox post answered {status}: {answer}"
                    );
                    let id = answer["id"].as_u64().expect("a posted message's id");
                    let previous = acked.lock().unwrap().messages[m].insert(id, body);
                    assert!(previous.is_none(), "id {id} acknowledged twice");
                    counts.messages.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect()
}

/// Every message of a mailbox, read page by page: id → body.
async fn read_mailbox(c: &reqwest::Client, url: &str, mailbox: &str) -> BTreeMap<u64, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut after = 0;
    loop {
        let (status, page) = get_json(
            c,
            &format!("{url}/v1/mailboxes/{mailbox}?after={after}&limit=64"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        if messages.is_empty() {
            return all;
        }
        for m in messages {
            let id = m["id"].as_u64().unwrap();
            assert!(id > after, "ids grow within a mailbox");
            let body = data_encoding::BASE64
                .decode(m["body"].as_str().unwrap().as_bytes())
                .unwrap();
            all.insert(id, body);
            after = id;
        }
    }
}

/// Checks that everything acknowledged so far is on the node at `url`. Ops that landed
/// unacknowledged (in flight at the kill) are taken as acknowledged from here on, so the
/// writers resume after them.
async fn check_all_present(url: &str, round: usize, devices: &[TestDevice], acked: &Mutex<Acked>) {
    let c = client();
    let seqs = acked.lock().unwrap().seqs.clone();
    for (d, dev) in devices.iter().enumerate() {
        let Some(seq) = seqs[d] else { continue };
        let stored = get_ops(&c, url, &dev.chain.device(), 0)
            .await
            .unwrap_or_else(|s| panic!("round {round}: device {d} lost ({s})"));
        assert!(
            stored.len() as u64 > seq,
            "round {round}: device {d} acknowledged up to seq {seq}, holds {} ops",
            stored.len()
        );
        assert_eq!(stored[..=seq as usize], dev.chain.ops()[..=seq as usize]);
        Chain::verify(stored.clone()).unwrap();
        acked.lock().unwrap().seqs[d] = Some(stored.len() as u64 - 1);
    }
    for (m, dev) in devices.iter().take(MAILBOXES).enumerate() {
        let stored = read_mailbox(&c, url, &mailbox_hex(dev)).await;
        let acked = acked.lock().unwrap();
        for (id, body) in &acked.messages[m] {
            assert_eq!(
                stored.get(id),
                Some(body),
                "round {round}: mailbox {m} acknowledged message {id}, which is not there"
            );
        }
    }
}

/// Waits until this round's acknowledgements reach the kill point.
async fn wait_for(counts: &Counts, ops: usize, messages: usize) {
    let started = Instant::now();
    while counts.ops.load(Ordering::SeqCst) < ops
        || counts.messages.load(Ordering::SeqCst) < messages
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "posting is too slow: {} ops, {} messages acknowledged",
            counts.ops.load(Ordering::SeqCst),
            counts.messages.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn spawn(db: &Path) -> NodeBinary {
    NodeBinary::spawn(db, ARGS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_ops_and_messages_survive_kill9_loops() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let devices = Arc::new(chains());
    let acked = Arc::new(Mutex::new(Acked {
        seqs: vec![None; DEVICES],
        messages: vec![BTreeMap::new(); MAILBOXES],
    }));
    let seed = clock_seed();
    eprintln!("kill9: seed {seed:#x}");

    let mut node = spawn(&db);
    // The mailbox devices first, so their mailboxes exist before the mail writers start.
    let c = client();
    for (d, dev) in devices.iter().enumerate().take(MAILBOXES) {
        let (status, body) =
            post_ops(&c, &node.url, &dev.chain.device(), &dev.chain.ops()[..2]).await;
        assert_eq!(status, 200, "{body}");
        acked.lock().unwrap().seqs[d] = Some(1);
    }
    let (mut total_ops, mut total_messages) = (2 * MAILBOXES, 0);

    for round in 0..ROUNDS {
        let counts = Arc::new(Counts::default());
        let mut writers = op_writers(&node.url, &devices, &acked, &counts);
        writers.extend(mail_writers(&node.url, round, &devices, &acked, &counts));
        // The kill point varies: after 40 to 119 acknowledged ops and at least one message,
        // then up to 15 ms more of load.
        let r = seed.rotate_left(13 * round as u32);
        wait_for(&counts, 40 + (r % 80) as usize, 1).await;
        tokio::time::sleep(Duration::from_millis((r >> 8) % 16)).await;
        node.kill9();
        for w in writers {
            w.await.unwrap();
        }
        let (ops, messages) = (
            counts.ops.load(Ordering::SeqCst),
            counts.messages.load(Ordering::SeqCst),
        );
        eprintln!("kill9: round {round}: killed after {ops} acknowledged ops, {messages} messages");
        let last = (AMENDS + 1) as u64;
        assert!(
            acked.lock().unwrap().seqs.iter().any(|s| *s != Some(last)),
            "round {round}: the op writers had finished before the kill"
        );
        total_ops += ops;
        total_messages += messages;

        // Restart on the same database: everything acknowledged in this and earlier rounds is
        // there. The restarted node carries the next round's load.
        node = spawn(&db);
        check_all_present(&node.url, round, &devices, &acked).await;
    }
    drop(node);
    eprintln!(
        "kill9: {ROUNDS} rounds, {total_ops} acknowledged ops, {total_messages} acknowledged \
         mailbox messages, all present after restart"
    );
}
