//! `Profile::consent_approve` for docs/BENCHMARKS.md, next to the steps it is made of done by
//! hand with the same libraries, in the same run:
//!
//! ```text
//! cargo run --release -p latchkey-owner --example consent_bench
//! ```
//!
//! Three registry nodes and a meter device (stream p1) run in this process on loopback (real
//! HTTP, real SQLite files); the recovery phrase is held in memory (the CLI and the app use the
//! OS keychain, one D-Bus round trip per key derivation). Each approval is a fresh provider
//! request, so the log grows by one entry per approval (and by one per raw round).
//!
//! Rows: the whole call; then, by hand: the ownership check on a quorum of nodes, the consent
//! log fetched from them and verified, the next entry signed and checked, the entry posted to
//! every node (stored durably on a majority), the `latchkey.consent` command sealed, sent
//! directly to the device and its signed answer opened (the device stores the entry and its
//! key state durably before it answers); and an Ed25519 signature alone.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_nodes, MemorySeeds};
use latchkey_owner::{ClaimSource, Profile, SystemClock};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, Outcome, ReplyTo};
use latchkey_proto::consent::{
    purpose, ConsentAction, ConsentRequest, ProviderIdentity, SignedConsentRequest, CONSENT_ACTION,
};
use latchkey_proto::envelope::seal_command;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, SigningKey};
use rand_core::{OsRng, RngCore};

const ROUNDS: usize = 30;

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let pick = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "| {label} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        samples.len(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
    pick(0.5)
}

fn request(key: &SigningKey, kem: &KemSecretKey, device: DeviceId) -> SignedConsentRequest {
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    ConsentRequest {
        provider: ProviderIdentity {
            name: "Acme Energy".into(),
            url: "https://acme.example".into(),
            signing: key.public_key(),
            kem: kem.public().clone(),
        },
        device,
        stream: "p1".into(),
        purpose_code: purpose::INSIGHTS,
        purpose: "Monthly savings report".into(),
        retention_days: 30,
        until_ms: None,
        history: false,
        terms: None,
        issued_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        nonce,
    }
    .sign(key)
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let profile = Profile::at(
        &tmp.path().join("owner"),
        Arc::new(MemorySeeds::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    profile.create_seed().unwrap();
    profile.add_nodes(&urls).unwrap();
    let broker = common::Mosquitto::start();
    let dir = tmp.path().join("meter");
    let claim = common::init_meter(
        dir.clone(),
        "Meter",
        common::free_addr(),
        &urls,
        &broker.url(),
    );
    let agent = latchkey_device::agent::start(&dir).await.unwrap();
    let device = profile
        .claim(ClaimSource::Text(&claim.claim_text), None)
        .await
        .unwrap()
        .device;
    let quorum = profile.quorum().unwrap();
    let me = profile.identity().unwrap();
    let provider = SigningKey::generate(&mut OsRng);
    let provider_kem = KemSecretKey::generate(&mut OsRng);
    let http = reqwest::Client::new();

    let (mut whole, mut check, mut fetch, mut build, mut post, mut send, mut sign) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..ROUNDS {
        // The owner core.
        let link = request(&provider, &provider_kem, device).to_link();
        let started = Instant::now();
        let view = profile.consent_approve(&link).await.unwrap();
        whole.push(started.elapsed());
        assert_eq!(view.delivery, "delivered", "{:?}", view.delivery_note);

        // The same steps by hand.
        let started = Instant::now();
        let checked = quorum.check(&device, None, 0, &mut OsRng).await.unwrap();
        check.push(started.elapsed());
        let chain = checked.chain;
        let started = Instant::now();
        let log = quorum.consent_log(&chain).await.unwrap().log;
        fetch.push(started.elapsed());
        let req = request(&provider, &provider_kem, device);
        let started = Instant::now();
        let entry = log
            .next_entry(
                &chain,
                &me,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                ConsentAction::Given(req),
            )
            .unwrap();
        build.push(started.elapsed());
        let started = Instant::now();
        quorum.post_consent(&entry).await.unwrap();
        post.push(started.elapsed());
        let state = chain.state();
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let started = Instant::now();
        let signed = Command {
            device,
            sender: me.public_key(),
            action: CONSENT_ACTION.into(),
            args: entry.to_bytes(),
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            nonce,
            challenge: None,
            grants: Vec::new(),
            reply_to: ReplyTo::Direct,
        }
        .sign(&me)
        .unwrap();
        let (envelope, pending) = seal_command(&signed, &state.kem, &mut OsRng).unwrap();
        let body = http
            .post(format!("http://{}/v1/command", agent.addr()))
            .body(envelope)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let answer = pending.open(&body, &state.identity).unwrap();
        send.push(started.elapsed());
        assert!(
            matches!(answer.response.outcome, Outcome::Accepted),
            "{:?}",
            answer.response.outcome
        );
        let started = Instant::now();
        me.sign(&entry.to_bytes());
        sign.push(started.elapsed());
    }
    println!("| what | n | p50 | p99 | mean |");
    println!("|---|---|---|---|---|");
    let total = summary(
        "`Profile::consent_approve` (link → entry on the nodes → device accepted)",
        whole,
    );
    let parts = [
        summary("raw: ownership check on a quorum of nodes", check),
        summary("raw: consent log fetched from a quorum and verified", fetch),
        summary("raw: next entry signed and checked", build),
        summary("raw: entry posted to 3 nodes (stored durably on 2+)", post),
        summary(
            "raw: latchkey.consent sealed → POST → signed answer opened (device stores durably)",
            send,
        ),
    ];
    summary("raw: one Ed25519 signature", sign);
    let sum: Duration = parts.iter().sum();
    println!(
        "\nsum of the raw steps' medians {:.2} ms; the whole call's median {:.2} ms ({:.2}×)",
        sum.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        total.as_secs_f64() / sum.as_secs_f64()
    );
    agent.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
