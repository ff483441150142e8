//! A bounded load test on loopback: honest owners opening their doors through one node, with
//! and without one abusive address beside them (docs/SECURITY.md, "Nodes under abuse from one
//! address"; figures in docs/BENCHMARKS.md).
//!
//! The node runs on a runtime of its own (2 worker threads, as a separate process would) with
//! the default limits, rate limits included. Clients use real sockets bound to different
//! loopback addresses, so the node counts them apart: honest owners on 127.0.0.2, their
//! devices on 127.0.0.4, the abuser on 127.0.0.3.
//!
//! An honest **open** is the real relayed path: the owner seals a command to the device's KEM
//! keys and posts it to the device's mailbox; the device, long-polling that mailbox, opens it,
//! signs and seals a response and posts it into the reply mailbox the command names; the
//! owner, long-polling that, opens and verifies it. Sixteen households share one address, each
//! doing one round a second: an open, a chain read (head and ops), every fourth round a re-post
//! of the chain (idempotent: verified again, nothing stored) and every eighth a proposal to its
//! co-owner's mailbox. The abuser parks as many long polls as it can,
//! floods the devices' and owners' mailboxes and random ids, posts junk op lists and hammers
//! chain reads, all at once and as fast as it can.
//!
//! ```sh
//! cargo run --release -p latchkey-node --example abuse_load -- --secs 20
//! cargo run --release -p latchkey-node --example abuse_load -- --secs 20 --no-rate-limits
//! cargo run --release -p latchkey-node --example abuse_load -- --secs 20 --long-polls 600
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_node::{Limits, NodeConfig};
use latchkey_proto::chain::{OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, Outcome, ReplyTo, Response};
use latchkey_proto::envelope::{open_command, seal_command};
use latchkey_proto::hash;
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::{person, rng, sorted, TestDevice};
use serde_json::Value;

