//! Issue 10 §1 end to end: nobody outside the owner set, and no single rogue co-owner, can fork
//! a door into paralysis. Real components only: five registry nodes (in process, no
//! replication between them, so what an attacker posts to one node stays there), the real
//! `latchkeyd` with an exec actuator, the real `latchkey` binary and the real OS keychain (run
//! inside `dbus-run-session` with an unlocked gnome-keyring, as scripts/test.sh does).
//!
//! The attacks:
//! - a stranger photographed the claim QR before the owner scanned it ("old photo"); after the
//!   rightful claim they post a second claim signed by the same setup key to the two nodes
//!   that were offline during the claim, so those nodes serve the stranger's branch;
//! - a rogue co-owner (owners 2, threshold 1: either may sign alone) posts two different
//!   revocations made against the same head to different nodes.
//!
//! The rightful owner must still open, invite, revoke and transfer through the CLI, and
//! `latchkey devices` must not raise an alarm for what the door itself settled.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cli::{free_port, require_secret_service, Cli, Door};
use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::chain::{Chain, Op, OpBody, OpList, OwnerSet};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::codec::Codec;
use latchkey_proto::invite::Invitation;
use latchkey_proto::keys::{DeviceId, KeyPurpose, RecoveryPhrase, SigningKey};
use rand::rngs::OsRng;

/// The tag of an endorse op (docs/PROTOCOL.md §3): the device's own signature on the branch
/// it accepted.
const ENDORSE_TAG: u8 = 8;

async fn start_node(dir: &Path, i: usize, addr: SocketAddr) -> RunningNode {
    let mut config = NodeConfig::new(addr, dir.join(format!("node{i}.db")));
    config.limits = Limits::without_rate_limits();
    latchkey_node::start(config).await.unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The owner identity key behind 24 recovery words, as `latchkey` derives it.
fn identity_of(words: &[String]) -> SigningKey {
    RecoveryPhrase::parse(&words.join(" "))
        .unwrap()
        .to_seed()
        .derive(KeyPurpose::OwnerIdentity, 0)
        .unwrap()
}

/// Every op a node serves for `device` from sequence `from` (empty when it knows nothing).
async fn ops_on(http: &reqwest::Client, node: &str, device: &DeviceId, from: u64) -> Vec<Op> {
    let resp = http
        .get(format!("{node}/v1/devices/{device}/ops?from={from}"))
        .send()
        .await
        .unwrap();
    if !resp.status().is_success() {
        return Vec::new();
    }
    OpList::from_bytes(&resp.bytes().await.unwrap()).unwrap().0
}

/// Posts `ops` to one node as an attacker would (straight to its HTTP API); panics unless the
/// node stored them, so the attack is known to have landed.
async fn post(http: &reqwest::Client, node: &str, device: &DeviceId, ops: &[Op]) {
    let resp = http
        .post(format!("{node}/v1/devices/{device}/ops"))
        .header("content-type", "application/octet-stream")
        .body(OpList(ops.to_vec()).to_bytes())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "{node} refused the attacker's ops: {status} {}",
        resp.text().await.unwrap_or_default()
    );
}

/// The chain node `node` holds, verified.
async fn chain_on(http: &reqwest::Client, node: &str, device: &DeviceId) -> Chain {
    Chain::verify(ops_on(http, node, device, 0).await).unwrap()
}

/// The id of the one proposal waiting in `who`'s mailbox for its acceptance.
fn proposal_for(who: &mut Cli) -> String {
    let v = who.json(&["owners", "proposals"]);
    let proposals = v["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{v}");
    assert_eq!(proposals[0]["my_part"], "accept", "{v}");
    proposals[0]["id"].as_str().unwrap()[..16].to_owned()
}

