//! Ownership changes through the owner core with real parts only: five registry nodes and a
//! device agent on loopback, and each person's recovery phrase in the real OS keychain (run
//! inside a private Secret Service: `source scripts/lib.sh; with_secret_service cargo test -p
//! latchkey-owner --test ownership`).
//!
//! What is shown: a key added by a change must accept it before it counts (so a transfer to a
//! typo never takes effect, even when the nodes are handed the op directly), the recipient
//! sees the proposal in its own mailbox with who proposed it, the owners' approvals complete it
//! in either order, and nothing a stranger posts to an owner's mailbox is kept or shown.

mod common;

use common::start_nodes;
use std::path::Path;
use std::sync::Arc;

use latchkey_device::agent::RunningAgent;
use latchkey_device::lifecycle::init;
use latchkey_node::RunningNode;
use latchkey_owner::keychain::KeyringStore;
use latchkey_owner::owners::owner_mailbox;
use latchkey_owner::{ClaimSource, Error, MyPart, OwnerChange, Profile, SystemClock};
use latchkey_proto::chain::{Op, OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::Outcome;
use latchkey_proto::keys::{PublicKey, SigningKey};
use rand_core::OsRng;

struct World {
    tmp: tempfile::TempDir,
    nodes: Vec<RunningNode>,
    urls: Vec<String>,
    _agent: RunningAgent,
    marker: std::path::PathBuf,
    seeds: Arc<KeyringStore>,
    alice: Profile,
    device: String,
}

impl World {
    /// Five nodes, a door whose `unlock` appends a line to a marker file, and Alice, who claims
    /// it. Everyone's phrase is in the OS keychain.
    async fn start() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_nodes(tmp.path(), 5).await;
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        let marker = tmp.path().join("opened");
        let script = tmp.path().join("open-door");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho unlock >> '{}'\n", marker.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let dir = tmp.path().join("door");
        let claim = init(&common::unlock_door(
            dir.clone(),
            "Door",
            common::free_addr(),
            &urls,
            script,
        ))
        .unwrap();
        let agent = latchkey_device::agent::start(&dir).await.unwrap();
        let seeds =
            Arc::new(KeyringStore::open().expect(
                "a Secret Service: run inside `source scripts/lib.sh; with_secret_service …`",
            ));
        let alice = person(tmp.path(), "alice", &seeds, &urls);
        let report = alice
            .claim(ClaimSource::Text(&claim.claim_text), None)
            .await
            .unwrap();
        World {
            device: report.device.to_string(),
            tmp,
            nodes,
            urls,
            _agent: agent,
            marker,
            seeds,
            alice,
        }
    }

    fn person(&self, name: &str) -> Profile {
        person(self.tmp.path(), name, &self.seeds, &self.urls)
    }

    fn opened(&self) -> usize {
        std::fs::read_to_string(&self.marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await.unwrap();
        }
    }
}

fn person(root: &Path, name: &str, seeds: &Arc<KeyringStore>, urls: &[String]) -> Profile {
    let p = Profile::at(&root.join(name), seeds.clone(), Arc::new(SystemClock)).unwrap();
    p.create_seed().unwrap();
    p.add_nodes(urls).unwrap();
    p
}

fn key(p: &Profile) -> PublicKey {
    p.identity().unwrap().public_key()
}

