//! A guest controls only what its grant names, arguments included (docs/PROTOCOL.md §4 and
//! §8.2). Performed as an attacker would, from outside: the real `latchkeyd` binary with an
//! `http` action pointed at a local hook that records every request (standing in for Home
//! Assistant, with the owner's bearer token) and an `exec` action whose script records its argv;
//! guests are independent clients built on latchkey-proto. Before the allowed-arguments rule,
//! the hook received the guest's body byte for byte and the script ran with the guest's argv.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use latchkey_device::config::Config;
use latchkey_proto::chain::Chain;
use latchkey_proto::command::RejectCode;
use latchkey_proto::grant::{AllowedArguments, Grant, GrantBody, GrantScope};
use latchkey_proto::keys::SigningKey;
use latchkey_testkit::person;
use support::*;

const GARAGE: &[u8] = br#"{"entity_id":"lock.garage"}"#;
const FRONT: &[u8] = br#"{"entity_id":"lock.front"}"#;
const TOKEN: &str = "owner-long-lived-token";

/// Every request the hook received: path, header names and values, body.
type Log = Arc<Mutex<Vec<(String, Vec<(String, String)>, Vec<u8>)>>>;

async fn start_hook() -> (String, Log) {
    let log: Log = Arc::default();
    let record = |path: &'static str, log: Log| {
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                    .collect();
                log.lock()
                    .unwrap()
                    .push((path.to_owned(), headers, body.to_vec()));
                "[]"
            }
        })
    };
    let app = Router::new()
        .route("/api/services/lock/unlock", record("call", log.clone()))
        .route("/fixed", record("fixed", log.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, log)
}

/// A grant from the owner for `actions`, valid for the next hour, pinning `pins` if any.
fn grant(
    owner: &SigningKey,
    guest: &SigningKey,
    chain: &Chain,
    actions: &[&str],
    pins: Option<&[&[u8]]>,
) -> Grant {
    let state = chain.state();
    GrantBody {
        issuer: owner.public_key(),
        subject: guest.public_key(),
        scope: vec![GrantScope {
            device: state.device,
            epoch: state.epoch,
        }],
        actions: actions.iter().map(|a| a.to_string()).collect(),
        not_before_ms: now_ms() - 60_000,
        not_after_ms: now_ms() + 3_600_000,
        use_limit: None,
        delegation_depth: 0,
        extensions: pins
            .map(|p| {
                vec![
                    AllowedArguments::new(p.iter().map(|a| a.to_vec()).collect())
                        .unwrap()
                        .to_extension(),
                ]
            })
            .unwrap_or_default(),
        salt: [guest.public_key().as_bytes()[0]; 16],
    }
    .sign(owner)
    .unwrap()
}

/// Sends `action` with `args` as `guest` holding `grant`; returns the reject code (0: accepted).
async fn guest_sends(guest: &Sender, url: &str, grant: &Grant, action: &str, args: &[u8]) -> u16 {
    let mut c = guest.command(action, args);
    c.grants = vec![grant.clone()];
    let (env, pending) = guest.seal(c);
    code(&guest.send(url, env, &pending).await)
}