const HONEST: &str = "127.0.0.2";
const ABUSER: &str = "127.0.0.3";
const DEVICES: &str = "127.0.0.4";
const OWNERS: u64 = 16;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(40))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Honest results by kind: latencies of successes, and failures with their status.
#[derive(Default)]
struct Tally {
    ok: BTreeMap<&'static str, Vec<Duration>>,
    failed: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

impl Tally {
    fn record(&mut self, kind: &'static str, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.ok.entry(kind).or_default().push(started.elapsed()),
            Err(why) => *self.failed.entry(kind).or_default().entry(why).or_default() += 1,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn status_of(resp: reqwest::Result<reqwest::Response>, want: u16) -> Result<Value, String> {
    let resp = resp.map_err(|e| format!("transport: {}", e.without_url()))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == want {
        Ok(body)
    } else {
        Err(format!(
            "{status} {}",
            body["error"]["code"].as_str().unwrap_or("")
        ))
    }
}

/// One honest owner with its own device (co-owned with a second key, threshold 2).
struct Household {
    owner: SigningKey,
    co_owner: SigningKey,
    device: Arc<TestDevice>,
    /// The device's mailbox cursor, kept across phases as a real device keeps it.
    cursor: Arc<AtomicU64>,
}

/// The device side: long-polls its mailbox, answers each command into its reply mailbox.
async fn run_device(
    base: String,
    device: Arc<TestDevice>,
    cursor: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) {
    let c = client_from(DEVICES);
    let mailbox = hex::encode(device.chain.device().0);
    let mut after = cursor.load(Ordering::Relaxed);
    let mut n = after;
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{base}/v1/mailboxes/{mailbox}?after={after}&wait_secs=2");
        let started = Instant::now();
        let page = status_of(c.get(url).send().await, 200).await;
        let failed = page.as_ref().err().cloned();
        tally.lock().unwrap().record(
            "device: mailbox long poll",
            started,
            failed.map_or(Ok(()), Err),
        );
        let Ok(page) = page else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        after = page["next"].as_u64().unwrap_or(after);
        cursor.store(after, Ordering::Relaxed);
        for m in page["messages"].as_array().into_iter().flatten() {
            let Ok(envelope) =
                data_encoding::BASE64.decode(m["body"].as_str().unwrap_or("").as_bytes())
            else {
                continue;
            };
            // The abuser's right-sized junk fails here, as it would on a real device.
            let Ok(opened) = open_command(&envelope, &device.keys.kem) else {
                continue;
            };
            let ReplyTo::Mailbox(reply_box) = opened.command.command.reply_to else {
                continue;
            };
            let response = Response {
                device: device.chain.device(),
                command: opened.command.command.id(),
                timestamp_ms: Some(1_800_000_000_000),
                outcome: Outcome::Accepted,
                body: Vec::new(),
            }
            .sign(&device.keys.identity)
            .unwrap();
            n += 1;
            let sealed = opened.reply.seal(&response, &mut rng(n)).unwrap();
            let started = Instant::now();
            let posted = status_of(
                c.post(format!("{base}/v1/mailboxes/{}", hex::encode(reply_box)))
                    .header("x-latchkey-ttl-secs", "30")
                    .body(sealed)
                    .send()
                    .await,
                201,
            )
            .await
            .map(drop);
            tally
                .lock()
                .unwrap()
                .record("device: answer post", started, posted);
        }
    }
}

/// One open: seal, post to the device's mailbox, long-poll the reply mailbox, verify.
async fn open_door(c: &reqwest::Client, base: &str, h: &Household, n: u64) -> Result<(), String> {
    let mut reply_box = [0u8; 32];
    reply_box[..8].copy_from_slice(&n.to_le_bytes());
    reply_box[8] = 0xee;
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&n.to_le_bytes());
    let command = Command {
        device: h.device.chain.device(),
        sender: h.owner.public_key(),
        action: "unlock".into(),
        args: Vec::new(),
        timestamp_ms: 1_800_000_000_000,
        nonce,
        challenge: None,
        grants: Vec::new(),
        reply_to: ReplyTo::Mailbox(reply_box),
    }
    .sign(&h.owner)
    .unwrap();
    let (envelope, pending) =
        seal_command(&command, &h.device.chain.state().kem, &mut rng(n)).unwrap();
    let device_box = hex::encode(h.device.chain.device().0);
    status_of(
        c.post(format!("{base}/v1/mailboxes/{device_box}"))
            // The owner core asks for 120 s; a household here opens once a second, so a shorter
            // lifetime keeps it within its share of the device's mailbox (64 live messages).
            .header("x-latchkey-ttl-secs", "30")
            .body(envelope)
            .send()
            .await,
        201,
    )
    .await?;
    let url = format!(
        "{base}/v1/mailboxes/{}?wait_secs=10",
        hex::encode(reply_box)
    );
    let page = status_of(c.get(url).send().await, 200).await?;
    let body = page["messages"][0]["body"]
        .as_str()
        .ok_or("no answer within 10 s")?;
    let sealed = data_encoding::BASE64.decode(body.as_bytes()).unwrap();
    pending
        .open(&sealed, &h.device.chain.state().identity)
        .map_err(|e| format!("answer does not verify: {e}"))?;
    Ok(())
}

async fn run_owner(
    base: String,
    h: Arc<Household>,
    phase: u64,
    index: u64,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) {
    let c = client_from(HONEST);
    let device = h.device.chain.device();
    let chain = OpList(h.device.chain.ops().to_vec()).to_bytes();
    let co_box = hex::encode(hash::labeled(
        "latchkey/v1/owner-mailbox",
        &[&h.co_owner.public_key().to_bytes()],
    ));
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        i += 1;
        // Reply mailboxes and nonces are new in every phase (replies of the last one live on).
        let n = phase << 48 | index << 32 | i;
        let started = Instant::now();
        let outcome = open_door(&c, &base, &h, n).await;
        tally
            .lock()
            .unwrap()
            .record("open (relayed, end to end)", started, outcome);

        let started = Instant::now();
        let outcome = status_of(
            c.get(format!("{base}/v1/devices/{device}/head"))
                .send()
                .await,
            200,
        )
        .await
        .map(drop);
        tally.lock().unwrap().record("chain head", started, outcome);

        let started = Instant::now();
        let outcome = match c
            .get(format!("{base}/v1/devices/{device}/ops"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(b) if OpList::from_bytes(&b).is_ok() => Ok(()),
                _ => Err("bad op list".to_string()),
            },
            Ok(r) => Err(r.status().as_u16().to_string()),
            Err(e) => Err(format!("transport: {}", e.without_url())),
        };
        tally.lock().unwrap().record("chain read", started, outcome);

        if i.is_multiple_of(4) {
            let started = Instant::now();
            let outcome = status_of(
                c.post(format!("{base}/v1/devices/{device}/ops"))
                    .body(chain.clone())
                    .send()
                    .await,
                200,
            )
            .await
            .map(drop);
            tally.lock().unwrap().record("op post", started, outcome);
        }
        if i.is_multiple_of(8) {
            let mut proposal = h.device.chain.propose(
                i,
                OpBody::AmendOwners(OwnerSet {
                    owners: sorted(&[&h.owner, &h.co_owner, &person(300 + index)]),
                    threshold: 2,
                }),
            );
            proposal.sign(&h.owner);
            let started = Instant::now();
            let outcome = status_of(
                c.post(format!("{base}/v1/mailboxes/{co_box}"))
                    .header("x-latchkey-ttl-secs", "10")
                    .body(proposal.to_bytes())
                    .send()
                    .await,
                201,
            )
            .await
            .map(drop);
            tally
                .lock()
                .unwrap()
                .record("proposal to a co-owner", started, outcome);
        }
        // One round a second per household (sixteen of them behind one address): busy, but
        // within the default rates of that one address.
        if let Some(rest) = Duration::from_millis(1000).checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
}

/// The abuser's answers by status, counted.
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

async fn count(counts: &Counts, what: &str, resp: reqwest::Result<reqwest::Response>) {
    let key = match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            format!(
                "{what}: {status} {}",
                body["error"]["code"].as_str().unwrap_or("")
            )
        }
        Err(e) => format!("{what}: transport {}", e.without_url()),
    };
    *counts.lock().unwrap().entry(key).or_default() += 1;
}

