//! The quorum client against real registry nodes (in-process, real SQLite files, real HTTP).

use std::time::Duration;

use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_quorum::{CachedView, Error, Freshness, NodeOutcome, QuorumClient, QuorumConfig};
use latchkey_testkit::{person, sorted, TestDevice, T0};

async fn nodes(dir: &std::path::Path, n: usize) -> Vec<RunningNode> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut config =
            NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.join(format!("{i}.db")));
        config.limits = Limits::without_rate_limits();
        out.push(latchkey_node::start(config).await.unwrap());
    }
    out
}

fn client(urls: &[String]) -> QuorumClient {
    QuorumClient::new(
        urls.to_vec(),
        QuorumConfig {
            sample: urls.len(),
            min_answers: urls.len(),
            publish_to: urls.len(),
            min_acks: urls.len(),
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn publish_then_check_across_nodes_that_lag() {
    let dir = tempfile::tempdir().unwrap();
    let running = nodes(dir.path(), 3).await;
    let urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    let q = client(&urls);
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(300, "Door");
    dev.claim(&[&alice], 1);
    // Only node 0 hears of the device at first.
    q.publish_to(&dev.chain.device(), dev.chain.ops(), &urls[..1])
        .await
        .unwrap();

    // A new op is published to all three: two of them lack its predecessors and get the chain.
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    let report = q.publish_chain_to(&dev.chain, 2, &urls).await.unwrap();
    assert_eq!(report.acked.len(), 3, "{report:?}");

    let view = q
        .check(&dev.chain.device(), None, T0, &mut rand::thread_rng())
        .await
        .unwrap();
    assert_eq!(view.freshness, Freshness::Quorum { answers: 3 });
    assert_eq!(view.chain.head(), dev.chain.head());
    assert!(view.reports.iter().all(|r| r.outcome == NodeOutcome::Fresh));

    // With a cached view, nodes answer only from our head on.
    let cached = view.to_cache();
    let again = q
        .check(
            &dev.chain.device(),
            Some(&cached),
            T0 + 1,
            &mut rand::thread_rng(),
        )
        .await
        .unwrap();
    assert_eq!(again.chain.head(), dev.chain.head());
}

#[tokio::test]
async fn down_nodes_degrade_to_the_cache_and_say_how_old_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let running = nodes(dir.path(), 2).await;
    let urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    let q = client(&urls);
    let mut dev = TestDevice::new(301, "Door");
    dev.claim(&[&person(1)], 1);
    q.publish_to(&dev.chain.device(), dev.chain.ops(), &urls)
        .await
        .unwrap();
    let view = q
        .check(&dev.chain.device(), None, T0, &mut rand::thread_rng())
        .await
        .unwrap();
    let cached = CachedView {
        chain: view.chain.clone(),
        verified_at_ms: T0,
    };
    for n in running {
        n.shutdown().await.unwrap();
    }
    let later = T0 + 90_000;
    let view = q
        .check(
            &dev.chain.device(),
            Some(&cached),
            later,
            &mut rand::thread_rng(),
        )
        .await
        .unwrap();
    assert_eq!(
        view.freshness,
        Freshness::Degraded {
            answers: 0,
            needed: 2,
            cached_age_ms: Some(90_000)
        }
    );
    assert_eq!(view.chain.head(), dev.chain.head());
    assert!(view
        .reports
        .iter()
        .all(|r| matches!(r.outcome, NodeOutcome::Failed(_))));
    // With nothing cached and nobody answering, the caller is told plainly.
    assert!(matches!(
        q.check(&dev.chain.device(), None, later, &mut rand::thread_rng())
            .await,
        Err(Error::UnknownDevice { .. })
    ));
}

#[tokio::test]
async fn an_invalid_op_is_refused_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let running = nodes(dir.path(), 2).await;
    let urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    let q = client(&urls);
    let mut dev = TestDevice::new(302, "Door");
    dev.claim(&[&person(1)], 1);
    q.publish_to(&dev.chain.device(), dev.chain.ops(), &urls)
        .await
        .unwrap();
    let mallory = person(6);
    let forged = dev.op(
        OpBody::Transfer(OwnerSet {
            owners: vec![mallory.public_key()],
            threshold: 1,
        }),
        &[&mallory],
    );
    let err = q
        .publish_to(&dev.chain.device(), std::slice::from_ref(&forged), &urls)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Rejected(_)), "{err}");
}

#[test]
fn bad_configuration_is_refused() {
    assert!(matches!(
        QuorumClient::new(vec![], QuorumConfig::default()),
        Err(Error::NoNodes)
    ));
    assert!(matches!(
        QuorumClient::new(vec!["ftp://x".into()], QuorumConfig::default()),
        Err(Error::BadUrl { .. })
    ));
}
