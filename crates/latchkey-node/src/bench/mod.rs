//! `latchkey-node bench`: a load tool that drives a node over HTTP on loopback with chain reads,
//! op posts and mailbox traffic, and prints throughput and latency percentiles per kind of
//! request (docs/BENCHMARKS.md, "Registry at scale"; docs/SCALE.md).
//!
//! It speaks only HTTP, so it measures either backend. Every op it posts is a real, signed op
//! the node verifies (built from seeds by [`chains`]); every mailbox message is a body of a
//! sealed command's size, which is all a node looks at. With `--rate` it is open-loop: request
//! `i` is due at `i / rate` seconds and its latency is counted from then, so a node that falls
//! behind shows it in the percentiles (queueing included) rather than slowing the load down.

mod chains;
mod raw;
mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use latchkey_node::Url;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use chains::DevicePosts;
use stats::Stats;

/// Hard caps: the tool is for measuring, not for running unbounded.
const MAX_COUNT: u64 = 10_000_000;
const MAX_DURATION_SECS: u64 = 600;
/// Open-loop requests in flight at once; past this the generator waits (and the wait shows in
/// the latencies, which count from each request's due time).
const MAX_IN_FLIGHT: usize = 8192;
/// How long the mailbox readers get, after the last post, to receive what was acknowledged.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Durable op writes: each device gets genesis + claim, then owner-signed amend-owners and
    /// revoke-grant ops, one op per post.
    Ops,
    /// Chain reads (ops and head, alternately) over a prepared set of devices.
    Reads,
    /// Mailbox posts to devices whose readers long-poll their mailboxes; post→delivery latency.
    Mailbox,
    /// 60 % reads, 20 % op posts, 20 % mailbox posts, with the long-polling readers.
    Mixed,
    /// Calibration without a node: sequential SQLite transactions (WAL, synchronous=FULL), each
    /// writing a genesis + claim's rows, in `--raw-dir`.
    RawSqlite,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Ops => "ops",
            Scenario::Reads => "reads",
            Scenario::Mailbox => "mailbox",
            Scenario::Mixed => "mixed",
            Scenario::RawSqlite => "raw-sqlite",
        }
    }

    /// The cycle of jobs the scenario repeats.
    fn mix(self) -> Vec<Job> {
        match self {
            Scenario::Ops => vec![Job::OpPost],
            Scenario::Reads => vec![Job::ReadOps, Job::ReadHead],
            Scenario::Mailbox => vec![Job::MailboxPost],
            Scenario::Mixed => {
                let mut mix = Vec::new();
                for _ in 0..3 {
                    mix.extend([Job::ReadOps, Job::ReadHead]);
                }
                mix.extend([Job::OpPost, Job::MailboxPost, Job::OpPost, Job::MailboxPost]);
                mix
            }
            Scenario::RawSqlite => Vec::new(),
        }
    }
}

/// Drive a node on loopback and measure it.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the node under test, e.g. http://127.0.0.1:7400. Loopback only.
    #[arg(long, value_name = "URL")]
    node: Option<Url>,
    /// What to send.
    #[arg(long, alias = "mix", value_enum, default_value = "mixed")]
    scenario: Scenario,
    /// Open-loop: requests per second, whatever the node's answers (latency includes queueing).
    #[arg(long, value_name = "N", conflicts_with = "concurrency",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: Option<u64>,
    /// Closed-loop: requests in flight at once, each sent when the last one was answered.
    #[arg(long, value_name = "C", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// At most this many requests (setup and long polls not counted; at most 10,000,000).
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    count: u64,
    /// At most this many seconds of load (at most 600).
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: u64,
    /// Devices the op posts are spread over (`ops`, `mixed`).
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    devices: u64,
    /// Ops in each op post after a device's first (genesis + claim): one list, as a peer's
    /// feed page or an owner's batch arrives.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub ops_per_post: u64,
    /// Devices the chain reads are spread over (`reads`, `mixed`); each holds 4 ops.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    read_devices: u64,
    /// Long-polling device readers (`mailbox`, `mixed`); posts go round-robin to their mailboxes.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=20_000))]
    readers: u64,
    /// Client addresses the mailbox posts come from, round-robin (127.0.0.1, 127.0.0.2, …; one
    /// when the node is not on 127.0.0.0/8). A node keeps each address's share of its
    /// mailboxes, so posts from one address measure a single abusive client, not many homes.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=250))]
    pub senders: u64,
    /// Lifetime of each mailbox message (`x-latchkey-ttl-secs`).
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    mailbox_ttl: u64,
    /// Where `raw-sqlite` writes its scratch database (put it on the node's disk).
    #[arg(long, value_name = "DIR")]
    raw_dir: Option<std::path::PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// A node other than one on this machine's loopback is refused.