fn run_abuser(
    rt: &tokio::runtime::Handle,
    base: &str,
    long_polls: u32,
    households: &[Arc<Household>],
    stop: &Arc<AtomicBool>,
    counts: &Counts,
) -> Vec<tokio::task::JoinHandle<()>> {
    let c = client_from(ABUSER);
    let mut tasks = Vec::new();
    // More long polls than an address may hold.
    for t in 0..long_polls {
        let (c, base, stop, counts) = (c.clone(), base.to_owned(), stop.clone(), counts.clone());
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut mailbox = [0x77u8; 32];
                mailbox[..4].copy_from_slice(&t.to_le_bytes());
                let url = format!("{base}/v1/mailboxes/{}?wait_secs=30", hex::encode(mailbox));
                count(&counts, "long poll", c.get(url).send().await).await;
            }
        }));
    }
    // Mailbox floods: right-sized junk to the devices, junk to the owners, junk anywhere.
    let targets: Vec<(String, String)> = households
        .iter()
        .flat_map(|h| {
            [
                (
                    "junk envelope to a device".to_string(),
                    hex::encode(h.device.chain.device().0),
                ),
                (
                    "junk to an owner".to_string(),
                    hex::encode(hash::labeled(
                        "latchkey/v1/owner-mailbox",
                        &[&h.co_owner.public_key().to_bytes()],
                    )),
                ),
            ]
        })
        .collect();
    for t in 0..8usize {
        let (c, base, stop, counts, targets) = (
            c.clone(),
            base.to_owned(),
            stop.clone(),
            counts.clone(),
            targets.clone(),
        );
        tasks.push(rt.spawn(async move {
            let mut k = t;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let (what, mailbox) = &targets[k % targets.len()];
                let body = if what.contains("device") {
                    vec![1u8; 2137]
                } else {
                    vec![2u8; 1066]
                };
                let resp = c
                    .post(format!("{base}/v1/mailboxes/{mailbox}"))
                    .header("x-latchkey-ttl-secs", "3600")
                    .body(body)
                    .send()
                    .await;
                count(&counts, what, resp).await;
                let mut random = [0u8; 32];
                random[..8].copy_from_slice(&(k as u64).to_le_bytes());
                let resp = c
                    .post(format!("{base}/v1/mailboxes/{}", hex::encode(random)))
                    .header("x-latchkey-ttl-secs", "3600")
                    .body(vec![3u8; 1066])
                    .send()
                    .await;
                count(&counts, "junk reply to a random id", resp).await;
            }
        }));
    }
    // Junk op posts and chain reads as fast as it can.
    let device = households[0].device.chain.device();
    for _ in 0..4 {
        let (c, base, stop, counts) = (c.clone(), base.to_owned(), stop.clone(), counts.clone());
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = c
                    .post(format!("{base}/v1/devices/{device}/ops"))
                    .body(vec![0xffu8; 4000])
                    .send()
                    .await;
                count(&counts, "junk op post", resp).await;
                let resp = c
                    .get(format!("{base}/v1/devices/{device}/ops"))
                    .send()
                    .await;
                count(&counts, "chain read", resp).await;
            }
        }));
    }
    tasks
}

