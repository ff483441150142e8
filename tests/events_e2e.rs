//! Who opened what, when — end to end with real components: three registry nodes (in
//! process), the real `latchkeyd` with an exec actuator, the real `latchkey` binary for the
//! owner and the guest, and the real OS keychain (run inside `dbus-run-session` with an
//! unlocked gnome-keyring, as scripts/test.sh does).
//!
//! The owner claims (and so subscribes), invites Sam; Sam's first open reaches the owner's
//! `latchkey events --json` as a signed, sealed first-open event; once the owner revokes the
//! invitation, Sam's refused open arrives as a refusal event, also through `--follow`, which
//! Ctrl-C (SIGINT) stops.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cli::{require_secret_service, start_nodes, Cli, Door};
use serde_json::Value;

/// Runs `latchkey events --json` until `want` finds an event, or panics after `limit`.
fn wait_for_event(owner: &mut Cli, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let v = owner.json(&["events"]);
        if let Some(e) = v["events"].as_array().unwrap().iter().find(|e| want(e)) {
            return e.clone();
        }
        assert!(
            started.elapsed() < limit,
            "no such event after {limit:?}: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_is_told_of_a_guests_first_open_and_of_a_refused_guest() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Front door", &urls, &[]);
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));

    let mut owner = Cli::new(tmp.path().join("owner"));
    owner.init();
    owner.ok(&add);
    let text = std::fs::read_to_string(door.dir.join("claim.txt")).unwrap();
    let claimed = owner.ok(&["claim", "--text", &text]);
    assert!(claimed.contains("claimed Front door"), "{claimed}");
    // Subscribed at claim, or by the first `events` at the latest.
    let v = owner.json(&["events"]);
    assert_eq!(v["events"], serde_json::json!([]), "{v}");
    let subscribed = String::from_utf8_lossy(&owner.printed).contains("subscribed to");
    assert!(subscribed, "{}", String::from_utf8_lossy(&owner.printed));

    let invite = owner.json(&["invite", "Front door", "--name", "Sam", "--until", "+1h"]);
    let grant = invite["id"].as_str().unwrap().to_owned();
    let mut sam = Cli::new(tmp.path().join("sam"));
    sam.ok(&["accept", invite["link"].as_str().unwrap()]);
    assert!(sam.ok(&["open", "Front door"]).contains("unlock accepted"));
    assert!(sam.ok(&["open", "Front door"]).contains("unlock accepted"));
    assert_eq!(door.opened(), 2);

    let first = wait_for_event(&mut owner, Duration::from_secs(30), |e| {
        e["kind"] == "first_open"
    });
    assert_eq!(first["guest_name"], "Sam", "{first}");
    assert_eq!(first["door"], "Front door");
    assert_eq!(first["grant"], grant.as_str());
    assert_eq!(first["action"], "unlock");
    assert!(first["time_ms"].as_u64().is_some());
    assert!(first["what"]
        .as_str()
        .unwrap()
        .contains("Sam used the invitation"));

    // Follow from here on; it prints only what arrives after it started.
    let mut follow = KillOnDrop(
        Command::new(support::workspace_bin("latchkey"))
            .arg("--profile")
            .arg(&owner.profile)
            .args(["events", "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = follow.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The events so far are printed first, in the door's order: Sam's phone redeemed the
    // short link at accept, then opened for the first time.
    let mut printed = Vec::new();
    for _ in 0..2 {
        let line = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        printed.push(serde_json::from_str::<Value>(&line).unwrap()["kind"].clone());
    }
    assert_eq!(printed, ["redeemed", "first_open"]);

    // The owner revokes Sam's invitation; Sam's next open is refused, and the owner is told.
    owner.ok(&["revoke", &grant[..12]]);
    let started = Instant::now();
    loop {
        let out = sam.run(&["open", "Front door"]);
        if out.status.code() == Some(2) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("GrantRevoked"), "{stderr}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never refused");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(door.opened(), 2, "the revoked guest did not open");

    let line = lines
        .recv_timeout(Duration::from_secs(40))
        .expect("--follow printed the refusal as it arrived");
    let arrived: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(arrived["kind"], "refused", "{arrived}");
    assert_eq!(arrived["reject_code"], 11);
    assert_eq!(arrived["guest_name"], "Sam");
    // Ctrl-C stops following, cleanly.
    let status = Command::new("kill")
        .args(["-INT", &follow.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = follow.0.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            panic!("latchkey events --follow did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");

    let refused = wait_for_event(&mut owner, Duration::from_secs(5), |e| {
        e["kind"] == "refused"
    });
    assert!(
        refused["what"]
            .as_str()
            .unwrap()
            .contains("Sam was refused"),
        "{refused}"
    );
    // Each event once, however often it was read: one first open (of two opens), refusals.
    let v = owner.json(&["events"]);
    let events = v["events"].as_array().unwrap();
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "first_open").count(),
        1,
        "{v}"
    );
    // The plain listing says the same in words.
    let words = owner.ok(&["events", "Front door"]);
    assert!(
        words.contains("Sam used the invitation for the first time"),
        "{words}"
    );
    assert!(words.contains("Sam was refused"), "{words}");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// A child process that is killed and reaped when the test ends, passing or not, so a failed
/// assertion never leaves `latchkey events --follow` running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
