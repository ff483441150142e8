//! Owner-side figures for docs/BENCHMARKS.md, through the owner core's own API (what the app and
//! the CLI call), next to the raw cost of what it is built on, in the same run:
//!
//! ```text
//! cargo run --release -p latchkey-owner --example owner_bench
//! ```
//!
//! Five registry nodes and the device agents run in this process on loopback (real HTTP, real
//! SQLite files); the recovery phrase is held in memory here (the app and CLI use the OS
//! keychain, whose cost is a D-Bus round trip per command, measured separately by the e2e test).
//!
//! 1. Claim: `Profile::claim` from the claim text, whole call and "visible on a quorum" (from
//!    publishing until a quorum check sees the claim), against one raw quorum check.
//! 2. Open: `Profile::open` direct and through the nodes' mailboxes, whole call (including the
//!    ownership refresh from a quorum of nodes) and send-to-verified-answer, against a raw
//!    seal → POST → open of the same command with no owner core around it.
//! 3. Revoke: `Profile::revoke`, publishing and handing the op to the device on the LAN.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{start_nodes, MemorySeeds};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_device::agent::RunningAgent;
use latchkey_device::config::Driver;
use latchkey_device::lifecycle::{init, InitOptions};
use latchkey_owner::{ClaimSource, Profile, SystemClock};
use latchkey_proto::command::{Command, ReplyTo};
use latchkey_proto::envelope::seal_command;
use rand_core::{OsRng, RngCore};

const CLAIMS: usize = 20;
const OPENS: usize = 200;
const RELAYED: usize = 50;
const REVOKES: usize = 20;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn device(dir: &Path, name: &str, nodes: &[String]) -> (RunningAgent, String) {
    let report = init(&InitOptions {
        dir: dir.to_path_buf(),
        name: name.into(),
        listen: free_addr(),
        nodes: nodes.to_vec(),
        actions: vec![("unlock".into(), Driver::Log)],
        advertise: vec![],
        mdns: false,
        refresh_secs: Some(1),
        max_view_age_secs: None,
        max_guest_staleness_secs: None,
        max_owner_staleness_secs: None,
        trust_clock: true,
    })
    .unwrap();
    let agent = latchkey_device::agent::start(dir).await.unwrap();
    (agent, report.claim_text.to_string())
}

fn summary(label: &str, mut samples: Vec<Duration>) {
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
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 5).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let profile = Profile::at(
        &tmp.path().join("owner"),
        Arc::new(MemorySeeds::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    profile.create_seed().unwrap();
    profile.add_nodes(&urls).unwrap();
    let quorum = profile.quorum().unwrap();

    println!("| what | n | p50 | p99 | mean |");
    println!("|---|---:|---:|---:|---:|");

    // 1. Claims, each of a new device.
    let (mut whole, mut visible, mut raw_check) = (Vec::new(), Vec::new(), Vec::new());
    let mut kept = None;
    for i in 0..CLAIMS {
        let (agent, text) = device(
            &tmp.path().join(format!("door{i}")),
            &format!("Door {i}"),
            &urls,
        )
        .await;
        let started = Instant::now();
        let report = profile.claim(ClaimSource::Text(&text), None).await.unwrap();
        whole.push(started.elapsed());
        visible.push(Duration::from_millis(report.visible_after_ms));
        let started = Instant::now();
        quorum
            .check(&report.device, None, profile.now_ms(), &mut OsRng)
            .await
            .unwrap();
        raw_check.push(started.elapsed());
        match kept {
            None => kept = Some((agent, report.device)),
            Some(_) => agent.shutdown().await.unwrap(),
        }
    }
    summary(
        "claim: whole `Profile::claim` (fetch keys, check, sign, publish to 5, wait)",
        whole,
    );
    summary("claim: published → visible on a quorum", visible);
    summary(
        "raw: one quorum check (5 nodes, verify from genesis)",
        raw_check,
    );

    // 2. Opens of the first device.
    let (agent, device_id) = kept.unwrap();
    let query = device_id.to_string();
    let record = profile.find_device(&query).unwrap();
    let me = profile.identity().unwrap();
    let http = reqwest::Client::new();
    let (mut whole, mut answer, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..OPENS {
        let started = Instant::now();
        let report = profile.open(&query, "unlock", b"").await.unwrap();
        whole.push(started.elapsed());
        answer.push(Duration::from_millis(report.latency_ms));
        assert!(report.accepted());

        // The same command with nothing around it: seal, POST, open and verify the answer.
        let state = record.chain.state();
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let started = Instant::now();
        let signed = Command {
            device: record.id,
            sender: me.public_key(),
            action: "unlock".into(),
            args: Vec::new(),
            timestamp_ms: profile.now_ms(),
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
        pending.open(&body, &state.identity).unwrap();
        raw.push(started.elapsed());
    }
    let mut derivations = Vec::new();
    for _ in 0..OPENS {
        let started = Instant::now();
        profile.identity().unwrap();
        derivations.push(started.elapsed());
    }
    summary(
        "open direct: whole `Profile::open` (quorum refresh + send + verify)",
        whole,
    );
    summary("open direct: seal → verified answer", answer);
    summary("raw: seal → POST → open the answer, no owner core", raw);
    summary(
        "raw: identity key from the phrase (BIP39 PBKDF2 + SLIP-10), per command",
        derivations,
    );

    // Revocations, each handed to the device on the LAN as well as published (`POST /v1/ops`,
    // or the `/v1/refresh` nudge on a device without it).
    let mut revokes = Vec::new();
    let mut knew = 0;
    for i in 0..REVOKES {
        let issued = profile
            .invite(
                &query,
                &latchkey_owner::InviteRequest {
                    guest_name: format!("Guest {i}"),
                    from_ms: profile.now_ms(),
                    until_ms: profile.now_ms() + 3_600_000,
                    actions: vec!["unlock".into()],
                    arguments: vec![],
                    may_delegate: false,
                    from_grant: None,
                    use_limit: None,
                    schedule: None,
                },
            )
            .await
            .unwrap();
        // The device takes one nudge per 500 ms; a faster series would measure the limit.
        tokio::time::sleep(Duration::from_millis(550)).await;
        let started = Instant::now();
        let report = profile.revoke(&issued.grant.id.to_string()).await.unwrap();
        revokes.push(started.elapsed());
        knew += usize::from(report.door.knows());
    }
    summary(
        &format!("revoke: whole `Profile::revoke` (publish to 5, hand to the door; it knew {knew} of {REVOKES} times)"),
        revokes,
    );

    // Through the mailboxes: forget the device's address.
    profile.set_device_addresses(&query, Vec::new()).unwrap();
    let (mut whole, mut answer) = (Vec::new(), Vec::new());
    for _ in 0..RELAYED {
        let started = Instant::now();
        let report = profile.open(&query, "unlock", b"").await.unwrap();
        whole.push(started.elapsed());
        answer.push(Duration::from_millis(report.latency_ms));
        assert!(report.accepted());
    }
    summary("open relayed: whole `Profile::open`", whole);
    summary(
        "open relayed: seal → verified answer through a node's mailboxes",
        answer,
    );

    agent.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