async fn phase(
    abuser_rt: &tokio::runtime::Handle,
    base: &str,
    households: &[Arc<Household>],
    secs: u64,
    abuse: Option<u32>,
) -> (Tally, BTreeMap<String, u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let counts: Counts = Arc::default();
    let mut tasks = Vec::new();
    for h in households {
        tasks.push(tokio::spawn(run_device(
            base.to_owned(),
            h.device.clone(),
            h.cursor.clone(),
            tally.clone(),
            stop.clone(),
        )));
    }
    if let Some(long_polls) = abuse {
        tasks.extend(run_abuser(
            abuser_rt, base, long_polls, households, &stop, &counts,
        ));
        // Let the abuse reach full strength before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (i, h) in households.iter().enumerate() {
        tasks.push(tokio::spawn(run_owner(
            base.to_owned(),
            h.clone(),
            u64::from(abuse.is_some()),
            i as u64 + 1,
            tally.clone(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        // Long polls end within their wait; nothing here runs unbounded.
        let _ = tokio::time::timeout(Duration::from_secs(35), t).await;
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let counts = std::mem::take(&mut *counts.lock().unwrap());
    (tally, counts)
}

fn report(title: &str, tally: &Tally) {
    println!("\n{title}\n");
    println!("| honest request | done | succeeded | p50 ms | p99 ms | failures |");
    println!("|---|---:|---:|---:|---:|---|");
    let kinds: std::collections::BTreeSet<_> = tally
        .ok
        .keys()
        .chain(tally.failed.keys())
        .copied()
        .collect();
    for kind in kinds {
        let mut ok = tally.ok.get(kind).cloned().unwrap_or_default();
        ok.sort();
        let failed: u64 = tally.failed.get(kind).map_or(0, |f| f.values().sum());
        let done = ok.len() as u64 + failed;
        let why: Vec<String> = tally
            .failed
            .get(kind)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{v}× {k}"))
            .collect();
        println!(
            "| {kind} | {done} | {:.2}% | {} | {} | {} |",
            100.0 * ok.len() as f64 / done.max(1) as f64,
            ms(percentile(&ok, 0.5)),
            ms(percentile(&ok, 0.99)),
            if why.is_empty() {
                "—".into()
            } else {
                why.join(", ")
            }
        );
    }
}

fn main() {
    let mut secs = 20u64;
    let mut rate_limits = true;
    let mut long_polls = 48u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => secs = args.next().and_then(|s| s.parse().ok()).expect("--secs N"),
            "--no-rate-limits" => rate_limits = false,
            "--long-polls" => {
                long_polls = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--long-polls N")
            }
            other => panic!(
                "unknown argument {other}; use --secs N, --long-polls N and --no-rate-limits"
            ),
        }
    }
    let secs = secs.clamp(1, 120);
    let long_polls = long_polls.clamp(1, 2000);
    let dir = tempfile::tempdir().unwrap();
    let limits = if rate_limits {
        Limits::default()
    } else {
        Limits::without_rate_limits()
    };
    // The node on runtime threads of its own, like a separate process.
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = NodeConfig {
        limits,
        ..NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("node.db"))
    };
    let node = node_rt.block_on(latchkey_node::start(config)).unwrap();
    let base = node.url();

    // The abuser on a runtime of its own, as if on another machine (it still shares the cores).
    let abuser_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let abuser = abuser_rt.handle().clone();
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async {
        let c = client_from(HONEST);
        let mut households = Vec::new();
        for i in 0..OWNERS {
            let (owner, co_owner) = (person(100 + i), person(200 + i));
            let mut device = TestDevice::new(60 + i, "front door");
            device.claim(&[&owner, &co_owner], 2);
            let list = OpList(device.chain.ops().to_vec()).to_bytes();
            let id = device.chain.device();
            let resp = c
                .post(format!("{base}/v1/devices/{id}/ops"))
                .body(list)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            households.push(Arc::new(Household {
                owner,
                co_owner,
                device: Arc::new(device),
                cursor: Arc::default(),
            }));
        }
        println!(
            "node {base}, limits: {}; {OWNERS} honest owners on {HONEST} with their devices on {DEVICES}; {secs} s per phase",
            if rate_limits { "defaults (rate limits on)" } else { "defaults without rate limits" }
        );
        let (quiet, _) = phase(&abuser, &base, &households, secs, None).await;
        report("Without the abuser:", &quiet);
        let (loud, counts) = phase(&abuser, &base, &households, secs, Some(long_polls)).await;
        report(&format!("With one abusive address ({ABUSER}) beside them:"), &loud);
        println!("\nThe abuser's answers:\n");
        println!("| abusive request: answer | count |\n|---|---:|");
        for (k, v) in counts {
            println!("| {k} | {v} |");
        }
    });
    let m = node.metrics();
    println!(
        "\nnode: {} long polls refused for the address, {} for the pool, {} requests overloaded, {} rate limited",
        m.long_polls_refused_address.load(Ordering::Relaxed),
        m.long_polls_refused_pool.load(Ordering::Relaxed),
        m.overloaded.load(Ordering::Relaxed),
        m.rate_limited.load(Ordering::Relaxed),
    );
    node_rt.block_on(node.shutdown()).unwrap();
}