pub fn check_loopback(url: &Url) -> anyhow::Result<()> {
    let host = url.host_str().unwrap_or("");
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback || !matches!(url.scheme(), "http" | "https") {
        bail!(
            "refusing to load {url}: `latchkey-node bench` only targets a node on this machine's \
             loopback (127.0.0.0/8, [::1] or localhost). Pointed at another host it would be a \
             flood against someone else's node, and its figures would measure the network in \
             between rather than the node. Run it on the node's machine, against 127.0.0.1."
        );
    }
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.scenario == Scenario::RawSqlite {
        return raw::run(&args);
    }
    let Some(node) = args.node.clone() else {
        bail!("give the node under test: --node http://127.0.0.1:PORT");
    };
    check_loopback(&node)?;
    let base = node.as_str().trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8192)
        .tcp_nodelay(true)
        .build()?;
    client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("no node answers at {base}/healthz"))?;

    let senders = sender_clients(&node, args.senders)?;
    let plan = Arc::new(prepare(&args, client, senders, base).await?);
    let readers = start_readers(&plan);
    let limit = Duration::from_secs(args.duration);
    let started = Instant::now();
    match args.rate {
        Some(rate) => open_loop(&plan, rate, args.count, limit).await,
        None => closed_loop(&plan, args.concurrency, args.count, limit).await,
    }
    let elapsed = started.elapsed();
    // The readers get a bounded time to receive every acknowledged message.
    let posted = plan.mailbox_posted.load(Ordering::Relaxed);
    let drain_end = Instant::now() + DRAIN;
    while !readers.is_empty()
        && plan.delivered.load(Ordering::Relaxed) < posted
        && Instant::now() < drain_end
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in &readers {
        r.abort();
    }
    report(&args, &plan, elapsed);
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Job {
    OpPost,
    ReadOps,
    ReadHead,
    MailboxPost,
}

struct OpsDevice {
    posts: DevicePosts,
    path: String,
    /// The next post of this device (posts of one device go in order: each extends the last).
    next: tokio::sync::Mutex<usize>,
}

struct Plan {
    client: reqwest::Client,
    /// One client per source address, for the mailbox posts.
    senders: Vec<reqwest::Client>,
    base: String,
    mix: Vec<Job>,
    ops: Vec<OpsDevice>,
    reads: Vec<String>,
    mailboxes: Vec<String>,
    mailbox_ttl: String,
    /// Counters per kind, so each kind spreads over its devices evenly.
    next_op: AtomicU64,
    next_read: AtomicU64,
    next_message: AtomicU64,
    /// Set when an op post found its device with nothing left to post.
    exhausted: AtomicBool,
    stats: Mutex<Stats>,
    ops_written: AtomicU64,
    mailbox_posted: AtomicU64,
    /// Per message number: 0 not seen, 1 delivered (duplicates are counted apart).
    seen: Vec<AtomicU8>,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    deliveries: Mutex<Stats>,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last first delivery.
    last_delivery: AtomicU64,
    setup: Value,
}

/// Clients bound to 127.0.0.1, 127.0.0.2, … (the whole of 127.0.0.0/8 is this machine).
fn sender_clients(node: &Url, n: u64) -> anyhow::Result<Vec<reqwest::Client>> {
    let on_v4_loopback = node
        .host_str()
        .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    let n = if on_v4_loopback { n } else { 1 };
    (0..n)
        .map(|i| {
            let mut builder = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true);
            if on_v4_loopback {
                let ip = std::net::Ipv4Addr::new(127, 0, 0, 1 + i as u8);
                builder = builder.local_address(std::net::IpAddr::V4(ip));
            }
            Ok(builder.build()?)
        })
        .collect()
}

