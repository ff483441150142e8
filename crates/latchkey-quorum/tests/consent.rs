//! The quorum client reading and posting consent logs against real registry nodes (in-process,
//! real SQLite files, real HTTP on loopback) mixed with lying ones: a node that withholds
//! entries, one that holds a rival branch, small axum servers that serve forged entries, and a
//! testkit liar that streams without end. The client keeps the true log and names each.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::chain::{Chain, OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{
    ConsentAction, ConsentEntry, ConsentList, ConsentLog, ConsentRequest, ProviderIdentity,
};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::SigningKey;
use latchkey_quorum::{Error, QuorumClient, QuorumConfig};
use latchkey_testkit::liar::{Liar, Lie};
use latchkey_testkit::{person, rng, sorted, TestDevice, T0};

async fn nodes(dir: &std::path::Path, n: usize) -> Vec<RunningNode> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut config =
            NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.join(format!("{i}.db")));
        config.limits = Limits::without_rate_limits();
        out.push(latchkey_node::start(config).await.unwrap());
    }
    out
}

fn client(urls: &[String], min: usize) -> QuorumClient {
    QuorumClient::new(
        urls.to_vec(),
        QuorumConfig {
            sample: urls.len(),
            min_answers: min,
            publish_to: urls.len(),
            min_acks: min,
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap()
}

fn give(log: &ConsentLog, chain: &Chain, owner: &SigningKey, nonce: u8) -> ConsentEntry {
    let key = SigningKey::generate(&mut rng(0xd0_0000 + nonce as u64));
    let kem = KemSecretKey::generate(&mut rng(0xd1_0000 + nonce as u64));
    let request = ConsentRequest {
        provider: ProviderIdentity {
            name: format!("Provider {nonce}"),
            url: String::new(),
            signing: key.public_key(),
            kem: kem.public().clone(),
        },
        device: chain.device(),
        stream: "p1".into(),
        purpose_code: latchkey_proto::consent::purpose::GRID,
        purpose: "Grid balancing".into(),
        retention_days: 7,
        until_ms: None,
        history: false,
        terms: None,
        issued_ms: T0,
        nonce: [nonce; 16],
    }
    .sign(&key)
    .unwrap();
    log.next_entry(
        chain,
        owner,
        T0 + log.len() as u64 * 1000,
        ConsentAction::Given(request),
    )
    .unwrap()
}

/// A server that answers every consent read with `body`: a node that lies.
async fn lying_server(body: Vec<u8>) -> String {
    let app = Router::new().route(
        "/v1/devices/{device}/consents",
        get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The world of the tests: a device with owners Alice and Bob, its chain on `nodes`, and a
/// three-entry log (two consents given, the first revoked).
struct World {
    dev: TestDevice,
    log: ConsentLog,
}

fn world() -> World {
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(500, "Meter");
    dev.claim(&[&alice], 1);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    let mut log = ConsentLog::new(&dev.chain);
    for (who, n) in [(&alice, 1), (&bob, 2)] {
        let e = give(&log, &dev.chain, who, n);
        log.append(&dev.chain, e).unwrap();
    }
    let first = log.consents()[0].id;
    let revoke = log
        .next_entry(
            &dev.chain,
            &alice,
            T0 + 10_000,
            ConsentAction::Revoked(first),
        )
        .unwrap();
    log.append(&dev.chain, revoke).unwrap();
    World { dev, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_true_log_is_kept_and_every_lying_node_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let running = nodes(dir.path(), 4).await;
    let urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    let w = world();
    let entries = w.log.entries().to_vec();
    let q = client(&urls, urls.len());
    q.publish_chain_to(&w.dev.chain, 0, &urls).await.unwrap();

    // Nodes 0 and 1 hold the whole log; node 2 only its first entry (it withholds the rest);
    // node 3 holds a rival second entry Bob also signed (an equivocation).
    for e in &entries {
        q.post_consent_to(e, &urls[..2]).await.unwrap();
    }
    q.post_consent_to(&entries[0], &urls[2..]).await.unwrap();
    let mut rival_log = ConsentLog::verify(&w.dev.chain, entries[..1].to_vec()).unwrap();
    let rival = give(&rival_log, &w.dev.chain, &person(2), 9);
    q.post_consent_to(&rival, &urls[3..]).await.unwrap();
    rival_log.append(&w.dev.chain, rival).unwrap();

    // Liars: a longer log whose last entry a stranger signed; the true log with a tampered
    // signature in the middle; and an answer that never ends.
    let mut stranger = give(&w.log, &w.dev.chain, &person(1), 10);
    stranger.signer = person(9).public_key();
    let longer = ConsentList([entries.clone(), vec![stranger]].concat()).to_bytes();
    let mut tampered = entries.clone();
    tampered[1].signature.0[3] ^= 0x10;
    let forger = lying_server(longer).await;
    let tamperer = lying_server(ConsentList(tampered).to_bytes()).await;
    let endless = Liar::start(Lie::Endless);

    let mut all = urls.clone();
    all.extend([forger.clone(), tamperer.clone(), endless.url()]);
    let q = client(&all, 3);
    let report = q.consent_log(&w.dev.chain).await.unwrap();
    assert_eq!(report.log.entries(), &entries[..]);
    assert_eq!(report.answered, 4, "{report:?}");
    let mut lying = report.lying.clone();
    lying.sort();
    let mut expected = vec![forger, tamperer, endless.url()];
    expected.sort();
    assert_eq!(lying, expected);
    assert_eq!(report.behind, vec![urls[2].clone()]);
    assert_eq!(report.conflicting, vec![urls[3].clone()]);
    assert!(
        report.failed.is_empty() && report.unknown.is_empty(),
        "{report:?}"
    );
    assert!(endless.wait_hung_up(1, Duration::from_secs(10)));
    // Who could read at the end: the second consent only.
    assert_eq!(report.log.readers_at(T0 + 20_000).len(), 1);
}

#[tokio::test]
async fn too_few_verified_answers_is_an_error_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let running = nodes(dir.path(), 2).await;
    let urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    let w = world();
    let q = client(&urls, 2);
    q.publish_chain_to(&w.dev.chain, 0, &urls).await.unwrap();
    for e in w.log.entries() {
        q.post_consent_to(e, &urls).await.unwrap();
    }
    let forger = lying_server(b"not a consent list".to_vec()).await;
    let mut nodes = urls.clone();
    nodes.push(forger.clone());
    // Three asked, three needed: two honest answers are not enough.
    let strict = client(&nodes, 3);
    match strict.consent_log(&w.dev.chain).await {
        Err(Error::NotEnoughConsentAnswers {
            answered, needed, ..
        }) => assert_eq!((answered, needed), (2, 3)),
        other => panic!("{other:?}"),
    }
    // Only liars: no verified log can be built.
    let only_liars = client(std::slice::from_ref(&forger), 1);
    match only_liars.consent_log(&w.dev.chain).await {
        Err(Error::ConsentLogUnverified { lying, .. }) => assert_eq!(lying, vec![forger]),
        other => panic!("{other:?}"),
    }
    // A node that does not hold the chain is no answer either.
    let stranger_dev = TestDevice::new(501, "Other");
    match client(&urls, 1).consent_log(&stranger_dev.chain).await {
        Err(Error::NotEnoughConsentAnswers { answered: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn posting_needs_min_acks_and_names_conflicts_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let running = nodes(dir.path(), 3).await;
    let urls: Vec<String> = running.iter().map(|n| n.url()).collect();
    let w = world();
    let entries = w.log.entries().to_vec();
    let q = client(&urls, 3);
    q.publish_chain_to(&w.dev.chain, 0, &urls).await.unwrap();

    let report = q.post_consent(&entries[0]).await.unwrap();
    assert_eq!(report.acked.len(), 3);
    // A retry is fine: every node already holds it.
    assert_eq!(q.post_consent(&entries[0]).await.unwrap().acked.len(), 3);

    // A rival of the held entry: every node keeps its first and says so.
    let rival = give(&ConsentLog::new(&w.dev.chain), &w.dev.chain, &person(2), 7);
    match q.post_consent(&rival).await {
        Err(Error::ConsentConflict { seq: 1, nodes, .. }) => assert_eq!(nodes.len(), 3),
        other => panic!("{other:?}"),
    }
    // An entry no node may take.
    let mut forged = entries[1].clone();
    forged.signature.0[0] ^= 1;
    match q.post_consent(&forged).await {
        Err(Error::ConsentRejected(why)) => {
            assert!(why.contains("signature does not verify"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // A node without the chain cannot ack: two of three is short of three.
    let dir2 = tempfile::tempdir().unwrap();
    let bare = nodes(dir2.path(), 1).await;
    let mut mixed = urls[..2].to_vec();
    mixed.push(bare[0].url());
    match client(&mixed, 3).post_consent(&entries[1]).await {
        Err(Error::NotEnoughAcks { acks: 2, needed: 3 }) => {}
        other => panic!("{other:?}"),
    }
    let report = q.consent_log_from(&w.dev.chain, &urls[..2]).await.unwrap();
    assert_eq!(report.log.entries(), &entries[..2]);
}

/// Two verified logs of one length that differ (an equivocation): the one more nodes served
/// is kept, whichever order the answers came in, and the others are named as conflicting.
#[test]
fn between_rival_logs_of_one_length_the_better_supported_is_kept() {
    use latchkey_quorum::{assess_consents, ConsentAnswer};
    let w = world();
    let ours = w.log.entries()[..2].to_vec();
    let mut rival_log = ConsentLog::verify(&w.dev.chain, ours[..1].to_vec()).unwrap();
    let rival = give(&rival_log, &w.dev.chain, &person(2), 20);
    rival_log.append(&w.dev.chain, rival).unwrap();
    let theirs = rival_log.entries().to_vec();
    let answers = |a: &[Vec<ConsentEntry>]| {
        a.iter()
            .enumerate()
            .map(|(i, e)| (format!("node{i}"), ConsentAnswer::Entries(e.clone())))
            .collect::<Vec<_>>()
    };
    for (set, kept, conflicting) in [
        (
            vec![ours.clone(), theirs.clone(), ours.clone()],
            &ours,
            vec!["node1"],
        ),
        (
            vec![theirs.clone(), ours.clone(), theirs.clone()],
            &theirs,
            vec!["node1"],
        ),
        (
            vec![ours[..1].to_vec(), theirs.clone(), theirs.clone()],
            &theirs,
            vec![],
        ),
    ] {
        let report = assess_consents(&w.dev.chain, answers(&set), 3).unwrap();
        assert_eq!(report.log.entries(), &kept[..]);
        assert_eq!(report.conflicting, conflicting);
        assert!(report.lying.is_empty());
    }
}

/// Attack: a removed owner signs an entry anchored in her time (a consent for her own
/// provider) and one lying node serves it at the head of the log. It verifies as history, but
/// no current owner signed or built on it and no honest node holds it, so a reader leaves it
/// out and names the node; the same tail held by two nodes (an entry posted while its signer
/// was an owner, removed since) is kept.
#[test]
fn a_former_owners_entry_served_by_one_node_alone_is_left_out() {
    use latchkey_quorum::{assess_consents, ConsentAnswer};
    let (alice, bob) = (person(1), person(2));
    let mut dev = TestDevice::new(501, "Meter");
    dev.claim(&[&alice], 1);
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: sorted(&[&alice, &bob]),
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    let mut log = ConsentLog::new(&dev.chain);
    let by_bob = give(&log, &dev.chain, &bob, 1);
    log.append(&dev.chain, by_bob).unwrap();
    let by_alice = give(&log, &dev.chain, &alice, 2);
    log.append(&dev.chain, by_alice).unwrap();
    // Alice is removed; the log's newest entry is hers.
    dev.apply(
        OpBody::AmendOwners(OwnerSet {
            owners: vec![bob.public_key()],
            threshold: 1,
        }),
        &[&alice, &bob],
    );
    let full = log.entries().to_vec();
    let answers = |a: &[&[ConsentEntry]]| {
        a.iter()
            .enumerate()
            .map(|(i, e)| (format!("node{i}"), ConsentAnswer::Entries(e.to_vec())))
            .collect::<Vec<_>>()
    };

    let planted =
        assess_consents(&dev.chain, answers(&[&full, &full[..1], &full[..1]]), 2).unwrap();
    assert_eq!(
        planted.log.entries(),
        &full[..1],
        "the planted entry was taken"
    );
    assert_eq!(planted.unsettled, vec!["node0"]);
    assert!(planted.conflicting.is_empty() && planted.lying.is_empty());

    let posted = assess_consents(&dev.chain, answers(&[&full, &full, &full[..1]]), 2).unwrap();
    assert_eq!(
        posted.log.entries(),
        &full[..],
        "a tail two nodes hold was dropped"
    );
    assert_eq!(posted.behind, vec!["node2"]);
    assert!(posted.unsettled.is_empty());

    // Once a current owner builds on it, one node holding it is enough.
    let mut built = ConsentLog::verify(&dev.chain, full.clone()).unwrap();
    let next = give(&built, &dev.chain, &bob, 3);
    built.append(&dev.chain, next).unwrap();
    let settled = assess_consents(
        &dev.chain,
        answers(&[built.entries(), &full[..1], &full[..1]]),
        2,
    )
    .unwrap();
    assert_eq!(settled.log.entries(), built.entries());
}