fn set_action(dir: &Path, name: &str, token: Option<&str>, payload: Option<&[u8]>) {
    let path = dir.join("latchkeyd.toml");
    let mut config = Config::load(&path).unwrap();
    let action = config.actions.get_mut(name).unwrap();
    action.token = token.map(str::to_owned);
    action.payload = payload.map(|p| String::from_utf8(p.to_vec()).unwrap());
    std::fs::write(&path, config.to_toml()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_passes_no_arguments_its_grant_does_not_pin() {
    let nodes = Nodes::start(3).await;
    let (hook, log) = start_hook().await;
    let (_tmp, dir, out, _) = init_door(
        &nodes,
        &[
            "--action",
            &format!("call=http:{hook}/api/services/lock/unlock"),
            "--action",
            &format!("fixed=http:{hook}/fixed"),
        ],
    );
    set_action(&dir, "call", Some(TOKEN), None);
    set_action(&dir, "fixed", Some(TOKEN), Some(FRONT));

    // Status says which actions take arguments, and who may pass them.
    let status = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let notes: Vec<(String, bool, String)> = status["action_arguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["takes_arguments"].as_bool().unwrap(),
                a["note"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(notes.len(), 3);
    for (action, takes, note) in &notes {
        match action.as_str() {
            "call" | "unlock" => {
                assert!(takes, "{action}");
                assert!(
                    note.contains("only owners may pass them"),
                    "{action}: {note}"
                );
            }
            "fixed" => {
                assert!(!takes);
                assert!(note.contains("fixed payload"), "{note}");
            }
            other => panic!("unexpected action {other}"),
        }
    }
    let human = latchkeyd(&["status", "--dir", dir.to_str().unwrap()]);
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(
        human.contains("only owners may pass them (guests only the exact arguments pinned"),
        "{human}"
    );

    let agent = Agent::start(&dir);
    let owner = person(1);
    let chain = claim(&dir, &agent.url, &owner, &nodes.urls()).await;
    let requests = || log.lock().unwrap().clone();

    // A guest granted only `call` (http, the owner's token, no fixed payload) picks the
    // entity: refused before the hook is reached.
    let caller = Sender::new(person(2), chain.clone());
    let call_only = grant(&owner, &caller.key, &chain, &["call"], None);
    assert_eq!(
        guest_sends(&caller, &agent.url, &call_only, "call", GARAGE).await,
        RejectCode::ArgumentsNotGranted as u16
    );
    // A single NUL byte is an argument too.
    assert_eq!(
        guest_sends(&caller, &agent.url, &call_only, "call", b"\0").await,
        RejectCode::ArgumentsNotGranted as u16
    );
    assert!(requests().is_empty(), "the hook received {:?}", requests());
    // Without arguments the same guest's call goes through (empty body, owner's token).
    assert_eq!(
        guest_sends(&caller, &agent.url, &call_only, "call", b"").await,
        0
    );
    assert_eq!(requests().len(), 1);
    assert_eq!(requests()[0].2, b"");

    // A guest granted `unlock` (exec) tries to add argv entries: refused, the script never ran.
    let opener = Sender::new(person(3), chain.clone());
    let unlock_only = grant(&owner, &opener.key, &chain, &["unlock"], None);
    assert_eq!(
        guest_sends(
            &opener,
            &agent.url,
            &unlock_only,
            "unlock",
            b"--guest-flag\0/etc/shadow"
        )
        .await,
        RejectCode::ArgumentsNotGranted as u16
    );
    assert_eq!(lines(&out), 0, "the script ran: {:?}", std::fs::read(&out));
    assert_eq!(
        guest_sends(&opener, &agent.url, &unlock_only, "unlock", b"").await,
        0
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "unlock \n");

    // A guest whose grant pins exactly the front lock's body: that body passes byte for byte,
    // anything else is refused.
    let pinned_guest = Sender::new(person(4), chain.clone());
    let pinned = grant(&owner, &pinned_guest.key, &chain, &["call"], Some(&[FRONT]));
    assert_eq!(
        guest_sends(&pinned_guest, &agent.url, &pinned, "call", FRONT).await,
        0
    );
    let seen = requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].2, FRONT,
        "the hook got the pinned body byte for byte"
    );
    for other in [GARAGE, br#"{"entity_id":"lock.front"} "#.as_slice()] {
        assert_eq!(
            guest_sends(&pinned_guest, &agent.url, &pinned, "call", other).await,
            RejectCode::ArgumentsNotGranted as u16
        );
    }
    // The pinned grant covers `call` only: its pins do not open `unlock` with arguments.
    assert_eq!(
        guest_sends(&pinned_guest, &agent.url, &pinned, "unlock", FRONT).await,
        RejectCode::ActionNotGranted as u16
    );
    assert_eq!(requests().len(), 2);
    assert_eq!(lines(&out), 1);

    // Owners may pass arguments; an action with a fixed payload sends the payload, whatever
    // the command holds.
    let owner_sender = Sender::new(person(1), chain.clone());
    let (env, pending) = owner_sender.seal(owner_sender.command("call", GARAGE));
    assert_eq!(code(&owner_sender.send(&agent.url, env, &pending).await), 0);
    let (env, pending) = owner_sender.seal(owner_sender.command("fixed", GARAGE));
    assert_eq!(code(&owner_sender.send(&agent.url, env, &pending).await), 0);
    let seen = requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].2, GARAGE);
    let (path, headers, body) = &seen[3];
    assert_eq!((path.as_str(), body.as_slice()), ("fixed", FRONT));

    // Every header the actuator sends (the list in the crate's README).
    let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "accept",
            "authorization",
            "content-length",
            "content-type",
            "host",
            "x-latchkey-action",
            "x-latchkey-sender"
        ],
        "{headers:?}"
    );
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("authorization"),
        Some("Bearer owner-long-lived-token")
    );
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("accept"), Some("*/*"));
    assert_eq!(header("x-latchkey-action"), Some("fixed"));
    assert_eq!(
        header("x-latchkey-sender"),
        Some(owner.public_key().to_string().as_str())
    );

    // The refusals are in the audit log with their code.
    let audit = latchkeyd(&["audit", "--dir", dir.to_str().unwrap(), "--json"]);
    let text = String::from_utf8(audit.stdout).unwrap();
    let dump: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dump["verified"], true);
    let refused = dump["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == RejectCode::ArgumentsNotGranted as u16)
        .count();
    assert_eq!(refused, 5, "{text}");

    drop(agent);
    tokio::time::sleep(Duration::from_millis(50)).await;
    nodes.stop().await;
}