async fn prepare(
    args: &BenchArgs,
    client: reqwest::Client,
    senders: Vec<reqwest::Client>,
    base: String,
) -> anyhow::Result<Plan> {
    let mix = args.scenario.mix();
    let share = |job: fn(&Job) -> bool| {
        let n = mix.iter().filter(|j| job(j)).count() as u64;
        // Every job of a kind at `i % len` among the first `count`: at most this many.
        args.count.div_ceil(mix.len() as u64) * n
    };
    // Devices of one run are new to the node (a re-run against the same node makes new ones).
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let built = Instant::now();
    let op_posts = share(|j| matches!(j, Job::OpPost));
    let ops_devices = if op_posts > 0 { args.devices } else { 0 };
    let per_device = if ops_devices > 0 {
        op_posts.div_ceil(ops_devices) + 1
    } else {
        0
    };
    let read_devices = if share(|j| matches!(j, Job::ReadOps | Job::ReadHead)) > 0 {
        args.read_devices
    } else {
        0
    };
    let readers = if share(|j| matches!(j, Job::MailboxPost)) > 0 {
        args.readers
    } else {
        0
    };
    // Building and signing is CPU work before the clock starts: both cores.
    let ops = build(
        0,
        ops_devices,
        per_device.saturating_sub(1),
        args.ops_per_post,
        run,
    )?;
    let reads = build(1 << 40, read_devices, 2, 1, run)?;
    let boxes = build(2 << 40, readers, 0, 1, run)?;
    let build_secs = built.elapsed().as_secs_f64();

    // Setup: the read devices' chains and the mailbox devices' genesis + claim, unmeasured.
    let posted = Instant::now();
    let mut setup_bodies = Vec::new();
    for d in reads.iter().chain(&boxes) {
        let mut all = Vec::new();
        for b in &d.bodies {
            all.push((d.id.to_string(), b.clone()));
        }
        setup_bodies.push(all);
    }
    let setup_posts: usize = setup_bodies.iter().map(Vec::len).sum();
    let queue = Arc::new(Mutex::new(setup_bodies));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (queue, client, base) = (queue.clone(), client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(posts) = queue.lock().unwrap().pop() else {
                    return Ok::<(), anyhow::Error>(());
                };
                for (id, body) in posts {
                    let resp = client
                        .post(format!("{base}/v1/devices/{id}/ops"))
                        .body(body)
                        .send()
                        .await?;
                    let status = resp.status();
                    if !status.is_success() {
                        let text = resp.text().await.unwrap_or_default();
                        bail!(
                            "setup post refused: {status} {text}{}",
                            if status.as_u16() == 429 { HINT } else { "" }
                        );
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let setup = json!({
        "build_secs": build_secs,
        "setup_posts": setup_posts,
        "setup_secs": posted.elapsed().as_secs_f64(),
        "ops_devices": ops_devices,
        "ops_per_post": args.ops_per_post,
        "read_devices": read_devices,
        "readers": readers,
        "mailbox_senders": if readers > 0 { senders.len() } else { 0 },
    });
    let mailbox_jobs = share(|j| matches!(j, Job::MailboxPost));
    Ok(Plan {
        client,
        senders,
        base,
        mix,
        ops: ops
            .into_iter()
            .map(|posts| OpsDevice {
                path: format!("/v1/devices/{}/ops", posts.id),
                posts,
                next: tokio::sync::Mutex::new(0),
            })
            .collect(),
        reads: reads.iter().map(|d| d.id.to_string()).collect(),
        mailboxes: boxes.iter().map(|d| hex::encode(d.id.0)).collect(),
        mailbox_ttl: args.mailbox_ttl.to_string(),
        next_op: AtomicU64::new(0),
        next_read: AtomicU64::new(0),
        next_message: AtomicU64::new(0),
        exhausted: AtomicBool::new(false),
        stats: Mutex::new(Stats::default()),
        ops_written: AtomicU64::new(0),
        mailbox_posted: AtomicU64::new(0),
        seen: (0..mailbox_jobs).map(|_| AtomicU8::new(0)).collect(),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        deliveries: Mutex::new(Stats::default()),
        epoch: Instant::now(),
        last_delivery: AtomicU64::new(0),
        setup,
    })
}

/// `n` devices' posts (each genesis + claim, then `more` ops), built on two threads.
fn build(
    offset: u64,
    n: u64,
    more: u64,
    per_post: u64,
    run: u64,
) -> anyhow::Result<Vec<DevicePosts>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..n)
                        .filter(|i| i % threads == t)
                        .map(|i| chains::device_posts(run, offset + i, more, per_post))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("builder thread")?);
        }
        Ok(all)
    })
}

