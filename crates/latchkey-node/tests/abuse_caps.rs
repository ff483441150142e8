//! The caps per client address, each pushed past by one abusive address (127.0.0.3) while an
//! honest one (127.0.0.2) is still served: long polls, requests held open by slow bodies, and
//! live mailbox messages across the node. Real sockets; nothing depends on timing.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use latchkey_node::Limits;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn one_address_cannot_hold_every_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(
        &dir,
        Limits {
            max_long_polls: 6,
            max_long_polls_per_address: 4,
            ..Limits::without_rate_limits()
        },
    )
    .await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    let poll = |c: &reqwest::Client, n: u8| {
        let (c, url) = (
            c.clone(),
            format!("{base}/v1/mailboxes/{}?wait_secs=30", hex::encode([n; 32])),
        );
        tokio::spawn(async move { get_json(&c, &url).await })
    };
    let parked: Vec<_> = (0..4).map(|n| poll(&abuser, n)).collect();
    let m = node.metrics();
    assert!(
        eventually(Duration::from_secs(10), || async {
            m.long_polls.load(Ordering::Relaxed) == 4
        })
        .await
    );
    // A fifth from the same address is refused at once, with when to retry.
    let resp = abuser
        .get(format!(
            "{base}/v1/mailboxes/{}?wait_secs=30",
            hex::encode([9u8; 32])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "too_many_long_polls");
    // Reading without waiting is an ordinary request, still open to it.
    let (status, _) = get_json(
        &abuser,
        &format!("{base}/v1/mailboxes/{}", hex::encode([9u8; 32])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The honest address gets a long poll, woken by the answer it waits for.
    let waiting = poll(&honest, 20);
    assert!(
        eventually(Duration::from_secs(10), || async {
            m.long_polls.load(Ordering::Relaxed) == 5
        })
        .await
    );
    let (status, body) =
        post_mailbox(&honest, &base, &hex::encode([20u8; 32]), &reply_body(20, 0)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, page) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);

    // When the pool itself is full, the answer says so (503, not the address's 429).
    let second = client_from("127.0.0.5");
    let fill: Vec<_> = (30..32).map(|n| poll(&second, n)).collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            m.long_polls.load(Ordering::Relaxed) == 6
        })
        .await
    );
    let (status, body) = get_json(
        &honest,
        &format!(
            "{base}/v1/mailboxes/{}?wait_secs=5",
            hex::encode([21u8; 32])
        ),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "long_polls_full")
    );
    node.shutdown().await.unwrap();
    for p in parked.into_iter().chain(fill) {
        assert_eq!(p.await.unwrap().0, StatusCode::OK);
    }
}

/// Opens a connection from `ip` and sends an op post whose body never finishes.
async fn slow_post(ip: &str, node: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(node).await.unwrap();
    let device = device_id(&claimed(50));
    stream
        .write_all(
            format!(
                "POST /v1/devices/{device}/ops HTTP/1.1\r\nhost: node\r\ncontent-length: 1000\r\n\r\n\0"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn slow_bodies_from_one_address_cannot_take_every_place() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(
        &dir,
        Limits {
            max_concurrent_requests: 4,
            max_requests_per_address: 2,
            ..Limits::without_rate_limits()
        },
    )
    .await;
    let base = node.url();
    let m = node.metrics();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(slow_post(ABUSER, node.addr()).await);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            m.requests.load(Ordering::Relaxed) == 2
        })
        .await
    );
    // More from the same address are refused at once, without waiting for their bodies.
    for _ in 0..2 {
        let mut third = slow_post(ABUSER, node.addr()).await;
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.contains("too_many_at_once"), "{answer}");
    }
    // The honest address is served.
    let honest = client_from(HONEST);
    let dev = claimed(51);
    let (status, body) = post_ops(&honest, &base, &device_id(&dev), dev.chain.ops()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        head(&honest, &base, &device_id(&dev)).await.0,
        StatusCode::OK
    );
    assert_eq!(m.overloaded.load(Ordering::Relaxed), 0);
    drop(held);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_address_cannot_fill_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(
        &dir,
        Limits {
            mailbox_per_address: 10,
            ..Limits::without_rate_limits()
        },
    )
    .await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    // Each reply mailbox takes a few messages from an address; the abuser spreads out.
    let mut last = (StatusCode::CREATED, Value::Null);
    let mut taken = 0;
    for n in 0..20u8 {
        last = post_mailbox(&abuser, &base, &hex::encode([n; 32]), &reply_body(n, 0)).await;
        if last.0 != StatusCode::CREATED {
            break;
        }
        taken += 1;
    }
    assert_eq!(taken, 10);
    assert_eq!(
        (last.0, code(&last.1)),
        (StatusCode::INSUFFICIENT_STORAGE, "address_full")
    );
    let (status, body) =
        post_mailbox(&honest, &base, &hex::encode([0u8; 32]), &reply_body(99, 0)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.shutdown().await.unwrap();
}
