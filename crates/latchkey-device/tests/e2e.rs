//! End to end on loopback with real components: three registry nodes, the real `latchkeyd`
//! binary (killed with SIGKILL and restarted on the same directory), and a sender built on
//! the protocol core.

mod support;

use std::os::unix::process::CommandExt as _;

use std::time::Duration;

use latchkey_device::audit::{verify_entries, AuditBody, AuditPage};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{RejectCode, ReplyTo};
use latchkey_proto::envelope::MAX_SEALED_COMMAND;
use latchkey_proto::grant::{GrantBody, GrantScope};
use latchkey_testkit::{flip_bit, person};
use support::*;

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_commands_run_replays_and_bad_commands_are_refused_without_side_effects() {
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, out, printed) = init_door(&nodes, &[]);
    assert!(
        printed.contains("▀") || printed.contains("▄"),
        "QR drawn in the terminal"
    );
    assert!(dir.join("claim.png").exists() && dir.join("claim.txt").exists());
    let agent = Agent::start(&dir);
    let owner = person(1);
    let chain = claim(&dir, &agent.url, &owner, &nodes.urls()).await;
    let sender = Sender::new(person(1), chain.clone());

    // A valid owner command runs the exec actuator.
    let (envelope, pending) = sender.seal(sender.command("unlock", b"front\0--fast"));
    let response = sender.send(&agent.url, envelope.clone(), &pending).await;
    assert_eq!(code(&response), 0, "{:?}", response.response.outcome);
    assert_eq!(response.response.body, b"opened\n");
    assert!(response.response.timestamp_ms.unwrap() > 0);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "unlock front --fast\n"
    );

    // The same envelope again: refused, nothing runs.
    let again = sender.send(&agent.url, envelope.clone(), &pending).await;
    assert_eq!(code(&again), RejectCode::Replayed as u16);
    assert_eq!(lines(&out), 1);

    // kill -9 and restart on the same directory: the nonce (kept in memory) is gone, but the
    // envelope is signed before the restart barrier, so it needs a challenge it cannot carry.
    agent.kill9();
    let agent = Agent::start(&dir);
    let after_crash = sender.send(&agent.url, envelope.clone(), &pending).await;
    assert!(
        matches!(
            after_crash.response.outcome,
            latchkey_proto::command::Outcome::ChallengeRequired { .. }
        ),
        "{:?}",
        after_crash.response.outcome
    );
    assert_eq!(lines(&out), 1);

    // A stranger.
    let stranger = Sender::new(person(2), chain.clone());
    let (env, pending) = stranger.seal(stranger.command("unlock", b""));
    let r = stranger.send(&agent.url, env, &pending).await;
    assert_eq!(code(&r), RejectCode::NotAuthorized as u16);

    // A stale timestamp.
    let mut old = sender.command("unlock", b"");
    old.timestamp_ms -= 5 * 60_000;
    let (env, pending) = sender.seal(old);
    let r = sender.send(&agent.url, env, &pending).await;
    assert_eq!(code(&r), RejectCode::TooOld as u16);

    // An expired grant.
    let guest = Sender::new(person(3), chain.clone());
    let state = chain.state();
    let grant = GrantBody {
        issuer: owner.public_key(),
        subject: guest.key.public_key(),
        scope: vec![GrantScope {
            device: state.device,
            epoch: state.epoch,
        }],
        actions: vec!["unlock".into()],
        not_before_ms: now_ms() - 7_200_000,
        not_after_ms: now_ms() - 3_600_000,
        use_limit: None,
        delegation_depth: 0,
        extensions: vec![],
        salt: [5; 16],
    }
    .sign(&owner)
    .unwrap();
    let mut c = guest.command("unlock", b"");
    c.grants = vec![grant];
    let (env, pending) = guest.seal(c);
    let r = guest.send(&agent.url, env, &pending).await;
    assert_eq!(code(&r), RejectCode::GrantExpired as u16);

    // Bytes that never authenticate: answered 400/413 with a JSON reason, no sealed body.
    let (good, _) = sender.seal(sender.command("unlock", b""));
    let (status, body) = sender.post(&agent.url, flip_bit(&good, 1500)).await;
    assert_eq!((status, error_code(&body).as_str()), (400, "decrypt"));
    let (status, body) = sender
        .post(&agent.url, good[..good.len() - 10].to_vec())
        .await;
    assert_eq!((status, error_code(&body).as_str()), (400, "size"));
    let (status, body) = sender
        .post(&agent.url, vec![1u8; MAX_SEALED_COMMAND + 1])
        .await;
    assert_eq!((status, error_code(&body).as_str()), (413, "too_large"));
    assert_eq!(lines(&out), 1, "no refused command ran the actuator");

    // The audit log holds all of it, signed and chained (the owner answers the restart's
    // challenge, as the app does).
    let r = sender
        .send_answering(&agent.url, sender.command("audit", b""))
        .await;
    assert_eq!(code(&r), 0);
    let page = AuditPage::from_bytes(&r.response.body).unwrap();
    verify_entries(&page.entries, &chain.state().identity, None).unwrap();
    let kinds: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.entry.body.kind_name())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "era",
            "about_to_run",
            "decision",
            "decision",
            "decision",
            "decision",
            "decision",
            "refusals"
        ]
    );
    let codes: Vec<u16> = page
        .entries
        .iter()
        .filter_map(|e| match &e.entry.body {
            AuditBody::Decision(r) => Some(r.code),
            _ => None,
        })
        .collect();
    // Accepted; the copy resent after the restart, challenged (the first copy's replay was
    // counted, and counts do not survive kill -9); the owner's stale timestamp; the guest's
    // expired grant; the challenge the owner answered to read this page.
    assert_eq!(codes, vec![0, 16, 4, 9, 16]);
    let AuditBody::Refusals(summary) = &page.entries[7].entry.body else {
        unreachable!()
    };
    let rows: Vec<(&str, &str, u32)> = summary
        .rows
        .iter()
        .map(|r| (r.class.name(), r.stage.name(), r.count))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("unauthenticated", "size", 2),
            ("unauthenticated", "decrypt", 1),
            ("no_standing", "authority", 1),
        ]
    );

    // Status reports the verified owner.
    let status = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["claimed"], true);
    assert_eq!(status["agent_running"], true);
    assert_eq!(status["owners"][0], owner.public_key().to_string());
    assert_eq!(status["freshness"]["stale"], false);

    // Tampering with the stored log is detected.
    agent.stop();
    let ok = latchkeyd(&["audit", "--dir", dir.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    {
        let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
        let entry: Vec<u8> = db
            .query_row("SELECT entry FROM audit_log WHERE seq = 3", [], |r| {
                r.get(0)
            })
            .unwrap();
        // Rewrite the replay's rejection as an acceptance (the code field).
        let mut forged = latchkey_device::audit::SignedEntry::from_bytes(&entry).unwrap();
        let AuditBody::Decision(r) = &mut forged.entry.body else {
            unreachable!()
        };
        r.code = 0;
        db.execute(
            "UPDATE audit_log SET entry = ?1 WHERE seq = 3",
            [forged.to_bytes()],
        )
        .unwrap();
    }
    let bad = latchkeyd(&["audit", "--dir", dir.to_str().unwrap()]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("TAMPERED") && stderr.contains("entry 3"),
        "{stderr}"
    );
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_commands_run_once_and_answer_through_a_mailbox() {
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, out, _) = init_door(&nodes, &[]);
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    let sender = Sender::new(person(1), chain.clone());

    let reply_box = [0x5a; 32];
    let mut c = sender.command("unlock", b"relay");
    c.reply_to = ReplyTo::Mailbox(reply_box);
    let (envelope, pending) = sender.seal(c);
    let device_box = hex::encode(chain.device().0);
    let http = reqwest::Client::new();
    // The same envelope through two nodes.
    for node in &nodes.urls()[..2] {
        let r = http
            .post(format!("{node}/v1/mailboxes/{device_box}"))
            .body(envelope.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let node = &nodes.urls()[0];
    let page: serde_json::Value = http
        .get(format!(
            "{node}/v1/mailboxes/{}?after=0&wait_secs=20",
            hex::encode(reply_box)
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
    assert_eq!(code(&response), 0);
    // Give the second copy time to arrive and be dropped.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lines(&out), 1, "duplicates through two nodes ran once");
    let audit = latchkeyd(&["audit", "--dir", dir.to_str().unwrap(), "--json"]);
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["era", "about_to_run", "decision"],
        "the copy is not logged as a replay: {entries:?}"
    );
    assert_eq!(entries[2]["via"], "relay");
    assert_eq!(audit["verified"], true);
    drop(agent);
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_reset_voids_the_owners_and_the_device_can_be_claimed_again() {
    let nodes = Nodes::start(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    init(&dir, &nodes.urls(), &["--action", "unlock=log"]);
    let old_text = std::fs::read_to_string(dir.join("claim.txt")).unwrap();
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;

    // Refused while the agent runs on the directory.
    let busy = latchkeyd(&["reset", "--dir", dir.to_str().unwrap()]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("stop it first"));
    agent.stop();

    let reset = latchkeyd(&["reset", "--dir", dir.to_str().unwrap()]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let printed = String::from_utf8_lossy(&reset.stdout);
    assert!(printed.contains("published to 3 node(s)"), "{printed}");
    let new_text = std::fs::read_to_string(dir.join("claim.txt")).unwrap();
    assert_ne!(old_text, new_text, "a new setup key, a new QR");
    let status = latchkeyd(&[
        "status",
        "--dir",
        dir.to_str().unwrap(),
        "--json",
        "--check",
    ]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["claimed"], false);
    assert_eq!(status["setup_key_matches"], true);
    assert_eq!(status["live_check"]["seq"], 2, "the nodes hold the reset");

    let agent = Agent::start(&dir);
    let old_owner = Sender::new(person(1), wait_for_seq(&agent.url, 2).await);
    let (env, pending) = old_owner.seal(old_owner.command("unlock", b""));
    let r = old_owner.send(&agent.url, env, &pending).await;
    assert_eq!(code(&r), RejectCode::NotAuthorized as u16);
    // The old QR's setup key is void; the new one claims it.
    assert_ne!(chain.head(), old_owner.chain.head());
    let chain = claim(&dir, &agent.url, &person(4), &nodes.urls()).await;
    let new_owner = Sender::new(person(4), chain);
    // Commands accepted before the reset are behind the restart barrier: a challenge first.
    let r = new_owner
        .send_answering(&agent.url, new_owner.command("unlock", b""))
        .await;
    assert_eq!(code(&r), 0);
    drop(agent);
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_working_from_its_cached_view_when_nodes_are_down_and_says_so() {
    let nodes = Nodes::start(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    init(
        &dir,
        &nodes.urls(),
        &["--action", "unlock=log", "--max-view-age-secs", "1"],
    );
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    nodes.stop().await;
    // Restarted with every node down: it works from the chain in state.db.
    agent.kill9();
    let agent = Agent::start(&dir);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sender = Sender::new(person(1), chain.clone());
    let r = sender
        .send_answering(&agent.url, sender.command("unlock", b""))
        .await;
    assert_eq!(code(&r), 0);
    let status = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["claimed"], true);
    assert_eq!(status["freshness"]["stale"], true);
    assert!(status["freshness"]["problem"].is_string(), "{status}");
    let audit = latchkeyd(&["audit", "--dir", dir.to_str().unwrap(), "--json"]);
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let outcome = &audit["entries"][2];
    assert_eq!(outcome["kind"], "decision");
    assert_eq!(outcome["stale_view"], true);
    assert_eq!(outcome["code"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_actuator_publishes_to_a_real_mosquitto() {
    let port = free_port();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let mut broker = std::process::Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto is installed (apt-get install mosquitto)");
    // Subscribe first (retrying until the broker listens).
    let mut options = rumqttc::MqttOptions::new("latchkey-test-sub", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    client
        .subscribe("home/door/bell", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let subscriber = tokio::spawn(async move {
        let mut subscribed = false;
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) if !subscribed => {
                    subscribed = true;
                    let _ = tx.send(None);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(Some((p.topic.clone(), p.payload.to_vec())));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let ready = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert!(matches!(ready, Ok(Some(None))), "subscribed to mosquitto");

    let nodes = Nodes::start(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    init(
        &dir,
        &nodes.urls(),
        &[
            "--action",
            &format!("bell=mqtt:127.0.0.1:{port}/home/door/bell"),
        ],
    );
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    let sender = Sender::new(person(1), chain);
    let (env, pending) = sender.seal(sender.command("bell", b"ding"));
    let r = sender.send(&agent.url, env, &pending).await;
    assert_eq!(code(&r), 0, "{:?}", r.response.outcome);
    assert_eq!(r.response.body, b"published 4 bytes to home/door/bell");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the message arrives");
    assert_eq!(
        got,
        Some(Some(("home/door/bell".to_owned(), b"ding".to_vec())))
    );

    // A refused command publishes nothing.
    let stranger = Sender::new(person(2), sender.chain.clone());
    let (env, pending) = stranger.seal(stranger.command("bell", b"intruder"));
    assert_eq!(
        code(&stranger.send(&agent.url, env, &pending).await),
        RejectCode::NotAuthorized as u16
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(700), rx.recv())
            .await
            .is_err(),
        "nothing published"
    );
    subscriber.abort();
    let _ = broker.kill();
    let _ = broker.wait();
    drop(agent);
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_private_files_and_never_overwrites_a_device() {
    use std::os::unix::fs::PermissionsExt;
    let nodes = Nodes::start(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    let printed = init(&dir, &nodes.urls(), &["--action", "unlock=log"]);
    let text = std::fs::read_to_string(dir.join("claim.txt")).unwrap();
    let payload = latchkey_proto::claim::ClaimPayload::parse(&text).unwrap();
    assert!(
        printed.contains(&payload.device_id().short()),
        "short id printed"
    );
    for (file, mode) in [
        ("device.key", 0o600),
        ("claim.txt", 0o600),
        ("claim.png", 0o600),
        ("latchkeyd.toml", 0o600),
        (".", 0o700),
    ] {
        let m = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{file}");
    }
    let key_before = std::fs::read(dir.join("device.key")).unwrap();
    let again = latchkeyd(&[
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--name",
        "Other",
        "--listen",
        "127.0.0.1:0",
        "--node",
        &nodes.urls()[0],
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a device"));
    assert_eq!(std::fs::read(dir.join("device.key")).unwrap(), key_before);
    // Bad actions are refused before anything is written.
    let other = tmp.path().join("other");
    let bad = latchkeyd(&[
        "init",
        "--dir",
        other.to_str().unwrap(),
        "--name",
        "X",
        "--listen",
        "127.0.0.1:0",
        "--node",
        &nodes.urls()[0],
        "--action",
        "open=exec:relative/script",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("absolute"));
    assert!(!other.join("device.key").exists());
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_a_trusted_clock_answers_with_a_challenge() {
    let nodes = Nodes::start(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    init(
        &dir,
        &nodes.urls(),
        &["--action", "unlock=log", "--untrusted-clock"],
    );
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    let sender = Sender::new(person(1), chain);
    let (env, pending) = sender.seal(sender.command("unlock", b""));
    let first = sender.send(&agent.url, env, &pending).await;
    assert_eq!(first.response.timestamp_ms, None);
    let latchkey_proto::command::Outcome::ChallengeRequired { challenge } = first.response.outcome
    else {
        panic!("expected a challenge, got {:?}", first.response.outcome);
    };
    let mut c = sender.command("unlock", b"");
    c.challenge = Some(challenge);
    let (env, pending) = sender.seal(c);
    assert_eq!(
        code(&sender.send(&agent.url, env.clone(), &pending).await),
        0
    );
    // The same envelope again: the challenge is spent.
    assert_eq!(
        code(&sender.send(&agent.url, env, &pending).await),
        RejectCode::ClockUnset as u16
    );
    drop(agent);
    nodes.stop().await;
}

/// POSTs bytes to `/v1/ops`; the status and the JSON answer.
async fn push(url: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/ops"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_every_node_a_pushed_revocation_holds_at_once_and_guests_expire() {
    use latchkey_proto::chain::{OpBody, OpList};
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, out, _) = init_door(&nodes, &["--max-guest-staleness-secs", "10"]);
    let toml = std::fs::read_to_string(dir.join("latchkeyd.toml")).unwrap();
    assert!(toml.contains("max_guest_staleness_secs = 10"), "{toml}");
    assert!(toml.contains("max_owner_staleness_secs = 86400"), "{toml}");
    let agent = Agent::start(&dir);
    let owner = person(1);
    let chain = claim(&dir, &agent.url, &owner, &nodes.urls()).await;
    let sender = Sender::new(person(1), chain.clone());
    let thief = Sender::new(person(3), chain.clone());
    let other = Sender::new(person(5), chain.clone());
    let stolen = hour_grant(&owner, &thief, &chain, 1);
    let kept = hour_grant(&owner, &other, &chain, 2);
    assert_eq!(code(&guest_unlock(&thief, &agent.url, &stolen).await), 0);
    assert_eq!(lines(&out), 1);

    // The uplink is cut: every node is gone. The owner revokes on the LAN.
    nodes.stop().await;
    let cut_at = std::time::Instant::now();
    let mut revoke = chain.propose(
        now_ms(),
        OpBody::RevokeGrant {
            chain: vec![stolen.clone()],
        },
    );
    revoke.sign(&owner);
    let mut revoked = chain.clone();
    revoked.append(revoke.clone()).unwrap();

    // Forged, non-extending and malformed lists change nothing.
    let held = fetch_chain(&reqwest::Client::new(), &agent.url)
        .await
        .head();
    let mut forged = revoke.clone();
    forged.body = OpBody::RevokeGrant {
        chain: vec![kept.clone()],
    };
    let gap = {
        let mut op = revoked.propose(
            now_ms(),
            OpBody::RevokeGrant {
                chain: vec![kept.clone()],
            },
        );
        op.seq += 3;
        op.sign(&owner);
        op
    };
    let mut by_a_stranger = chain.propose(
        now_ms(),
        OpBody::RevokeGrant {
            chain: vec![kept.clone()],
        },
    );
    by_a_stranger.sign(&person(9));
    for (name, body, status, code_name) in [
        (
            "forged signature",
            OpList(vec![forged]).to_bytes(),
            400,
            "bad_ops",
        ),
        ("gap", OpList(vec![gap]).to_bytes(), 400, "bad_ops"),
        (
            "stranger's op",
            OpList(vec![by_a_stranger]).to_bytes(),
            400,
            "bad_ops",
        ),
        ("garbage", vec![0xff; 40], 400, "bad_ops"),
        ("too large", vec![0; 300 * 1024], 413, "too_large"),
    ] {
        let (s, v) = push(&agent.url, body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str().unwrap()),
            (status, code_name),
            "{name}: {v}"
        );
    }
    assert_eq!(
        fetch_chain(&reqwest::Client::new(), &agent.url)
            .await
            .head(),
        held
    );

    // The revocation: stored at once, enforced at once.
    let (s, v) = push(&agent.url, OpList(revoked.ops().to_vec()).to_bytes()).await;
    assert_eq!(s, 200, "{v}");
    // A revocation is a side op: the spine (and its head) stay where they were.
    assert_eq!(v["seq"], 1);
    assert_eq!(v["added"], 1);
    assert_eq!(v["head"], revoked.head().to_string());
    let r = guest_unlock(&thief, &agent.url, &stolen).await;
    assert_eq!(code(&r), RejectCode::GrantRevoked as u16);
    // Pushing it again adds nothing; another revocation made against the same op (say, by a
    // co-owner at the same moment) is not a fork: revocations merge.
    let (s, v) = push(&agent.url, OpList(vec![revoke.clone()]).to_bytes()).await;
    assert_eq!((s, v["added"].as_u64()), (200, Some(0)));
    let spare_guest = Sender::new(person(7), chain.clone());
    let spare = hour_grant(&owner, &spare_guest, &chain, 3);
    let mut concurrent = chain.propose(
        now_ms(),
        OpBody::RevokeGrant {
            chain: vec![spare.clone()],
        },
    );
    concurrent.sign(&owner);
    let (s, v) = push(&agent.url, OpList(vec![concurrent]).to_bytes()).await;
    assert_eq!((s, v["added"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(
        code(&guest_unlock(&spare_guest, &agent.url, &spare).await),
        RejectCode::GrantRevoked as u16
    );
    assert_eq!(
        code(&guest_unlock(&thief, &agent.url, &stolen).await),
        RejectCode::GrantRevoked as u16,
        "both revocations hold"
    );
    assert!(
        cut_at.elapsed() < Duration::from_secs(9),
        "still inside the guest bound"
    );
    assert_eq!(code(&guest_unlock(&other, &agent.url, &kept).await), 0);
    assert_eq!(lines(&out), 2);

    // A restart keeps the pushed op (it was stored, not just held in memory).
    agent.kill9();
    let agent = Agent::start(&dir);
    assert_eq!(
        code(&guest_unlock(&thief, &agent.url, &stolen).await),
        RejectCode::GrantRevoked as u16
    );

    // Past the guest bound without a quorum, guests are refused in plain words; owners are not.
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(cut_at.elapsed())).await;
    let r = guest_unlock(&other, &agent.url, &kept).await;
    let latchkey_proto::command::Outcome::Rejected { code: c, reason } = &r.response.outcome else {
        panic!("expected a refusal, got {:?}", r.response.outcome);
    };
    assert_eq!(*c, RejectCode::StaleView as u16);
    assert!(
        reason.starts_with("the door cannot confirm your invitation is still valid; it has been offline from the registry since"),
        "{reason}"
    );
    let unlock = sender
        .send_answering(&agent.url, sender.command("unlock", b""))
        .await;
    assert_eq!(code(&unlock), 0);
    assert_eq!(lines(&out), 3, "two guest unlocks and the owner's");

    let status = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["freshness"]["guests_refused"], true, "{status}");
    assert_eq!(status["freshness"]["owners_refused"], false, "{status}");
    assert_eq!(status["seq"], 1);
    assert_eq!(
        status["freshness"]["forks"], 0,
        "concurrent revocations are no fork"
    );
    let text = latchkeyd(&["status", "--dir", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("guests   REFUSED"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_command_replayed_after_the_clock_is_set_back_does_not_run() {
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, out, _) = init_door(&nodes, &[]);
    // A 3 s window, so the nonce is forgotten within seconds (pruned once per window).
    let config = dir.join("latchkeyd.toml");
    let toml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_age_ms = 60000", "max_age_ms = 3000");
    assert!(toml.contains("max_age_ms = 3000"));
    std::fs::write(&config, toml).unwrap();
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    let sender = Sender::new(person(1), chain);

    // The owner's real envelope, captured on the way.
    let capture_ms = now_ms();
    let mut c = sender.command("unlock", b"");
    c.timestamp_ms = capture_ms;
    let (captured, pending) = sender.seal(c);
    assert_eq!(
        code(&sender.send(&agent.url, captured.clone(), &pending).await),
        0
    );
    assert_eq!(lines(&out), 1);

    // Past the window, and a few refreshes later, so the durable mark is well past it when
    // the clock goes back.
    let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mark: i64 = db
            .query_row("SELECT ms FROM clock WHERE key = 'mark'", [], |r| r.get(0))
            .unwrap();
        if mark as u64 > capture_ms + 5_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mark was never raised"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop();

    // The attacker steers the clock back to the capture time and restarts the agent.
    let at = |ms: u64| {
        let s = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{}", ms / 1000), "+%Y-%m-%d %H:%M:%S"])
            .output()
            .unwrap();
        String::from_utf8(s.stdout).unwrap().trim().to_owned()
    };
    let faked = at(capture_ms);
    let log = std::fs::File::create(dir.join("faketime.log")).unwrap();
    // faketime forks the agent and waits for it: run both in their own process group and kill
    // the group, or the agent outlives the test.
    let mut child = ProcessGroup(
        std::process::Command::new("faketime")
            .args([&faked, BIN, "run", "--dir", dir.to_str().unwrap()])
            .env("TZ", "UTC")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("RUST_LOG", "info")
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("faketime is installed (apt-get install faketime)"),
    );
    let url = {
        use std::io::BufRead;
        let stdout = child.0.stdout.take().unwrap();
        let mut lines_in = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines_in
                .next()
                .expect("the agent prints its address")
                .unwrap();
            if let Some(u) = line.strip_prefix("listening on ") {
                break u.to_owned();
            }
        }
    };
    let (status, body) = sender.post(&url, captured.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = pending.open(&body, &sender.chain.state().identity).unwrap();
    assert_ne!(code(&r), 0, "the replay was accepted");
    assert_eq!(
        code(&r),
        RejectCode::ClockUnset as u16,
        "a clock behind its mark asks for a challenge: {:?}",
        r.response.outcome
    );
    assert_eq!(lines(&out), 1, "the actuator ran once, not twice");
    let status = std::process::Command::new("faketime")
        .args([
            &faked,
            BIN,
            "status",
            "--dir",
            dir.to_str().unwrap(),
            "--json",
        ])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["clock"]["state"], "behind", "{status}");
    assert!(status["clock"]["message"]
        .as_str()
        .unwrap()
        .contains("behind its high-water mark"));
    drop(child);
    let audit = latchkeyd(&["audit", "--dir", dir.to_str().unwrap(), "--json"]);
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("behind its high-water mark"),
        "{last}"
    );
    nodes.stop().await;
}

/// A child process leading its own process group; dropping it kills the whole group (SIGKILL).
struct ProcessGroup(std::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}
