//! Consent log throughput of one node on loopback (figures in docs/BENCHMARKS.md, "Consent
//! logs"): durable entry posts per second (each verified with `ConsentLog::check_next` against
//! the node's verified chain and stored log, then one `synchronous=FULL` transaction), reads of
//! a 100-entry log per second, and beside them the raw costs in the same run: verifying the
//! 100-entry log (`ConsentLog::verify`, what every reader does), checking one entry, and a
//! sequential `synchronous=FULL` SQLite transaction of one entry-sized row.
//!
//! ```sh
//! cargo run --release -p latchkey-node --example consent_bench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_node::{Limits, NodeConfig};
use latchkey_proto::chain::{Chain, OpList};
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{
    ConsentAction, ConsentEntry, ConsentList, ConsentLog, ConsentRequest, ProviderIdentity,
};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::{person, rng, TestDevice, T0};

const ENTRIES: usize = 100;
/// Devices whose logs are posted at once in the concurrent run.
const DEVICES: usize = 16;
const READERS: usize = 16;
const READ_SECS: u64 = 3;

/// A 100-entry log for a claimed device: consents given, every third one revoked.
fn build_log(seed: u64) -> (Chain, Vec<ConsentEntry>) {
    let mut dev = TestDevice::new(seed, "meter");
    dev.claim(&[&person(1)], 1);
    let provider = SigningKey::generate(&mut rng(seed + 1));
    let kem = KemSecretKey::generate(&mut rng(seed + 2));
    let mut log = ConsentLog::new(&dev.chain);
    let mut given = Vec::new();
    let mut n = 0u64;
    while log.len() < ENTRIES {
        let t = T0 + log.len() as u64 * 1000;
        let action = if log.len() % 3 == 2 {
            ConsentAction::Revoked(given.pop().expect("one given before"))
        } else {
            n += 1;
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&n.to_be_bytes());
            let request = ConsentRequest {
                provider: ProviderIdentity {
                    name: "Insights".into(),
                    url: "https://insights.example".into(),
                    signing: provider.public_key(),
                    kem: kem.public().clone(),
                },
                device: dev.chain.device(),
                stream: "p1".into(),
                purpose_code: latchkey_proto::consent::purpose::INSIGHTS,
                purpose: "Monthly energy advice from your meter readings".into(),
                retention_days: 30,
                until_ms: None,
                history: false,
                terms: None,
                issued_ms: T0,
                nonce,
            }
            .sign(&provider)
            .unwrap();
            given.push(request.id());
            ConsentAction::Given(request)
        };
        let entry = log.next_entry(&dev.chain, &person(1), t, action).unwrap();
        log.append(&dev.chain, entry).unwrap();
    }
    (dev.chain.clone(), log.entries().to_vec())
}

async fn post(c: &reqwest::Client, base: &str, chain: &Chain, entries: &[ConsentEntry]) {
    let device = chain.device();
    let resp = c
        .post(format!("{base}/v1/devices/{device}/ops"))
        .body(OpList(chain.ops().to_vec()).to_bytes())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    for e in entries {
        let resp = c
            .post(format!("{base}/v1/devices/{device}/consents"))
            .body(e.to_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let node = latchkey_node::start(NodeConfig {
        limits: Limits::without_rate_limits(),
        ..NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("node.db"))
    })
    .await
    .unwrap();
    let base = node.url();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    let logs: Vec<(Chain, Vec<ConsentEntry>)> = (0..=DEVICES as u64)
        .map(|i| build_log(7000 + i * 10))
        .collect();
    let bytes: usize = logs[0].1.iter().map(|e| e.to_bytes().len()).sum();
    println!(
        "log: {ENTRIES} entries, {bytes} bytes ({} per entry)",
        bytes / ENTRIES
    );

    // One device, one entry at a time (a log grows one entry after the other).
    let (chain, entries) = &logs[0];
    let start = Instant::now();
    post(&c, &base, chain, entries).await;
    let seq = start.elapsed();
    println!(
        "sequential posts, one device: {:.0} entries/s ({:.2} ms each)",
        per_sec(ENTRIES, seq),
        seq.as_secs_f64() * 1000.0 / ENTRIES as f64
    );

    // Sixteen devices at once: the node overlaps one device's verification with another's fsync.
    let start = Instant::now();
    let tasks: Vec<_> = logs[1..]
        .iter()
        .map(|(chain, entries)| {
            let (c, base, chain, entries) =
                (c.clone(), base.clone(), chain.clone(), entries.clone());
            tokio::spawn(async move { post(&c, &base, &chain, &entries).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let conc = start.elapsed();
    println!(
        "concurrent posts, {DEVICES} devices: {:.0} entries/s",
        per_sec(DEVICES * ENTRIES, conc)
    );

    // Reads of the whole 100-entry log.
    let device = chain.device();
    let url = Arc::new(format!("{base}/v1/devices/{device}/consents?from=1"));
    let until = Instant::now() + Duration::from_secs(READ_SECS);
    let tasks: Vec<_> = (0..READERS)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < until {
                    let body = c
                        .get(url.as_str())
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    assert!(body.len() > bytes);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut reads = 0;
    for t in tasks {
        reads += t.await.unwrap();
    }
    println!(
        "log reads over HTTP ({READERS} readers): {:.0} reads/s",
        reads as f64 / READ_SECS as f64
    );
    node.shutdown().await.unwrap();

    // The raw costs, same machine, same run, one core.
    let served = ConsentList(entries.clone()).to_bytes();
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        let list = ConsentList::from_bytes(&served).unwrap();
        ConsentLog::verify(chain, list.0).unwrap();
    }
    let verify = start.elapsed() / rounds;
    println!(
        "raw: decode + ConsentLog::verify of the 100-entry log: {:.2} ms ({:.0} logs/s)",
        verify.as_secs_f64() * 1000.0,
        1.0 / verify.as_secs_f64()
    );
    let prefix = ConsentLog::verify(chain, entries[..ENTRIES - 1].to_vec()).unwrap();
    let last = &entries[ENTRIES - 1];
    let start = Instant::now();
    for _ in 0..1000 {
        prefix.check_next(chain, last).unwrap();
    }
    println!(
        "raw: ConsentLog::check_next of one entry: {:.0} µs",
        start.elapsed().as_secs_f64() * 1e6 / 1000.0
    );

    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL)")
        .unwrap();
    let row = entries[0].to_bytes();
    let start = Instant::now();
    for _ in 0..ENTRIES {
        conn.execute("INSERT INTO t (bytes) VALUES (?1)", [&row])
            .unwrap();
    }
    println!(
        "raw: sequential synchronous=FULL transactions of one entry row: {:.0}/s",
        per_sec(ENTRIES, start.elapsed())
    );
}
