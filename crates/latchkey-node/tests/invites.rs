//! Sealed invitations behind short links (docs/API.md, "Invitations"), over HTTP on loopback:
//! stored write-once, served back, refused when malformed, oversized, too many or expired.

mod common;

use std::time::Duration;

use common::*;
use latchkey_node::api::EXPIRES_HEADER;
use latchkey_node::{Limits, Rate};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now_ms() -> u64 {
    latchkey_node::store::now_ms()
}

fn id_hex(n: u8) -> String {
    hex::encode([n; 32])
}

async fn put(
    c: &reqwest::Client,
    base: &str,
    id: &str,
    body: &[u8],
    expires_ms: u64,
) -> (StatusCode, String) {
    let resp = c
        .put(format!("{base}/v1/invites/{id}"))
        .header(EXPIRES_HEADER, expires_ms)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, text)
}

async fn get(c: &reqwest::Client, base: &str, id: &str) -> (StatusCode, Vec<u8>) {
    let resp = c
        .get(format!("{base}/v1/invites/{id}"))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

fn error_code(text: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|_| panic!("not a JSON error: {text:?}"));
    code(&v).to_owned()
}

#[tokio::test]
async fn a_blob_is_stored_once_and_served_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let blob = vec![7u8; 1065];
    let later = now_ms() + 86_400_000;
    assert_eq!(
        put(&c, &base, &id_hex(1), &blob, later).await.0,
        StatusCode::CREATED
    );
    // A retry with the same bytes is fine.
    assert_eq!(
        put(&c, &base, &id_hex(1), &blob, later).await.0,
        StatusCode::OK
    );
    // Other bytes under the same id are refused and change nothing.
    let (status, text) = put(&c, &base, &id_hex(1), &[8u8; 1065], later).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (StatusCode::CONFLICT, "invite_exists")
    );
    assert_eq!(
        get(&c, &base, &id_hex(1)).await,
        (StatusCode::OK, blob.clone())
    );
    // The expiry may come as a query parameter too.
    let resp = c
        .put(format!("{base}/v1/invites/{}?expires={later}", id_hex(2)))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // Unknown id.
    let (status, _) = get(&c, &base, &id_hex(3)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_invites_stored_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("latchkey_invites_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_requests_are_400_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let later = now_ms() + 60_000;
    for bad in [
        "abcd".to_owned(),
        "zz".repeat(32),
        id_hex(0xab).to_uppercase(),
        "a".repeat(66),
    ] {
        let (status, text) = put(&c, &base, &bad, b"x", later).await;
        assert_eq!(
            (status, error_code(&text).as_str()),
            (StatusCode::BAD_REQUEST, "invalid_invite_id"),
            "{bad}"
        );
        assert_eq!(get(&c, &base, &bad).await.0, StatusCode::BAD_REQUEST);
    }
    // No expiry, one in the past, one more than 400 days ahead.
    let resp = c
        .put(format!("{base}/v1/invites/{}", id_hex(1)))
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    for expires in [now_ms() - 1, now_ms() + 401 * 86_400_000] {
        let (status, text) = put(&c, &base, &id_hex(1), b"x", expires).await;
        assert_eq!(
            (status, error_code(&text).as_str()),
            (StatusCode::BAD_REQUEST, "invalid_expiry")
        );
    }
    assert_eq!(get(&c, &base, &id_hex(1)).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_oversized_blob_is_413_before_it_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db")).await;
    let (c, base) = (client(), node.url());
    let later = now_ms() + 60_000;
    let (status, text) = put(&c, &base, &id_hex(1), &vec![0u8; 16_449], later).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    // The largest allowed passes.
    assert_eq!(
        put(&c, &base, &id_hex(2), &vec![0u8; 16_448], later)
            .await
            .0,
        StatusCode::CREATED
    );
    // A declared 100 MB body is refused at once, with none of it sent: the node does not wait
    // for (or keep) what it would refuse.
    let mut raw = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    raw.write_all(
        format!(
            "PUT /v1/invites/{} HTTP/1.1\r\nhost: node\r\n{EXPIRES_HEADER}: {later}\r\n\
             content-length: 100000000\r\n\r\n",
            id_hex(3)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A body streamed without a declared length (chunked) is cut off at the limit too.
    let mut raw = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    raw.write_all(
        format!(
            "PUT /v1/invites/{} HTTP/1.1\r\nhost: node\r\n{EXPIRES_HEADER}: {later}\r\n\
             transfer-encoding: chunked\r\n\r\n",
            id_hex(4)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let chunk = [b"400\r\n".as_slice(), &[0u8; 1024], b"\r\n"].concat();
    for _ in 0..17 {
        // The node may answer and close before the last chunk.
        if raw.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    for n in [1, 3, 4] {
        assert_eq!(get(&c, &base, &id_hex(n)).await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn an_expired_blob_is_gone_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.db");
    let node = latchkey_node::start(config(
        &db,
        Limits {
            purge_interval: Duration::from_millis(100),
            ..Limits::without_rate_limits()
        },
    ))
    .await
    .unwrap();
    let (c, base) = (client(), node.url());
    assert_eq!(
        put(&c, &base, &id_hex(1), b"soon gone", now_ms() + 300)
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        put(&c, &base, &id_hex(2), b"kept", now_ms() + 60_000)
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(get(&c, &base, &id_hex(1)).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&c, &base, &id_hex(1)).await.0, StatusCode::NOT_FOUND);
    let rows = || sql_count(&db, "SELECT COUNT(*) FROM invites");
    assert!(eventually(Duration::from_secs(5), || async { rows() == 1 }).await);
    assert_eq!(
        get(&c, &base, &id_hex(2)).await,
        (StatusCode::OK, b"kept".to_vec())
    );
}

#[tokio::test]
async fn one_address_cannot_fill_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(
        &dir,
        Limits {
            invites_per_address: 2,
            ..Limits::without_rate_limits()
        },
    )
    .await;
    let base = node.url();
    let (honest, abuser) = (client_from(HONEST), client_from(ABUSER));
    let later = now_ms() + 60_000;
    for n in 1..=2 {
        assert_eq!(
            put(&abuser, &base, &id_hex(n), b"x", later).await.0,
            StatusCode::CREATED
        );
    }
    let (status, text) = put(&abuser, &base, &id_hex(3), b"x", later).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (StatusCode::INSUFFICIENT_STORAGE, "address_full")
    );
    assert_eq!(
        put(&honest, &base, &id_hex(4), b"x", later).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn stores_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(
        &dir,
        Limits {
            invite_rate: Some(Rate::new(1, 2)),
            ..Limits::without_rate_limits()
        },
    )
    .await;
    let (c, base) = (client(), node.url());
    let later = now_ms() + 60_000;
    let mut statuses = Vec::new();
    for n in 1..=3 {
        statuses.push(put(&c, &base, &id_hex(n), b"x", later).await.0);
    }
    assert_eq!(
        statuses,
        vec![
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Reads are another class.
    assert_eq!(get(&c, &base, &id_hex(1)).await.0, StatusCode::OK);
}
