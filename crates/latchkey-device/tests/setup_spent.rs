//! Issue 10, item 1: the setup secret is spent for real. Once the device's verified chain holds
//! a claim, the setup key leaves `device.key` and the claim QR files are deleted, so a later
//! look at the device's disk or screen yields nothing that can sign a claim; a claim made with
//! an old photo of the QR is refused and the rightful owner keeps the door. Real `latchkeyd`
//! binary, three registry nodes on loopback.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use latchkey_device::keyfile::{DeviceSecrets, MAX_KEY_FILE};
use latchkey_device::lifecycle::SETUP_SPENT;
use latchkey_proto::chain::{OpBody, OpList, OwnerSet};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::codec::Codec;
use latchkey_proto::command::RejectCode;
use latchkey_testkit::person;
use support::*;

/// Waits until the agent has erased the claim files (it does right after learning the claim).
async fn wait_until_gone(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.join("claim.txt").exists() || dir.join("claim.png").exists() {
        assert!(
            Instant::now() < deadline,
            "the claim files are still there after the claim"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(dir: &Path) -> (String, serde_json::Value) {
    let d = dir.to_str().unwrap();
    let text = latchkeyd(&["status", "--dir", d]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let json = latchkeyd(&["status", "--dir", d, "--json"]);
    (
        String::from_utf8(text.stdout).unwrap(),
        serde_json::from_slice(&json.stdout).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_spends_the_setup_secret_and_an_old_photo_of_the_qr_claims_nothing() {
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, door_log, _) = init_door(&nodes, &[]);
    // The stranger's "photo of the QR": the claim code as the device showed it before its claim.
    let photo = std::fs::read_to_string(dir.join("claim.txt")).unwrap();
    let leaked = ClaimPayload::parse(&photo).unwrap();
    let setup_secret = *leaked.setup_key().to_bytes();
    let (text, _) = status(&dir);
    assert!(text.contains("unclaimed; the claim code is in"), "{text}");

    // A device installed before key-file version 2: its key file is in the old format.
    let secrets = DeviceSecrets::from_bytes(&std::fs::read(dir.join("device.key")).unwrap())
        .unwrap()
        .to_device_keys()
        .unwrap();
    latchkey_device::files::write_private(&dir.join("device.key"), &secrets.to_secret_bytes())
        .unwrap();
    assert_eq!(std::fs::read(dir.join("device.key")).unwrap()[0], 1);
    let key_before = std::fs::read(dir.join("device.key")).unwrap();
    assert!(key_before.windows(32).any(|w| w == setup_secret));

    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    wait_until_gone(&dir).await;

    // The secret is gone from the key file's bytes; the device keeps its identity and KEM keys.
    let key_after = std::fs::read(dir.join("device.key")).unwrap();
    assert!(
        !key_after.windows(32).any(|w| w == setup_secret),
        "the setup secret is still in device.key"
    );
    assert_eq!(key_after.len(), MAX_KEY_FILE - 32);
    assert_eq!(key_after[0], 2, "rewritten in the current format");
    let spent = DeviceSecrets::from_bytes(&key_after).unwrap();
    assert!(spent.setup.is_none());
    assert_eq!(spent.device_id(), chain.device());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("device.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        !dir.join("device.tmp-latchkeyd").exists(),
        "no temporary copy is left behind"
    );
    let (text, json) = status(&dir);
    assert!(text.contains(SETUP_SPENT), "{text}");
    assert_eq!(json["setup_code"], SETUP_SPENT);
    assert_eq!(json["claimed"], true);

    // The stranger signs a claim for themself with the photographed setup key and hands it to
    // the device on the LAN: refused, nothing changes.
    let stranger = person(66);
    let genesis = chain.ops()[0].clone();
    let mut rival = latchkey_proto::chain::Chain::from_genesis(genesis).unwrap();
    let mut op = rival.propose(
        now_ms(),
        OpBody::Claim(OwnerSet {
            owners: vec![stranger.public_key()],
            threshold: 1,
        }),
    );
    op.sign(&leaked.setup_key());
    op.sign(&stranger);
    rival.append(op.clone()).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/ops", agent.url))
        .body(OpList(rival.ops().to_vec()).to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "{}", r.text().await.unwrap());
    let held = fetch_chain(&reqwest::Client::new(), &agent.url).await;
    assert_eq!(
        held.head(),
        chain.head(),
        "the device keeps the rightful claim"
    );

    // The rightful owner is obeyed, the stranger is not.
    let owner = Sender::new(person(1), chain.clone());
    let (env, pending) = owner.seal(owner.command("unlock", b""));
    assert_eq!(code(&owner.send(&agent.url, env, &pending).await), 0);
    let thief = Sender::new(stranger, rival);
    let (env, pending) = thief.seal(thief.command("unlock", b""));
    assert_eq!(
        code(&thief.send(&agent.url, env, &pending).await),
        RejectCode::NotAuthorized as u16
    );
    assert_eq!(lines(&door_log), 1);

    // A restart changes nothing: the device still loads its keys and obeys its owner (after
    // the one challenge its restart barrier asks of a command signed just after the restart).
    agent.stop();
    let agent = Agent::start(&dir);
    let r = owner
        .send_answering(&agent.url, owner.command("unlock", b""))
        .await;
    assert_eq!(code(&r), 0);
    assert_eq!(lines(&door_log), 2);
    assert_eq!(std::fs::read(dir.join("device.key")).unwrap(), key_after);

    // A factory reset makes a new setup key and a new claim QR.
    agent.stop();
    let reset = latchkeyd(&["reset", "--dir", dir.to_str().unwrap()]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let fresh =
        ClaimPayload::parse(&std::fs::read_to_string(dir.join("claim.txt")).unwrap()).unwrap();
    assert!(dir.join("claim.png").exists());
    let new_secret = *fresh.setup_key().to_bytes();
    assert_ne!(new_secret, setup_secret);
    let key_reset = std::fs::read(dir.join("device.key")).unwrap();
    assert_eq!(key_reset.len(), MAX_KEY_FILE);
    assert!(key_reset.windows(32).any(|w| w == new_secret));
    let (text, json) = status(&dir);
    assert!(text.contains("unclaimed; the claim code is in"), "{text}");
    assert_eq!(json["setup_key_matches"], true);
    nodes.stop().await;
}

/// The agent was stopped right after it learnt a claim, before it could erase the secret (or
/// ran an older version that never did): `latchkeyd status` and the next start erase it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_learnt_while_the_secret_stayed_on_disk_is_spent_by_status() {
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, _, _) = init_door(&nodes, &[]);
    let photo = std::fs::read(dir.join("claim.txt")).unwrap();
    let png = std::fs::read(dir.join("claim.png")).unwrap();
    let key_before = std::fs::read(dir.join("device.key")).unwrap();
    let agent = Agent::start(&dir);
    claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    wait_until_gone(&dir).await;
    agent.stop();
    // Put the state of a crash before the erasure back: the old key file and QR files.
    latchkey_device::files::write_private(&dir.join("device.key"), &key_before).unwrap();
    latchkey_device::files::write_private(&dir.join("claim.txt"), &photo).unwrap();
    latchkey_device::files::write_private(&dir.join("claim.png"), &png).unwrap();

    let (text, json) = status(&dir);
    assert!(text.contains(SETUP_SPENT), "{text}");
    assert_eq!(json["setup_code"], SETUP_SPENT);
    assert!(!dir.join("claim.txt").exists() && !dir.join("claim.png").exists());
    assert_eq!(
        std::fs::read(dir.join("device.key")).unwrap().len(),
        MAX_KEY_FILE - 32
    );

    // And the agent on start, when status never ran.
    latchkey_device::files::write_private(&dir.join("device.key"), &key_before).unwrap();
    latchkey_device::files::write_private(&dir.join("claim.txt"), &photo).unwrap();
    let agent = Agent::start(&dir);
    wait_until_gone(&dir).await;
    assert_eq!(
        std::fs::read(dir.join("device.key")).unwrap().len(),
        MAX_KEY_FILE - 32
    );
    drop(agent);
    nodes.stop().await;
}
