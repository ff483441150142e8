//! A node that streams forever, or lies in `Content-Length`, costs the quorum client at most one
//! page's cap: the check marks it as lying and still succeeds with the honest nodes.

use std::time::Duration;

use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_quorum::http::CHAIN_PAGE_CAP;
use latchkey_quorum::{Freshness, NodeOutcome, QuorumClient, QuorumConfig};
use latchkey_testkit::liar::{Liar, Lie};
use latchkey_testkit::{person, TestDevice};

async fn honest(dir: &std::path::Path, n: usize) -> Vec<RunningNode> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut config =
            NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.join(format!("{i}.db")));
        config.limits = Limits::without_rate_limits();
        out.push(latchkey_node::start(config).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_streaming_forever_or_lying_in_content_length_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let running = honest(dir.path(), 3).await;
    let endless = Liar::start(Lie::Endless);
    let huge = Liar::start(Lie::Declares(u64::MAX / 2));
    let small = Liar::start(Lie::Declares(100));
    let mut urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    let honest_urls = urls.clone();
    urls.extend([endless.url(), huge.url(), small.url()]);
    let q = QuorumClient::new(
        urls.clone(),
        QuorumConfig {
            sample: urls.len(),
            min_answers: 3,
            publish_to: 3,
            min_acks: 3,
            timeout: Duration::from_secs(20),
        },
    )
    .unwrap();
    let mut dev = TestDevice::new(900, "Door");
    dev.claim(&[&person(1)], 1);
    q.publish_to(&dev.chain.device(), dev.chain.ops(), &honest_urls)
        .await
        .unwrap();

    let view = q
        .check_nodes(&dev.chain.device(), None, 0, &urls)
        .await
        .unwrap();
    assert_eq!(view.chain.state().head, dev.chain.state().head);
    assert_eq!(view.freshness, Freshness::Quorum { answers: 3 });
    for liar in [&endless, &huge, &small] {
        let report = view.reports.iter().find(|r| r.node == liar.url()).unwrap();
        assert!(
            matches!(report.outcome, NodeOutcome::Lied(_)),
            "{}: {:?}",
            liar.url(),
            report.outcome
        );
    }
    let NodeOutcome::Lied(why) = &view
        .reports
        .iter()
        .find(|r| r.node == endless.url())
        .unwrap()
        .outcome
    else {
        unreachable!()
    };
    assert!(why.contains("limit"), "{why}");

    // The reader hung up on each liar, having taken in about one cap at most (socket buffers on
    // loopback hold a few MiB more): the read stopped, it did not run until the time limit.
    for liar in [&endless, &huge, &small] {
        assert!(
            liar.wait_hung_up(1, Duration::from_secs(10)),
            "{} still being read",
            liar.url()
        );
    }
    let streamed = endless.sent()[0];
    assert!(
        streamed >= CHAIN_PAGE_CAP as u64 && streamed < CHAIN_PAGE_CAP as u64 + 16 * 1024 * 1024,
        "the endless node sent {streamed} bytes"
    );
    assert!(huge.sent()[0] < 16 * 1024 * 1024, "{:?}", huge.sent());
}
