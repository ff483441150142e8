//! Limits against abuse: body sizes, per-IP rates, requests at once.

mod common;

use std::time::Duration;

use common::*;
use latchkey_node::admission::SEALED_RESPONSE_SIZES;
use latchkey_node::{Limits, Rate};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn an_oversized_op_list_is_413_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dev = claimed(20);
    let id = device_id(&dev);
    // Room for the genesis alone, not for genesis and claim.
    let limit = list(&dev.chain.ops()[..1]).len() + 10;
    let limits = Limits {
        max_ops_body: limit,
        ..Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("node.db"), limits))
        .await
        .unwrap();
    let (c, base) = (client(), node.url());
    let body = list(dev.chain.ops());
    assert!(body.len() > limit);
    let (status, err) = post_raw(&c, &base, &id, body).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&limit.to_string()));
    assert_eq!(head(&c, &base, &id).await.0, StatusCode::NOT_FOUND);
    // Within the limit, one op at a time, it goes through.
    let (status, _) = post_ops(&c, &base, &id, &dev.chain.ops()[..1]).await;
    assert_eq!(status, StatusCode::OK);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn writes_over_the_rate_are_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        ops_rate: Some(Rate::new(1, 2)),
        mailbox_rate: Some(Rate::new(1, 1)),
        ..Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("node.db"), limits))
        .await
        .unwrap();
    let (c, base) = (client(), node.url());
    let dev = claimed(21);
    let id = device_id(&dev);

    assert_eq!(
        post_ops(&c, &base, &id, dev.chain.ops()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post_ops(&c, &base, &id, dev.chain.ops()).await.0,
        StatusCode::OK
    );
    let resp = c
        .post(format!("{base}/v1/devices/{id}/ops"))
        .body(list(dev.chain.ops()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "rate_limited");

    // Reads and other classes have their own allowance.
    assert_eq!(head(&c, &base, &id).await.0, StatusCode::OK);
    let mb = format!("{base}/v1/mailboxes/{}", hex::encode([1u8; 32]));
    let reply = vec![1u8; SEALED_RESPONSE_SIZES[0]];
    assert_eq!(
        c.post(&mb)
            .body(reply.clone())
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let resp = c.post(&mb).body(reply).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    // The allowance refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post_ops(&c, &base, &id, dev.chain.ops()).await.0,
        StatusCode::OK
    );

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_rate_limited_total 2"),
        "{metrics}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_beyond_the_concurrency_cap_are_503() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_concurrent_requests: 1,
        ..Limits::without_rate_limits()
    };
    let node = latchkey_node::start(config(&dir.path().join("node.db"), limits))
        .await
        .unwrap();
    let (c, base) = (client(), node.url());
    // An op post whose body never finishes holds the only place.
    let mut slow = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let device = device_id(&claimed(22));
    slow.write_all(
        format!(
            "POST /v1/devices/{device}/ops HTTP/1.1\r\nhost: node\r\ncontent-length: 100\r\n\r\n\0\0"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let metrics = node.metrics();
    assert!(
        eventually(Duration::from_secs(5), || async {
            metrics.requests.load(std::sync::atomic::Ordering::Relaxed) == 1
        })
        .await
    );
    let resp = c.get(format!("{base}/v1/feed")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "overloaded");
    // Long polls have places of their own.
    let (status, _) = get_json(
        &c,
        &format!("{base}/v1/mailboxes/{}?wait_secs=1", hex::encode([2u8; 32])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The place is free again once the slow request is gone.
    drop(slow);
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.get(format!("{base}/v1/feed"))
                .send()
                .await
                .unwrap()
                .status()
                == StatusCode::OK
        })
        .await
    );
    node.shutdown().await.unwrap();
}
