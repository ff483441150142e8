//! Registry figures for docs/BENCHMARKS.md, on real `latchkey-node`s (in-process, real SQLite
//! files, real HTTP on loopback), each next to the raw cost of what it is built on:
//!
//! ```text
//! cargo run --release -p latchkey-quorum --example registry_bench
//! ```
//!
//! 1. Durable op writes/s at one node (32 clients posting genesis+claim of distinct devices),
//!    against raw SQLite transactions with `synchronous=FULL` and raw chain verification.
//! 2. Chain reads/s (32 clients reading a 3-op chain), against raw decoding of the same bytes.
//! 3. Quorum check latency p50/p99 for k = 3, 5, 7 of 40 nodes, against one raw HTTP read.
//! 4. Time from publishing an op at one node until all 40 nodes hold it (pull replication,
//!    each node pulling from 3 peers every 100 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::chain::{Chain, OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_quorum::{QuorumClient, QuorumConfig};
use latchkey_testkit::{person, TestDevice, T0};
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 32;

async fn node(dir: &std::path::Path, name: &str, peers: Vec<String>) -> RunningNode {
    let mut config = NodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.join(format!("{name}.db")),
    );
    config.limits = Limits::without_rate_limits();
    config.peers = peers.iter().map(|p| p.parse().unwrap()).collect();
    config.sync_interval = Duration::from_millis(100);
    latchkey_node::start(config).await.unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let alice = person(1);

    // ---- 1. durable writes --------------------------------------------------------------
    const DEVICES: usize = 1000;
    let bodies: Vec<(String, Vec<u8>)> = (0..DEVICES)
        .map(|i| {
            let mut dev = TestDevice::new(10_000 + i as u64, "Door");
            dev.claim(&[&alice], 1);
            (
                dev.chain.device().to_string(),
                OpList(dev.chain.ops().to_vec()).to_bytes(),
            )
        })
        .collect();
    let writer = node(dir.path(), "writes", vec![]).await;
    let http = reqwest::Client::new();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, bodies, next, url) = (http.clone(), bodies.clone(), next.clone(), writer.url());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((device, body)) = bodies.get(i) else {
                    break;
                };
                let resp = http
                    .post(format!("{url}/v1/devices/{device}/ops"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let ops_per_s = (2 * DEVICES) as f64 / elapsed.as_secs_f64();
    let requests_per_s = DEVICES as f64 / elapsed.as_secs_f64();

    // Raw: one SQLite transaction with synchronous=FULL per request, same row shape.
    let raw_db = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    raw_db
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE ops (device BLOB, seq INTEGER, id BLOB, bytes BLOB, PRIMARY KEY (device, seq));",
        )
        .unwrap();
    let mut raw_db = raw_db;
    let n_raw = 300;
    let start = Instant::now();
    for i in 0..n_raw {
        let tx = raw_db.transaction().unwrap();
        for seq in 0..2 {
            tx.execute(
                "INSERT INTO ops VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    (i as u64).to_be_bytes().to_vec(),
                    seq,
                    vec![0u8; 32],
                    vec![7u8; 1400]
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let raw_tx_per_s = n_raw as f64 / start.elapsed().as_secs_f64();
    // Raw: verifying genesis + claim (what the node does per request).
    let sample = OpList::from_bytes(&bodies[0].1).unwrap().0;
    let start = Instant::now();
    for _ in 0..300 {
        Chain::verify(sample.clone()).unwrap();
    }
    let verify_per_s = 300.0 / start.elapsed().as_secs_f64();
    println!("## Durable writes (one node, {CLIENTS} concurrent clients, {DEVICES} devices × genesis+claim)\n");
    println!("| measure | figure |\n|---|---|");
    println!("| requests/s (each one fsync'd transaction of 2 ops) | {requests_per_s:.0} |");
    println!("| ops/s | {ops_per_s:.0} |");
    println!("| raw SQLite: one-request transactions/s (synchronous=FULL, sequential) | {raw_tx_per_s:.0} |");
    println!("| raw verification of genesis+claim, per second (one core) | {verify_per_s:.0} |\n");

    // ---- 2. chain reads -----------------------------------------------------------------
    let reads_for = Duration::from_secs(5);
    let (device, _) = bodies[0].clone();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, count, url, device) =
            (http.clone(), count.clone(), writer.url(), device.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < reads_for {
                let resp = http
                    .get(format!("{url}/v1/devices/{device}/ops"))
                    .send()
                    .await
                    .unwrap();
                let _ = resp.bytes().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reads_per_s =
        count.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let bytes = bodies[0].1.clone();
    let start = Instant::now();
    for _ in 0..10_000 {
        OpList::from_bytes(&bytes).unwrap();
    }
    let decode_per_s = 10_000.0 / start.elapsed().as_secs_f64();
    println!(
        "## Chain reads (one node, {CLIENTS} concurrent clients, 2-op chain, {} bytes)\n",
        bytes.len()
    );
    println!("| measure | figure |\n|---|---|");
    println!("| reads/s over HTTP | {reads_per_s:.0} |");
    println!("| raw decode of the same bytes, per second (one core) | {decode_per_s:.0} |\n");
    writer.shutdown().await.unwrap();

    // ---- 3 and 4. forty nodes -----------------------------------------------------------
    const N: usize = 40;
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..N {
        nodes.push(node(dir.path(), &format!("n{i}"), vec![]).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    // Restart each with 3 peers: the next node on a ring and two random others.
    let mut rng = rand::rngs::StdRng::seed_from_u64(40);
    let mut restarted = Vec::new();
    for (i, n) in nodes.into_iter().enumerate() {
        let addr = n.addr();
        n.shutdown().await.unwrap();
        let mut peers = vec![urls[(i + 1) % N].clone()];
        while peers.len() < 3 {
            let j = rng.gen_range(0..N);
            if j != i && !peers.contains(&urls[j]) {
                peers.push(urls[j].clone());
            }
        }
        let mut config = NodeConfig::new(addr, dir.path().join(format!("n{i}.db")));
        config.limits = Limits::without_rate_limits();
        config.peers = peers.iter().map(|p| p.parse().unwrap()).collect();
        config.sync_interval = Duration::from_millis(100);
        restarted.push(latchkey_node::start(config).await.unwrap());
    }

    let mut dev = TestDevice::new(77, "Door");
    dev.claim(&[&alice], 1);
    let device = dev.chain.device();
    let publisher = QuorumClient::new(
        urls.clone(),
        QuorumConfig {
            publish_to: 1,
            min_acks: 1,
            ..QuorumConfig::default()
        },
    )
    .unwrap();
    publisher
        .publish_to(&device, dev.chain.ops(), &urls[..1])
        .await
        .unwrap();
    // Propagation of the device (genesis+claim), then of one more op.
    let held_by_all = |seq: u64| {
        let http = http.clone();
        let urls = urls.clone();
        let id = device.to_string();
        async move {
            loop {
                let mut all = true;
                for u in &urls {
                    let ok = http
                        .get(format!("{u}/v1/devices/{id}/head"))
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success());
                    let text = match ok {
                        Some(r) => r.text().await.unwrap_or_default(),
                        None => String::new(),
                    };
                    if !text.contains(&format!("\"seq\":{seq}")) {
                        all = false;
                        break;
                    }
                }
                if all {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    held_by_all(1).await;
    let mut propagation = Vec::new();
    for round in 0..5u64 {
        let set = OwnerSet {
            owners: vec![alice.public_key()],
            threshold: 1,
        };
        let mut op = dev.chain.propose(T0 + round, OpBody::AmendOwners(set));
        op.sign(&alice);
        let seq = op.seq;
        let start = Instant::now();
        publisher
            .publish_to(
                &device,
                std::slice::from_ref(&op),
                &urls[round as usize % N..][..1],
            )
            .await
            .unwrap();
        dev.chain.append(op).unwrap();
        held_by_all(seq).await;
        propagation.push(start.elapsed());
    }
    propagation.sort();

    println!("## Quorum checks ({N} nodes on loopback, 3-op chain, 300 checks each, sequential)\n");
    println!("| k | p50 | p99 | raw: one HTTP chain read p50 |\n|---|---|---|---|");
    // Raw: one GET of the chain from one node.
    let mut raw = Vec::new();
    for i in 0..300 {
        let start = Instant::now();
        let r = http
            .get(format!("{}/v1/devices/{device}/ops", urls[i % N]))
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await.unwrap();
        raw.push(start.elapsed());
    }
    raw.sort();
    for k in [3, 5, 7] {
        let client = QuorumClient::new(
            urls.clone(),
            QuorumConfig {
                sample: k,
                min_answers: k,
                ..QuorumConfig::default()
            },
        )
        .unwrap();
        let mut lat = Vec::new();
        for _ in 0..300 {
            let start = Instant::now();
            let view = client.check(&device, None, T0, &mut rng).await.unwrap();
            lat.push(start.elapsed());
            assert!(view.forks.is_empty());
        }
        lat.sort();
        println!(
            "| {k} | {} | {} | {} |",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(percentile(&raw, 0.5))
        );
    }
    println!("\n## Propagation (publish at one node until all {N} hold it; 3 peers each, pulled every 100 ms)\n");
    println!("| runs | min | median | max |\n|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        propagation.len(),
        ms(propagation[0]),
        ms(percentile(&propagation, 0.5)),
        ms(*propagation.last().unwrap())
    );
    for n in restarted {
        n.shutdown().await.unwrap();
    }
}
