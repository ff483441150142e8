//! Issue 15's figures for docs/BENCHMARKS.md ("Open at the speed limit"), in one run:
//!
//! ```text
//! cargo run --release -p latchkey-owner --example open_bench [-- OPENS]
//! ```
//!
//! Five registry nodes (default limits, but mailbox shares lifted: every sender here is
//! 127.0.0.1) and a door (`latchkeyd`'s agent, action `unlock` = `log`) run in this
//! process on loopback: real HTTP, real SQLite files (WAL; the nodes' mailboxes and the door's
//! fsync as in production). An owner and a guest (holding a short-link invitation, redeemed at
//! the door) each open `OPENS` times (default 1,000) through `Profile::open`, the call the app
//! and the CLI make: direct on the LAN address, then relayed through the nodes' mailboxes.
//! The recovery phrase is held in memory (the app reads the OS keychain once per session).
//!
//! Printed, as Markdown rows (p50 / p90 / p99 / mean):
//! 1. whole `Profile::open`, owner and guest, direct and relayed, and the core's own
//!    send → verified-answer time;
//! 2. the stages of a direct owner open, each timed alone in the same run: finding the device
//!    (store read, chain decoded), the session key, sign + seal, POST → device → answer bytes,
//!    open + verify the answer, keeping the answer for the device card;
//! 3. the door's side on one core (the same pipeline the agent runs, over a real SQLite file):
//!    receive → actuator start, the "about to run" entry's fsync, and the signed answer;
//! 4. the primitive floor: seal + open + sign + verify + response (sntrup761 + X25519 + AEAD +
//!    Ed25519) with nothing around it.

#[path = "../tests/common/mod.rs"]
mod common;

use common::MemorySeeds;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_device::audit::Via;
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::config::Driver;
use latchkey_device::lifecycle::{init, InitOptions};
use latchkey_device::pipeline::{Pipeline, PipelineConfig};
use latchkey_device::store::Store;
use latchkey_device::view::View;
use latchkey_owner::{ClaimSource, InviteRequest, Profile, SystemClock};
use latchkey_proto::command::{Command, Outcome, ReplyTo, Response};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::{open_command, seal_command};
use latchkey_testkit::{person, TestDevice};
use rand_core::{OsRng, RngCore};

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends `request` and reads the whole answer.
async fn body_of(request: reqwest::RequestBuilder) -> Vec<u8> {
    let answer = request.send().await.unwrap();
    answer.bytes().await.unwrap().to_vec()
}

fn row(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| {label} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        samples.len(),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(0.99)),
        ms(mean)
    );
}

fn header(title: &str) {
    println!("\n{title}\n");
    println!("| what | n | p50 ms | p90 ms | p99 ms | mean ms |");
    println!("|---|---:|---:|---:|---:|---:|");
}

/// `n` opens of `device` by `profile`, each checked to have gone the expected route: whole
/// call, and the core's send → answer time.
async fn opens(
    profile: &Profile,
    device: &str,
    n: usize,
    relayed: bool,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut whole, mut answer) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let started = Instant::now();
        let report = profile.open(device, "unlock", b"").await.unwrap();
        whole.push(started.elapsed());
        answer.push(Duration::from_millis(report.latency_ms));
        assert!(report.accepted(), "{:?}", report.response.outcome);
        assert_eq!(
            matches!(report.route, latchkey_owner::Route::Relay(_)),
            relayed,
            "{:?}",
            report.route
        );
    }
    (whole, answer)
}

