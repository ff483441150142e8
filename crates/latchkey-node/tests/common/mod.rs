//! What the node's integration tests share: nodes on 127.0.0.1 port 0 over real SQLite files
//! (or, with `LATCHKEY_NODE_TEST_DB=postgres`, real PostgreSQL databases), an HTTP client, and
//! chain builders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use latchkey_node::store::DbLocation;
use latchkey_node::{Limits, NodeConfig, RunningNode, Url};
use latchkey_proto::chain::{Op, OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::DeviceId;
use latchkey_testkit::{person, sorted, TestDevice};
use reqwest::StatusCode;
use serde_json::Value;

pub fn config(db: &Path, limits: Limits) -> NodeConfig {
    NodeConfig {
        limits,
        sync_interval: Duration::from_millis(100),
        ..NodeConfig::new("127.0.0.1:0".parse().unwrap(), location(db))
    }
}

/// Whether this run's nodes store in PostgreSQL (`LATCHKEY_NODE_TEST_DB=postgres`; scripts/test.sh
/// runs the suite both ways) rather than SQLite files.
pub fn on_postgres() -> bool {
    match std::env::var("LATCHKEY_NODE_TEST_DB").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("LATCHKEY_NODE_TEST_DB={other}: say postgres or sqlite"),
    }
}

/// Says that a test is skipped on PostgreSQL, and why; true when it is.
pub fn skip_on_postgres(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skip on postgres: {why}");
    }
    on_postgres()
}

/// The one PostgreSQL cluster of this test binary, started on first use. It stays up while
/// the binary runs (a static is never dropped) and stops when the process exits: its keeper
/// shell waits on a pipe from this process (latchkey_testkit::postgres).
pub fn cluster() -> &'static latchkey_testkit::postgres::Cluster {
    static CLUSTER: OnceLock<latchkey_testkit::postgres::Cluster> = OnceLock::new();
    CLUSTER.get_or_init(latchkey_testkit::postgres::Cluster::start)
}

/// The database a test's node stores in, named by the SQLite path the test chose: that file,
/// or on PostgreSQL a fresh database per path (the same path again is the same database, so a
/// restart on it keeps everything, as with the file).
pub fn location(db: &Path) -> DbLocation {
    if !on_postgres() {
        return DbLocation::Sqlite(db.to_owned());
    }
    DbLocation::Postgres(pg_url(db))
}

/// [`location`] as the `--db` argument of the real binary.
pub fn db_arg(db: &Path) -> String {
    match location(db) {
        DbLocation::Sqlite(path) => path.display().to_string(),
        DbLocation::Postgres(url) => url,
    }
}

/// The PostgreSQL database name behind `db` (see [`location`]).
pub fn pg_name(db: &Path) -> String {
    static NAMES: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let next = names.len();
    names
        .entry(db.to_owned())
        .or_insert_with(|| {
            let name = format!("node{next}");
            cluster().create_database(&name);
            name
        })
        .clone()
}

fn pg_url(db: &Path) -> String {
    cluster().url(&pg_name(db))
}

