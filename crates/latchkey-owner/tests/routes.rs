//! The owner core against a real device agent and real registry nodes on loopback, with a
//! proxy or a lying peer on the path: one envelope per command across routes, bounded reads of
//! what a device or a node answers, and telling the door of a revocation on the LAN.

mod common;

use common::{start_nodes, MemorySeeds};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_device::agent::RunningAgent;
use latchkey_device::lifecycle::init;
use latchkey_node::RunningNode;
use latchkey_owner::{ClaimSource, DoorSync, InviteRequest, Profile, Route, SystemClock};
use latchkey_proto::claim::DeviceAddr;
use latchkey_proto::command::{Outcome, RejectCode};
use latchkey_quorum::http::{MAILBOX_PAGE_CAP, SEALED_ANSWER_CAP};
use latchkey_testkit::liar::{Liar, Lie};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What socket buffers on loopback may hold beyond what the reader took.
const SLACK: u64 = 16 * 1024 * 1024;

fn addr(a: SocketAddr) -> DeviceAddr {
    DeviceAddr::parse(&a.to_string()).unwrap()
}

struct World {
    tmp: tempfile::TempDir,
    nodes: Vec<RunningNode>,
    agent: RunningAgent,
    owner: Profile,
    device: String,
    marker: PathBuf,
}