/// Five nodes with the default limits except the mailbox shares: every sender here shares
/// 127.0.0.1, and a relayed command stays live in the door's mailbox for its 120 s TTL, so
/// 1,000 relayed opens in a minute would meet the 64-per-sender share one phone never does.
async fn nodes_for_load(dir: &Path) -> Vec<latchkey_node::RunningNode> {
    let mut nodes = Vec::new();
    for i in 0..5 {
        let mut config = latchkey_node::NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join(format!("node{i}.db")),
        );
        config.limits = latchkey_node::config::Limits {
            mailbox_per_sender: 100_000,
            reply_mailbox_per_sender: 100_000,
            mailbox_per_address: 100_000,
            ..latchkey_node::config::Limits::without_rate_limits()
        };
        nodes.push(latchkey_node::start(config).await.unwrap());
    }
    nodes
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("OPENS is a number"))
        .unwrap_or(1_000);
    let tmp = tempfile::tempdir().unwrap();
    let nodes = nodes_for_load(tmp.path()).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let dir = tmp.path().join("door");
    let claim = init(&InitOptions {
        dir: dir.clone(),
        name: "Door".into(),
        listen: free_addr(),
        nodes: urls.clone(),
        actions: vec![("unlock".into(), Driver::Log)],
        advertise: vec![],
        mdns: false,
        refresh_secs: None,
        max_view_age_secs: None,
        max_guest_staleness_secs: None,
        max_owner_staleness_secs: None,
        trust_clock: true,
    })
    .unwrap();
    let agent = latchkey_device::agent::start(&dir).await.unwrap();
    let owner = Profile::at(
        &tmp.path().join("owner"),
        Arc::new(MemorySeeds::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    owner.create_seed().unwrap();
    owner.add_nodes(&urls).unwrap();
    let device = owner
        .claim(ClaimSource::Text(&claim.claim_text), None)
        .await
        .unwrap()
        .device
        .to_string();
    let issued = owner
        .invite(
            &device,
            &InviteRequest {
                guest_name: "Guest".into(),
                from_ms: owner.now_ms(),
                until_ms: owner.now_ms() + 86_400_000,
                actions: vec!["unlock".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let guest = Profile::at(
        &tmp.path().join("guest"),
        Arc::new(MemorySeeds::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let held = guest.accept(&issued.link).await.unwrap();
    assert!(held.doors.iter().all(|d| d.redeemed));
    // Warm-up: connections, caches, the door's lease.
    opens(&owner, &device, 20, false).await;
    opens(&guest, &device, 20, false).await;

    header(&format!(
        "Opens on loopback (5 nodes, one door; {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    let (whole, answer) = opens(&owner, &device, n, false).await;
    row("owner, direct: whole `Profile::open`", whole);
    row(
        "owner, direct: send → verified answer (whole ms, as the core keeps it)",
        answer,
    );
    let (whole, _) = opens(&guest, &device, n, false).await;
    row("guest, direct: whole `Profile::open`", whole);

    // 2. Stages of a direct owner open, each alone.
    let record = owner.find_device(&device).unwrap();
    let state = record.chain.state();
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/command", agent.addr());
    let health = format!("http://{}/healthz", agent.addr());
    let mut stages: [Vec<Duration>; 9] = Default::default();
    for _ in 0..n {
        // The transport alone: the same client and server, a request that does nothing.
        let t = Instant::now();
        body_of(http.get(&health)).await;
        stages[6].push(t.elapsed());
        // What the app adds per command: a profile opened over the same session.
        let t = Instant::now();
        let again = Profile::with_session(
            &tmp.path().join("owner"),
            Arc::new(MemorySeeds::default()),
            Arc::new(SystemClock),
            owner.session(),
        )
        .unwrap();
        stages[8].push(t.elapsed());
        drop(again);
        let t = Instant::now();
        let found = owner.find_device(&device).unwrap();
        stages[0].push(t.elapsed());
        let t = Instant::now();
        let me = owner.identity().unwrap();
        stages[1].push(t.elapsed());
        let unlock = || Command {
            device: found.id,
            sender: me.public_key(),
            action: "unlock".into(),
            args: Vec::new(),
            timestamp_ms: owner.now_ms(),
            nonce: {
                let mut nonce = [0u8; 16];
                OsRng.fill_bytes(&mut nonce);
                nonce
            },
            challenge: None,
            grants: Vec::new(),
            reply_to: ReplyTo::Direct,
        };
        let command = unlock();
        let t = Instant::now();
        let signed = command.sign(&me).unwrap();
        let (envelope, pending) = seal_command(&signed, &state.kem, &mut OsRng).unwrap();
        stages[2].push(t.elapsed());
        let t = Instant::now();
        let body = body_of(http.post(&url).body(envelope)).await;
        stages[3].push(t.elapsed());
        // The same door's `handle` without HTTP: the agent's own hops and waits.
        let signed = unlock().sign(&me).unwrap();
        let (direct, _) = seal_command(&signed, &state.kem, &mut OsRng).unwrap();
        let t = Instant::now();
        let handled = agent
            .agent()
            .handle(direct, latchkey_device::audit::Via::Local)
            .await;
        stages[7].push(t.elapsed());
        assert!(matches!(
            handled,
            latchkey_device::agent::Handled::Answered(_)
        ));
        let t = Instant::now();
        let answer = pending.open(&body, &state.identity).unwrap();
        stages[4].push(t.elapsed());
        assert_eq!(answer.response.outcome, Outcome::Accepted);
        let report = latchkey_owner::OpenReport {
            device: found,
            action: "unlock".into(),
            response: answer.response,
            signature: answer.signature,
            route: latchkey_owner::Route::Direct(agent.addr().to_string()),
            latency_ms: 0,
            challenged: false,
            lost_reply: None,
        };
        let t = Instant::now();
        owner.keep_last_answer(&report).unwrap();
        stages[5].push(t.elapsed());
    }
    header("Stages of a direct owner open, each timed alone (same run)");
    let names = [
        "find the device (store read, chain decoded)",
        "session signing key (cached after the first open)",
        "sign + seal the command",
        "POST → door (open, verify, authorize, run, fsync, sign, seal) → answer bytes",
        "open + verify the answer",
        "keep the answer for the device card (no fsync)",
        "for comparison: GET /healthz on the door (HTTP round trip, nothing done)",
        "for comparison: the running door's whole handling of a command, no HTTP",
        "the app's extra per command: a profile opened over the session (a pooled connection)",
    ];
    for (name, samples) in names.iter().zip(stages) {
        row(name, samples);
    }

    // 3. The door's side, the agent's pipeline on one core over a real SQLite file.
    door_side(n, tmp.path());

    // 4. The primitive floor.
    floor(n);

    // 1, relayed: both forget the door's address.
    owner.set_device_addresses(&device, Vec::new()).unwrap();
    guest.set_device_addresses(&device, Vec::new()).unwrap();
    opens(&owner, &device, 5, true).await;
    header("Relayed through the nodes' mailboxes");
    let (whole, answer) = opens(&owner, &device, n, true).await;
    row("owner, relayed: whole `Profile::open`", whole);
    row(
        "owner, relayed: send → verified answer (whole ms, as the core keeps it)",
        answer,
    );
    let (whole, _) = opens(&guest, &device, n, true).await;
    row("guest, relayed: whole `Profile::open`", whole);

    agent.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// Receive → actuator start, the entry's fsync and the answer, as `latchkeyd` runs them.
fn door_side(n: usize, dir: &Path) {
    const T0: u64 = 1_800_000_000_000;
    let owner = person(1);
    let mut device = TestDevice::new(1, "front door");
    device.claim(&[&owner], 1);
    let keys = DeviceKeys::from_secret_bytes(&device.keys.to_secret_bytes()).unwrap();
    let store = Arc::new(Store::open(&dir.join("pipeline.db")).unwrap());
    let clock = ManualClock::at(T0);
    let mut view = View::new(device.chain.clone());
    view.checks
        .record_quorum(&clock.boot_id(), clock.ticks_ms());
    let pipeline = Pipeline::new(
        keys,
        clock,
        OsRng,
        store,
        view,
        PipelineConfig {
            actions: BTreeSet::from(["unlock".to_owned()]),
            ..PipelineConfig::default()
        },
    );
    let mut stages: [Vec<Duration>; 4] = Default::default();
    for i in 0..n + 20 {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let signed = Command {
            device: device.keys.device_id(),
            sender: owner.public_key(),
            action: "unlock".into(),
            args: Vec::new(),
            timestamp_ms: T0,
            nonce,
            challenge: None,
            grants: Vec::new(),
            reply_to: ReplyTo::Direct,
        }
        .sign(&owner)
        .unwrap();
        let (envelope, _) = seal_command(&signed, device.keys.kem.public(), &mut OsRng).unwrap();
        let t = Instant::now();
        let fresh = pipeline.open(&envelope, Via::Local).unwrap();
        let auth = pipeline.authorize(fresh).unwrap();
        let started = t.elapsed();
        let t = Instant::now();
        pipeline.make_durable(auth.ticket()).unwrap();
        let synced = t.elapsed();
        let t = Instant::now();
        let answer = pipeline.complete(auth, Ok(Vec::new()));
        let answered = t.elapsed();
        assert!(answer.accepted());
        if i >= 20 {
            stages[0].push(started);
            stages[1].push(synced);
            stages[2].push(answered);
            stages[3].push(started + synced + answered);
        }
    }
    header("The door's side, one core (`latchkeyd`'s pipeline, real SQLite file in the temp dir)");
    let names = [
        "receive → actuator start (open, verify, window, authority, nonce, entry committed)",
        "the entry's fsync (runs while the actuator does; the answer waits for it)",
        "outcome entry + sign + seal the answer",
        "whole, no actuator",
    ];
    for (name, samples) in names.iter().zip(stages) {
        row(name, samples);
    }
}

/// Seal + open + sign + verify + response with nothing around them.
fn floor(n: usize) {
    let owner = person(1);
    let mut device = TestDevice::new(2, "floor");
    device.claim(&[&owner], 1);
    let mut stages: [Vec<Duration>; 5] = Default::default();
    for _ in 0..n + 20 {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let command = Command {
            device: device.keys.device_id(),
            sender: owner.public_key(),
            action: "unlock".into(),
            args: Vec::new(),
            timestamp_ms: 1,
            nonce,
            challenge: None,
            grants: Vec::new(),
            reply_to: ReplyTo::Direct,
        };
        let t = Instant::now();
        let signed = command.sign(&owner).unwrap();
        let (envelope, pending) =
            seal_command(&signed, device.keys.kem.public(), &mut OsRng).unwrap();
        let sealed = t.elapsed();
        let t = Instant::now();
        let opened = open_command(&envelope, &device.keys.kem).unwrap();
        opened.command.verify_signature().unwrap();
        let verified = t.elapsed();
        let t = Instant::now();
        let response = Response {
            device: device.keys.device_id(),
            command: opened.command.command.id(),
            timestamp_ms: Some(2),
            outcome: Outcome::Accepted,
            body: Vec::new(),
        }
        .sign(&device.keys.identity)
        .unwrap();
        let reply = opened.reply.seal(&response, &mut OsRng).unwrap();
        let answered = t.elapsed();
        let t = Instant::now();
        pending
            .open(&reply, &device.keys.identity.public_key())
            .unwrap();
        let read = t.elapsed();
        stages[0].push(sealed);
        stages[1].push(verified);
        stages[2].push(answered);
        stages[3].push(read);
        stages[4].push(sealed + verified + answered + read);
    }
    for s in &mut stages {
        s.drain(..20);
    }
    header(
        "Primitive floor (sntrup761 + X25519 + XChaCha20-Poly1305 + Ed25519, nothing around them)",
    );
    let names = [
        "sign + seal the command (sender)",
        "open + verify the command (door)",
        "sign + seal the response (door)",
        "open + verify the response (sender)",
        "floor: all four",
    ];
    for (name, samples) in names.iter().zip(stages) {
        row(name, samples);
    }
}
