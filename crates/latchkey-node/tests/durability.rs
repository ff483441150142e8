//! The real `latchkey-node` binary, killed with SIGKILL while clients post concurrently:
//! every op that got a 2xx must still be there after a restart on the same database.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use latchkey_proto::chain::Chain;
use latchkey_testkit::TestDevice;

const DEVICES: usize = 16;
/// Amend ops per device after genesis and claim.
const AMENDS: usize = 22;
const WRITERS: usize = 8;

fn spawn(db: &Path) -> NodeBinary {
    NodeBinary::spawn(db, &["--ops-rate", "0", "--read-rate", "0"])
}

fn chains() -> Vec<TestDevice> {
    (0..DEVICES)
        .map(|i| {
            let mut dev = claimed(100 + i as u64);
            for k in 0..AMENDS {
                let op = amend(&dev, 2 + (k % 5) as u64);
                dev.chain.append(op).unwrap();
            }
            dev
        })
        .collect()
}

/// Posts every device's ops one request at a time (genesis and claim together), WRITERS
/// devices at once, from `start[d]` on; records the highest acknowledged seq per device.
/// Stops at the first failed request (the node was killed).
async fn post_all(
    url: &str,
    devices: &Arc<Vec<TestDevice>>,
    acked: &Arc<Mutex<Vec<Option<u64>>>>,
    count: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (url, devices, acked, count) = (
                url.to_owned(),
                devices.clone(),
                acked.clone(),
                count.clone(),
            );
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                for d in (w..DEVICES).step_by(WRITERS) {
                    let dev = &devices[d];
                    let ops = dev.chain.ops();
                    let from = acked.lock().unwrap()[d].map_or(0, |s| s as usize + 1);
                    let mut i = from;
                    while i < ops.len() {
                        let batch = if i == 0 { &ops[0..2] } else { &ops[i..i + 1] };
                        let resp = c
                            .post(format!("{url}/v1/devices/{}/ops", dev.chain.device()))
                            .body(list(batch))
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().is_success() => {
                                let seq = batch.last().unwrap().seq;
                                acked.lock().unwrap()[d] = Some(seq);
                                count.fetch_add(1, Ordering::SeqCst);
                                i += batch.len();
                            }
                            Ok(r) => panic!("unexpected answer {}", r.status()),
                            Err(_) => return,
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_ops_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let devices = Arc::new(chains());
    let acked = Arc::new(Mutex::new(vec![None; DEVICES]));
    let total_posts = DEVICES * (AMENDS + 1);

    for round in 0..2 {
        let mut node = spawn(&db);
        let count = Arc::new(AtomicUsize::new(0));
        let writers = post_all(&node.url, &devices, &acked, &count).await;
        // Kill it mid-stream, after a good number of acknowledgements.
        let target = total_posts / 4;
        let started = std::time::Instant::now();
        while count.load(Ordering::SeqCst) < target {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "posting is too slow"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        node.child.kill().unwrap(); // SIGKILL
        node.child.wait().unwrap();
        eprintln!(
            "round {round}: killed after {} acknowledged posts",
            count.load(Ordering::SeqCst)
        );
        for w in writers {
            w.await.unwrap();
        }
        let last = (AMENDS + 1) as u64;
        let all_done = acked.lock().unwrap().iter().all(|a| *a == Some(last));
        assert!(!all_done, "round {round}: killed before the end");

        // Restart on the same database: every acknowledged op is there, and the stored chains
        // still verify from genesis.
        let mut node = spawn(&db);
        let c = client();
        let acked_now = acked.lock().unwrap().clone();
        for (d, dev) in devices.iter().enumerate() {
            let id = dev.chain.device();
            match acked_now[d] {
                None => continue,
                Some(seq) => {
                    let stored = get_ops(&c, &node.url, &id, 0)
                        .await
                        .unwrap_or_else(|s| panic!("round {round}: device {d} lost ({s})"));
                    assert!(
                        stored.len() as u64 > seq,
                        "round {round}: device {d} acknowledged up to {seq}, holds {}",
                        stored.len()
                    );
                    assert_eq!(stored[..=seq as usize], dev.chain.ops()[..=seq as usize]);
                    Chain::verify(stored.clone()).unwrap();
                    // An op in flight at the kill may or may not have landed: count it in.
                    acked.lock().unwrap()[d] = Some(stored.len() as u64 - 1);
                }
            }
        }
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }

    // After both crashes the node takes the rest and ends with every full chain.
    let mut node = spawn(&db);
    let c = client();
    for dev in devices.iter() {
        let (status, body) = post_ops(&c, &node.url, &dev.chain.device(), dev.chain.ops()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["head"], dev.chain.head().to_string());
    }
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}
