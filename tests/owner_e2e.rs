//! The owner side end to end on loopback, with real components only: five registry nodes (in
//! process), the real `latchkeyd` with an exec actuator, the real `latchkey` binary, and the
//! real OS keychain (Secret Service: run inside `dbus-run-session` with an unlocked
//! gnome-keyring, as scripts/test.sh does). Each test ends with the seed-never-on-disk check.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cli::{
    contains, files_under, owner_who_claimed, require_secret_service, start_nodes, Cli, Door,
};
use latchkey_proto::claim::{ClaimPayload, DeviceAddr};
use latchkey_proto::invite::Invitation;
use latchkey_proto::keys::{KeyPurpose, RecoveryPhrase};

/// The byte strings that must never leave the keychain: the phrase, runs of its words, the
/// identity key's secret in raw and hex form, and the BIP39 seed.
fn secrets_of(words: &[String]) -> Vec<Vec<u8>> {
    let phrase = RecoveryPhrase::parse(&words.join(" ")).unwrap();
    let secret = phrase
        .to_seed()
        .derive(KeyPurpose::OwnerIdentity, 0)
        .unwrap()
        .to_bytes();
    vec![
        phrase.phrase().as_bytes().to_vec(),
        words[..3].join(" ").into_bytes(),
        words[10..13].join(" ").into_bytes(),
        secret.to_vec(),
        hex::encode(secret.as_slice()).into_bytes(),
        hex::encode_upper(secret.as_slice()).into_bytes(),
        phrase.to_seed().as_bytes().to_vec(),
    ]
}

