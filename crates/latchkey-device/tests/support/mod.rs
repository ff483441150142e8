//! Shared by the end-to-end tests: registry nodes in-process, the real `latchkeyd` binary as a
//! child process, and a sender built on latchkey-proto and latchkey-quorum.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::chain::{Chain, OpBody, OpList, OwnerSet};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command as Cmd, Outcome, ReplyTo, SignedResponse};
use latchkey_proto::envelope::{seal_command, PendingReply};
use latchkey_proto::grant::Grant;
use latchkey_proto::keys::SigningKey;
use latchkey_quorum::{QuorumClient, QuorumConfig};
use rand_core::{OsRng, RngCore};

pub const BIN: &str = env!("CARGO_BIN_EXE_latchkeyd");

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `n` registry nodes on 127.0.0.1, each with its own SQLite file.
pub struct Nodes {
    pub nodes: Vec<RunningNode>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    pub async fn start(n: usize) -> Nodes {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let mut config =
                NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("node.db"));
            config.limits = Limits::without_rate_limits();
            nodes.push(latchkey_node::start(config).await.unwrap());
            dirs.push(dir);
        }
        Nodes { nodes, _dirs: dirs }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    pub async fn stop(self) {
        for n in self.nodes {
            n.shutdown().await.unwrap();
        }
    }
}

/// Runs the real binary to completion.
pub fn latchkeyd(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("latchkeyd runs")
}

/// `latchkeyd init` with the given nodes and extra options; panics with its output on failure.
pub fn init(dir: &Path, nodes: &[String], extra: &[&str]) -> String {
    let dir_s = dir.to_str().unwrap();
    let mut args = vec![
        "init",
        "--dir",
        dir_s,
        "--name",
        "Front door",
        "--listen",
        "127.0.0.1:0",
        "--no-mdns",
        "--refresh-secs",
        "1",
    ];
    for n in nodes {
        args.push("--node");
        args.push(n);
    }
    args.extend_from_slice(extra);
    let out = latchkeyd(&args);
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A door in a fresh temporary directory: `latchkeyd init` on `nodes` with an `unlock` exec
/// action whose script appends a line to `out` per run ([`door_script`]), plus `extra` options.
/// Returns the directory's owner (dropping it deletes everything), the device directory, `out`
/// and what `init` printed.
pub fn init_door(nodes: &Nodes, extra: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    let out = tmp.path().join("door.log");
    let unlock = format!("unlock=exec:{}", door_script(tmp.path(), &out).display());
    let mut options = vec!["--action", unlock.as_str()];
    options.extend_from_slice(extra);
    let printed = init(&dir, &nodes.urls(), &options);
    (tmp, dir, out, printed)
}

/// A `latchkeyd run` child process. Dropping it kills it with SIGKILL.
pub struct Agent {
    child: Child,
    pub url: String,
}

impl Agent {
    pub fn start(dir: &Path) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "--dir", dir.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the agent did not start: {}",
                    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
                );
            }
        };
        Agent { child, url }
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a graceful exit.
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent did not stop on SIGTERM");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An owner (or guest) talking to the device with the protocol core.
pub struct Sender {
    pub key: SigningKey,
    pub chain: Chain,
    pub http: reqwest::Client,
}