impl World {
    /// Five nodes, a door whose `unlock` appends a line to a marker file, and its owner.
    async fn start() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_nodes(tmp.path(), 5).await;
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        let marker = tmp.path().join("opened");
        let script = tmp.path().join("open-door");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nsleep \"$(cat '{}' 2>/dev/null || echo 0)\"\necho \"$LATCHKEY_ACTION\" >> '{}'\n",
                tmp.path().join("delay").display(),
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let dir = tmp.path().join("door");
        let claim = init(&common::unlock_door(
            dir.clone(),
            "Door",
            common::free_addr(),
            &urls,
            script,
        ))
        .unwrap();
        let agent = latchkey_device::agent::start(&dir).await.unwrap();
        let owner = profile(&tmp.path().join("owner"), &urls);
        let report = owner
            .claim(ClaimSource::Text(&claim.claim_text), None)
            .await
            .unwrap();
        World {
            device: report.device.to_string(),
            tmp,
            nodes,
            agent,
            owner,
            marker,
        }
    }

    /// Makes the door's `unlock` take `seconds` before it is done (and answers).
    fn slow_door(&self, seconds: &str) {
        std::fs::write(self.tmp.path().join("delay"), seconds).unwrap();
    }

    fn opened(&self) -> usize {
        std::fs::read_to_string(&self.marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

fn profile(dir: &Path, nodes: &[String]) -> Profile {
    let p = Profile::at(dir, Arc::new(MemorySeeds::default()), Arc::new(SystemClock)).unwrap();
    p.create_seed().unwrap();
    p.add_nodes(nodes).unwrap();
    p
}

/// What the proxy does with one request, by its `METHOD /path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Forward,
    /// Forward, wait for the device's whole answer, then close the connection unanswered.
    DropReply,
    /// Answer in the device's place.
    Answer(u16, &'static str),
}

type Rules = Arc<dyn Fn(&str) -> Rule + Send + Sync>;

/// A plain HTTP/1.1 proxy in front of a device, logging each request line.
struct Proxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start(
        upstream: SocketAddr,
        rules: impl Fn(&str) -> Rule + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let rules: Rules = Arc::new(rules);
        let l = log.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(
                    client,
                    upstream,
                    rules.clone(),
                    http.clone(),
                    l.clone(),
                ));
            }
        });
        Proxy { addr, log }
    }

    fn seen(&self, line: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == line)
            .count()
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    rules: Rules,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut first = head.lines().next().unwrap_or("").split(' ');
        let (method, path) = (
            first.next().unwrap_or("").to_owned(),
            first.next().unwrap_or("").to_owned(),
        );
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let line = format!("{method} {path}");
        log.lock().unwrap().push(line.clone());
        let (status, answer) = match rules(&line) {
            Rule::Answer(status, text) => (status, text.as_bytes().to_vec()),
            rule => {
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let Ok(resp) = http
                    .request(method, format!("http://{upstream}{path}"))
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .send()
                    .await
                else {
                    return;
                };
                let status = resp.status().as_u16();
                let Ok(answer) = resp.bytes().await else {
                    return;
                };
                if rule == Rule::DropReply {
                    // The device has answered (its action ran); the sender never hears it.
                    return;
                }
                (status, answer.to_vec())
            }
        };
        let header = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if client.write_all(header.as_bytes()).await.is_err()
            || client.write_all(&answer).await.is_err()
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_direct_reply_falls_to_the_relay_with_the_same_envelope_and_the_door_opens_once() {
    let w = World::start().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let proxy = Proxy::start(w.agent.addr(), move |line| {
        if line == "POST /v1/command" && !d.swap(true, Ordering::SeqCst) {
            Rule::DropReply
        } else {
            Rule::Forward
        }
    })
    .await;
    w.owner
        .set_device_addresses(&w.device, vec![addr(proxy.addr)])
        .unwrap();

    let report = w.owner.open(&w.device, "unlock", b"").await.unwrap();
    assert_eq!(proxy.seen("POST /v1/command"), 1);
    assert_eq!(
        report.lost_reply,
        Some(Route::Direct(proxy.addr.to_string()))
    );
    assert!(
        matches!(report.route, Route::Relay(_)),
        "{:?}",
        report.route
    );
    // The relayed copy is the same envelope: the device refuses it as a replay of what it ran.
    assert!(
        matches!(&report.response.outcome, Outcome::Rejected { code, .. } if *code == RejectCode::Replayed as u16),
        "{:?}",
        report.response.outcome
    );
    assert!(report.outcome_unknown());
    // The card keeps saying so after a restart: the lost route is kept with the answer.
    let kept = w
        .owner
        .last_answer(&w.owner.find_device(&w.device).unwrap())
        .unwrap()
        .expect("kept");
    assert!(kept.report.outcome_unknown());
    assert_eq!(kept.report.lost_reply, report.lost_reply);
    // Give any second run time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.opened(), 1, "the actuator ran exactly once");

    // With the proxy passing answers, the next command is an ordinary success.
    let again = w.owner.open(&w.device, "unlock", b"").await.unwrap();
    assert!(again.accepted() && again.lost_reply.is_none());
    assert_eq!(w.opened(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_forever_is_cut_off_and_the_next_route_is_used() {
    let w = World::start().await;
    let endless = Liar::start(Lie::Endless);
    let huge = Liar::start(Lie::Declares(u64::MAX / 2));
    let real = w.agent.addr();
    w.owner
        .set_device_addresses(
            &w.device,
            vec![addr(endless.addr), addr(huge.addr), addr(real)],
        )
        .unwrap();
    let report = w.owner.open(&w.device, "unlock", b"").await.unwrap();
    assert!(report.accepted(), "{:?}", report.response.outcome);
    assert_eq!(report.route, Route::Direct(real.to_string()));
    assert_eq!(w.opened(), 1);
    assert!(endless.wait_hung_up(1, Duration::from_secs(10)));
    let sent = endless.sent_for("/v1/command");
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0] >= SEALED_ANSWER_CAP as u64 && sent[0] < SEALED_ANSWER_CAP as u64 + SLACK,
        "{sent:?}"
    );
    assert!(huge.sent_for("/v1/command")[0] < SLACK);

    // A node streaming a mailbox page forever: the relayed answer comes from the honest ones.
    // The door takes half a second to answer, so the reply mailbox is being read on every node,
    // the liar included, before the answer is there (a quick door could answer first).
    w.slow_door("0.5");
    let liar_node = Liar::start(Lie::Endless);
    w.owner.add_nodes(&[liar_node.url()]).unwrap();
    w.owner.set_device_addresses(&w.device, Vec::new()).unwrap();
    let report = w.owner.open(&w.device, "unlock", b"").await.unwrap();
    assert!(report.accepted(), "{:?}", report.response.outcome);
    assert!(matches!(report.route, Route::Relay(ref n) if *n != liar_node.url()));
    let polls = liar_node.sent_for("GET /v1/mailboxes/");
    assert!(
        !polls.is_empty(),
        "the reply mailbox was read on the liar too"
    );
    for sent in polls {
        assert!(sent < MAILBOX_PAGE_CAP as u64 + SLACK, "{sent}");
    }
    assert_eq!(w.opened(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_handed_to_the_door_and_the_owner_is_told_whether_it_knows() {
    let w = World::start().await;
    let grant = |name: &str| InviteRequest {
        guest_name: name.into(),
        from_ms: w.owner.now_ms() - 60_000,
        until_ms: w.owner.now_ms() + 3_600_000,
        actions: vec!["unlock".into()],
        arguments: vec![],
        may_delegate: false,
        from_grant: None,
        use_limit: None,
        ..Default::default()
    };
    let first = w.owner.invite(&w.device, &grant("Ann")).await.unwrap();
    let second = w.owner.invite(&w.device, &grant("Bo")).await.unwrap();
    let third = w.owner.invite(&w.device, &grant("Cy")).await.unwrap();

    // The real device takes `POST /v1/ops`: it verifies the ops and the owner hears it knows.
    let forward = Proxy::start(w.agent.addr(), |_| Rule::Forward).await;
    w.owner
        .set_device_addresses(&w.device, vec![addr(forward.addr)])
        .unwrap();
    let report = w.owner.revoke(&first.grant.id.to_string()).await.unwrap();
    assert!(
        matches!(report.door, DoorSync::Knows { seq } if seq >= report.seq),
        "{:?}",
        report.door
    );
    assert_eq!(forward.seen("POST /v1/ops"), 1);
    assert_eq!(forward.seen("POST /v1/refresh"), 0);
    assert!(report.door.describe().contains("already knows"));

    // A device from before `POST /v1/ops` (the proxy answers 404 in its place) is nudged to
    // re-check the nodes instead, which hold the revocation.
    let older = Proxy::start(w.agent.addr(), |line| match line {
        "POST /v1/ops" => Rule::Answer(
            404,
            r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#,
        ),
        _ => Rule::Forward,
    })
    .await;
    w.owner
        .set_device_addresses(&w.device, vec![addr(older.addr)])
        .unwrap();
    // The device honours one nudge per 500 ms; the claim's may be recent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = w.owner.revoke(&second.grant.id.to_string()).await.unwrap();
    assert!(
        matches!(report.door, DoorSync::Knows { seq } if seq >= report.seq),
        "{:?}",
        report.door
    );
    assert_eq!(older.seen("POST /v1/ops"), 1);
    assert_eq!(older.seen("POST /v1/refresh"), 1);

    // A door that cannot be reached: the owner is told it will learn later.
    w.owner
        .set_device_addresses(&w.device, vec![addr(common::free_addr())])
        .unwrap();
    let report = w.owner.revoke(&third.grant.id.to_string()).await.unwrap();
    match &report.door {
        DoorSync::WillLearn { reason } => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(report.door.describe().contains("next check"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_a_revocation_the_door_took_still_succeeds_and_says_so() {
    let mut w = World::start().await;
    let grant = w
        .owner
        .invite(
            &w.device,
            &InviteRequest {
                guest_name: "Ann".into(),
                from_ms: w.owner.now_ms() - 60_000,
                until_ms: w.owner.now_ms() + 3_600_000,
                actions: vec!["unlock".into()],
                arguments: vec![],
                may_delegate: false,
                from_grant: None,
                use_limit: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // The real device, on the LAN, takes the revocation itself.
    w.owner
        .set_device_addresses(&w.device, vec![addr(w.agent.addr())])
        .unwrap();
    for node in std::mem::take(&mut w.nodes) {
        node.shutdown().await.unwrap();
    }
    let report = w.owner.revoke(&grant.grant.id.to_string()).await.unwrap();
    assert!(report.door.knows());
    assert_eq!(report.nodes_stored, 0);
    assert!(report.nodes_error.is_some());
    // The owner's own view holds the revocation, so asking again republishes it.
    let again = w.owner.revoke(&grant.grant.id.to_string()).await.unwrap();
    assert!(again.already_revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_answer_survives_a_restart_and_one_edited_in_the_file_is_dropped() {
    let w = World::start().await;
    assert!(w
        .owner
        .last_answer(&w.owner.find_device(&w.device).unwrap())
        .unwrap()
        .is_none());
    let report = w.owner.open(&w.device, "unlock", b"").await.unwrap();
    assert!(report.accepted());

    // The app closed and opened again: a new profile on the same directory, no seed needed.
    let dir = w.tmp.path().join("owner");
    let reopened = Profile::at(
        &dir,
        Arc::new(MemorySeeds::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let kept = reopened
        .last_answer(&reopened.find_device(&w.device).unwrap())
        .unwrap()
        .expect("kept");
    assert_eq!(kept.report.response, report.response);
    assert_eq!(kept.report.signature, report.signature);
    assert_eq!(kept.report.route, report.route);
    assert_eq!(kept.report.action, "unlock");
    assert_eq!(kept.report.lost_reply, None);
    assert!(kept.report.accepted());
    let now = reopened.now_ms();
    assert!(kept.received_ms <= now && now - kept.received_ms < 60_000);

    // A later answer replaces it.
    let second = w.owner.open(&w.device, "unlock", b"").await.unwrap();
    let kept = reopened
        .last_answer(&reopened.find_device(&w.device).unwrap())
        .unwrap()
        .expect("kept");
    assert_eq!(kept.report.response.command, second.response.command);

    // Someone edits the profile file to make the door say something else: the signature no
    // longer holds, so nothing is shown and the row goes.
    let db = rusqlite::Connection::open(dir.join(latchkey_owner::store::DB_FILE)).unwrap();
    let bytes: Vec<u8> = db
        .query_row("SELECT response FROM last_answers", [], |r| r.get(0))
        .unwrap();
    let mut forged = bytes.clone();
    let at = forged.len() / 2;
    forged[at] ^= 0x01;
    db.execute("UPDATE last_answers SET response = ?1", [&forged])
        .unwrap();
    assert!(reopened
        .last_answer(&reopened.find_device(&w.device).unwrap())
        .unwrap()
        .is_none());
    let left: i64 = db
        .query_row("SELECT COUNT(*) FROM last_answers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "a kept answer that does not verify is dropped");
}
