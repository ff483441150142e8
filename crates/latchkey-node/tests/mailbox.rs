//! Mailboxes over real HTTP: post, long-poll wake-up, expiry, a sender's share. These use
//! reply mailboxes (ids the node knows nothing of), which take sealed responses only; what the
//! other kinds take is in tests/abuse.rs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use latchkey_node::Limits;
use reqwest::StatusCode;
use serde_json::Value;

fn mailbox(n: u8) -> String {
    hex::encode([n; 32])
}

fn bodies(page: &Value) -> Vec<Vec<u8>> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            data_encoding::BASE64
                .decode(m["body"].as_str().unwrap().as_bytes())
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn post_then_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let mb = mailbox(1);

    let (status, first) = post_mailbox_ttl(&c, &base, &mb, &reply_body(1, 0), None).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, second) = post_mailbox_ttl(&c, &base, &mb, &reply_body(2, 2), Some("60")).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert!(second["id"].as_u64() > first["id"].as_u64());
    // Another mailbox sees none of it.
    post_mailbox_ttl(&c, &base, &mailbox(2), &reply_body(3, 0), None).await;

    let (status, page) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bodies(&page), vec![reply_body(1, 0), reply_body(2, 2)]);
    assert_eq!(page["next"], second["id"]);
    let expires = page["messages"][0]["expires_ms"].as_u64().unwrap();
    let now = latchkey_node::store::now_ms();
    assert!(
        expires > now + 290_000 && expires <= now + 300_000,
        "default TTL is 300 s"
    );

    let after = first["id"].as_u64().unwrap();
    let (_, page) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}?after={after}")).await;
    assert_eq!(bodies(&page), vec![reply_body(2, 2)]);
    let next = page["next"].as_u64().unwrap();
    let (_, page) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}?after={next}")).await;
    assert!(bodies(&page).is_empty());
    assert_eq!(page["next"], next);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn long_poll_wakes_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let mb = mailbox(3);

    let started = Instant::now();
    let waiter = {
        let (c, url) = (c.clone(), format!("{base}/v1/mailboxes/{mb}?wait_secs=20"));
        tokio::spawn(async move { get_json(&c, &url).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "nothing to read yet: the poll waits");
    let (status, _) = post_mailbox_ttl(&c, &base, &mb, &reply_body(7, 1), None).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, page) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bodies(&page), vec![reply_body(7, 1)]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the post, not the timeout"
    );

    // With nothing to read, the poll answers empty once its wait runs out.
    let next = page["next"].as_u64().unwrap();
    let started = Instant::now();
    let (status, page) = get_json(
        &c,
        &format!("{base}/v1/mailboxes/{mb}?after={next}&wait_secs=1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bodies(&page).is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_long_polls_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let url = format!("{base}/v1/mailboxes/{}?wait_secs=30", mailbox(4));
    let waiter = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    node.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(waiter.await.unwrap().unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn messages_expire() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        purge_interval: Duration::from_millis(200),
        ..Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("node.db"), limits))
        .await
        .unwrap();
    let (c, base) = (client(), node.url());
    let mb = mailbox(5);
    assert_eq!(
        post_mailbox_ttl(&c, &base, &mb, &reply_body(1, 0), Some("1"))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        post_mailbox_ttl(&c, &base, &mb, &reply_body(2, 0), Some("3600"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (_, page) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}")).await;
    assert_eq!(bodies(&page).len(), 2);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, page) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}")).await;
    assert_eq!(bodies(&page), vec![reply_body(2, 0)]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_senders_full_share_refuses_until_messages_expire() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        reply_mailbox_per_sender: 2,
        ..Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("node.db"), limits))
        .await
        .unwrap();
    let (c, base) = (client(), node.url());
    let mb = mailbox(6);
    assert_eq!(
        post_mailbox_ttl(&c, &base, &mb, &reply_body(1, 0), Some("1"))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        post_mailbox_ttl(&c, &base, &mb, &reply_body(2, 0), None)
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, body) = post_mailbox_ttl(&c, &base, &mb, &reply_body(3, 0), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INSUFFICIENT_STORAGE, "mailbox_full")
    );
    // Other mailboxes are not affected.
    assert_eq!(
        post_mailbox_ttl(&c, &base, &mailbox(7), &reply_body(4, 0), None)
            .await
            .0,
        StatusCode::CREATED
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post_mailbox_ttl(&c, &base, &mb, &reply_body(3, 0), None)
            .await
            .0,
        StatusCode::CREATED
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_mailbox_requests_get_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let mb = mailbox(8);

    for bad in ["abc", &"g".repeat(64), &"a".repeat(66)] {
        let (status, body) = post_mailbox_ttl(&c, &base, bad, &reply_body(1, 0), None).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_mailbox"),
            "{bad}"
        );
    }
    for ttl in ["0", "3601", "soon", "-5"] {
        let (status, body) = post_mailbox_ttl(&c, &base, &mb, &reply_body(1, 0), Some(ttl)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_ttl"),
            "{ttl}"
        );
    }
    let (status, body) = post_mailbox_ttl(&c, &base, &mb, &[1u8; 20_001], None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    let (status, body) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}?wait_secs=31")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let (status, body) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}?after=-1")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    // Nothing was stored by any of it.
    let (_, page) = get_json(&c, &format!("{base}/v1/mailboxes/{mb}")).await;
    assert!(bodies(&page).is_empty());
    node.shutdown().await.unwrap();
}
