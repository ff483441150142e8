//! A real fork (two valid, conflicting ownership changes the door has not settled) never stops
//! the owner core: it keeps its own verified chain, keeps working, and keeps an alarm in the
//! profile store with what to do. Real registry nodes on loopback; the door is a `TestDevice`
//! so the test decides when it endorses.

mod common;

use common::{start_nodes, MemorySeeds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use latchkey_owner::{ClaimSource, Clock, ForkKind, Profile, SystemClock};
use latchkey_proto::chain::{Op, OpBody, OpList, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_testkit::{person, TestDevice};

/// The system clock, moved forward by the test.
#[derive(Debug, Default)]
struct LaterClock(AtomicU64);

impl LaterClock {
    fn skip(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for LaterClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() + self.0.load(Ordering::SeqCst)
    }
}

async fn post(node: &str, device: &DeviceId, ops: &[Op]) {
    let resp = reqwest::Client::new()
        .post(format!("{node}/v1/devices/{device}/ops"))
        .body(OpList(ops.to_vec()).to_bytes())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{node}: {}", resp.status());
}

fn amend(owners: &[&SigningKey], threshold: u8) -> OpBody {
    OpBody::AmendOwners(OwnerSet {
        owners: latchkey_testkit::sorted(owners),
        threshold,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_fork_keeps_the_owners_own_chain_and_raises_an_alarm_until_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let seeds: Arc<MemorySeeds> = Arc::new(MemorySeeds::default());
    let alice = Profile::at(
        &tmp.path().join("alice"),
        seeds.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    alice.create_seed().unwrap();
    alice.add_nodes(&urls).unwrap();
    alice.set_nodes_to_ask(3).unwrap();
    let alice_key = alice.identity().unwrap();
    let mallory = person(2);

    // Alice and Mallory own the door; either may sign alone.
    let mut door = TestDevice::new(7, "Front door");
    door.claim(&[&alice_key, &mallory], 1);
    let device = door.chain.device();
    for url in &urls {
        post(url, &device, door.chain.ops()).await;
    }
    let code = door
        .keys
        .claim_payload("Front door", Vec::new())
        .to_text()
        .unwrap();
    let report = alice.claim(ClaimSource::Text(&code), None).await.unwrap();
    assert!(report.already_owned);
    let before = alice.owners("Front door").await.unwrap();
    assert!(alice.fork_alarm(&device).unwrap().is_none());

    // Mallory signs two conflicting changes at the same place: one hands her the door alone
    // (node 0), the other asks both for every change (nodes 1 and 2).
    let grab = door.op(amend(&[&mallory], 1), &[&mallory]);
    let both = door.op(amend(&[&alice_key, &mallory], 2), &[&mallory]);
    post(&urls[0], &device, std::slice::from_ref(&grab)).await;
    for url in &urls[1..] {
        post(url, &device, std::slice::from_ref(&both)).await;
    }

    // Alice keeps working on the chain she had verified (neither change adopted), and the
    // fork is kept as an alarm in plain words.
    let view = alice.owners("Front door").await.unwrap();
    assert_eq!(view.device.chain.head(), before.device.chain.head());
    assert_eq!((view.owners.len(), view.threshold), (2, 1));
    let alarm = alice.fork_alarm(&device).unwrap().expect("an alarm");
    assert_eq!(alarm.kind, ForkKind::Unresolved);
    assert_eq!(alarm.seq, grab.seq);
    let ids = [alarm.ours.id(), alarm.theirs.id()];
    assert!(ids.contains(&grab.id()) && ids.contains(&both.id()));
    let words = alarm.words("Front door", Some(&alice_key.public_key()), true);
    assert!(words.title.contains("Two different histories"), "{words:?}");
    assert!(words.what_to_do.contains("keep opening"), "{words:?}");
    assert!(words
        .what_to_do
        .contains("transfer ownership to fresh keys"));
    // She can still act as an owner: an invitation is issued from her own chain.
    let now = SystemClock.now_ms();
    alice
        .invite(
            "Front door",
            &latchkey_owner::InviteRequest {
                guest_name: "Sam".into(),
                from_ms: now,
                until_ms: now + 3_600_000,
                actions: vec!["unlock".into()],
                use_limit: None,
                arguments: Vec::new(),
                may_delegate: false,
                from_grant: None,
                schedule: None,
            },
        )
        .await
        .unwrap();

    // Checked again: the same dispute, first seen once; it survives reopening the profile.
    let first_seen = alarm.first_seen_ms;
    let again = alice.owners("Front door").await.unwrap();
    assert_eq!(again.device.chain.head(), before.device.chain.head());
    drop(alice);
    let alice = Profile::at(&tmp.path().join("alice"), seeds, Arc::new(SystemClock)).unwrap();
    let kept = alice.fork_alarm(&device).unwrap().expect("still there");
    assert_eq!(kept.first_seen_ms, first_seen);
    assert!(kept.last_seen_ms >= first_seen);

    // The door settles it: it endorses the change that keeps Alice. Her profile takes that
    // branch and the alarm ends.
    let mut settled = door.chain.clone();
    settled.append(both.clone()).unwrap();
    let mut endorsement = settled.endorsement(both.seq, SystemClock.now_ms()).unwrap();
    endorsement.sign(&door.keys.identity);
    for url in &urls[1..] {
        post(url, &device, std::slice::from_ref(&endorsement)).await;
    }
    let view = alice.owners("Front door").await.unwrap();
    assert_eq!(view.device.chain.head(), both.id());
    assert_eq!(view.threshold, 2);
    assert!(alice.fork_alarm(&device).unwrap().is_none());

    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// The door endorsed a change other than the one this profile held: the profile switches to
/// the door's branch and says so, including that it is no longer an owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_the_door_endorsed_replaces_ours_with_a_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let seeds: Arc<MemorySeeds> = Arc::new(MemorySeeds::default());
    let clock = Arc::new(LaterClock::default());
    let alice = Profile::at(&tmp.path().join("alice"), seeds, clock.clone()).unwrap();
    alice.create_seed().unwrap();
    alice.add_nodes(&urls).unwrap();
    alice.set_nodes_to_ask(3).unwrap();
    let alice_key = alice.identity().unwrap();
    let mallory = person(2);
    let mut door = TestDevice::new(8, "Back door");
    door.claim(&[&alice_key, &mallory], 1);
    let device = door.chain.device();
    let code = door
        .keys
        .claim_payload("Back door", Vec::new())
        .to_text()
        .unwrap();

    // Every node holds a change Alice's profile takes in; then the door is shown a rival one
    // and endorses it, and one node switches to that branch.
    let held = door.op(amend(&[&alice_key, &mallory], 2), &[&mallory]);
    let rival = door.op(amend(&[&mallory], 1), &[&mallory]);
    let mut base = door.chain.ops().to_vec();
    base.push(held.clone());
    for url in &urls {
        post(url, &device, &base).await;
    }
    alice.claim(ClaimSource::Text(&code), None).await.unwrap();
    let view = alice.owners("Back door").await.unwrap();
    assert_eq!(view.device.chain.head(), held.id());
    let mut endorsed = door.chain.clone();
    endorsed.append(rival.clone()).unwrap();
    let mut endorsement = endorsed
        .endorsement(rival.seq, SystemClock.now_ms())
        .unwrap();
    endorsement.sign(&door.keys.identity);
    post(&urls[0], &device, &[rival.clone(), endorsement]).await;

    let view = alice.owners("Back door").await.unwrap();
    assert_eq!(view.device.chain.head(), rival.id(), "the door's branch");
    assert!(!view.device.chain.state().is_owner(&alice_key.public_key()));
    let alarm = alice.fork_alarm(&device).unwrap().expect("a notice");
    assert_eq!(alarm.kind, ForkKind::Switched);
    assert_eq!(
        (alarm.ours.id(), alarm.theirs.id()),
        (held.id(), rival.id())
    );
    let words = alarm.words("Back door", Some(&alice_key.public_key()), false);
    assert!(
        words.title.contains("confirmed a different history"),
        "{words:?}"
    );
    assert!(words.meaning.contains("no longer an owner"), "{words:?}");

    // The notice is kept for a week after the switch was last seen, then it goes.
    clock.skip(latchkey_owner::fork::SWITCH_NOTICE_MS - 60_000);
    assert!(alice.fork_alarm(&device).unwrap().is_some());
    clock.skip(120_000);
    assert!(alice.fork_alarm(&device).unwrap().is_none());

    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
