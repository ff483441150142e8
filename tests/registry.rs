//! Issue 3's scripted run: real `latchkey-node` processes on loopback; a device's genesis and
//! claim published to one node are read back, verified, through the quorum client from a node
//! that only replicated them; a node killed with SIGKILL in the middle of writes loses nothing
//! it acknowledged.

mod support;

use std::time::Duration;

use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_quorum::{Freshness, NodeOutcome, QuorumClient, QuorumConfig};
use latchkey_testkit::{person, sorted, TestDevice, T0};
use support::{eventually, NodeProcess};

fn config(k: usize) -> QuorumConfig {
    QuorumConfig {
        sample: k,
        min_answers: k,
        publish_to: 1,
        min_acks: 1,
        timeout: Duration::from_secs(5),
    }
}

async fn head_seq(url: &str, device: &str) -> Option<u64> {
    let text = reqwest::get(format!("{url}/v1/devices/{device}/head"))
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let at = text.find("\"seq\":")? + 6;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_replicates_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = NodeProcess::start(&dir.path().join("a.db"), &[]);
    let b = NodeProcess::start(&dir.path().join("b.db"), std::slice::from_ref(&a.url));

    // A device boots and an owner claims it; both ops go to node A only.
    let alice = person(1);
    let mut dev = TestDevice::new(900, "Front door");
    let device = dev.chain.device();
    let claim = dev.claim_op(&[&alice], 1);
    dev.chain.append(claim).unwrap();
    let to_a = QuorumClient::new(vec![a.url.clone()], config(1)).unwrap();
    to_a.publish_to(&device, dev.chain.ops(), std::slice::from_ref(&a.url))
        .await
        .expect("A stores genesis and claim");

    // B replicates them; the quorum client reads them from B alone and verifies from genesis.
    let id = device.to_string();
    eventually(Duration::from_secs(20), || async {
        head_seq(&b.url, &id).await.filter(|s| *s == 1)
    })
    .await
    .expect("B replicated the claim");
    let from_b = QuorumClient::new(vec![b.url.clone()], config(1)).unwrap();
    let view = from_b
        .check_nodes(&device, None, T0, std::slice::from_ref(&b.url))
        .await
        .unwrap();
    assert_eq!(view.chain.state().owners, vec![alice.public_key()]);
    assert_eq!(view.freshness, Freshness::Quorum { answers: 1 });
    assert_eq!(view.reports[0].outcome, NodeOutcome::Fresh);

    // A writer appends ops to A one by one; A is killed with SIGKILL mid-stream.
    let bob = person(2);
    let writer_chain = dev.chain.clone();
    let a_url = a.url.clone();
    let writer = tokio::spawn(async move {
        let client = QuorumClient::new(vec![a_url.clone()], config(1)).unwrap();
        let mut chain = writer_chain;
        let mut acked = 0u64;
        for i in 0..10_000u64 {
            let set = if i % 2 == 0 {
                sorted(&[&alice, &bob])
            } else {
                vec![alice.public_key()]
            };
            let mut op = chain.propose(
                T0 + i,
                OpBody::AmendOwners(OwnerSet {
                    owners: set,
                    threshold: 1,
                }),
            );
            op.sign(&alice);
            if i % 2 == 0 {
                // Bob joins: the key an owner change adds signs it too (proof of possession).
                op.sign(&bob);
            }
            if client
                .publish_to(
                    &chain.device(),
                    std::slice::from_ref(&op),
                    std::slice::from_ref(&a_url),
                )
                .await
                .is_err()
            {
                break;
            }
            chain.append(op).unwrap();
            acked = chain.state().seq;
        }
        (acked, chain)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    let (acked, written) = writer.await.unwrap();
    assert!(
        acked > 2,
        "the writer got some ops acknowledged before the kill ({acked})"
    );

    // Restarted on the same file, A still holds every acknowledged op, and they verify.
    let a2 = NodeProcess::start(&dir.path().join("a.db"), &[]);
    let client = QuorumClient::new(vec![a2.url.clone()], config(1)).unwrap();
    let view = client
        .check_nodes(&device, None, T0, std::slice::from_ref(&a2.url))
        .await
        .unwrap();
    assert!(
        view.chain.state().seq >= acked,
        "acknowledged up to {acked}, found {}",
        view.chain.state().seq
    );
    assert_eq!(
        view.chain.ops()[acked as usize].id(),
        written.ops()[acked as usize].id()
    );

    // A node started afterwards catches up from the restarted A, and a 2-node quorum agrees.
    let c = NodeProcess::start(&dir.path().join("c.db"), &[a2.url.clone(), b.url.clone()]);
    let target = view.chain.state().seq;
    eventually(Duration::from_secs(30), || async {
        head_seq(&c.url, &id).await.filter(|s| *s >= target)
    })
    .await
    .expect("C caught up");
    let both = QuorumClient::new(vec![a2.url.clone(), c.url.clone()], config(2)).unwrap();
    let view = both
        .check(&device, None, T0, &mut rand::thread_rng())
        .await
        .unwrap();
    assert!(view.forks.is_empty());
    assert_eq!(view.chain.state().seq, target);
    assert!(matches!(view.freshness, Freshness::Quorum { answers: 2 }));
}