/// What every node holds in `mailbox`, decoded as ops (base64 bodies of the JSON page).
async fn mailbox_ops(urls: &[String], mailbox: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for url in urls {
        let page: serde_json::Value = reqwest::get(format!("{url}/v1/mailboxes/{mailbox}?after=0"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["messages"].as_array().unwrap() {
            let bytes = data_encoding::BASE64
                .decode(m["body"].as_str().unwrap().as_bytes())
                .unwrap();
            ops.push(Op::from_bytes(&bytes).unwrap());
        }
    }
    ops
}

/// Posts raw bytes to `mailbox` on every node; returns how many stored them.
async fn post(urls: &[String], mailbox: &str, body: Vec<u8>) -> usize {
    let http = reqwest::Client::new();
    let mut stored = 0;
    for url in urls {
        let ok = http
            .post(format!("{url}/v1/mailboxes/{mailbox}"))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status()
            .is_success();
        stored += usize::from(ok);
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_key_nobody_holds_never_takes_effect() {
    let w = World::start().await;
    let alice = &w.alice;
    alice.open(&w.device, "unlock", &[]).await.unwrap();
    assert_eq!(w.opened(), 1);

    // A typo: a valid key whose secret nobody has.
    let typo = SigningKey::generate(&mut OsRng).public_key();
    let report = alice.transfer(&w.device, vec![typo], 1).await.unwrap();
    assert!(
        !report.applied,
        "alone, Alice's signature must not hand the door away"
    );
    assert_eq!(report.proposal.awaiting_acceptance, vec![typo]);
    assert_eq!(report.proposal.approvals, 1);
    assert!(report.proposal.proposed_by_me);
    assert!(report.sent_to >= 1, "the typo key's mailbox got it");

    // An older or hostile client would publish it as it is: the nodes refuse the op.
    let op = mailbox_ops(&w.urls, &owner_mailbox(&typo))
        .await
        .into_iter()
        .find(|op| matches!(op.body, OpBody::Transfer(_)))
        .expect("the proposal reached the new key's mailbox");
    let device_id = op.device;
    let published = alice
        .quorum()
        .unwrap()
        .publish(&device_id, std::slice::from_ref(&op), &mut OsRng)
        .await;
    if let Ok(p) = published {
        assert!(p.acked.is_empty(), "a node took it: {:?}", p.acked);
    }

    // Still Alice's: her view, the nodes' and the door's.
    let view = alice.owners(&w.device).await.unwrap();
    assert_eq!(view.owners, vec![key(alice)]);
    assert_eq!(view.proposals.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let opened = alice.open(&w.device, "unlock", &[]).await.unwrap();
    assert!(
        matches!(opened.response.outcome, Outcome::Accepted),
        "{:?}",
        opened.response.outcome
    );
    assert_eq!(w.opened(), 2);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_owners_accept_and_the_owners_complete_it_in_either_order() {
    let w = World::start().await;
    let (alice, bob, carol) = (&w.alice, w.person("bob"), w.person("carol"));

    // Alice adds Bob with threshold 2: nothing changes until Bob accepts.
    let change = OwnerChange {
        add: vec![key(&bob)],
        threshold: Some(2),
        ..OwnerChange::default()
    };
    let report = alice.propose_owners(&w.device, &change).await.unwrap();
    assert!(!report.applied);
    assert_eq!(report.proposal.awaiting_acceptance, vec![key(&bob)]);
    assert_eq!(
        alice.owners(&w.device).await.unwrap().owners,
        vec![key(alice)]
    );

    // Bob sees it in his own mailbox, on a device he does not own yet, and who proposed it.
    bob.sync_mailbox().await.unwrap();
    let waiting = bob.proposals().unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let p = &waiting[0];
    assert_eq!(p.my_part, MyPart::Accept);
    assert_eq!(p.proposed_by, Some(key(alice)));
    assert!(!p.proposed_by_me);
    assert_eq!(p.device_name, "Door");
    let id = p.id.to_string()[..16].to_owned();
    // Approving is for owners; Bob is told to accept.
    assert!(matches!(
        bob.approve(&id).await,
        Err(Error::WrongProposalStep { .. })
    ));
    let done = bob.accept_proposal(&id).await.unwrap();
    assert!(
        done.applied,
        "Alice's approval and Bob's acceptance are all it needs"
    );
    let view = alice.owners(&w.device).await.unwrap();
    assert_eq!(view.owners.len(), 2);
    assert_eq!(view.threshold, 2);

    // A transfer to Carol: Carol accepts first, then Bob approves and completes it.
    let report = alice
        .transfer(&w.device, vec![key(&carol)], 1)
        .await
        .unwrap();
    assert!(!report.applied);
    carol.sync_mailbox().await.unwrap();
    let offered = carol.proposals().unwrap();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].kind, "transfer");
    assert_eq!(offered[0].proposed_by, Some(key(alice)));
    let id = offered[0].id.to_string()[..16].to_owned();
    let accepted = carol.accept_proposal(&id).await.unwrap();
    assert!(!accepted.applied, "one of two owner approvals so far");
    assert!(accepted.proposal.awaiting_acceptance.is_empty());
    assert!(
        carol.devices().unwrap().is_empty(),
        "Carol owns nothing yet"
    );
    assert_eq!(
        alice.owners(&w.device).await.unwrap().owners.len(),
        2,
        "not in effect before the owners complete it"
    );

    bob.sync_mailbox().await.unwrap();
    let for_bob = bob.proposals().unwrap();
    assert_eq!(for_bob.len(), 1);
    assert_eq!(for_bob[0].my_part, MyPart::Approve);
    assert!(
        for_bob[0].awaiting_acceptance.is_empty(),
        "Carol's copy merged"
    );
    let done = bob.approve(&id).await.unwrap();
    assert!(done.applied);

    // Carol owns the door and opens it (through the nodes' mailboxes); Alice no longer can.
    carol.sync_mailbox().await.unwrap();
    let devices = carol.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].chain.state().owners, vec![key(&carol)]);
    let before = w.opened();
    let mut opened = false;
    for _ in 0..20 {
        if carol
            .open(&w.device, "unlock", &[])
            .await
            .is_ok_and(|r| matches!(r.response.outcome, Outcome::Accepted))
        {
            opened = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(opened, "Carol opens once the door has seen the transfer");
    assert_eq!(w.opened(), before + 1);
    assert!(matches!(
        alice.open(&w.device, "unlock", &[]).await,
        Err(Error::NotOwner { .. })
    ));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_stranger_posts_to_an_owners_mailbox_is_kept_or_shown() {
    let w = World::start().await;
    let alice = &w.alice;
    let bob = w.person("bob");
    // Bob joins so there is an owner whose mailbox someone else could fill.
    let change = OwnerChange {
        add: vec![key(&bob)],
        ..OwnerChange::default()
    };
    let id = alice.propose_owners(&w.device, &change).await.unwrap();
    bob.sync_mailbox().await.unwrap();
    let done = bob
        .accept_proposal(&id.proposal.id.to_string())
        .await
        .unwrap();
    assert!(done.applied);
    alice.sync_mailbox().await.unwrap();
    bob.sync_mailbox().await.unwrap();
    assert!(alice.proposals().unwrap().is_empty());
    assert!(bob.proposals().unwrap().is_empty());

    let device = alice.find_device(&w.device).unwrap();
    let chain = &device.chain;
    let mallory = SigningKey::generate(&mut OsRng);
    let set = |keys: &[PublicKey], threshold| {
        let mut owners = keys.to_vec();
        owners.sort();
        OwnerSet { owners, threshold }
    };
    let now = alice.now_ms();
    let (a, b, m) = (key(alice), key(&bob), mallory.public_key());
    let mut planted: Vec<(&str, Vec<u8>)> = vec![("junk bytes", b"not an op at all".to_vec())];
    // Mallory adds herself and signs: she is among the new keys, so the chain rule alone
    // would call it "waiting for owners' signatures".
    let mut op = chain.propose(now, OpBody::AmendOwners(set(&[a, b, m], 1)));
    op.sign(&mallory);
    planted.push(("a self-signed amend-owners", op.to_bytes()));
    // A transfer to Mallory with no signature at all.
    let op = chain.propose(now, OpBody::Transfer(set(&[m], 1)));
    planted.push(("an unsigned transfer", op.to_bytes()));
    // A transfer signed by Mallory alone.
    let mut op = chain.propose(now, OpBody::Transfer(set(&[m], 1)));
    op.sign(&mallory);
    planted.push(("a self-signed transfer", op.to_bytes()));
    // A real owner's signature on an invalid owner set (threshold above the owner count) is
    // not shown either: nobody could ever complete it.
    let mut op = chain.propose(now, OpBody::AmendOwners(set(&[a, b], 3)));
    op.sign(&alice.identity().unwrap());
    planted.push(("an owner-signed invalid set", op.to_bytes()));
    // An owner's signature copied onto a different op: the signature does not verify.
    let mut op = chain.propose(now, OpBody::Transfer(set(&[m], 1)));
    let mut signed = chain.propose(now, OpBody::Transfer(set(&[a], 1)));
    signed.sign(&alice.identity().unwrap());
    op.signatures = signed.signatures.clone();
    planted.push(("a transplanted owner signature", op.to_bytes()));

    for (what, body) in planted {
        // The node may refuse some outright; what it stores must not get further.
        let _ = post(&w.urls, &owner_mailbox(&b), body.clone()).await;
        let _ = post(&w.urls, &owner_mailbox(&a), body).await;
        bob.sync_mailbox().await.unwrap();
        alice.sync_mailbox().await.unwrap();
        assert!(
            bob.proposals().unwrap().is_empty(),
            "{what} was kept for Bob"
        );
        assert!(
            alice.proposals().unwrap().is_empty(),
            "{what} was kept for Alice"
        );
    }
    // And ownership did not move.
    let view = bob.owners(&w.device).await.unwrap();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(view.owners, both);
    w.stop().await;
}

/// Counts TCP connections to an address standing in for the door, closing each at once: a
/// command offered to it was sent before any ownership check could stop it.
async fn counting_listener() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    (addr, count)
}

/// Issue 15: the ownership check is not in front of the command. A view checked moments ago
/// is sent from at once; when the door answers "not an owner", the chain is checked and the
/// command decided again (here: Bob was removed, so it is not sent again and he is told he is
/// no owner). A view older than the bound is checked first, so nothing is sent at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_view_sends_at_once_and_not_an_owner_checks_and_decides_again() {
    let w = World::start().await;
    let (alice, bob) = (&w.alice, w.person("bob"));
    let change = OwnerChange {
        add: vec![key(&bob)],
        ..OwnerChange::default()
    };
    alice.propose_owners(&w.device, &change).await.unwrap();
    bob.sync_mailbox().await.unwrap();
    let id = bob.proposals().unwrap()[0].id.to_string()[..16].to_owned();
    assert!(bob.accept_proposal(&id).await.unwrap().applied);
    bob.sync_mailbox().await.unwrap();
    let mut opened = false;
    for _ in 0..20 {
        if bob
            .open(&w.device, "unlock", &[])
            .await
            .is_ok_and(|r| r.accepted())
        {
            opened = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        opened,
        "Bob opens as an owner once the door has seen him added"
    );
    let before = w.opened();

    // Bob's view (checked by that open, and naming him an owner) is kept aside, then Alice
    // removes him; the door learns it.
    let bob_dir = w.tmp.path().join("bob");
    let aside = w.tmp.path().join("bob-aside");
    std::fs::create_dir_all(&aside).unwrap();
    for f in std::fs::read_dir(&bob_dir).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), aside.join(f.file_name())).unwrap();
    }
    let removal = OwnerChange {
        remove: vec![key(&bob)],
        ..OwnerChange::default()
    };
    assert!(
        alice
            .propose_owners(&w.device, &removal)
            .await
            .unwrap()
            .applied
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // A view older than the bound: checked before sealing, so the door is never offered it.
    let stale = Profile::at(&aside, w.seeds.clone(), Arc::new(SystemClock)).unwrap();
    let (door, offered) = counting_listener().await;
    stale
        .set_device_addresses(
            &w.device,
            vec![latchkey_proto::claim::DeviceAddr::parse(&door).unwrap()],
        )
        .unwrap();
    let old = stale.now_ms() - latchkey_owner::REFRESH_BEFORE_MS - 1_000;
    rusqlite::Connection::open(aside.join("profile.db"))
        .unwrap()
        .execute("UPDATE devices SET verified_at_ms = ?1", [old as i64])
        .unwrap();
    assert!(matches!(
        stale.open(&w.device, "unlock", &[]).await,
        Err(Error::NotOwner { .. })
    ));
    assert_eq!(
        offered.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a stale view is checked before anything is sent"
    );

    // Bob's own profile checked moments ago: the command leaves at once (offered to the stand-in
    // address first, then carried through the mailboxes to the real door), the door refuses
    // it, the chain is checked, and Bob is told he is no owner.
    let (door, offered) = counting_listener().await;
    bob.set_device_addresses(
        &w.device,
        vec![latchkey_proto::claim::DeviceAddr::parse(&door).unwrap()],
    )
    .unwrap();
    assert!(matches!(
        bob.open(&w.device, "unlock", &[]).await,
        Err(Error::NotOwner { .. })
    ));
    assert!(
        offered.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "a fresh view is sent from without waiting for the nodes"
    );
    assert!(
        !bob.devices().unwrap()[0].chain.state().is_owner(&key(&bob)),
        "the check after the refusal stored the chain that removed him"
    );
    assert_eq!(w.opened(), before, "nothing ran for a removed owner");
    w.stop().await;
}