/// Runs `sql` on the node database behind `db` (the SQLite file, or the PostgreSQL database) and
/// returns the first column of the first row as a number.
pub fn sql_count(db: &Path, sql: &str) -> i64 {
    if on_postgres() {
        return cluster().psql(&pg_name(db), sql).parse().unwrap();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap()
}

/// A node with the default limits less the rate limits (every test client is 127.0.0.1).
pub async fn node(db: &Path) -> RunningNode {
    latchkey_node::start(config(db, Limits::without_rate_limits()))
        .await
        .unwrap()
}

pub async fn node_with_peers(db: &Path, peers: &[&RunningNode]) -> RunningNode {
    let mut config = config(db, Limits::without_rate_limits());
    config.peers = peers
        .iter()
        .map(|p| Url::parse(&p.url()).unwrap())
        .collect();
    latchkey_node::start(config).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A claimed device (owner `person(1)`, threshold 1): genesis and claim.
pub fn claimed(seed: u64) -> TestDevice {
    let mut dev = TestDevice::new(seed, "front door");
    dev.claim(&[&person(1)], 1);
    dev
}

/// The next op: person(1) sets the owners to {person(1), person(n)}; person(n) signs to prove
/// it holds its key.
pub fn amend(dev: &TestDevice, n: u64) -> Op {
    let owners = sorted(&[&person(1), &person(n)]);
    dev.op(
        OpBody::AmendOwners(OwnerSet {
            owners,
            threshold: 1,
        }),
        &[&person(1), &person(n)],
    )
}

pub fn list(ops: &[Op]) -> Vec<u8> {
    OpList(ops.to_vec()).to_bytes()
}

pub fn device_id(dev: &TestDevice) -> DeviceId {
    dev.chain.device()
}

pub async fn post_ops(
    client: &reqwest::Client,
    base: &str,
    device: &DeviceId,
    ops: &[Op],
) -> (StatusCode, Value) {
    post_raw(client, base, device, list(ops)).await
}

pub async fn post_raw(
    client: &reqwest::Client,
    base: &str,
    device: &DeviceId,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = client
        .post(format!("{base}/v1/devices/{device}/ops"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let resp = client.get(url).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// The node's main chain for `device`, or the error status.
pub async fn get_ops(
    client: &reqwest::Client,
    base: &str,
    device: &DeviceId,
    from: u64,
) -> Result<Vec<Op>, StatusCode> {
    let resp = client
        .get(format!("{base}/v1/devices/{device}/ops?from={from}"))
        .send()
        .await
        .unwrap();
    if !resp.status().is_success() {
        return Err(resp.status());
    }
    Ok(OpList::from_bytes(&resp.bytes().await.unwrap()).unwrap().0)
}

pub async fn head(client: &reqwest::Client, base: &str, device: &DeviceId) -> (StatusCode, Value) {
    get_json(client, &format!("{base}/v1/devices/{device}/head")).await
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `body` to a mailbox, with a lifetime header when `ttl` is given.
pub async fn post_mailbox_ttl(
    c: &reqwest::Client,
    base: &str,
    mailbox: &str,
    body: &[u8],
    ttl: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = c
        .post(format!("{base}/v1/mailboxes/{mailbox}"))
        .body(body.to_vec());
    if let Some(ttl) = ttl {
        req = req.header("x-latchkey-ttl-secs", ttl);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

pub async fn post_mailbox(
    c: &reqwest::Client,
    base: &str,
    mailbox: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    post_mailbox_ttl(c, base, mailbox, body, None).await
}

/// A body of a sealed response's size in `bucket` (a node only looks at the size), told apart
/// by `tag`.
pub fn reply_body(tag: u8, bucket: usize) -> Vec<u8> {
    let mut body = vec![tag; latchkey_node::admission::SEALED_RESPONSE_SIZES[bucket]];
    body[0] = 1;
    body
}

/// Loopback addresses the abuse tests bind their clients to, so each is its own client address.
pub const HONEST: &str = "127.0.0.2";
pub const ABUSER: &str = "127.0.0.3";

/// A client whose requests come from `ip` (a real socket bound to that loopback address).
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

/// A node over `dir/node.db` with `limits`.
pub async fn start_with(dir: &tempfile::TempDir, limits: Limits) -> RunningNode {
    latchkey_node::start(config(&dir.path().join("node.db"), limits))
        .await
        .unwrap()
}

/// The real `latchkey-node` binary as a child process (tests that kill it with SIGKILL).
/// Dropping it kills it too, so a failed assertion leaves no node behind.
pub struct NodeBinary {
    pub child: std::process::Child,
    /// Held so the child never writes into a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
    pub url: String,
}

impl NodeBinary {
    /// Starts the binary on `db` (see [`db_arg`]) with `args` added, and waits for its
    /// `listening on http://ADDR` line.
    pub fn spawn(db: &Path, args: &[&str]) -> NodeBinary {
        NodeBinary::ready(NodeBinary::launch(&db_arg(db), args))
    }

    /// Starts the binary on the `--db` argument `db` without waiting for it, so several can
    /// start at once (and race, e.g. to migrate one PostgreSQL database).
    pub fn launch(db: &str, args: &[&str]) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_latchkey-node"))
            .args(["--listen", "127.0.0.1:0", "--db", db])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the latchkey-node binary runs")
    }

    /// Waits for a launched node's `listening on http://ADDR` line.
    pub fn ready(mut child: std::process::Child) -> NodeBinary {
        use std::io::BufRead;
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        NodeBinary {
            child,
            _stdout: stdout,
            url,
        }
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for NodeBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
