//! Consent to read a device's data stream through the owner core, with real parts only: three
//! registry nodes and a device agent (with a meter stream) on loopback, the owner's profile in
//! SQLite with its keys in the real OS keychain (run inside a private Secret Service: `source
//! scripts/lib.sh; with_secret_service cargo test -p latchkey-owner --test consent`), and a
//! provider that signs its request with proto's functions as `latchkey-provider` does.
//!
//! What is shown: a request link is kept as pending and approved into an entry stored on every
//! node and accepted by the device; revoking appends the next entry and the device takes it; a
//! request for another device or for a stream the device does not publish is refused in words
//! with nothing kept or left standing; a tampered or forged link is refused with nothing kept;
//! a device offline at approve time is told at the next contact (the outbox); an entry resent
//! after its answer was lost is delivered (the device answers accepted); a consent whose end
//! passed gets an `Expired` entry.

mod common;

use std::sync::Arc;

use common::start_nodes;
use latchkey_device::agent::RunningAgent;
use latchkey_node::RunningNode;
use latchkey_owner::keychain::KeyringStore;
use latchkey_owner::{ClaimSource, Error, Profile, SystemClock};
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{
    purpose, ConsentList, ConsentRequest, ProviderIdentity, SignedConsentRequest,
};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, SigningKey};
use rand_core::{OsRng, RngCore};

struct World {
    tmp: tempfile::TempDir,
    nodes: Vec<RunningNode>,
    urls: Vec<String>,
    agent: Option<RunningAgent>,
    door_dir: std::path::PathBuf,
    owner: Profile,
    device: DeviceId,
    _broker: common::Mosquitto,
}

impl World {
    /// Three nodes, one device publishing stream `p1`, its owner.
    async fn start() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_nodes(tmp.path(), 3).await;
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        let seeds =
            Arc::new(KeyringStore::open().expect(
                "a Secret Service: run inside `source scripts/lib.sh; with_secret_service …`",
            ));
        let owner = Profile::at(&tmp.path().join("owner"), seeds, Arc::new(SystemClock)).unwrap();
        owner.create_seed().unwrap();
        owner.add_nodes(&urls).unwrap();
        let door_dir = tmp.path().join("meter");
        let broker = common::Mosquitto::start();
        let claim = common::init_meter(
            door_dir.clone(),
            "Meter",
            common::free_addr(),
            &urls,
            &broker.url(),
        );
        let agent = latchkey_device::agent::start(&door_dir).await.unwrap();
        let report = owner
            .claim(ClaimSource::Text(&claim.claim_text), None)
            .await
            .unwrap();
        World {
            tmp,
            nodes,
            urls,
            agent: Some(agent),
            door_dir,
            owner,
            device: report.device,
            _broker: broker,
        }
    }

    /// Every node's copy of the device's consent log (entries per node).
    async fn node_logs(&self) -> Vec<usize> {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for url in &self.urls {
            let resp = http
                .get(format!("{url}/v1/devices/{}/consents?from=1", self.device))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{url}: {}", resp.status());
            let bytes = resp.bytes().await.unwrap();
            out.push(ConsentList::from_bytes(&bytes).unwrap().0.len());
        }
        out
    }

    async fn stop_device(&mut self) {
        self.agent.take().unwrap().shutdown().await.unwrap();
    }

    async fn start_device(&mut self) {
        self.agent = Some(latchkey_device::agent::start(&self.door_dir).await.unwrap());
    }

    async fn stop(mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await.unwrap();
        }
        for node in self.nodes {
            node.shutdown().await.unwrap();
        }
        drop(self.tmp);
    }
}

/// A provider: its signing key and its public identity.
struct Provider {
    key: SigningKey,
    identity: ProviderIdentity,
}

