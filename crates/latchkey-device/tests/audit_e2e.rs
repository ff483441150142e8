//! The audit log under attack through the real `latchkeyd` binary on loopback: junk posted to
//! `/v1/command` costs no entry each, and an unlock cut short by `kill -9` while its actuator
//! runs is still in the log after the restart (docs/PROTOCOL.md §8.3).

mod support;

use std::time::Duration;

use futures::StreamExt;
use latchkey_device::audit::{verify_entries, AuditBody, AuditPage, RefusalClass};
use latchkey_device::pipeline::SEALED_SIZES;
use latchkey_proto::codec::Codec;
use latchkey_testkit::person;
use rand_core::{OsRng, RngCore};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_posted_to_the_real_agent_grows_the_log_by_one_summary() {
    let nodes = Nodes::start(3).await;
    let (_tmp, dir, out, _) = init_door(&nodes, &[]);
    let agent = Agent::start(&dir);
    let owner = person(1);
    let chain = claim(&dir, &agent.url, &owner, &nodes.urls()).await;
    let sender = Sender::new(person(1), chain.clone());
    let (env, pending) = sender.seal(sender.command("unlock", b""));
    assert_eq!(code(&sender.send(&agent.url, env, &pending).await), 0);

    // 3,000 junk envelopes of the sealed sizes, eight at a time.
    const JUNK: usize = 3_000;
    let statuses: Vec<u16> = futures::stream::iter(0..JUNK)
        .map(|i| {
            let sender = &sender;
            let url = agent.url.clone();
            async move {
                let mut junk = vec![0u8; SEALED_SIZES[i % 3]];
                OsRng.fill_bytes(&mut junk);
                sender.post(&url, junk).await.0
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 400),
        "every junk envelope refused"
    );
    assert_eq!(lines(&out), 1);

    let (env, pending) = sender.seal(sender.command("audit", b""));
    let r = sender.send(&agent.url, env, &pending).await;
    assert_eq!(code(&r), 0);
    let page = AuditPage::from_bytes(&r.response.body).unwrap();
    verify_entries(&page.entries, &chain.state().identity, None).unwrap();
    let kinds: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.entry.body.kind_name())
        .collect();
    // The era marker, the unlock (about to run, then its outcome), and the junk: counted in at
    // most two summaries (the posting may straddle a minute).
    assert!(page.next_seq <= 5, "{} entries: {kinds:?}", page.next_seq);
    let counted: u64 = page
        .entries
        .iter()
        .filter_map(|e| match &e.entry.body {
            AuditBody::Refusals(s) => {
                assert!(s
                    .rows
                    .iter()
                    .all(|r| r.class == RefusalClass::Unauthenticated));
                Some(s.total())
            }
            _ => None,
        })
        .sum();
    assert_eq!(counted, JUNK as u64);
    agent.stop();
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_cut_short_by_kill_9_is_in_the_log_after_the_restart() {
    use std::os::unix::fs::PermissionsExt;
    let nodes = Nodes::start(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    let started = tmp.path().join("started");
    let script = tmp.path().join("slow-door");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\nsleep 30\necho opened\n",
            started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    init(
        &dir,
        &nodes.urls(),
        &["--action", &format!("unlock=exec:{}", script.display())],
    );
    let agent = Agent::start(&dir);
    let owner = person(1);
    let chain = claim(&dir, &agent.url, &owner, &nodes.urls()).await;
    let sender = Sender::new(person(1), chain.clone());
    let (env, _pending) = sender.seal(sender.command("unlock", b"front"));
    let url = format!("{}/v1/command", agent.url);
    let http = sender.http.clone();
    // The answer never comes: the agent dies while the script sleeps.
    let request = tokio::spawn(async move { http.post(url).body(env).send().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the actuator never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.kill9();
    assert!(
        request.await.unwrap().is_err(),
        "no answer from a killed agent"
    );

    let agent = Agent::start(&dir);
    let audit = latchkeyd(&["audit", "--dir", dir.to_str().unwrap(), "--json"]);
    assert!(audit.status.success());
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(audit["verified"], true);
    let entries = audit["entries"].as_array().unwrap();
    let running: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["kind"] == "about_to_run")
        .collect();
    assert_eq!(running.len(), 1, "{entries:?}");
    assert_eq!(running[0]["action"], "unlock");
    assert_eq!(running[0]["args_len"], 5);
    assert_eq!(running[0]["sender"], owner.public_key().to_string());
    assert!(
        !entries
            .iter()
            .any(|e| e["kind"] == "decision" && e["command"] == running[0]["command"]),
        "no outcome was recorded: the agent died first"
    );
    agent.stop();
    nodes.stop().await;
}
