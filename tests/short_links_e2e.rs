//! Issue 11, item 1 end to end with the real binaries (`latchkey`, `latchkeyd`), three registry
//! nodes in process and the real OS keychain: a short link is bound to the first phone that
//! redeems it. The owner invites; guest Ana accepts the short link (fetched past a node that
//! serves another invitation's blob) and opens; guest Ben accepts the same link afterwards and
//! is refused with nothing kept; the owner sees the link redeemed, and Ben's try, and reissues
//! it in one step: the new link works for Ben's phone while Ana's grant is revoked. The long
//! link still works, and binds too.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::time::{Duration, Instant};

use cli::{owner_who_claimed, require_secret_service, start_nodes, Cli, Door};
use latchkey_proto::shortlink::ShortLink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A "node" that answers every invitation read with `blob` and everything else with 404.
async fn lying_node(blob: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let blob = blob.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if head.starts_with(b"GET /v1/invites/") {
                    ("200 OK", blob)
                } else {
                    ("404 Not Found", Vec::new())
                };
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = conn.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn blob_of(node: &str, link: &str) -> Vec<u8> {
    let id = hex::encode(ShortLink::parse(link).unwrap().blob_id());
    let resp = reqwest::get(format!("{node}/v1/invites/{id}"))
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_link_works_for_the_first_phone_only_and_is_reissued_in_one_step() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Front door", &urls, &[]);
    let mut owner = owner_who_claimed(tmp.path(), &urls, &door);

    // The short link: at most 300 characters, a QR of version 10 or less, on every node.
    let qr = tmp.path().join("ana.png");
    let out = owner.ok(&[
        "invite",
        "Front door",
        "--name",
        "Ana",
        "--until",
        "+1h",
        "--qr",
        qr.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&qr).unwrap().starts_with(b"\x89PNG"));
    let link = out
        .lines()
        .find(|l| l.starts_with("LATCHKEY://I/"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert!(link.len() <= 300, "{}", link.len());
    assert!(
        out.contains(&format!("{} characters, QR version", link.len())),
        "{out}"
    );
    assert!(out.contains("sealed on 3 node(s)"), "{out}");
    let grants = owner.json(&["grants"]);
    let grant = grants["grants"][0].clone();
    assert_eq!(grant["redemption"]["state"], "not-redeemed", "{grant}");
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    let v = owner.json(&["invite", "Front door", "--name", "Other", "--until", "+1h"]);
    assert!(v["qr_version"].as_u64().unwrap() <= 10, "{v}");
    assert_eq!(
        v["link_len"].as_u64().unwrap() as usize,
        v["link"].as_str().unwrap().len()
    );
    assert_eq!(v["nodes_stored"], 3);

    // Ana's link names, first, a node that serves the other invitation's sealed blob.
    let liar = lying_node(blob_of(&urls[0], v["link"].as_str().unwrap()).await).await;
    let mut short = ShortLink::parse(&link).unwrap();
    short.nodes.insert(0, liar);
    short.nodes.truncate(4);
    let via_liar = short.to_text().unwrap().to_string();

    let mut ana = Cli::new(tmp.path().join("ana"));
    let started = Instant::now();
    let out = ana.ok(&["accept", &via_liar]);
    let accept_ms = started.elapsed().as_millis();
    assert!(out.contains("redeemed for this profile's own key"), "{out}");
    assert!(ana.ok(&["open", "Front door"]).contains("unlock accepted"));
    assert_eq!(door.opened(), 1);
    let held = ana.json(&["invitations"]);
    assert_eq!(
        held["invitations"][0]["doors"][0]["redeemed"], true,
        "{held}"
    );
    println!(
        "short link: {} characters; accept (fetch + decrypt + verify + redeem) by the CLI process: {accept_ms} ms",
        link.len()
    );

    // Ben gets the same link afterwards: refused in plain words, nothing kept.
    let mut ben = Cli::new(tmp.path().join("ben"));
    let out = ben.run(&["accept", &link]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "this invitation was already redeemed by another phone; ask your host for a new link"
        ),
        "{stderr}"
    );
    assert_eq!(
        ben.json(&["invitations"])["invitations"],
        serde_json::json!([])
    );
    assert_eq!(ben.json(&["nodes", "list"])["nodes"], serde_json::json!([]));
    assert!(!ben.run(&["open", "Front door"]).status.success());
    // A guest's profile (no recovery phrase) lists no grants and reads no door's log.
    assert_eq!(ben.json(&["grants"])["grants"], serde_json::json!([]));
    assert_eq!(door.opened(), 1);

    // The owner sees it redeemed, and that another phone tried since.
    let grants = owner.json(&["grants", "Front door"]);
    let ana_grant = grants["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == grant_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        ana_grant["redemption"]["state"], "redeemed-contested",
        "{ana_grant}"
    );
    assert!(ana_grant["redemption"]["other_phones"].as_u64().unwrap() >= 1);
    let listed = owner.ok(&["grants", "Front door"]);
    assert!(listed.contains("REDEEMED BY ANOTHER PHONE?"), "{listed}");

    // Reissue: the old grant is revoked, a fresh link with the same terms works for Ben.
    let v = owner.json(&["reissue", &grant_id[..12]]);
    assert_eq!(v["revoked"], grant_id.as_str());
    assert_eq!(v["not_after_ms"], ana_grant["not_after_ms"]);
    let new_link = v["link"].as_str().unwrap();
    assert!(new_link.starts_with("LATCHKEY://I/"));
    let out = ben.ok(&["accept", new_link]);
    assert!(out.contains("redeemed for this profile's own key"), "{out}");
    assert!(ben.ok(&["open", "Front door"]).contains("unlock accepted"));
    assert_eq!(door.opened(), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let out = ana.run(&["open", "Front door"]);
        if out.status.code() == Some(2) {
            break String::from_utf8_lossy(&out.stderr).to_string();
        }
        assert!(Instant::now() < deadline, "Ana's revoked grant still opens");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(refused.contains("GrantRevoked"), "{refused}");
    assert_eq!(door.opened(), 2, "the revoked phone ran nothing");

    // The long link still works, and binds to its first phone too.
    let v = owner.json(&[
        "invite",
        "Front door",
        "--name",
        "Cleo",
        "--until",
        "+1h",
        "--long",
    ]);
    let long = v["link"].as_str().unwrap();
    assert!(long.starts_with("latchkey://invite/"));
    assert!(long.len() > 2 * link.len(), "{}", long.len());
    let mut cleo = Cli::new(tmp.path().join("cleo"));
    cleo.ok(&["accept", long]);
    assert!(cleo.ok(&["open", "Front door"]).contains("unlock accepted"));
    let mut dan = Cli::new(tmp.path().join("dan"));
    let out = dan.run(&["accept", long]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already redeemed by another phone"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
