//! Short links bound to the first phone that redeems them, through the owner core against a
//! real device agent and real registry nodes on loopback, every key in the OS keychain: the
//! owner publishes the sealed invitation; guest A fetches it past a node that serves another
//! blob, redeems it and opens with its own key; guest B, with the same link afterwards, is
//! refused and keeps nothing, and the link's own key is refused at the door; the owner sees the
//! redemption (and B's try) in the door's audit log and reissues; a door that was down when the
//! link was accepted is redeemed at the first open.
//!
//! Run inside a Secret Service: `source scripts/lib.sh; with_secret_service cargo test -p
//! latchkey-owner --test short_links`.

mod common;

use common::start_nodes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use latchkey_device::agent::RunningAgent;
use latchkey_device::lifecycle::init;
use latchkey_node::RunningNode;
use latchkey_owner::keychain::{KeyringStore, SeedStore};
use latchkey_owner::{ClaimSource, Error, InviteRequest, Profile, Redemption, SystemClock};
use latchkey_proto::command::{Command, Outcome, RejectCode, ReplyTo};
use latchkey_proto::envelope::seal_command;
use latchkey_proto::invite::Invitation;
use latchkey_proto::shortlink::{SealedInvitation, ShortLink};
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct World {
    tmp: tempfile::TempDir,
    nodes: Vec<RunningNode>,
    urls: Vec<String>,
    agent: Option<RunningAgent>,
    door_dir: PathBuf,
    marker: PathBuf,
    seeds: Arc<KeyringStore>,
    owner: Profile,
    device: String,
}

impl World {
    /// Three nodes, a door whose `unlock` appends a line to a marker file, and its owner.
    async fn start() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_nodes(tmp.path(), 3).await;
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        let marker = tmp.path().join("opened");
        let script = tmp.path().join("open-door");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho unlock >> '{}'\n", marker.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let door_dir = tmp.path().join("door");
        let claim = init(&common::unlock_door(
            door_dir.clone(),
            "Flat",
            common::free_addr(),
            &urls,
            script,
        ))
        .unwrap();
        let agent = latchkey_device::agent::start(&door_dir).await.unwrap();
        let seeds =
            Arc::new(KeyringStore::open().expect(
                "a Secret Service: run inside `source scripts/lib.sh; with_secret_service …`",
            ));
        let owner = profile(tmp.path(), "owner", &seeds);
        owner.create_seed().unwrap();
        owner.add_nodes(&urls).unwrap();
        let report = owner
            .claim(ClaimSource::Text(&claim.claim_text), None)
            .await
            .unwrap();
        World {
            device: report.device.to_string(),
            tmp,
            nodes,
            urls,
            agent: Some(agent),
            door_dir,
            marker,
            seeds,
            owner,
        }
    }

    /// A guest profile: no recovery phrase, no nodes (the link brings them).
    fn guest(&self, name: &str) -> Profile {
        profile(self.tmp.path(), name, &self.seeds)
    }

    fn opened(&self) -> usize {
        std::fs::read_to_string(&self.marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn request(&self, name: &str) -> InviteRequest {
        InviteRequest {
            guest_name: name.into(),
            from_ms: self.owner.now_ms() - 60_000,
            until_ms: self.owner.now_ms() + 3_600_000,
            actions: vec!["unlock".into()],
            ..InviteRequest::default()
        }
    }

    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await.unwrap();
        }
        for node in std::mem::take(&mut self.nodes) {
            node.shutdown().await.unwrap();
        }
    }
}

fn profile(root: &Path, name: &str, seeds: &Arc<KeyringStore>) -> Profile {
    Profile::at(&root.join(name), seeds.clone(), Arc::new(SystemClock)).unwrap()
}

/// A "node" that takes every write and answers every invitation read with `blob` (another
/// invitation's sealed bytes: well formed, but not this link's).
async fn lying_node(blob: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
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
                let text = String::from_utf8_lossy(&head).to_string();
                let answer = if text.starts_with("GET /v1/invites/") {
                    blob
                } else {
                    Vec::new()
                };
                let status = if text.starts_with("GET /v1/invites/") || text.starts_with("PUT ") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            answer.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = conn.write_all(&answer).await;
            });
        }
    });
    format!("http://{addr}")
}