fn provider(name: &str) -> Provider {
    let key = SigningKey::generate(&mut OsRng);
    let kem = KemSecretKey::generate(&mut OsRng);
    Provider {
        identity: ProviderIdentity {
            name: name.into(),
            url: format!("https://{}.example", name.to_lowercase().replace(' ', "-")),
            signing: key.public_key(),
            kem: kem.public().clone(),
        },
        key,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn request(
    p: &Provider,
    device: DeviceId,
    stream: &str,
    until_ms: Option<u64>,
) -> SignedConsentRequest {
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    ConsentRequest {
        provider: p.identity.clone(),
        device,
        stream: stream.into(),
        purpose_code: purpose::INSIGHTS,
        purpose: "Monthly savings report".into(),
        retention_days: 30,
        until_ms,
        history: false,
        terms: Some("500 units per hour".into()),
        issued_ms: now_ms(),
        nonce,
    }
    .sign(&p.key)
    .unwrap()
}

fn link(p: &Provider, device: DeviceId, stream: &str) -> String {
    request(p, device, stream, None).to_link()
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_stores_the_entry_on_the_nodes_and_the_device_accepts_it_then_revoke() {
    let w = World::start().await;
    let acme = provider("Acme Energy");
    let link = link(&acme, w.device, "p1");

    // Kept as pending, in plain words.
    let pending = w.owner.consent_request_add(&link).unwrap();
    assert!(
        pending
            .summary
            .starts_with("Acme Energy (https://acme-energy.example) asks to read"),
        "{}",
        pending.summary
    );
    assert!(
        pending
            .summary
            .contains("for insights: \"Monthly savings report\""),
        "{}",
        pending.summary
    );
    assert!(
        pending.summary.contains("until you withdraw it"),
        "{}",
        pending.summary
    );
    assert!(
        pending.summary.contains("500 units per hour"),
        "{}",
        pending.summary
    );
    assert_eq!(pending.device_name, "Meter");
    assert_eq!(pending.provider_key, acme.identity.signing.to_string());
    assert_eq!(w.owner.consent_requests().unwrap(), vec![pending.clone()]);

    // Approved by id prefix: on every node, and the device took it.
    let view = w.owner.consent_approve(&pending.id[..10]).await.unwrap();
    assert_eq!(view.state, "active");
    assert_eq!(view.delivery, "delivered", "{:?}", view.delivery_note);
    assert_eq!(
        view.given_by,
        w.owner.identity().unwrap().public_key().to_string()
    );
    assert_eq!(w.node_logs().await, vec![1, 1, 1]);
    assert!(
        w.owner.consent_requests().unwrap().is_empty(),
        "no longer pending"
    );
    // Approving it again changes nothing.
    let again = w.owner.consent_approve(&link).await.unwrap();
    assert_eq!(again.id, view.id);
    assert_eq!(w.node_logs().await, vec![1, 1, 1]);

    // Revoked: the next entry, and the device took it.
    let revoked = w.owner.consent_revoke(&view.id[..8]).await.unwrap();
    assert_eq!(revoked.state, "revoked");
    assert_eq!(revoked.delivery, "delivered", "{:?}", revoked.delivery_note);
    assert!(revoked.ended_ms.is_some());
    assert_eq!(w.node_logs().await, vec![2, 2, 2]);
    let err = w.owner.consent_revoke(&view.id).await.unwrap_err();
    assert!(matches!(err, Error::ConsentEnded { .. }), "{err}");

    let log = w.owner.consent_log(&w.device).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| (e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "given"), (2, "revoked")]
    );
    assert!(log
        .iter()
        .all(|e| e.signer_is_me && e.consent_id == view.id));
    assert_eq!(log[0].provider_name, "Acme Energy");
    assert_eq!(log[0].purpose, "insights: Monthly savings report");
    let consents = w.owner.consents(&w.device).await.unwrap();
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].state, "revoked");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_for_another_device_or_a_stream_it_does_not_publish_are_refused() {
    let w = World::start().await;
    let acme = provider("Acme Energy");

    // Another device (not in this profile): refused in words, nothing kept or posted.
    let stranger = DeviceId::from_identity(&SigningKey::generate(&mut OsRng).public_key());
    let other = link(&acme, stranger, "p1");
    let err = w.owner.consent_request_add(&other).unwrap_err();
    assert!(matches!(err, Error::ConsentNotMyDevice { .. }), "{err}");
    assert!(err.to_string().contains("does not own"), "{err}");
    let err = w.owner.consent_approve(&other).await.unwrap_err();
    assert!(matches!(err, Error::ConsentNotMyDevice { .. }), "{err}");
    assert!(w.owner.consent_requests().unwrap().is_empty());
    assert_eq!(w.node_logs().await, vec![0, 0, 0]);

    // Someone who does not own the device, with a link for it: refused the same way.
    let stranger = Profile::at(
        &w.tmp.path().join("stranger"),
        Arc::new(KeyringStore::open().unwrap()),
        Arc::new(SystemClock),
    )
    .unwrap();
    stranger.create_seed().unwrap();
    stranger.add_nodes(&w.urls).unwrap();
    let err = stranger
        .consent_approve(&link(&acme, w.device, "p1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConsentNotMyDevice { .. }), "{err}");
    assert_eq!(w.node_logs().await, vec![0, 0, 0]);

    // Dismissed: no longer pending, and not approved by its id.
    let pending = w
        .owner
        .consent_request_add(&link(&acme, w.device, "p1"))
        .unwrap();
    w.owner.consent_request_dismiss(&pending.id[..8]).unwrap();
    assert!(w.owner.consent_requests().unwrap().is_empty());
    let err = w.owner.consent_approve(&pending.id).await.unwrap_err();
    assert!(matches!(err, Error::ConsentNotPending { .. }), "{err}");
    assert_eq!(w.node_logs().await, vec![0, 0, 0]);

    // A stream this device does not publish: the device refuses it in words, and the log
    // does not go on saying it stands.
    let err = w
        .owner
        .consent_approve(&link(&acme, w.device, "gas"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ConsentRefusedByDevice {
                withdrawn: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("does not publish"), "{err}");
    let consents = w.owner.consents(&w.device).await.unwrap();
    assert!(consents.iter().all(|c| c.state != "active"), "{consents:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_and_forged_links_are_refused_and_nothing_is_kept() {
    let w = World::start().await;
    let acme = provider("Acme Energy");
    let good = link(&acme, w.device, "p1");
    let body = good.strip_prefix("LATCHKEY://C/").unwrap();
    let mut bytes = data_encoding::BASE32_NOPAD.decode(body.as_bytes()).unwrap();

    // One byte of the signed request changed (e.g. the purpose): the signature fails.
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    let tampered = format!(
        "LATCHKEY://C/{}",
        data_encoding::BASE32_NOPAD.encode(&bytes)
    );
    // A request naming Acme's identity, signed by someone else's key.
    let mallory = provider("Mallory");
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let forged = ConsentRequest {
        provider: acme.identity.clone(),
        device: w.device,
        stream: "p1".into(),
        purpose_code: purpose::RESEARCH,
        purpose: "Sell to advertisers".into(),
        retention_days: 3650,
        until_ms: None,
        history: true,
        terms: None,
        issued_ms: now_ms(),
        nonce,
    }
    .sign(&mallory.key)
    .map(|r| r.to_link());
    let mut bad_links = vec![
        tampered,
        good[..good.len() - 7].to_owned(),
        "LATCHKEY://C/".into(),
    ];
    // Signing may already refuse a key that is not the provider's; if not, the link must fail.
    if let Ok(forged) = forged {
        bad_links.push(forged);
    }
    for bad in &bad_links {
        let err = w.owner.consent_request_add(bad).unwrap_err();
        assert_eq!(err.code(), "bad_consent_link", "{bad}: {err}");
        assert!(err.to_string().contains("nothing was kept"), "{err}");
        let err = w.owner.consent_approve(bad).await.unwrap_err();
        assert_eq!(err.code(), "bad_consent_link", "{err}");
    }
    assert!(w.owner.consent_requests().unwrap().is_empty());
    assert_eq!(w.node_logs().await, vec![0, 0, 0]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_offline_at_approve_time_is_told_at_the_next_contact() {
    let mut w = World::start().await;
    let acme = provider("Acme Energy");
    w.stop_device().await;
    let view = w
        .owner
        .consent_approve(&link(&acme, w.device, "p1"))
        .await
        .unwrap();
    // Given (on the nodes), and waiting in the outbox, which the view says.
    assert_eq!(view.state, "active");
    assert_eq!(view.delivery, "waiting");
    assert!(
        view.delivery_note
            .as_deref()
            .is_some_and(|n| n.contains("told at the next successful contact")),
        "{:?}",
        view.delivery_note
    );
    assert_eq!(w.node_logs().await, vec![1, 1, 1]);

    // Back online: the next open tells it.
    w.start_device().await;
    let report = w
        .owner
        .open(&w.device.to_string(), "unlock", &[])
        .await
        .unwrap();
    assert!(report.accepted(), "{:?}", report.response.outcome);
    let consents = w.owner.consents(&w.device).await.unwrap();
    assert_eq!(
        consents[0].delivery, "delivered",
        "{:?}",
        consents[0].delivery_note
    );
    assert_eq!(w.owner.consent_outbox_flush(None).await.unwrap().waiting, 0);
    w.stop().await;
}

/// The device took the entry but its answer never reached this profile, which therefore still
/// has it waiting: the next contact sends it again, and the device (holding that very entry)
/// answers accepted, so it counts as delivered, not refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_resent_after_its_answer_was_lost_is_delivered() {
    let w = World::start().await;
    let acme = provider("Acme Energy");
    let view = w
        .owner
        .consent_approve(&link(&acme, w.device, "p1"))
        .await
        .unwrap();
    assert_eq!(view.delivery, "delivered", "{:?}", view.delivery_note);

    // The lost answer, as the profile's store records it.
    let db_path = w.tmp.path().join("owner").join("profile.db");
    let row = |db: &rusqlite::Connection| -> (String, i64, Option<i64>) {
        db.query_row(
            "SELECT state, tries, code FROM consent_outbox WHERE device = ?1 AND seq = 1",
            [w.device.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    };
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let (_, tries, _) = row(&db);
    let changed = db
        .execute(
            "UPDATE consent_outbox SET state = 'waiting' WHERE device = ?1 AND seq = 1",
            [w.device.to_string()],
        )
        .unwrap();
    assert_eq!(changed, 1);

    // Looking at the device's consents tells it what is waiting: the same entry again.
    let consents = w.owner.consents(&w.device).await.unwrap();
    assert_eq!(consents[0].state, "active");
    assert_eq!(
        consents[0].delivery, "delivered",
        "{:?}",
        consents[0].delivery_note
    );
    assert_eq!(
        row(&db),
        ("delivered".to_owned(), tries + 1, None),
        "sent once more, and the device's answer was accepted"
    );
    drop(db);
    let report = w.owner.consent_outbox_flush(None).await.unwrap();
    assert_eq!(
        (report.delivered, report.refused, report.waiting),
        (0, 0, 0)
    );
    assert_eq!(
        w.node_logs().await,
        vec![1, 1, 1],
        "nothing new on the nodes"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consent_whose_end_passed_gets_an_expired_entry() {
    let w = World::start().await;
    let acme = provider("Acme Energy");
    let until = now_ms() + 3_000;
    let view = w
        .owner
        .consent_approve(&request(&acme, w.device, "p1", Some(until)).to_link())
        .await
        .unwrap();
    assert_eq!(view.state, "active");
    assert!(
        view.request.summary.contains("until "),
        "{}",
        view.request.summary
    );
    tokio::time::sleep(std::time::Duration::from_millis(until + 500 - now_ms())).await;
    let consents = w.owner.consents(&w.device).await.unwrap();
    assert_eq!(consents[0].state, "expired");
    let log = w.owner.consent_log(&w.device).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["given", "expired"]
    );
    assert!(log[1].time_ms >= until);
    assert_eq!(w.node_logs().await, vec![2, 2, 2]);
    // Listing again adds nothing.
    w.owner.consents(&w.device).await.unwrap();
    assert_eq!(w.node_logs().await, vec![2, 2, 2]);
    // Approving the ended consent again is refused in words.
    let err = w.owner.consent_approve(&view.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ConsentEnded { .. } | Error::ConsentNotPending { .. }
        ),
        "{err}"
    );
    w.stop().await;
}
