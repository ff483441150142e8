//! Consent logs over real HTTP on loopback, stored in real SQLite files: appending, reading,
//! idempotent reposts, rival entries kept as evidence, every attack refused with nothing
//! stored, caps, durability across a SIGKILL of the real binary, and catch-up by replication.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use latchkey_node::{Limits, Rate};
use latchkey_proto::chain::{Chain, OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{
    ConsentAction, ConsentEntry, ConsentId, ConsentList, ConsentLog, ConsentRequest,
    ProviderIdentity, SignedConsentRequest,
};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_testkit::{person, rng, sorted, TestDevice, HOUR, T0};
use reqwest::StatusCode;
use serde_json::Value;

/// A provider's signed request for `device`'s stream `p1`; `nonce` tells requests apart.
fn request(device: DeviceId, nonce: u8) -> SignedConsentRequest {
    let key = SigningKey::generate(&mut rng(0xc0_0000 + nonce as u64));
    let kem = KemSecretKey::generate(&mut rng(0xc1_0000 + nonce as u64));
    ConsentRequest {
        provider: ProviderIdentity {
            name: format!("Insights {nonce}"),
            url: "https://insights.example".into(),
            signing: key.public_key(),
            kem: kem.public().clone(),
        },
        device,
        stream: "p1".into(),
        purpose_code: latchkey_proto::consent::purpose::INSIGHTS,
        purpose: "Monthly energy advice".into(),
        retention_days: 30,
        until_ms: None,
        history: false,
        terms: None,
        issued_ms: T0,
        nonce: [nonce; 16],
    }
    .sign(&key)
    .unwrap()
}

fn give(log: &ConsentLog, chain: &Chain, owner: &SigningKey, nonce: u8) -> ConsentEntry {
    let req = request(chain.device(), nonce);
    log.next_entry(
        chain,
        owner,
        T0 + log.entries().len() as u64 * 1000,
        ConsentAction::Given(req),
    )
    .unwrap()
}

/// `entry` with its fields as they are, signed by `key` as an owner signs (docs/PROTOCOL.md
/// §14): what an attacker who holds `key` can make, whatever the log rules say.
fn resign(mut entry: ConsentEntry, key: &SigningKey) -> ConsentEntry {
    entry.signer = key.public_key();
    let message = [&b"latchkey/v1/consent-entry\0"[..], &entry.content_bytes()].concat();
    entry.signature = key.sign(&message);
    entry
}

/// `log` with `entry` appended (the test's own copy of the log).
fn push(log: &mut ConsentLog, chain: &Chain, entry: &ConsentEntry) {
    log.append(chain, entry.clone()).unwrap();
}

async fn post_entry(
    c: &reqwest::Client,
    base: &str,
    device: &DeviceId,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = c
        .post(format!("{base}/v1/devices/{device}/consents"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

async fn read_log(
    c: &reqwest::Client,
    base: &str,
    device: &DeviceId,
    from: u64,
) -> Result<Vec<ConsentEntry>, StatusCode> {
    let resp = c
        .get(format!("{base}/v1/devices/{device}/consents?from={from}"))
        .send()
        .await
        .unwrap();
    if !resp.status().is_success() {
        return Err(resp.status());
    }
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    Ok(ConsentList::from_bytes(&resp.bytes().await.unwrap())
        .unwrap()
        .0)
}

fn proto_error(body: &Value) -> &str {
    body["error"]["proto_error"].as_str().unwrap_or("")
}

async fn publish(c: &reqwest::Client, base: &str, dev: &TestDevice) {
    let (status, body) = post_ops(c, base, &device_id(dev), dev.chain.ops()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn entries_append_read_back_and_repost_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let dev = claimed(400);
    let id = device_id(&dev);
    publish(&c, &base, &dev).await;
    assert_eq!(read_log(&c, &base, &id, 1).await.unwrap(), vec![]);

    let mut log = ConsentLog::verify(&dev.chain, vec![]).unwrap();
    let e1 = give(&log, &dev.chain, &person(1), 1);
    let (status, body) = post_entry(&c, &base, &id, e1.to_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["seq"], 1);
    assert_eq!(body["hash"], hex::encode(e1.hash()));
    push(&mut log, &dev.chain, &e1);

    let consent = log.consents()[0].id;
    let e2 = log
        .next_entry(
            &dev.chain,
            &person(1),
            T0 + 5000,
            ConsentAction::Revoked(consent),
        )
        .unwrap();
    assert_eq!(post_entry(&c, &base, &id, e2.to_bytes()).await.0, 201);
    push(&mut log, &dev.chain, &e2);

    // A repost of a held entry (a retry) changes nothing.
    let (status, body) = post_entry(&c, &base, &id, e1.to_bytes()).await;
    assert_eq!((status, body["seq"].as_u64()), (StatusCode::OK, Some(1)));

    let served = read_log(&c, &base, &id, 1).await.unwrap();
    assert_eq!(served, vec![e1.clone(), e2.clone()]);
    assert_eq!(read_log(&c, &base, &id, 0).await.unwrap(), served);
    assert_eq!(read_log(&c, &base, &id, 2).await.unwrap(), vec![e2]);
    assert_eq!(read_log(&c, &base, &id, 3).await.unwrap(), vec![]);
    // What the node serves verifies for any reader.
    let verified = ConsentLog::verify(&dev.chain, served).unwrap();
    assert_eq!(verified.consents().len(), 1);
    assert!(verified.consents()[0].ended.is_some());

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_consents_accepted_total 2"),
        "{metrics}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rival_entry_at_a_held_seq_is_409_and_kept_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let dev = claimed(401);
    let id = device_id(&dev);
    publish(&c, &base, &dev).await;
    let empty = ConsentLog::verify(&dev.chain, vec![]).unwrap();
    let ours = give(&empty, &dev.chain, &person(1), 1);
    let theirs = give(&empty, &dev.chain, &person(1), 2);
    assert_ne!(ours.hash(), theirs.hash());
    assert_eq!(post_entry(&c, &base, &id, ours.to_bytes()).await.0, 201);

    for _ in 0..2 {
        let (status, body) = post_entry(&c, &base, &id, theirs.to_bytes()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(code(&body), "consent_conflict");
    }
    assert_eq!(
        read_log(&c, &base, &id, 1).await.unwrap(),
        vec![ours.clone()]
    );
    let (status, forks) = get_json(&c, &format!("{base}/v1/devices/{id}/consents/forks")).await;
    assert_eq!(status, StatusCode::OK);
    let forks = forks["forks"].as_array().unwrap();
    assert_eq!(forks.len(), 1, "{forks:?}");
    let b64 = |v: &Value| {
        data_encoding::BASE64
            .decode(v.as_str().unwrap().as_bytes())
            .unwrap()
    };
    assert_eq!(forks[0]["seq"], 1);
    assert_eq!(b64(&forks[0]["ours"]), ours.to_bytes());
    assert_eq!(b64(&forks[0]["theirs"]), theirs.to_bytes());

    // The held entry under forged signature bytes hashes the same (the hash leaves the
    // signature out) but is no repost: it is refused.
    let mut copy = ours.clone();
    copy.signature.0[9] ^= 4;
    let (status, body) = post_entry(&c, &base, &id, copy.to_bytes()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent"),
        "{body}"
    );
    // A rival that is not validly signed is no evidence: it is merely invalid.
    let mut forged = give(&empty, &dev.chain, &person(1), 3);
    forged.signature.0[0] ^= 1;
    let (status, body) = post_entry(&c, &base, &id, forged.to_bytes()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent")
    );
    let (_, forks) = get_json(&c, &format!("{base}/v1/devices/{id}/consents/forks")).await;
    assert_eq!(forks["forks"].as_array().unwrap().len(), 1);
    node.shutdown().await.unwrap();
}

/// Every way to post an entry the device would refuse, through the real interface: each is
/// `422 invalid_consent` naming the protocol error, and the stored log stays as it was.
#[tokio::test]
async fn every_attack_is_422_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let (alice, bob) = (person(1), person(2));
    let mut dev = claimed(402);
    let id = device_id(&dev);
    // Bob joins, then Alice is removed: she is a former owner.
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    let mut log = ConsentLog::verify(&dev.chain, vec![]).unwrap();
    let early = give(&log, &dev.chain, &alice, 1);
    push(&mut log, &dev.chain, &early);
    publish(&c, &base, &dev).await;
    assert_eq!(post_entry(&c, &base, &id, early.to_bytes()).await.0, 201);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    publish(&c, &base, &dev).await;
    let e2 = give(&log, &dev.chain, &bob, 2);
    assert_eq!(post_entry(&c, &base, &id, e2.to_bytes()).await.0, 201);
    push(&mut log, &dev.chain, &e2);
    let held = read_log(&c, &base, &id, 1).await.unwrap();

    let mut attacks: Vec<(&str, Vec<u8>)> = Vec::new();
    // Each attack with the words of the refusal it must meet.
    let why = [
        ("forged signature", "signature does not verify"),
        ("signer not an owner", "not an owner at its anchor"),
        (
            "former owner after amend-owners",
            "not an owner at its anchor",
        ),
        (
            "former owner with an old anchor",
            "anchor is before the previous entry's",
        ),
        ("wrong prev", "does not link to the entry before it"),
        ("skipped seq", "seq is not the log's next"),
        ("entry for another device", "for another device"),
        ("revoke of an unknown consent", "never given"),
    ];
    let mut forged = give(&log, &dev.chain, &bob, 3);
    forged.signature.0[5] ^= 0x40;
    attacks.push(("forged signature", forged.to_bytes()));
    attacks.push((
        "signer not an owner",
        resign(give(&log, &dev.chain, &bob, 4), &person(9)).to_bytes(),
    ));
    attacks.push((
        "former owner after amend-owners",
        resign(give(&log, &dev.chain, &bob, 5), &alice).to_bytes(),
    ));
    // The former owner anchored where she still was one: the log rules allow the anchor, but
    // a node (like the device) takes only current owners' entries.
    let mut old_anchor = give(&log, &dev.chain, &bob, 11);
    old_anchor.anchor = early.anchor;
    attacks.push((
        "former owner with an old anchor",
        resign(old_anchor, &alice).to_bytes(),
    ));
    // A log that forked at seq 2 builds a seq-3 entry whose prev is not the held entry 2.
    let mut other = ConsentLog::verify(&dev.chain, vec![early.clone()]).unwrap();
    let rival2 = give(&other, &dev.chain, &bob, 6);
    push(&mut other, &dev.chain, &rival2);
    attacks.push(("wrong prev", give(&other, &dev.chain, &bob, 7).to_bytes()));
    // A seq-4 entry when the node holds 2.
    let mut ahead = ConsentLog::verify(&dev.chain, held.clone()).unwrap();
    let e3 = give(&ahead, &dev.chain, &bob, 8);
    push(&mut ahead, &dev.chain, &e3);
    attacks.push(("skipped seq", give(&ahead, &dev.chain, &bob, 9).to_bytes()));
    // A valid entry of another device, posted under this one.
    let other_dev = claimed(403);
    publish(&c, &base, &other_dev).await;
    let foreign = give(
        &ConsentLog::verify(&other_dev.chain, vec![]).unwrap(),
        &other_dev.chain,
        &alice,
        10,
    );
    attacks.push(("entry for another device", foreign.to_bytes()));
    let mut unknown = give(&log, &dev.chain, &bob, 12);
    unknown.time_ms = T0 + HOUR;
    unknown.action = ConsentAction::Revoked(ConsentId([0x5a; 32]));
    attacks.push((
        "revoke of an unknown consent",
        resign(unknown, &bob).to_bytes(),
    ));

    for (attack, body) in attacks {
        let (status, err) = post_entry(&c, &base, &id, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{attack}: {err}");
        assert_eq!(code(&err), "invalid_consent", "{attack}: {err}");
        assert_eq!(proto_error(&err), "ConsentRefused", "{attack}: {err}");
        let words = why.iter().find(|(a, _)| *a == attack).unwrap().1;
        assert!(
            err["error"]["message"].as_str().unwrap().contains(words),
            "{attack}: {err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("nothing was stored"),
            "{attack}: {err}"
        );
        assert_eq!(read_log(&c, &base, &id, 1).await.unwrap(), held, "{attack}");
    }
    // The other device's log is untouched too.
    assert_eq!(
        read_log(&c, &base, &id_of(&other_dev), 1).await.unwrap(),
        vec![]
    );
    let (_, forks) = get_json(&c, &format!("{base}/v1/devices/{id}/consents/forks")).await;
    assert_eq!(forks["forks"].as_array().unwrap().len(), 0);
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_consents_rejected_total{reason=\"invalid_consent\"} 8"),
        "{metrics}"
    );
    node.shutdown().await.unwrap();
}

/// The entry the log rules alone would take (signed by an owner at an anchor not before the
/// last entry's), from an owner removed since: a node takes only current owners' entries.
#[tokio::test]
async fn a_former_owner_cannot_append_with_an_anchor_from_her_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let (alice, bob) = (person(1), person(2));
    let mut dev = claimed(408);
    let id = device_id(&dev);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    publish(&c, &base, &dev).await;
    let mut log = ConsentLog::new(&dev.chain);
    let e1 = give(&log, &dev.chain, &alice, 1);
    assert_eq!(post_entry(&c, &base, &id, e1.to_bytes()).await.0, 201);
    push(&mut log, &dev.chain, &e1);
    let e2 = give(&log, &dev.chain, &alice, 2);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    publish(&c, &base, &dev).await;
    // A reader would take it as history; the node, like the device, does not take it now.
    let reader = ConsentLog::verify(&dev.chain, vec![e1.clone(), e2.clone()]).unwrap();
    assert_eq!(reader.len(), 2);
    let (status, err) = post_entry(&c, &base, &id, e2.to_bytes()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent")
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no longer an owner"),
        "{err}"
    );
    assert_eq!(read_log(&c, &base, &id, 1).await.unwrap(), vec![e1]);
    node.shutdown().await.unwrap();
}

fn id_of(dev: &TestDevice) -> DeviceId {
    device_id(dev)
}

#[tokio::test]
async fn oversized_malformed_and_unknown_are_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let dev = claimed(404);
    let id = device_id(&dev);

    // The device is unknown: 404 for reads and posts.
    let entry = give(
        &ConsentLog::verify(&dev.chain, vec![]).unwrap(),
        &dev.chain,
        &person(1),
        1,
    );
    let (status, body) = post_entry(&c, &base, &id, entry.to_bytes()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_device")
    );
    assert_eq!(
        read_log(&c, &base, &id, 1).await,
        Err(StatusCode::NOT_FOUND)
    );
    let (status, _) = get_json(&c, &format!("{base}/v1/devices/{id}/consents/forks")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    publish(&c, &base, &dev).await;

    // Over 8 KiB, declared: refused before the body is read.
    let (status, body) = post_entry(&c, &base, &id, vec![0u8; 8 * 1024 + 1]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    // A declared length over the cap is answered before a byte of the body is sent.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = format!("/v1/devices/{id}/consents");
    let mut raw = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    raw.write_all(
        format!("POST {path} HTTP/1.1\r\nhost: node\r\ncontent-length: 1000000\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Streamed without a declared length (chunked): cut off at the cap.
    let mut raw = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    raw.write_all(
        format!("POST {path} HTTP/1.1\r\nhost: node\r\ntransfer-encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let chunk = [b"400\r\n".as_slice(), &[0u8; 1024], b"\r\n"].concat();
    for _ in 0..40 {
        // The node may answer and close before the last chunk.
        if raw.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Not one entry.
    for junk in [
        vec![],
        b"hello".to_vec(),
        [entry.to_bytes(), vec![0]].concat(),
    ] {
        let (status, body) = post_entry(&c, &base, &id, junk).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "malformed"),
            "{body}"
        );
    }
    let (status, body) = get_json(&c, &format!("{base}/v1/devices/{id}/consents?from=x")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    assert_eq!(read_log(&c, &base, &id, 1).await.unwrap(), vec![]);
    // And the well-formed entry still goes in.
    assert_eq!(post_entry(&c, &base, &id, entry.to_bytes()).await.0, 201);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_cap_per_device_and_the_post_rate_hold() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_consents_per_device: 2,
        ..Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("a.db"), limits))
        .await
        .unwrap();
    let (c, base) = (client(), node.url());
    let dev = claimed(405);
    let id = device_id(&dev);
    publish(&c, &base, &dev).await;
    let mut log = ConsentLog::verify(&dev.chain, vec![]).unwrap();
    for n in 1..=2 {
        let e = give(&log, &dev.chain, &person(1), n);
        assert_eq!(post_entry(&c, &base, &id, e.to_bytes()).await.0, 201);
        push(&mut log, &dev.chain, &e);
    }
    let third = give(&log, &dev.chain, &person(1), 3);
    let (status, body) = post_entry(&c, &base, &id, third.to_bytes()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INSUFFICIENT_STORAGE, "consent_log_full")
    );
    assert_eq!(read_log(&c, &base, &id, 1).await.unwrap().len(), 2);
    node.shutdown().await.unwrap();

    // Consent posts share the op posts' per-address rate.
    let limits = Limits {
        ops_rate: Some(Rate::new(1, 2)),
        ..Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("b.db"), limits))
        .await
        .unwrap();
    let base = node.url();
    let empty = ConsentLog::verify(&dev.chain, vec![]).unwrap();
    let e = give(&empty, &dev.chain, &person(1), 1);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = c
            .post(format!("{base}/v1/devices/{id}/consents"))
            .body(e.to_bytes())
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
        }
        statuses.push(resp.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    node.shutdown().await.unwrap();
}

/// Starts the real binary on `db` and returns it with its base URL.
fn spawn_binary(db: &Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey-node"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db_arg(db))
        .args(["--ops-rate", "0", "--read-rate", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the latchkey-node binary runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

#[tokio::test]
async fn acknowledged_entries_survive_a_sigkill_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let c = client();
    let dev = claimed(406);
    let id = device_id(&dev);
    let mut log = ConsentLog::verify(&dev.chain, vec![]).unwrap();

    let (mut child, base) = spawn_binary(&db);
    publish(&c, &base, &dev).await;
    for n in 1..=3 {
        let e = give(&log, &dev.chain, &person(1), n);
        assert_eq!(post_entry(&c, &base, &id, e.to_bytes()).await.0, 201);
        push(&mut log, &dev.chain, &e);
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, base) = spawn_binary(&db);
    assert_eq!(read_log(&c, &base, &id, 1).await.unwrap(), log.entries());
    // The node verified its stored log again and takes the next entry on top of it.
    let e4 = give(&log, &dev.chain, &person(1), 4);
    assert_eq!(post_entry(&c, &base, &id, e4.to_bytes()).await.0, 201);
    assert_eq!(read_log(&c, &base, &id, 4).await.unwrap(), vec![e4]);
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn wait_for_log(c: &reqwest::Client, base: &str, id: &DeviceId, want: &[ConsentEntry]) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if read_log(c, base, id, 1).await.ok().as_deref() == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "the node never caught up: {:?}",
            read_log(c, base, id, 1).await.map(|l| l.len())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_that_missed_posts_catches_up_from_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a.db")).await;
    let (c, base_a) = (client(), a.url());
    let (alice, bob) = (person(1), person(2));
    let mut dev = claimed(407);
    let id = device_id(&dev);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    publish(&c, &base_a, &dev).await;
    let mut log = ConsentLog::verify(&dev.chain, vec![]).unwrap();
    let e1 = give(&log, &dev.chain, &alice, 1);
    assert_eq!(post_entry(&c, &base_a, &id, e1.to_bytes()).await.0, 201);
    push(&mut log, &dev.chain, &e1);

    // B replicates from A: it takes the chain and the entry it never saw posted.
    let b = node_with_peers(&dir.path().join("b.db"), &[&a]).await;
    wait_for_log(&c, &b.url(), &id, log.entries()).await;

    // Alice is removed; Bob signs on. A node that starts now still takes Alice's old entry:
    // it verifies as history, though Alice could no longer post it.
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    publish(&c, &base_a, &dev).await;
    let e2 = give(&log, &dev.chain, &bob, 2);
    assert_eq!(post_entry(&c, &base_a, &id, e2.to_bytes()).await.0, 201);
    push(&mut log, &dev.chain, &e2);
    wait_for_log(&c, &b.url(), &id, log.entries()).await;
    let fresh = node_with_peers(&dir.path().join("c.db"), &[&b]).await;
    wait_for_log(&c, &fresh.url(), &id, log.entries()).await;
    let (status, body) = post_entry(&c, &fresh.url(), &id, e1.to_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let metrics = fresh.metrics().render();
    assert!(
        metrics.contains("latchkey_replication_consents_total 2"),
        "{metrics}"
    );
    for n in [fresh, b, a] {
        n.shutdown().await.unwrap();
    }
}

/// Attack: a removed owner and one lying peer plant an entry with an anchor from her time (a
/// consent for her own provider) at the head of a log. The peer's database is tampered with
/// directly, so it serves the entry as history; a fresh node replicating from it does not take
/// it, because nothing a current owner signed builds on it.
#[tokio::test]
async fn a_lying_peer_cannot_plant_a_former_owners_entry_by_replication() {
    let dir = tempfile::tempdir().unwrap();
    let db_a = dir.path().join("a.db");
    let a = node(&db_a).await;
    let c = client();
    let (alice, bob) = (person(1), person(2));
    let mut dev = claimed(409);
    let id = device_id(&dev);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    publish(&c, &a.url(), &dev).await;
    let mut log = ConsentLog::new(&dev.chain);
    let e1 = give(&log, &dev.chain, &alice, 1);
    assert_eq!(post_entry(&c, &a.url(), &id, e1.to_bytes()).await.0, 201);
    push(&mut log, &dev.chain, &e1);
    // Signed while Alice was an owner, never posted; then she is removed.
    let planted = give(&log, &dev.chain, &alice, 2);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    publish(&c, &a.url(), &dev).await;
    a.shutdown().await.unwrap();
    if on_postgres() {
        // The feed counter moves too, as a real append would move it.
        cluster().psql(
            &pg_name(&db_a),
            &format!(
                "WITH c AS (UPDATE feed_counters SET last = last + 1 WHERE feed = 'consents' \
                 RETURNING last) INSERT INTO consents (cursor, device, seq, hash, bytes, \
                 accepted_ms) SELECT last, '\\x{}', 2, '\\x{}', '\\x{}', 0 FROM c",
                hex::encode(id.0),
                hex::encode(planted.hash()),
                hex::encode(planted.to_bytes())
            ),
        );
    } else {
        let db = rusqlite::Connection::open(&db_a).unwrap();
        db.execute(
            "INSERT INTO consents (device, seq, hash, bytes, accepted_ms) VALUES (?1, 2, ?2, ?3, 0)",
            rusqlite::params![
                id.0.to_vec(),
                planted.hash().to_vec(),
                planted.to_bytes()
            ],
        )
        .unwrap();
    }
    let a = node(&db_a).await;
    assert_eq!(
        read_log(&c, &a.url(), &id, 1).await.unwrap(),
        vec![e1.clone(), planted.clone()],
        "the lying peer serves the planted entry"
    );

    // The fresh node replicates the chain, then refuses the run: its last entry is by a former
    // owner, and so is the one before it, so no current owner has built on either yet.
    let b = node_with_peers(&dir.path().join("b.db"), &[&a]).await;
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while read_log(&c, &b.url(), &id, 1).await.is_err() {
        assert!(std::time::Instant::now() < until, "B never got the chain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        read_log(&c, &b.url(), &id, 1).await.unwrap(),
        Vec::<ConsentEntry>::new(),
        "the honest node took a former owner's unsettled entries"
    );
    for n in [b, a] {
        n.shutdown().await.unwrap();
    }
}
