//! Group commit under concurrency, through the public store API. On SQLite these are the tests
//! of store/sqlite/group.rs: concurrent writes share a transaction (one savepoint each, one
//! COMMIT per batch), so what matters is that a batch acknowledges each job with its own
//! result, a job that fails takes none of its neighbours down, and everything acknowledged is
//! there after the store is closed and opened again. The same contract holds for PostgreSQL,
//! so with `LATCHKEY_NODE_TEST_DB=postgres` the tests run unchanged against it.
//!
//! Which jobs share a batch depends on timing; the tests start their writes together (a
//! barrier) so that many do, and assert only what holds however they were batched.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use latchkey_node::store::{self, MailboxRefusal, OpRow, PostQuota, Stale, Store};
use latchkey_proto::chain::Op;
use latchkey_proto::codec::Codec;
use latchkey_testkit::TestDevice;
use tokio::sync::Barrier;

async fn open(db: &Path) -> Store {
    store::open(&location(db)).await.unwrap()
}

/// Closes the store: the last handle goes, and with it (on SQLite) the writer thread, once its
/// queue is done.
fn close(store: Store) {
    assert_eq!(Arc::strong_count(&store), 1, "a task still holds the store");
    drop(store);
}

fn rows(ops: &[Op]) -> Vec<OpRow> {
    ops.iter()
        .map(|op| OpRow {
            seq: op.seq,
            id: op.id().0,
            bytes: op.to_bytes(),
        })
        .collect()
}

fn bytes(ops: &[Op]) -> Vec<Vec<u8>> {
    ops.iter().map(Codec::to_bytes).collect()
}

/// A claimed device with `amends` amend ops after genesis and claim.
fn device(seed: u64, amends: usize) -> TestDevice {
    let mut dev = claimed(seed);
    for k in 0..amends {
        let op = amend(&dev, 2 + (k % 5) as u64);
        dev.chain.append(op).unwrap();
    }
    dev
}

fn quota(sender: u8, per_sender: usize) -> PostQuota {
    PostQuota {
        sender: vec![sender],
        address: vec![127, 0, 0, sender],
        per_sender,
        per_address: 1_000_000,
    }
}

const HOUR_MS: u64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_op_writes_all_land_and_survive_a_reopen() {
    const DEVICES: usize = 64;
    const AMENDS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let devices: Vec<TestDevice> = (0..DEVICES)
        .map(|i| device(1000 + i as u64, AMENDS))
        .collect();
    let store = open(&db).await;

    // Each task stores its device's chain in steps (genesis and claim, then one amend per
    // write), every step against the version the previous one returned.
    let barrier = Arc::new(Barrier::new(DEVICES));
    let tasks: Vec<_> = devices
        .iter()
        .map(|dev| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let (id, ops) = (device_id(dev), dev.chain.ops().to_vec());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut version = 0;
                let mut i = 0;
                while i < ops.len() {
                    let step = if i == 0 { &ops[0..2] } else { &ops[i..i + 1] };
                    let next = store
                        .update_ops(id, version, rows(step), vec![], store::now_ms())
                        .await
                        .unwrap()
                        .unwrap_or_else(|Stale| panic!("nobody else writes this device"));
                    assert_eq!(next, version + 1);
                    version = next;
                    i += step.len();
                }
                version
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), AMENDS as u64 + 1);
    }
    close(store);

    let store = open(&db).await;
    let mut known = store.known_devices().await.unwrap();
    known.sort();
    let mut expected: Vec<_> = devices.iter().map(device_id).collect();
    expected.sort();
    assert_eq!(known, expected);
    for dev in &devices {
        let stored = store.load_device(device_id(dev)).await.unwrap();
        assert_eq!(stored.ops, bytes(dev.chain.ops()));
        assert_eq!(stored.version, AMENDS as u64 + 1);
    }
    // The feed holds every op once, in commit order: each device's ops in chain order.
    let feed = store.feed(0, 10_000).await.unwrap();
    assert_eq!(feed.len(), DEVICES * (AMENDS + 2));
    assert!(feed.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let mut per_device: BTreeMap<_, Vec<Vec<u8>>> = BTreeMap::new();
    for row in feed {
        per_device.entry(row.device).or_default().push(row.bytes);
    }
    for dev in &devices {
        assert_eq!(per_device[&device_id(dev)], bytes(dev.chain.ops()));
    }
}