/// No secret in any file under `dirs` nor in anything the CLIs printed after `init`.
fn assert_nowhere(secrets: &[Vec<u8>], dirs: &[PathBuf], clis: &[&Cli]) {
    let mut scanned = 0;
    for dir in dirs {
        for file in files_under(dir) {
            let bytes = std::fs::read(&file).unwrap();
            for s in secrets {
                assert!(
                    !contains(&bytes, s),
                    "secret material in {}",
                    file.display()
                );
            }
            scanned += 1;
        }
    }
    for cli in clis {
        for s in secrets {
            assert!(
                !contains(&cli.printed, s),
                "secret material in the output of latchkey --profile {}",
                cli.profile.display()
            );
        }
    }
    assert!(scanned >= 3, "scanned only {scanned} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_from_png_open_restore_and_relay() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 5).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Front door", &urls, &[]);

    let profile = tmp.path().join("owner");
    let mut owner = Cli::new(profile.clone());
    let (words, profile_id) = owner.init();
    let phrase = words.join(" ");
    let stored = std::process::Command::new("secret-tool")
        .args([
            "lookup",
            "service",
            "org.latchkey.app",
            "username",
            &profile_id,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stored.stdout).trim(),
        phrase,
        "the phrase is in the Secret Service"
    );
    assert_eq!(owner.run(&["init"]).status.code(), Some(1), "a second init");

    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));
    owner.ok(&add);
    assert_eq!(owner.ok(&["nodes", "list"]).lines().count(), 5);
    // Read now: the door erases its claim code once it is claimed.
    let claim_text = std::fs::read_to_string(door.dir.join("claim.txt")).unwrap();

    let started = Instant::now();
    let out = owner.run(&[
        "claim",
        "--image",
        door.dir.join("claim.png").to_str().unwrap(),
    ]);
    let claim_wall = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claimed = String::from_utf8(out.stdout).unwrap();
    // The core's progress stages, in order, as the CLI shows them.
    let progress = String::from_utf8_lossy(&out.stderr);
    let stages = [
        "checking the device's keys",
        "publishing the claim",
        "stored on 5 node(s)",
        "telling the device",
    ];
    let at: Vec<usize> = stages
        .iter()
        .map(|s| {
            progress
                .find(s)
                .unwrap_or_else(|| panic!("no {s:?} in {progress}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{progress}");
    assert!(claimed.contains("claimed Front door"), "{claimed}");
    let visible_ms: u64 = claimed
        .split("visible on a quorum after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let v = owner.json(&["devices"]);
    assert_eq!(v["devices"][0]["mine"], true);
    let short = v["devices"][0]["short"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let out = owner.run(&["open", &short]);
    let open_wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("unlock accepted") && stdout.contains("opened"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&door.log).unwrap(), "unlock \n");

    // An action the device does not have: exit 2 with the device's reason; nothing ran.
    let out = owner.run(&["open", "Front door", "--action", "lock"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UnknownAction") && stderr.contains("no action"),
        "{stderr}"
    );
    assert_eq!(door.opened(), 1);

    // A typo on restore names the word.
    let mut other = Cli::new(tmp.path().join("other"));
    let mut typo = words.clone();
    typo[6] = "zzzz".into();
    let out = other.run_with_input(&["restore"], Some(&typo.join(" ")));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("word 7"));

    // The same phrase in another profile, with a claim code whose address does not answer:
    // the claim finds the device already owned by this identity, and open goes through the
    // nodes' mailboxes.
    let mut relay = Cli::new(tmp.path().join("relay"));
    let out = relay.run_with_input(&["restore"], Some(&phrase));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    relay.ok(&add);
    let mut payload = ClaimPayload::parse(&claim_text).unwrap();
    payload.addrs = vec![DeviceAddr::parse(&format!("127.0.0.1:{}", cli::free_port())).unwrap()];
    let claimed = relay.ok(&["claim", "--text", &payload.to_text().unwrap()]);
    assert!(claimed.contains("already yours"), "{claimed}");
    let started = Instant::now();
    let out = relay.run(&["open", "Front door"]);
    let relay_wall = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted (through http://127.0.0.1"));
    assert_eq!(door.opened(), 2);

    // A guest revoked while the owner can reach the device: the owner nudges it to re-check the
    // nodes, and the very next attempt is refused.
    let sam_invite = owner.json(&["invite", "Front door", "--name", "Sam", "--until", "+1h"]);
    let mut sam = Cli::new(tmp.path().join("sam"));
    sam.ok(&["accept", sam_invite["link"].as_str().unwrap()]);
    assert!(sam.ok(&["open", "Front door"]).contains("unlock accepted"));
    assert_eq!(door.opened(), 3);
    let id = sam_invite["id"].as_str().unwrap();
    let out = owner.ok(&["revoke", &id[..12]]);
    assert!(out.contains("the door already knows"), "{out}");
    let out = sam.run(&["open", "Front door"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GrantRevoked"));
    assert_eq!(door.opened(), 3);

    assert_nowhere(
        &secrets_of(&words),
        &[tmp.path().to_path_buf()],
        &[&owner, &other, &relay],
    );
    println!(
        "claim: visible on a quorum of 5 nodes after {visible_ms} ms (whole `latchkey claim` {} ms); \
         open: whole `latchkey open` {} ms direct, {} ms through mailboxes",
        claim_wall.as_millis(),
        open_wall.as_millis(),
        relay_wall.as_millis()
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// Polls a CLI command until `done` accepts its output, for what the device learns from the
/// nodes on its one-second refresh.
fn until(limit: Duration, mut attempt: impl FnMut() -> Option<String>) -> String {
    let started = Instant::now();
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(started.elapsed() < limit, "gave up after {limit:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_owner_transfer_and_guest_invitations() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 5).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Holiday flat", &urls, &[]);
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));

    let mut alice = Cli::new(tmp.path().join("alice"));
    let mut bob = Cli::new(tmp.path().join("bob"));
    let mut carol = Cli::new(tmp.path().join("carol"));
    let mut words = Vec::new();
    for who in [&mut alice, &mut bob, &mut carol] {
        words.push(who.init().0);
        who.ok(&add);
    }
    alice.ok(&[
        "claim",
        "--image",
        door.dir.join("claim.png").to_str().unwrap(),
    ]);
    alice.ok(&["open", "Holiday flat"]);
    assert_eq!(door.opened(), 1);
    let bob_key = bob.ok(&["key"]).trim().to_owned();
    let carol_key = carol.ok(&["key"]).trim().to_owned();

    let alice_key = alice.ok(&["key"]).trim().to_owned();

    // A transfer to a typo (a valid key nobody holds) waits for that key forever: the device
    // stays Alice's and keeps opening for her.
    let typo = latchkey_proto::keys::SigningKey::from_bytes(&[7; 32])
        .public_key()
        .to_string();
    let out = alice.ok(&["transfer", "Holiday flat", "--to", &typo]);
    assert!(
        out.contains("waiting for the new owner(s) to accept"),
        "{out}"
    );
    let v = alice.json(&["owners", "Holiday flat"]);
    assert_eq!(v["owners"], serde_json::json!([alice_key]));
    assert_eq!(
        v["proposals"][0]["awaiting_acceptance"],
        serde_json::json!([typo])
    );
    assert_eq!(v["proposals"][0]["proposed_by_me"], true);
    alice.ok(&["open", "Holiday flat"]);
    assert_eq!(door.opened(), 2);

    // Alice alone may still change the set, but Bob must accept: he joins, and from then on
    // two must sign.
    let out = alice.ok(&[
        "owners",
        "add",
        "Holiday flat",
        &bob_key,
        "--threshold",
        "2",
    ]);
    assert!(out.contains("latchkey owners accept"), "{out}");
    // Bob's own mailbox brings it, with who proposed it.
    let v = bob.json(&["owners", "proposals"]);
    let proposals = v["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{v}");
    assert_eq!(proposals[0]["my_part"], "accept");
    assert_eq!(proposals[0]["proposed_by"], alice_key.as_str());
    assert_eq!(proposals[0]["proposed_by_me"], false);
    let listed = bob.ok(&["owners", "proposals"]);
    assert!(
        listed.contains(&format!("proposed by {}", &alice_key[..14])),
        "{listed}"
    );
    let id = proposals[0]["id"].as_str().unwrap()[..16].to_owned();
    let out = bob.run(&["owners", "approve", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("accept"));
    let out = bob.ok(&["owners", "accept", &id]);
    assert!(out.contains("in effect: owners 2/2"), "{out}");
    let v = bob.json(&["devices"]);
    assert_eq!(v["devices"][0]["mine"], true, "{v}");
    assert_eq!(v["devices"][0]["threshold"], 2);
    let device = v["devices"][0]["id"].as_str().unwrap().to_owned();

    // A transfer to Carol needs both owners and Carol herself: Alice's signature alone is a
    // proposal, and so is Alice's plus Carol's acceptance.
    let out = alice.ok(&["transfer", &device, "--to", &carol_key]);
    assert!(out.contains("1 of 2 owner signatures"), "{out}");
    let v = carol.json(&["owners", "proposals"]);
    let proposals = v["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{v}");
    assert_eq!(proposals[0]["my_part"], "accept");
    let id = proposals[0]["id"].as_str().unwrap()[..16].to_owned();
    let out = carol.ok(&["owners", "accept", &id]);
    assert!(out.contains("1 of 2 owner signatures"), "{out}");
    let v = alice.json(&["owners", &device]);
    assert_eq!(
        v["owners"].as_array().unwrap().len(),
        2,
        "not in effect yet"
    );
    assert!(carol.run(&["open", &device]).status.code() == Some(1));
    let v = bob.json(&["owners", "proposals"]);
    let proposals = v["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 1, "{v}");
    assert_eq!(proposals[0]["kind"], "transfer");
    assert_eq!(proposals[0]["signed_by_me"], false);
    assert_eq!(proposals[0]["awaiting_acceptance"], serde_json::json!([]));
    let out = bob.ok(&["owners", "approve", &id]);
    assert!(
        out.contains("transfer of Holiday flat is in effect"),
        "{out}"
    );

    // Carol owns it now (through the mailboxes: her profile has no address for it); Alice is
    // told she no longer does.
    let v = carol.json(&["devices"]);
    assert_eq!(v["devices"][0]["mine"], true, "{v}");
    until(Duration::from_secs(20), || {
        let out = carol.run(&["open", &device]);
        out.status.success().then(String::new)
    });
    assert_eq!(door.opened(), 3);
    let out = alice.run(&["open", &device]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an owner"));

    // Guests. Carol invites Ana for a short window and Ben for a long one, with long
    // (self-contained) links: the check below looks for their keys on disk.
    let ana_link = {
        let v = carol.json(&[
            "invite", &device, "--name", "Ana", "--from", "now", "--until", "+12s", "--long",
        ]);
        v["link"].as_str().unwrap().to_owned()
    };
    let qr = tmp.path().join("ben.png");
    let ben = carol.json(&[
        "invite",
        &device,
        "--name",
        "Ben",
        "--until",
        "+2h",
        "--qr",
        qr.to_str().unwrap(),
        "--long",
    ]);
    let ben_link = ben["link"].as_str().unwrap().to_owned();
    let ben_grant = ben["id"].as_str().unwrap().to_owned();
    assert!(std::fs::read(&qr).unwrap().starts_with(b"\x89PNG"));
    let ana_until = Invitation::parse_link(&ana_link)
        .unwrap()
        .leaf()
        .body
        .not_after_ms;

    // Guest profiles have no recovery phrase and no nodes: the link brings both what to open
    // and where to check it.
    let mut ana = Cli::new(tmp.path().join("ana"));
    let mut ben_cli = Cli::new(tmp.path().join("ben"));
    let out = ana.ok(&["accept", &ana_link]);
    assert!(out.contains("Holiday flat"), "{out}");
    ben_cli.ok(&["accept", &ben_link]);
    assert!(ana
        .ok(&["open", "Holiday flat"])
        .contains("unlock accepted"));
    assert!(ben_cli
        .ok(&["open", "Holiday flat"])
        .contains("unlock accepted"));
    assert_eq!(door.opened(), 5);
    // A guest cannot read the audit log, and cannot do what the grant does not name.
    let out = ana.run(&["audit", "Holiday flat"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused to show its log"));
    assert_eq!(
        ana.run(&["open", "Holiday flat", "--action", "lock"])
            .status
            .code(),
        Some(2)
    );

    // Carol revokes Ben. Carol's profile reaches the device only through the nodes' mailboxes
    // (it has no address for it), so the device hears of the revocation from the nodes on its
    // next check; until then Ben may still get in, from the first refusal on never.
    let out = carol.ok(&["revoke", &ben_grant[..12]]);
    assert!(out.contains("will learn at its next check"), "{out}");
    let refused = until(Duration::from_secs(20), || {
        let out = ben_cli.run(&["open", "Holiday flat"]);
        (out.status.code() == Some(2)).then(|| String::from_utf8_lossy(&out.stderr).to_string())
    });
    assert!(refused.contains("GrantRevoked"), "{refused}");
    let opened = door.opened();
    assert_eq!(
        ben_cli.run(&["open", "Holiday flat"]).status.code(),
        Some(2)
    );
    let v = carol.json(&["grants", &device]);
    let statuses: Vec<&str> = v["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"revoked"), "{statuses:?}");

    // Ana's window ends: the device refuses her.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(
        ana_until.saturating_sub(now_ms) + 1000,
    ));
    let out = ana.run(&["open", "Holiday flat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GrantExpired"));
    assert_eq!(door.opened(), opened, "no refused command ran the actuator");

    // The owner's verified audit log has all of it.
    let v = carol.json(&["audit", &device]);
    assert_eq!(v["verified"], true);
    let codes: Vec<u64> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_u64().unwrap())
        .collect();
    for code in [0, 9, 11, 12] {
        assert!(codes.contains(&code), "code {code} missing from {codes:?}");
    }

    let mut secrets: Vec<Vec<u8>> = words.iter().flat_map(|w| secrets_of(w)).collect();
    // A guest key is in its link by design, but never in the guest's profile directory.
    for link in [&ana_link, &ben_link] {
        let invitation = Invitation::parse_link(link).unwrap();
        secrets.push(invitation.guest_secret.to_vec());
        secrets.push(hex::encode(*invitation.guest_secret).into_bytes());
    }
    assert_nowhere(&secrets, &[tmp.path().to_path_buf()], &[&alice, &bob]);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// A device that does not trust its clock answers the first command with a challenge; the
/// owner resends with it and the second, fresh command is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_a_clock_is_opened_after_a_challenge() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Shed", &urls, &["--untrusted-clock"]);
    let mut owner = Cli::new(tmp.path().join("owner"));
    let (words, _) = owner.init();
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));
    owner.ok(&add);
    owner.ok(&[
        "claim",
        "--image",
        door.dir.join("claim.png").to_str().unwrap(),
    ]);
    let out = owner.ok(&["open", "Shed"]);
    assert!(
        out.contains("unlock accepted") && out.contains("after a challenge"),
        "{out}"
    );
    assert_eq!(door.opened(), 1);
    let v = owner.json(&["audit", "Shed"]);
    let entries = v["entries"].as_array().unwrap();
    // The challenged first command is audited as refused at the challenge stage, without a time.
    assert!(
        entries
            .iter()
            .any(|e| e["stage"] == "challenge" && e["time_ms"].is_null()),
        "{v}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "unlock" && e["code"] == 0),
        "{v}"
    );
    // Profiles, node databases, the device's files: everything the run wrote.
    assert_nowhere(&secrets_of(&words), &[tmp.path().to_path_buf()], &[&owner]);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// Issue 9, item 1 (owner side): every registry node is down (a thief cut the uplink, or the
/// nodes are flooded), yet the owner on the LAN revokes a guest: the revocation is handed to the
/// door directly (`POST /v1/ops`) and the guest is refused on the very next try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_a_revocation_on_the_lan_holds_at_once() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Front door", &urls, &[]);
    let mut owner = owner_who_claimed(tmp.path(), &urls, &door);
    let invite = owner.json(&["invite", "Front door", "--name", "Sam", "--until", "+1h"]);
    let mut sam = Cli::new(tmp.path().join("sam"));
    sam.ok(&["accept", invite["link"].as_str().unwrap()]);
    assert!(sam.ok(&["open", "Front door"]).contains("unlock accepted"));
    assert_eq!(door.opened(), 1);

    for node in nodes {
        node.shutdown().await.unwrap();
    }
    let id = invite["id"].as_str().unwrap();
    let out = owner.run(&["revoke", &id[..12]]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("the door already knows"), "{stdout}");
    assert!(stderr.contains("did not store it"), "{stderr}");

    let out = sam.run(&["open", "Front door"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GrantRevoked"), "{stderr}");
    assert!(stderr.contains("revoked your invitation"), "{stderr}");
    assert_eq!(door.opened(), 1, "the revoked guest did not open the door");
}