const HINT: &str = "\n\
hint: the node refused with 429 (a per-address rate or cap: every bench request comes from \
one loopback address). Start the node under test without them, e.g.\n  \
latchkey-node --listen 127.0.0.1:7400 --db bench.db --ops-rate 0 --mailbox-rate 0 \
--read-rate 0 --max-requests 16384 --max-requests-per-address 16384 --max-long-polls 20000 \
--max-long-polls-per-address 20000 --mailbox-per-sender 1000000 --mailbox-per-address 1000000";

/// A failed answer as `status code` (the node's error code), or a transport error.
async fn why(resp: reqwest::Response) -> String {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    format!("{status} {}", body["error"]["code"].as_str().unwrap_or(""))
        .trim_end()
        .to_owned()
}

fn transport(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "transport: timeout".into()
    } else if e.is_connect() {
        "transport: connect".into()
    } else {
        "transport: other".into()
    }
}

impl Plan {
    fn record(&self, kind: &'static str, due: Instant, outcome: Result<(), String>) {
        let mut stats = self.stats.lock().unwrap();
        match outcome {
            Ok(()) => stats.ok(kind, due.elapsed()),
            Err(why) => stats.failed(kind, why),
        }
    }

    /// Request number `i`, due at `due`.
    async fn job(&self, i: u64, due: Instant) {
        match self.mix[(i % self.mix.len() as u64) as usize] {
            Job::OpPost => self.op_post(due).await,
            Job::ReadOps => {
                let dev = self.read_device();
                let out = self
                    .read(&format!("{}/v1/devices/{dev}/ops", self.base))
                    .await;
                self.record("chain read (ops)", due, out);
            }
            Job::ReadHead => {
                let dev = self.read_device();
                let out = self
                    .read(&format!("{}/v1/devices/{dev}/head", self.base))
                    .await;
                self.record("chain head", due, out);
            }
            Job::MailboxPost => self.mailbox_post(due).await,
        }
    }

    fn read_device(&self) -> &str {
        let n = self.next_read.fetch_add(1, Ordering::Relaxed);
        // A stride that visits every device in a scattered order.
        &self.reads[(n.wrapping_mul(7919) % self.reads.len() as u64) as usize]
    }

    async fn read(&self, url: &str) -> Result<(), String> {
        let resp = self.client.get(url).send().await.map_err(transport)?;
        if resp.status() != 200 {
            return Err(why(resp).await);
        }
        match resp.bytes().await {
            Ok(b) if !b.is_empty() => Ok(()),
            Ok(_) => Err("200 empty body".into()),
            Err(e) => Err(transport(e)),
        }
    }