pub async fn fetch_chain(http: &reqwest::Client, url: &str) -> Chain {
    let bytes = http
        .get(format!("{url}/v1/chain"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    Chain::verify(OpList::from_bytes(&bytes).unwrap().0).unwrap()
}

/// Claims the device in `dir` for `owner`: reads the QR text, fetches the genesis from the
/// device, checks it against the QR, signs the claim with the setup key and the owner, and
/// publishes genesis + claim to every node. Waits until the device has learnt it.
pub async fn claim(dir: &Path, agent_url: &str, owner: &SigningKey, nodes: &[String]) -> Chain {
    let text = std::fs::read_to_string(dir.join("claim.txt")).unwrap();
    let payload = ClaimPayload::parse(&text).unwrap();
    let http = reqwest::Client::new();
    let chain = fetch_chain(&http, agent_url).await;
    assert_eq!(
        chain.device(),
        payload.device_id(),
        "the QR names this device"
    );
    payload.check_kem(&chain.state().kem).unwrap();
    let mut op = chain.propose(
        now_ms(),
        OpBody::Claim(OwnerSet {
            owners: vec![owner.public_key()],
            threshold: 1,
        }),
    );
    op.sign(&payload.setup_key());
    op.sign(owner);
    let mut claimed = chain.clone();
    claimed.append(op).unwrap();
    let quorum = QuorumClient::new(
        nodes.to_vec(),
        QuorumConfig {
            sample: nodes.len(),
            min_answers: nodes.len(),
            timeout: Duration::from_secs(5),
            publish_to: nodes.len(),
            min_acks: nodes.len(),
        },
    )
    .unwrap();
    quorum
        .publish_to(&claimed.device(), claimed.ops(), nodes)
        .await
        .unwrap();
    wait_for_seq(agent_url, claimed.state().seq).await;
    claimed
}

/// Waits until the device's own view reaches `seq`.
pub async fn wait_for_seq(agent_url: &str, seq: u64) -> Chain {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let chain = fetch_chain(&http, agent_url).await;
        if chain.state().seq >= seq {
            return chain;
        }
        assert!(
            Instant::now() < deadline,
            "the device never learnt op {seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Sender {
    pub fn new(key: SigningKey, chain: Chain) -> Sender {
        Sender {
            key,
            chain,
            http: reqwest::Client::new(),
        }
    }

    pub fn command(&self, action: &str, args: &[u8]) -> Cmd {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        Cmd {
            device: self.chain.device(),
            sender: self.key.public_key(),
            action: action.into(),
            args: args.to_vec(),
            timestamp_ms: now_ms(),
            nonce,
            challenge: None,
            grants: Vec::<Grant>::new(),
            reply_to: ReplyTo::Direct,
        }
    }

    pub fn seal(&self, command: Cmd) -> (Vec<u8>, PendingReply) {
        let signed = command.sign(&self.key).unwrap();
        seal_command(&signed, &self.chain.state().kem, &mut OsRng).unwrap()
    }

    /// POSTs bytes to the device; returns the status and body.
    pub async fn post(&self, url: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let resp = self
            .http
            .post(format!("{url}/v1/command"))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// Sends an envelope and opens the signed answer.
    pub async fn send(
        &self,
        url: &str,
        envelope: Vec<u8>,
        pending: &PendingReply,
    ) -> SignedResponse {
        let (status, body) = self.post(url, envelope).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        pending.open(&body, &self.chain.state().identity).unwrap()
    }

    /// Sends `command`, answering a challenge once as the owner's app does: the same command
    /// with a fresh nonce and the challenge, signed again. A device asks for one when its clock
    /// is not trusted, or when the command is signed before its restart barrier.
    pub async fn send_answering(&self, url: &str, mut command: Cmd) -> SignedResponse {
        let (envelope, pending) = self.seal(command.clone());
        let first = self.send(url, envelope, &pending).await;
        let Outcome::ChallengeRequired { challenge } = first.response.outcome else {
            return first;
        };
        command.challenge = Some(challenge);
        OsRng.fill_bytes(&mut command.nonce);
        let (envelope, pending) = self.seal(command);
        self.send(url, envelope, &pending).await
    }
}

/// The reject code of a response (0 when accepted).
pub fn code(response: &SignedResponse) -> u16 {
    match &response.response.outcome {
        Outcome::Accepted => 0,
        Outcome::Rejected { code, .. } => *code,
        Outcome::ChallengeRequired { .. } => 16,
    }
}

/// A script the `exec` actuator runs: appends its action and arguments to `out`.
pub fn door_script(dir: &Path, out: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("open-door");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$LATCHKEY_ACTION $*\" >> '{}'\necho opened\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    latchkey_testkit::free_port()
}

/// A grant for `guest` on the device of `chain`, valid for the next hour.
pub fn hour_grant(
    owner: &latchkey_proto::keys::SigningKey,
    guest: &Sender,
    chain: &latchkey_proto::chain::Chain,
    salt: u8,
) -> latchkey_proto::grant::Grant {
    let state = chain.state();
    latchkey_proto::grant::GrantBody {
        issuer: owner.public_key(),
        subject: guest.key.public_key(),
        scope: vec![latchkey_proto::grant::GrantScope {
            device: state.device,
            epoch: state.epoch,
        }],
        actions: vec!["unlock".into()],
        not_before_ms: now_ms() - 60_000,
        not_after_ms: now_ms() + 3_600_000,
        use_limit: None,
        delegation_depth: 0,
        extensions: vec![],
        salt: [salt; 16],
    }
    .sign(owner)
    .unwrap()
}

pub async fn guest_unlock(
    guest: &Sender,
    url: &str,
    grant: &latchkey_proto::grant::Grant,
) -> latchkey_proto::command::SignedResponse {
    let mut c = guest.command("unlock", b"");
    c.grants = vec![grant.clone()];
    let (env, pending) = guest.seal(c);
    guest.send(url, env, &pending).await
}