/// Polls a CLI command until it succeeds, for what the door learns on its own schedule.
fn until_ok(cli: &mut Cli, args: &[&str], limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let out = cli.run(args);
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            started.elapsed() < limit,
            "latchkey {args:?} still failing after {limit:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_an_old_photo_and_a_rogue_co_owner_cannot_jam_the_door() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let addrs: Vec<SocketAddr> = (0..5)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let mut nodes: Vec<Option<RunningNode>> = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        nodes.push(Some(start_node(tmp.path(), i, *a).await));
    }
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    // The door uses three of the five nodes (in production it samples a few of dozens), so
    // nothing but the attacker writes to the other two while they hold the stranger's branch.
    let mut door = Door::start(tmp.path(), "Front door", &urls[..3], &[]);
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));

    // The stranger's "old photo": the claim code as the door showed it before anyone scanned it.
    let photo = std::fs::read_to_string(door.dir.join("claim.txt")).unwrap();
    let payload = ClaimPayload::parse(&photo).unwrap();
    let device = payload.device_id();

    // The door's nodes hold its genesis; the other two go offline while the owner claims.
    let started = Instant::now();
    for url in &urls[..3] {
        while ops_on(&http, url, &device, 0).await.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no genesis on {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for n in &mut nodes[3..] {
        n.take().unwrap().shutdown().await.unwrap();
    }

    let mut alice = Cli::new(tmp.path().join("alice"));
    let (alice_words, _) = alice.init();
    alice.ok(&add);
    let out = alice.ok(&[
        "claim",
        "--image",
        door.dir.join("claim.png").to_str().unwrap(),
    ]);
    assert!(out.contains("claimed Front door"), "{out}");
    assert!(out.contains("the device confirmed it is yours"), "{out}");

    // The door endorses the claim it accepted; the endorsement reaches the nodes that are up.
    let started = Instant::now();
    loop {
        let held = ops_on(&http, &urls[0], &device, 0).await;
        if held.iter().any(|op| op.body.tag() == ENDORSE_TAG) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the door never endorsed its claim on {}",
            urls[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Attack 1: the offline nodes come back, and the stranger gets there first with a claim
    // of their own, signed with the setup key from the photo.
    for i in 3..5 {
        nodes[i] = Some(start_node(tmp.path(), i, addrs[i]).await);
    }
    let stranger = SigningKey::generate(&mut OsRng);
    let genesis = chain_on(&http, &urls[0], &device).await.ops()[0].clone();
    let mut forged = Chain::from_genesis(genesis.clone()).unwrap().propose(
        now_ms(),
        OpBody::Claim(OwnerSet {
            owners: vec![stranger.public_key()],
            threshold: 1,
        }),
    );
    forged.sign(&payload.setup_key());
    forged.sign(&stranger);
    for url in &urls[3..] {
        post(&http, url, &device, &[genesis.clone(), forged.clone()]).await;
        let theirs = chain_on(&http, url, &device).await;
        assert!(
            theirs.state().is_owner(&stranger.public_key()),
            "{url} serves the stranger's branch"
        );
    }

    // The owner keeps opening: the door endorsed her claim, so every verifier prefers it.
    let out = alice.ok(&["open", "Front door"]);
    assert!(out.contains("unlock accepted"), "{out}");
    assert_eq!(door.opened(), 1);
    let v = alice.json(&["devices"]);
    let d = &v["devices"][0];
    assert_eq!(d["mine"], true, "{v}");
    assert!(
        d["alarm"].is_null(),
        "the door settled the stranger's claim: nothing to alarm about: {v}"
    );

    // Attack 2: a rogue co-owner. Alice adds Mallory; either may sign alone.
    let mut mallory = Cli::new(tmp.path().join("mallory"));
    let (mallory_words, _) = mallory.init();
    mallory.ok(&add);
    let mallory_key = mallory.ok(&["key"]).trim().to_owned();
    let out = alice.ok(&["owners", "add", "Front door", &mallory_key]);
    assert!(out.contains("latchkey owners accept"), "{out}");
    let id = proposal_for(&mut mallory);
    let out = mallory.ok(&["owners", "accept", &id]);
    assert!(out.contains("in effect: owners 1/2"), "{out}");
    let v = mallory.json(&["devices"]);
    assert_eq!(v["devices"][0]["mine"], true, "{v}");
    let device_arg = device.to_string();

    // Mallory invites two guests, then revokes both at once with two different revocations
    // made against the same head, each posted to different nodes.
    let mut grants = Vec::new();
    for name in ["Ann", "Bo"] {
        let v = mallory.json(&[
            "invite",
            &device_arg,
            "--name",
            name,
            "--until",
            "+1h",
            "--long",
        ]);
        let link = Invitation::parse_link(v["link"].as_str().unwrap()).unwrap();
        grants.push(link.leaf().clone());
    }
    let mallory_id = identity_of(&mallory_words);
    let head = chain_on(&http, &urls[0], &device).await;
    let revocations: Vec<Op> = grants
        .iter()
        .map(|g| {
            let mut op = head.propose(
                now_ms(),
                OpBody::RevokeGrant {
                    chain: vec![g.clone()],
                },
            );
            op.sign(&mallory_id);
            op
        })
        .collect();
    assert_eq!(revocations[0].seq, revocations[1].seq);
    assert_eq!(revocations[0].prev, revocations[1].prev);
    assert_ne!(revocations[0].id(), revocations[1].id());
    for url in &urls[..2] {
        post(&http, url, &device, &revocations[..1]).await;
    }
    post(&http, &urls[2], &device, &revocations[1..]).await;

    // Alice opens, invites, revokes and transfers as if nothing happened.
    let out = alice.ok(&["open", "Front door"]);
    assert!(out.contains("unlock accepted"), "{out}");
    assert_eq!(door.opened(), 2);
    let v = alice.json(&["devices"]);
    assert!(
        v["devices"][0]["alarm"].is_null(),
        "concurrent revocations merge; they are not a fork: {v}"
    );
    // Both of Mallory's revocations hold (the revoked set is their union), whichever node
    // each went to: her profile, refreshed from the nodes, shows both grants revoked.
    mallory.ok(&["owners", &device_arg]);
    let v = mallory.json(&["grants", &device_arg]);
    let statuses: Vec<&str> = v["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["revoked", "revoked"], "{v}");

    // Attack 3: while the door is off, Mallory signs two conflicting owner changes and posts
    // them to different nodes. Nobody can settle that but the door: Alice's profile keeps the
    // history it had, shows the alarm with what to do, and goes on inviting.
    door.stop();
    let head = chain_on(&http, &urls[0], &device).await;
    let owners_now = head.state().owners.clone();
    let rivals: Vec<Op> = [
        owners_now.clone(),
        vec![identity_of(&alice_words).public_key()],
    ]
    .into_iter()
    .enumerate()
    .map(|(i, owners)| {
        let mut op = head.propose(
            now_ms() + i as u64,
            OpBody::AmendOwners(OwnerSet {
                owners,
                threshold: 1,
            }),
        );
        op.sign(&mallory_id);
        op
    })
    .collect();
    for url in &urls[..2] {
        post(&http, url, &device, &rivals[..1]).await;
    }
    post(&http, &urls[2], &device, &rivals[1..]).await;
    let out = alice.run(&["owners", "Front door"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ALARM: Two different histories of Front door exist"),
        "{stderr}"
    );
    let v = alice.json(&["devices"]);
    let alarm = &v["devices"][0]["alarm"];
    assert_eq!(alarm["kind"], "unresolved", "{v}");
    assert_eq!(alarm["seq"], rivals[0].seq, "{v}");
    let todo = alarm["what_to_do"].as_str().unwrap();
    assert!(
        todo.contains("keep opening") && todo.contains("fresh keys"),
        "{todo}"
    );
    assert_eq!(
        v["devices"][0]["seq"],
        head.state().seq,
        "neither change adopted"
    );
    let sam = alice.json(&["invite", "Front door", "--name", "Sam", "--until", "+1h"]);

    // The door comes back, takes one of the two and endorses it: every profile follows it and
    // the alarm ends.
    door.start_again();
    let started = Instant::now();
    loop {
        alice.ok(&["owners", "Front door"]);
        let v = alice.json(&["devices"]);
        if v["devices"][0]["alarm"].is_null() {
            assert_eq!(v["devices"][0]["seq"], rivals[0].seq, "{v}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the alarm never ended: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let mut sam_cli = Cli::new(tmp.path().join("sam"));
    sam_cli.ok(&["accept", sam["link"].as_str().unwrap()]);
    let out = sam_cli.ok(&["open", "Front door"]);
    assert!(out.contains("unlock accepted"), "{out}");
    assert_eq!(door.opened(), 3);
    let sam_id = sam["id"].as_str().unwrap();
    let out = alice.ok(&["revoke", &sam_id[..12]]);
    assert!(out.contains("the door already knows"), "{out}");
    let out = sam_cli.run(&["open", "Front door"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GrantRevoked"));
    assert_eq!(door.opened(), 3);

    // Alice hands the door to fresh keys (what she would do if a co-owner's key were lost).
    let mut carol = Cli::new(tmp.path().join("carol"));
    let (carol_words, _) = carol.init();
    carol.ok(&add);
    let carol_key = carol.ok(&["key"]).trim().to_owned();
    let out = alice.ok(&["transfer", &device_arg, "--to", &carol_key]);
    assert!(
        out.contains("waiting for the new owner(s) to accept"),
        "{out}"
    );
    let id = proposal_for(&mut carol);
    let out = carol.ok(&["owners", "accept", &id]);
    assert!(out.contains("transfer of Front door is in effect"), "{out}");
    let v = carol.json(&["devices"]);
    assert_eq!(v["devices"][0]["mine"], true, "{v}");
    until_ok(&mut carol, &["open", &device_arg], Duration::from_secs(20));
    assert_eq!(door.opened(), 4);
    let out = mallory.run(&["open", &device_arg]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "Mallory lost the door with the transfer"
    );
    let v = carol.json(&["devices"]);
    assert!(v["devices"][0]["alarm"].is_null(), "{v}");

    // Nobody but the rightful owners ever held the door: the stranger's key never opened it
    // and never became an owner on the nodes the owners use.
    let kept = chain_on(&http, &urls[0], &device).await;
    assert!(!kept.state().is_owner(&stranger.public_key()));
    assert_eq!(
        kept.state().owners,
        vec![identity_of(&carol_words).public_key()]
    );

    for n in nodes.into_iter().flatten() {
        n.shutdown().await.unwrap();
    }
}