    async fn op_post(&self, due: Instant) {
        let n = self.next_op.fetch_add(1, Ordering::Relaxed);
        let dev = &self.ops[(n % self.ops.len() as u64) as usize];
        // Held while posting: the device's next op extends what the last post stored.
        let mut next = dev.next.lock().await;
        let Some(body) = dev.posts.bodies.get(*next) else {
            self.exhausted.store(true, Ordering::Relaxed);
            return;
        };
        let sent = self
            .client
            .post(format!("{}{}", self.base, dev.path))
            .body(body.clone())
            .send()
            .await;
        let out = match sent {
            Ok(resp) if resp.status() == 200 => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let accepted = body["accepted"].as_u64().unwrap_or(0);
                self.ops_written.fetch_add(accepted, Ordering::Relaxed);
                if accepted != dev.posts.ops[*next] {
                    // Still stored, but not what this post should have added: say so.
                    Err(format!("200 accepted {accepted}"))
                } else {
                    *next += 1;
                    Ok(())
                }
            }
            Ok(resp) => Err(why(resp).await),
            Err(e) => Err(transport(e)),
        };
        self.record("op post", due, out);
    }

    async fn mailbox_post(&self, due: Instant) {
        let m = self.next_message.fetch_add(1, Ordering::Relaxed);
        let mailbox = &self.mailboxes[(m % self.mailboxes.len() as u64) as usize];
        // A sealed command's size is all the node checks; the tool's number and due time
        // ride in the first bytes so the reader can time the delivery.
        let mut body = vec![0u8; latchkey_node::admission::SEALED_COMMAND_SIZES[0]];
        body[..8].copy_from_slice(&m.to_le_bytes());
        let due_nanos = due.saturating_duration_since(self.epoch).as_nanos() as u64;
        body[8..16].copy_from_slice(&due_nanos.to_le_bytes());
        let sender = &self.senders[(m % self.senders.len() as u64) as usize];
        let sent = sender
            .post(format!("{}/v1/mailboxes/{mailbox}", self.base))
            .header("x-latchkey-ttl-secs", &self.mailbox_ttl)
            .body(body)
            .send()
            .await;
        let out = match sent {
            Ok(resp) if resp.status() == 201 => {
                self.mailbox_posted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(resp) => Err(why(resp).await),
            Err(e) => Err(transport(e)),
        };
        self.record("mailbox post", due, out);
    }

    /// One reader's message: timed from the post's due time, counted once.
    fn delivered(&self, body: &[u8]) {
        let now = Instant::now();
        if body.len() < 16 {
            return;
        }
        let m = u64::from_le_bytes(body[..8].try_into().unwrap());
        let due = u64::from_le_bytes(body[8..16].try_into().unwrap());
        let Some(seen) = self.seen.get(m as usize) else {
            return;
        };
        if seen.swap(1, Ordering::Relaxed) != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let at = now.saturating_duration_since(self.epoch);
        self.last_delivery
            .fetch_max(at.as_nanos() as u64, Ordering::Relaxed);
        self.deliveries.lock().unwrap().ok(
            "post→delivery",
            at.saturating_sub(Duration::from_nanos(due)),
        );
    }
}

/// One long-polling reader per mailbox device, from cursor 0 (so none misses an early post).
fn start_readers(plan: &Arc<Plan>) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(45))
        .tcp_nodelay(true)
        .build()
        .expect("client");
    plan.mailboxes
        .iter()
        .map(|mailbox| {
            let (plan, client) = (plan.clone(), client.clone());
            let url = format!("{}/v1/mailboxes/{mailbox}", plan.base);
            tokio::spawn(async move {
                let mut after = 0u64;
                loop {
                    let sent = client
                        .get(format!("{url}?after={after}&wait_secs=20"))
                        .send()
                        .await;
                    let page = match sent {
                        Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                        Ok(r) => {
                            let why = why(r).await;
                            plan.deliveries.lock().unwrap().failed("long poll", why);
                            None
                        }
                        Err(e) => {
                            let why = transport(e);
                            plan.deliveries.lock().unwrap().failed("long poll", why);
                            None
                        }
                    };
                    let Some(page) = page else {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    };
                    for m in page["messages"].as_array().into_iter().flatten() {
                        if let Ok(body) = data_encoding::BASE64
                            .decode(m["body"].as_str().unwrap_or("").as_bytes())
                        {
                            plan.delivered(&body);
                        }
                    }
                    after = page["next"].as_u64().unwrap_or(after);
                }
            })
        })
        .collect()
}