/// What one job of the mixed burst was, and what it got.
enum Outcome {
    Stored(Box<TestDevice>, u64),
    Stale,
    Failed,
    Posted(Vec<u8>, u64),
    Refused(MailboxRefusal),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_job_fails_alone_and_its_batch_commits() {
    const GOOD: usize = 48;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let store = open(&db).await;
    // A device already stored at version 1, which the stale writers name as version 0.
    let held = device(2000, 0);
    let held_id = device_id(&held);
    store
        .update_ops(held_id, 0, rows(held.chain.ops()), vec![], store::now_ms())
        .await
        .unwrap()
        .unwrap();
    let broken = device(2001, 0);
    let mailbox = [7u8; 32];

    let jobs = GOOD * 2 + 10;
    let barrier = Arc::new(Barrier::new(jobs));
    let mut tasks = Vec::new();
    for i in 0..jobs {
        let (store, barrier) = (store.clone(), barrier.clone());
        // What the stale and the failing jobs write, made here: a TestDevice stays put.
        let extra = amend(&held, 2 + i as u64);
        let genesis = rows(&broken.chain.ops()[..1]);
        let broken_id = device_id(&broken);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let now = store::now_ms();
            match i {
                // Good op writes on fresh devices.
                i if i < GOOD => {
                    let dev = device(3000 + i as u64, 1);
                    let v = store
                        .update_ops(device_id(&dev), 0, rows(dev.chain.ops()), vec![], now)
                        .await
                        .unwrap()
                        .unwrap();
                    Outcome::Stored(Box::new(dev), v)
                }
                // Good mailbox posts.
                i if i < 2 * GOOD => {
                    let body = vec![i as u8; 100];
                    let id = store
                        .mailbox_post(mailbox, body.clone(), now + HOUR_MS, now, quota(1, 1000))
                        .await
                        .unwrap()
                        .unwrap();
                    Outcome::Posted(body, id)
                }
                // Stale: the held device is at version 1, not 0.
                i if i < 2 * GOOD + 4 => {
                    match store
                        .update_ops(held_id, 0, rows(&[extra]), vec![], now)
                        .await
                        .unwrap()
                    {
                        Err(Stale) => Outcome::Stale,
                        Ok(v) => panic!("a stale write was stored (version {v})"),
                    }
                }
                // Over quota: this sender may hold nothing.
                i if i < 2 * GOOD + 8 => {
                    match store
                        .mailbox_post(mailbox, vec![0xee; 100], now + HOUR_MS, now, quota(2, 0))
                        .await
                        .unwrap()
                    {
                        Err(refusal) => Outcome::Refused(refusal),
                        Ok(id) => panic!("a post over quota was stored as {id}"),
                    }
                }
                // A job that fails half-way: it bumps the device's version and stores the
                // genesis, then its second row repeats the first op's id and breaks the
                // (device, op_id) uniqueness. Its own writes must go, and only those.
                _ => {
                    let twice = vec![genesis[0].clone(), genesis[0].clone()];
                    match store.update_ops(broken_id, 0, twice, vec![], now).await {
                        Err(_) => Outcome::Failed,
                        Ok(answer) => panic!("a duplicate op id was taken: {answer:?}"),
                    }
                }
            }
        }));
    }
    let mut stored = Vec::new();
    let mut posted = BTreeMap::new();
    let (mut stale, mut refused, mut failed) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Stored(dev, v) => {
                assert_eq!(v, 1);
                stored.push(dev);
            }
            Outcome::Posted(body, id) => assert!(posted.insert(id, body).is_none()),
            Outcome::Stale => stale += 1,
            Outcome::Refused(r) => {
                assert_eq!(r, MailboxRefusal::MailboxFull);
                refused += 1;
            }
            Outcome::Failed => failed += 1,
        }
    }
    assert_eq!((stored.len(), posted.len()), (GOOD, GOOD));
    assert_eq!((stale, refused, failed), (4, 4, 2));

    let check = |store: Store| {
        let (stored, posted, held, broken) = (&stored, &posted, &held, &broken);
        async move {
            for dev in stored {
                let rows = store.load_device(device_id(dev)).await.unwrap();
                assert_eq!(rows.ops, bytes(dev.chain.ops()));
                assert_eq!(rows.version, 1);
            }
            let rows = store.load_device(held_id).await.unwrap();
            assert_eq!(
                rows.ops,
                bytes(held.chain.ops()),
                "a stale write changed nothing"
            );
            assert_eq!(rows.version, 1);
            let rows = store.load_device(device_id(broken)).await.unwrap();
            assert!(rows.ops.is_empty(), "the failed job's first row was undone");
            assert_eq!(rows.version, 0, "the failed job's version bump was undone");
            let now = store::now_ms();
            let read: BTreeMap<u64, Vec<u8>> = store
                .mailbox_read(mailbox, 0, now, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.id, m.body))
                .collect();
            assert_eq!(&read, posted, "every acknowledged post, and no refused one");
            store
        }
    };
    let store = check(store).await;
    close(store);
    close(check(open(&db).await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_for_one_version_have_one_winner() {
    const RACERS: usize = 24;
    const RACES: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let store = open(&db).await;
    let mut dev = device(4000, 0);
    let id = device_id(&dev);
    store
        .update_ops(id, 0, rows(dev.chain.ops()), vec![], store::now_ms())
        .await
        .unwrap()
        .unwrap();

    for race in 0..RACES {
        let version = race as u64 + 1;
        // Rival next ops: each names another second owner, so each has its own id.
        let rivals: Vec<Op> = (0..RACERS).map(|r| amend(&dev, 2 + r as u64)).collect();
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = rivals
            .iter()
            .map(|op| {
                let (store, barrier, op) = (store.clone(), barrier.clone(), op.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .update_ops(id, version, rows(&[op]), vec![], store::now_ms())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (r, t) in tasks.into_iter().enumerate() {
            // A loser's answer is Stale (the type says no more).
            if let Ok(next) = t.await.unwrap() {
                assert_eq!(next, version + 1);
                winners.push(r);
            }
        }
        assert_eq!(winners.len(), 1, "race {race}: winners {winners:?}");
        dev.chain.append(rivals[winners[0]].clone()).unwrap();
        let stored = store.load_device(id).await.unwrap();
        assert_eq!(
            stored.ops,
            bytes(dev.chain.ops()),
            "race {race}: only the winner stored"
        );
        assert_eq!(stored.version, version + 1);
    }
    close(store);
    let store = open(&db).await;
    let stored = store.load_device(id).await.unwrap();
    assert_eq!(stored.ops, bytes(dev.chain.ops()));
    assert_eq!(stored.version, RACES as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_to_one_mailbox_get_distinct_growing_ids() {
    const POSTERS: usize = 16;
    const EACH: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let store = open(&db).await;
    let mailbox = [9u8; 32];

    let barrier = Arc::new(Barrier::new(POSTERS));
    let tasks: Vec<_> = (0..POSTERS)
        .map(|p| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                for n in 0..EACH {
                    let body = format!("poster {p} message {n}").into_bytes();
                    let now = store::now_ms();
                    let id = store
                        .mailbox_post(
                            mailbox,
                            body.clone(),
                            now + HOUR_MS,
                            now,
                            quota(p as u8, EACH),
                        )
                        .await
                        .unwrap()
                        .unwrap();
                    mine.push((id, body));
                }
                mine
            })
        })
        .collect();
    let mut posted = BTreeMap::new();
    for t in tasks {
        let mine = t.await.unwrap();
        // A poster's later message has a later id.
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "{mine:?}");
        for (id, body) in mine {
            assert!(
                posted.insert(id, body).is_none(),
                "id {id} handed out twice"
            );
        }
    }
    assert_eq!(posted.len(), POSTERS * EACH);

    // Each poster is now at its quota: one more is refused and stores nothing.
    let now = store::now_ms();
    let refused = store
        .mailbox_post(
            mailbox,
            b"one too many".to_vec(),
            now + HOUR_MS,
            now,
            quota(0, EACH),
        )
        .await
        .unwrap();
    assert_eq!(refused, Err(MailboxRefusal::MailboxFull));

    // Read back page by page, as a long poll would: every message, in id order.
    let read_all = |store: Store| {
        let posted = &posted;
        async move {
            let mut read = Vec::new();
            let mut after = 0;
            loop {
                let page = store
                    .mailbox_read(mailbox, after, store::now_ms(), 64)
                    .await
                    .unwrap();
                let Some(last) = page.last() else { break };
                after = last.id;
                read.extend(page.into_iter().map(|m| (m.id, m.body)));
            }
            let expected: Vec<_> = posted.iter().map(|(i, b)| (*i, b.clone())).collect();
            assert_eq!(read, expected);
            store
        }
    };
    let store = read_all(store).await;
    close(store);
    close(read_all(open(&db).await).await);
}
