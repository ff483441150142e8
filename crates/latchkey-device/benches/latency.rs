//! Send → signed response latency over loopback HTTP, against the real `latchkeyd` binary
//! (release build) with three in-process registry nodes: p50 and p99 of owner commands sent
//! directly (`POST /v1/command`) and relayed through a node mailbox (post, long-poll the reply).
//! Each sample includes sealing, HTTP, the whole device pipeline with its fsyncs, the `log`
//! actuator, and opening and verifying the response.
//!
//! Run: `cargo bench -p latchkey-device --bench latency`. Figures: docs/BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use latchkey_proto::command::ReplyTo;
use latchkey_testkit::person;
use support::*;

const DIRECT: usize = 500;
const RELAYED: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name:<28} n={:<4} p50={:>8.2?} p99={:>8.2?} mean={:>8.2?} max={:>8.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        mean,
        samples[samples.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that short.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let (direct, relayed) = if quick { (5, 2) } else { (DIRECT, RELAYED) };

    let nodes = Nodes::start(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    init(&dir, &nodes.urls(), &["--action", "unlock=log"]);
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    let sender = Sender::new(person(1), chain.clone());

    // Warm up connections and caches.
    for _ in 0..5 {
        let (env, pending) = sender.seal(sender.command("unlock", b""));
        assert_eq!(code(&sender.send(&agent.url, env, &pending).await), 0);
    }

    let mut samples = Vec::with_capacity(direct);
    for _ in 0..direct {
        let started = Instant::now();
        let (env, pending) = sender.seal(sender.command("unlock", b""));
        let response = sender.send(&agent.url, env, &pending).await;
        samples.push(started.elapsed());
        assert_eq!(code(&response), 0);
    }
    report("direct HTTP (send→response)", samples);

    let http = reqwest::Client::new();
    let node = nodes.urls()[0].clone();
    let device_box = hex::encode(chain.device().0);
    let mut samples = Vec::with_capacity(relayed);
    for i in 0..relayed {
        let mut reply = [0u8; 32];
        reply[..8].copy_from_slice(&(i as u64).to_be_bytes());
        reply[8] = 0xb0;
        let started = Instant::now();
        let mut c = sender.command("unlock", b"");
        c.reply_to = ReplyTo::Mailbox(reply);
        let (env, pending) = sender.seal(c);
        let posted = http
            .post(format!("{node}/v1/mailboxes/{device_box}"))
            .body(env)
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status().as_u16(), 201);
        let page: serde_json::Value = http
            .get(format!(
                "{node}/v1/mailboxes/{}?after=0&wait_secs=20",
                hex::encode(reply)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let body = page["messages"][0]["body"].as_str().expect("a reply");
        let sealed = data_encoding::BASE64.decode(body.as_bytes()).unwrap();
        let response = pending.open(&sealed, &chain.state().identity).unwrap();
        samples.push(started.elapsed());
        assert_eq!(code(&response), 0);
    }
    report("relayed via mailbox", samples);
    drop(agent);
    nodes.stop().await;
}