async fn open_loop(plan: &Arc<Plan>, rate: u64, count: u64, limit: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if due >= start + limit || plan.exhausted.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let slot = slots.clone().acquire_owned().await.expect("open");
        let plan = plan.clone();
        tokio::spawn(async move {
            plan.job(i, due).await;
            drop(slot);
        });
    }
    // Every request answered (each has the client's timeout).
    let _all = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
}

async fn closed_loop(plan: &Arc<Plan>, concurrency: u64, count: u64, limit: Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + limit;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (plan, next) = (plan.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || Instant::now() >= end || plan.exhausted.load(Ordering::Relaxed)
                    {
                        return;
                    }
                    plan.job(i, Instant::now()).await;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

fn report(args: &BenchArgs, plan: &Plan, elapsed: Duration) {
    let stats = plan.stats.lock().unwrap();
    let deliveries = plan.deliveries.lock().unwrap();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let requests = stats.done(&["op post", "chain read (ops)", "chain head", "mailbox post"]);
    let op_posts = stats.kinds.get("op post").map_or(0, |k| k.ok);
    let ops_written = plan.ops_written.load(Ordering::Relaxed);
    let posted = plan.mailbox_posted.load(Ordering::Relaxed);
    let delivered = plan.delivered.load(Ordering::Relaxed);
    let last = Duration::from_nanos(plan.last_delivery.load(Ordering::Relaxed));
    let delivery_secs = last.as_secs_f64().max(1e-9);
    let mut hints = Vec::new();
    if stats.saw_429() || deliveries.saw_429() {
        hints.push(HINT.trim_start().to_owned());
    }
    if stats.saw("507") {
        hints.push(
            "hint: 507 means a mailbox share or the node's store is full: raise \
             --mailbox-per-sender / --mailbox-per-address on the node or lower --mailbox-ttl"
                .to_owned(),
        );
    }
    let mode = match args.rate {
        Some(r) => json!({"rate": r}),
        None => json!({"concurrency": args.concurrency}),
    };
    let out = json!({
        "scenario": args.scenario.name(),
        "node": plan.base,
        "mode": mode,
        "count_cap": args.count,
        "duration_cap_secs": args.duration,
        "elapsed_secs": secs,
        "requests": requests,
        "requests_per_sec": requests as f64 / secs,
        "kinds": stats.json(elapsed),
        "ops": {
            "posts_ok": op_posts,
            "ops_written": ops_written,
            "posts_per_sec": op_posts as f64 / secs,
            "ops_per_sec": ops_written as f64 / secs,
        },
        "mailbox": {
            "readers": plan.mailboxes.len(),
            "posted": posted,
            "delivered": delivered,
            "duplicates": plan.duplicates.load(Ordering::Relaxed),
            "missing": posted.saturating_sub(delivered),
            "delivered_per_sec": delivered as f64 / delivery_secs,
            "delivery": deliveries.json(last),
        },
        "setup": plan.setup,
        "hints": hints,
    });
    if args.json {
        println!("{out}");
        return;
    }
    println!(
        "latchkey-node bench: scenario {}, node {}, {}, {} requests in {:.2} s ({:.0}/s)",
        args.scenario.name(),
        plan.base,
        match args.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => format!("closed loop, {} in flight", args.concurrency),
        },
        requests,
        secs,
        requests as f64 / secs
    );
    println!(
        "setup (not measured): {}",
        serde_json::to_string(&plan.setup).unwrap_or_default()
    );
    stats.print(elapsed);
    if op_posts > 0 {
        println!(
            "op writes: {op_posts} posts ({:.0}/s), {ops_written} ops written ({:.0} ops/s)",
            op_posts as f64 / secs,
            ops_written as f64 / secs
        );
    }
    if !plan.mailboxes.is_empty() {
        println!(
            "mailbox: {} long-polling readers; {posted} posted, {delivered} delivered \
             ({:.0}/s), {} missing, {} duplicates",
            plan.mailboxes.len(),
            delivered as f64 / delivery_secs,
            posted.saturating_sub(delivered),
            plan.duplicates.load(Ordering::Relaxed),
        );
        deliveries.print(last);
    }
    for h in hints {
        println!("{h}");
    }
}
