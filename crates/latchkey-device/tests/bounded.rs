//! The device's mailbox poll reads at most one page's cap from a node: a node that streams
//! forever is cut off and retried later, instead of filling the device's memory. Performed
//! against the real `latchkeyd` binary.

mod support;

use std::time::Duration;

use latchkey_quorum::http::MAILBOX_PAGE_CAP;
use latchkey_testkit::liar::{Liar, Lie};
use support::{init, Agent, Nodes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_streaming_a_mailbox_page_forever_is_cut_off_at_the_cap() {
    let nodes = Nodes::start(2).await;
    let endless = Liar::start(Lie::Endless);
    let mut urls = nodes.urls();
    urls.push(endless.url());
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &urls, &["--action", "unlock=log"]);
    let agent = Agent::start(dir.path());

    // The first poll is cut off at the cap, backed off (0.5 s, then 1 s) and made again: each
    // read stopped, none ran on until the long poll's time limit (40 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let polls = loop {
        let polls = endless.sent_for("/v1/mailboxes/");
        if polls.len() >= 3 || std::time::Instant::now() > deadline {
            break polls;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(polls.len() >= 3, "the device polled the liar {polls:?}");
    for sent in &polls[..polls.len() - 1] {
        assert!(
            *sent >= MAILBOX_PAGE_CAP as u64 && *sent < MAILBOX_PAGE_CAP as u64 + 16 * 1024 * 1024,
            "a poll took in {sent} bytes: {polls:?}"
        );
    }
    // The agent is still serving.
    let health = reqwest::get(format!("{}/healthz", agent.url))
        .await
        .unwrap();
    assert!(health.status().is_success());
    drop(agent);
    nodes.stop().await;
}