/// Sends `unlock` signed by `key` with `invitation`'s grants straight to the door, as someone
/// holding only the link would, and returns the door's verified answer.
async fn send_with_link_key(w: &World, invitation: &Invitation) -> Outcome {
    let device = w.owner.find_device(&w.device).unwrap();
    let state = device.chain.state();
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let mut reply = [0u8; 32];
    OsRng.fill_bytes(&mut reply);
    let key = invitation.guest_key();
    let command = Command {
        device: device.id,
        sender: key.public_key(),
        action: "unlock".into(),
        args: Vec::new(),
        timestamp_ms: w.owner.now_ms(),
        nonce,
        challenge: None,
        grants: invitation.grants.clone(),
        reply_to: ReplyTo::Mailbox(reply),
    }
    .sign(&key)
    .unwrap();
    let (envelope, pending) = seal_command(&command, &state.kem, &mut OsRng).unwrap();
    let addr = w.agent.as_ref().unwrap().addr();
    let body = reqwest::Client::new()
        .post(format!("http://{addr}/v1/command"))
        .body(envelope)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    pending
        .open(&body, &state.identity)
        .unwrap()
        .response
        .outcome
}

fn refused_with(outcome: &Outcome, code: RejectCode) -> bool {
    matches!(outcome, Outcome::Rejected { code: c, .. } if *c == code as u16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_link_binds_to_the_first_phone_and_a_leaked_copy_is_refused_then_reissued() {
    let w = World::start().await;
    let issued = w.owner.invite(&w.device, &w.request("Ana")).await.unwrap();
    let link = issued.link.as_str().to_owned();
    assert!(link.starts_with("LATCHKEY://I/"), "{link}");
    assert!(link.len() <= 300, "{} characters", link.len());
    assert!(
        (1..=10).contains(&issued.qr_version),
        "{}",
        issued.qr_version
    );
    assert_eq!(issued.nodes_stored, 3);
    assert!(issued.grant.grant.body.binds_on_first_use());

    // A node that serves another invitation's blob comes first in the link: skipped.
    let other = w
        .owner
        .invite(&w.device, &w.request("Other"))
        .await
        .unwrap();
    let other_link = ShortLink::parse(&other.link).unwrap();
    let other_blob = reqwest::get(format!(
        "{}/v1/invites/{}",
        w.urls[0],
        hex::encode(other_link.blob_id())
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap()
    .to_vec();
    let liar = lying_node(other_blob).await;
    let mut short = ShortLink::parse(&link).unwrap();
    short.nodes.insert(0, liar);
    short.nodes.truncate(4);
    let via_liar = short.to_text().unwrap();
    let invitation = {
        let blob = reqwest::get(format!(
            "{}/v1/invites/{}",
            w.urls[0],
            hex::encode(short.blob_id())
        ))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
        SealedInvitation::open(&short, &blob).unwrap()
    };

    // Ana accepts (lower case: a link typed by hand works too) and opens with her own key.
    let ana = w.guest("ana");
    let held = ana.accept(&via_liar.to_ascii_lowercase()).await.unwrap();
    assert!(held.binds);
    assert!(held.doors.iter().all(|d| d.redeemed), "{:?}", held.doors);
    let report = ana.open(&w.device, "unlock", b"").await.unwrap();
    assert!(report.accepted(), "{:?}", report.response.outcome);
    assert_eq!(w.opened(), 1);
    // Her own key, not the link's, is in the keychain; nothing of either in her profile.
    let ana_grant = ana
        .invitations()
        .unwrap()
        .first()
        .map(|h| h.id)
        .expect("held");
    let kept = w
        .seeds
        .load(&format!("{}/guest/{ana_grant}", ana.id()))
        .unwrap()
        .unwrap();
    assert_ne!(kept.as_str(), hex::encode(*invitation.guest_secret));
    assert!(w
        .seeds
        .load(&format!("{}/link/{ana_grant}", ana.id()))
        .unwrap()
        .is_none());
    for file in std::fs::read_dir(ana.dir()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        for secret in [kept.as_bytes().to_vec(), invitation.guest_secret.to_vec()] {
            assert!(!bytes.windows(32).any(|w| w == &secret[..32]));
        }
    }

    // Ben gets the same link afterwards: refused, and nothing is kept.
    let ben = w.guest("ben");
    let err = ben.accept(&link).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyRedeemed), "{err}");
    assert_eq!(
        err.to_string(),
        "this invitation was already redeemed by another phone; ask your host for a new link"
    );
    assert!(ben.invitations().unwrap().is_empty());
    assert!(ben.nodes().unwrap().is_empty());
    assert!(w
        .seeds
        .load(&format!("{}/guest/{}", ben.id(), issued.grant.id))
        .unwrap()
        .is_none());
    assert!(matches!(
        ben.open(&w.device, "unlock", b"").await,
        Err(Error::UnknownDevice(_))
    ));
    // Whoever holds only the link cannot use its key at the door either.
    let outcome = send_with_link_key(&w, &invitation).await;
    assert!(
        refused_with(&outcome, RejectCode::AlreadyRedeemed),
        "{outcome:?}"
    );
    assert_eq!(w.opened(), 1);

    // The owner reads the door's log: redeemed, and another phone tried since.
    let unread = w.owner.check_redemptions(Some(&w.device)).await.unwrap();
    assert!(unread.is_empty(), "{unread:?}");
    let grants = w.owner.grants(Some(&w.device)).unwrap();
    let ana_grant = grants.iter().find(|g| g.id == issued.grant.id).unwrap();
    match &ana_grant.redemption {
        Redemption::Redeemed {
            phone,
            at_ms,
            other_phones,
        } => {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(kept.as_bytes(), &mut raw).unwrap();
            let ana_phone = latchkey_proto::keys::SigningKey::from_bytes(&raw).public_key();
            assert_eq!(
                *phone,
                Some(ana_phone),
                "the door's entry names Ana's phone"
            );
            assert!(at_ms.is_some());
            assert!(*other_phones >= 2, "{other_phones}");
        }
        other => panic!("{other:?}"),
    }
    let other_grant = grants.iter().find(|g| g.id == other.grant.id).unwrap();
    assert_eq!(other_grant.redemption, Redemption::NotRedeemed);

    // Reissued: the old grant is revoked, the new link works for Ben's phone.
    let again = w
        .owner
        .reissue(&issued.grant.id.to_string()[..12])
        .await
        .unwrap();
    assert_eq!(again.revoked.grant, issued.grant.id);
    assert_ne!(again.issued.grant.id, issued.grant.id);
    let (old, new) = (&issued.grant.grant.body, &again.issued.grant.grant.body);
    assert_eq!(
        (&old.actions, old.not_before_ms, old.not_after_ms),
        (&new.actions, new.not_before_ms, new.not_after_ms)
    );
    let held = ben.accept(&again.issued.link).await.unwrap();
    assert!(held.doors.iter().all(|d| d.redeemed));
    assert!(ben.open(&w.device, "unlock", b"").await.unwrap().accepted());
    let grants = w.owner.grants(Some(&w.device)).unwrap();
    let old = grants.iter().find(|g| g.id == issued.grant.id).unwrap();
    assert_eq!(old.reissued_as, Some(again.issued.grant.id));
    assert_eq!(old.status.as_str(), "revoked");
    // Ana's phone is refused once the door knows of the revocation.
    let mut refused = None;
    for _ in 0..100 {
        let r = ana.open(&w.device, "unlock", b"").await.unwrap();
        if !r.accepted() {
            refused = Some(r.response.outcome);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("the door learns the revocation");
    assert!(
        refused_with(&refused, RejectCode::GrantRevoked),
        "{refused:?}"
    );
    // The refusal is explained on Ana's phone at once, not at its next scheduled check.
    let held = ana.invitations().unwrap();
    let old = held.iter().find(|h| h.id == issued.grant.id).unwrap();
    assert_eq!(old.status.as_str(), "revoked");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_down_at_accept_is_redeemed_at_the_first_open_and_nodes_must_store_the_link() {
    let mut w = World::start().await;
    let issued = w.owner.invite(&w.device, &w.request("Cleo")).await.unwrap();
    w.agent.take().unwrap().shutdown().await.unwrap();

    // The door is down: the guest keeps the invitation with the door still to redeem, and
    // the link's key in the keychain until then.
    let cleo = w.guest("cleo");
    let held = cleo.accept(&issued.link).await.unwrap();
    assert!(held.doors.iter().all(|d| !d.redeemed), "{:?}", held.doors);
    assert!(w
        .seeds
        .load(&format!("{}/link/{}", cleo.id(), issued.grant.id))
        .unwrap()
        .is_some());

    w.agent = Some(latchkey_device::agent::start(&w.door_dir).await.unwrap());
    let report = cleo.open(&w.device, "unlock", b"").await.unwrap();
    assert!(report.accepted(), "{:?}", report.response.outcome);
    assert_eq!(w.opened(), 1);
    let held = cleo.invitations().unwrap();
    assert!(held[0].doors.iter().all(|d| d.redeemed));
    assert!(
        w.seeds
            .load(&format!("{}/link/{}", cleo.id(), issued.grant.id))
            .unwrap()
            .is_none(),
        "the link's key is deleted once every door is redeemed"
    );

    // With every node down, no short link is issued and nothing is recorded; a long one is.
    for node in std::mem::take(&mut w.nodes) {
        node.shutdown().await.unwrap();
    }
    let before = w.owner.grants(None).unwrap().len();
    let err = w
        .owner
        .invite(&w.device, &w.request("Dan"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InviteNotPublished { .. }), "{err}");
    assert_eq!(w.owner.grants(None).unwrap().len(), before);
    let long = w
        .owner
        .invite(
            &w.device,
            &InviteRequest {
                long_link: true,
                ..w.request("Dan")
            },
        )
        .await
        .unwrap();
    assert!(long.link.starts_with("latchkey://invite/"));
    assert_eq!(long.nodes_stored, 0);
    assert!(Invitation::parse_link(&long.link)
        .unwrap()
        .leaf()
        .body
        .binds_on_first_use());
    assert_eq!(w.owner.grants(None).unwrap().len(), before + 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_for_two_doors_is_redeemed_and_opens_at_both_and_is_revoked_at_both() {
    let w = World::start().await;
    // A second door of the same owner, its `unlock` writing to the same marker file.
    let script = w.tmp.path().join("open-gate");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho gate >> '{}'\n", w.marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let gate_dir = w.tmp.path().join("gate");
    let claim = init(&common::unlock_door(
        gate_dir.clone(),
        "Gate",
        common::free_addr(),
        &w.urls,
        script,
    ))
    .unwrap();
    let gate_agent = latchkey_device::agent::start(&gate_dir).await.unwrap();
    let gate = w
        .owner
        .claim(ClaimSource::Text(&claim.claim_text), None)
        .await
        .unwrap()
        .device
        .to_string();

    let issued = w
        .owner
        .invite_doors(&[&w.device, &gate], &w.request("Gus"))
        .await
        .unwrap();
    assert_eq!(
        issued.grant.grant.body.scope.len(),
        2,
        "one grant, two doors"
    );
    assert_eq!(issued.grant.doors.len(), 2);
    assert!(issued.link.len() <= 300);
    let gus = w.guest("gus");
    let held = gus.accept(&issued.link).await.unwrap();
    assert_eq!(held.doors.len(), 2);
    assert!(held.doors.iter().all(|d| d.redeemed), "{:?}", held.doors);
    assert!(gus.open(&w.device, "unlock", b"").await.unwrap().accepted());
    assert!(gus.open(&gate, "unlock", b"").await.unwrap().accepted());
    assert_eq!(w.opened(), 2);
    // The owner lists it under either door.
    for door in [&w.device, &gate] {
        let grants = w.owner.grants(Some(door)).unwrap();
        assert!(grants.iter().any(|g| g.id == issued.grant.id), "{door}");
    }

    let report = w.owner.revoke(&issued.grant.id.to_string()).await.unwrap();
    assert_eq!(report.more.len(), 1, "revoked in both doors' chains");
    for door in [&w.device, &gate] {
        let mut refused = None;
        for _ in 0..100 {
            let r = gus.open(door, "unlock", b"").await.unwrap();
            if !r.accepted() {
                refused = Some(r.response.outcome);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let refused = refused.expect("each door learns the revocation");
        assert!(
            refused_with(&refused, RejectCode::GrantRevoked),
            "{refused:?}"
        );
    }
    gate_agent.shutdown().await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_link_binds_to_its_first_phone_too() {
    let w = World::start().await;
    let issued = w
        .owner
        .invite(
            &w.device,
            &InviteRequest {
                long_link: true,
                ..w.request("Eve")
            },
        )
        .await
        .unwrap();
    assert!(issued.link.starts_with("latchkey://invite/"));
    let invitation = Invitation::parse_link(&issued.link).unwrap();
    // Before any phone redeemed it, the link's key opens nothing.
    let outcome = send_with_link_key(&w, &invitation).await;
    assert!(
        refused_with(&outcome, RejectCode::NotRedeemed),
        "{outcome:?}"
    );
    let eve = w.guest("eve");
    let held = eve.accept(&issued.link).await.unwrap();
    assert!(held.binds && held.doors.iter().all(|d| d.redeemed));
    // Accepting again on the same phone changes nothing and still works.
    assert!(eve.accept(&issued.link).await.unwrap().already_held);
    assert!(eve.open(&w.device, "unlock", b"").await.unwrap().accepted());
    let err = w.guest("fay").accept(&issued.link).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyRedeemed), "{err}");
    let outcome = send_with_link_key(&w, &invitation).await;
    assert!(
        refused_with(&outcome, RejectCode::AlreadyRedeemed),
        "{outcome:?}"
    );
    assert_eq!(w.opened(), 1);
    w.stop().await;
}
